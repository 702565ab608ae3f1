"""The model zoo: Keras functional-API builders for every architecture the course teaches.

Use the registry to build a model by name::

    import models
    unet = models.get("unet", input_shape=(96, 96, 1), num_classes=4)
    models.list_models()          # every registered name
    print(models.summary_table()) # name, family, parameters, input rank, lecture topic

Importing this package imports every model module, which registers its builders.
"""

import data_utils  # noqa: F401  (the kit's TensorFlow settings, before TensorFlow is imported)

from models.registry import ModelSpec, get, get_spec, list_models, register, summary_table

# Model modules register themselves on import. Keep this list in reading order of the course.
from models import mlp  # noqa: F401
from models import classic  # noqa: F401
from models import unet  # noqa: F401
from models import resnet  # noqa: F401
from models import densenet  # noqa: F401
from models import inception  # noqa: F401
from models import pointnet  # noqa: F401
from models import recurrent  # noqa: F401
from models import attention  # noqa: F401
from models import vit  # noqa: F401
from models import autoencoder  # noqa: F401
from models import gan  # noqa: F401
from models import diffusion  # noqa: F401
from models import registration  # noqa: F401
from models import multistream  # noqa: F401
from models import upsampling  # noqa: F401

__all__ = ["ModelSpec", "get", "get_spec", "list_models", "register", "summary_table"]
