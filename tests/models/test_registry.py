"""The model registry: registration, lookup, defaults, listing and the summary table."""

import keras
import pytest

import models
from data_utils.registry import REGISTRY
from models import registry


@pytest.fixture
def private_registry():
    """The model registry; the names a test registers (``*_test``) are removed afterwards."""
    yield registry
    for name in REGISTRY.names("model"):
        if name.endswith("_test"):
            REGISTRY.unregister("model", name)


def _tiny(input_shape=(4,), units=2, name="tiny"):
    x = keras.Input(input_shape)
    return keras.Model(x, keras.layers.Dense(units)(x), name=name)


def test_register_get_and_defaults(private_registry):
    private_registry.register(
        "tiny_test", family="Test", topic="testing", ranks=(0,), defaults=dict(units=3)
    )(_tiny)
    assert private_registry.get("tiny_test").output_shape == (None, 3)
    assert private_registry.get("tiny_test", units=5).output_shape == (
        None,
        5,
    )  # kwargs override defaults
    assert private_registry.list_models(family="Test") == ["tiny_test"]


def _dense(input_shape, num_classes, width=2, activation=None, name="dense"):
    x = keras.Input(input_shape)
    h = keras.layers.Dense(width, name="hidden")(x)
    return keras.Model(x, keras.layers.Dense(num_classes, activation=activation)(h), name=name)


def test_preset_fixes_its_arguments_and_names_the_model(private_registry):
    wide = private_registry.preset("wide_test", _dense, "A wide dense net.", fixed=dict(width=7),
                                   settable=dict(activation="softmax"), family="Test", topic="t",
                                   ranks=(0,), defaults=dict(input_shape=(3,), num_classes=2))
    assert wide.__name__ == "wide_test" and wide.__doc__ == "A wide dense net."
    model = private_registry.get("wide_test")
    assert model.name == "wide_test" and model.get_layer("hidden").units == 7
    assert model.layers[-1].activation is keras.activations.softmax
    assert wide((3,), 2, activation=None, name="m").layers[-1].activation is keras.activations.linear
    with pytest.raises(TypeError, match="wide_test: \\['width'\\] define the preset.*_dense"):
        wide((3,), 2, width=3)


def test_duplicate_names_are_refused(private_registry):
    private_registry.register("dup_test", family="Test", topic="t")(_tiny)
    with pytest.raises(ValueError, match="already registered"):
        private_registry.register("dup_test", family="Test", topic="t")(_tiny)


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(KeyError, match="unknown model 'resnet-1000'.*resnet50"):
        models.get("resnet-1000")


def test_hyphenated_names_find_the_snake_case_entry():
    assert models.get_spec("attention-unet") is models.get_spec("attention_unet")
    with pytest.raises(ValueError, match="snake_case"):
        registry.register("Bad-Name", family="Test", topic="t")(_tiny)


def test_every_spec_is_complete_and_names_are_lower_case():
    names = models.list_models()
    assert names == sorted(names)
    for name in names:
        spec = models.get_spec(name)
        assert name == name.lower() and " " not in name and "-" not in name
        assert spec.family and spec.topic
        assert set(spec.ranks) <= {0, 1, 2, 3}
        assert callable(spec.builder)


def test_course_families_are_registered():
    families = {models.get_spec(n).family for n in models.list_models()}
    assert {
        "MLP",
        "LeNet",
        "AlexNet",
        "VGG",
        "Inception",
        "ResNet",
        "DenseNet",
        "U-Net",
        "PointNet",
    } <= families


def test_example_configurations_are_small_and_merge_over_defaults():
    spec = models.get_spec("resnet18")
    kwargs = spec.small_kwargs()
    assert kwargs["input_shape"] == spec.example["input_shape"] != spec.defaults["input_shape"]
    assert models.get("resnet18", **kwargs).count_params() < 50_000


def test_summary_table_rows(private_registry):
    private_registry.register(
        "tiny_table_test", family="Test", topic="testing", ranks=(0,), defaults=dict(units=3)
    )(_tiny)
    table = private_registry.summary_table(["tiny_table_test", "lenet5"])
    lines = table.splitlines()
    assert lines[0].startswith("| name | family | parameters")
    assert "| `tiny_table_test` | Test | 15 | vector | testing |" in lines
    assert any(line.startswith("| `lenet5` | LeNet | 61,706 | 2D/3D |") for line in lines)
