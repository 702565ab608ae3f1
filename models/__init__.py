"""The model zoo: Keras functional-API builders for every architecture the course teaches.

Use the registry to build a model by name::

    import models
    unet = models.get("unet", input_shape=(96, 96, 1), num_classes=4)
    models.list_models()          # every registered name
    print(models.summary_table()) # name, family, parameters, input rank, lecture topic

Importing this package imports every model module, which registers its builders.
"""

import os

# oneDNN kernels roughly double conv-net throughput on AVX2 CPUs (see README, "Speed"); TensorFlow
# reads this variable once, at import, so it is set before anything imports TensorFlow.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from models.registry import ModelSpec, get, get_spec, list_models, register, summary_table  # noqa: E402

# Model modules register themselves on import. Keep this list in reading order of the course.
from models import mlp  # noqa: E402,F401
from models import classic  # noqa: E402,F401
from models import unet  # noqa: E402,F401
from models import resnet  # noqa: E402,F401
from models import densenet  # noqa: E402,F401
from models import inception  # noqa: E402,F401
from models import pointnet  # noqa: E402,F401
from models import recurrent  # noqa: E402,F401
from models import attention  # noqa: E402,F401
from models import vit  # noqa: E402,F401
from models import autoencoder  # noqa: E402,F401
from models import gan  # noqa: E402,F401
from models import diffusion  # noqa: E402,F401
from models import registration  # noqa: E402,F401
from models import multistream  # noqa: E402,F401
from models import upsampling  # noqa: E402,F401

__all__ = ["ModelSpec", "get", "get_spec", "list_models", "register", "summary_table"]
