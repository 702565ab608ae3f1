"""Tests for data_utils.registry: the one name -> builder registry of every category."""

import pytest

from data_utils.registry import PROVIDERS, REGISTRY, Registry, canonical_name, choices


def _local():
    """A registry with one category whose provider is a module that is always importable."""
    return Registry({"thing": "json"})


def test_register_build_and_build_from_config():
    reg = _local()

    @reg.register("thing", "pair")
    def pair(a=1, b=2):
        return (a, b)

    assert reg.names("thing") == ["pair"]
    assert reg.build("thing", "pair", b=5) == (1, 5)
    assert reg.build_from_config("thing", {"name": "pair", "a": 3}) == (3, 2)
    assert reg.build_from_config("thing", "pair") == (1, 2)
    with pytest.raises(ValueError, match="'name' key"):
        reg.build_from_config("thing", {"a": 3})


def test_names_are_snake_case_unique_and_hyphens_are_accepted_on_lookup():
    reg = _local()
    reg.register("thing", "two_words", dict)
    assert reg.get("thing", "Two-Words") is dict
    assert canonical_name(" Attention-UNet ") == "attention_unet"
    with pytest.raises(ValueError, match="already registered"):
        reg.register("thing", "two_words", list)
    with pytest.raises(ValueError, match="snake_case"):
        reg.register("thing", "Two-Words", list)
    with pytest.raises(TypeError, match="callable"):
        reg.register("thing", "not_callable", 3)
    reg.unregister("thing", "two_words")
    assert reg.names("thing") == []


def test_unknown_names_and_categories_are_named_in_the_error():
    reg = _local()
    reg.register("thing", "known", dict)
    with pytest.raises(KeyError, match=r"unknown thing 'unknwon'.*known"):
        reg.get("thing", "unknwon")
    with pytest.raises(KeyError, match="unknown registry category 'widget'"):
        reg.names("widget")


def test_the_kit_registry_fills_every_category_from_its_provider():
    assert REGISTRY.categories() == sorted(PROVIDERS) == ["augmentation", "loss", "model", "optimizer"]
    assert {"unet", "attention_unet", "resnet50"} <= set(REGISTRY.names("model"))
    assert {"dice", "dice_ce", "lncc"} <= set(REGISTRY.names("loss"))
    assert {"flip", "affine", "bias_field", "mixup"} <= set(REGISTRY.names("augmentation"))
    assert {"adam", "adamw", "sgd"} <= set(REGISTRY.names("optimizer"))
    assert choices("loss") == tuple(REGISTRY.names("loss"))


def test_the_kit_registry_builds_each_category_from_a_config():
    import keras

    from data_utils import augment
    from training import losses

    loss = REGISTRY.build_from_config("loss", {"name": "dice_ce", "batch": True})
    assert isinstance(loss, losses.DiceCELoss) and loss.get_config()["batch"] is True
    step = REGISTRY.build_from_config("augmentation", {"name": "affine", "rotation": 0.1})
    assert isinstance(step, augment.Affine) and step.kwargs == {"rotation": 0.1}
    opt = REGISTRY.build_from_config("optimizer", {"name": "adamw", "learning_rate": 0.01})
    assert isinstance(opt, keras.optimizers.AdamW) and float(opt.learning_rate) == pytest.approx(0.01)
    model = REGISTRY.build_from_config("model", {"name": "mlp", "input_shape": (3,), "widths": (4,),
                                                 "num_classes": 2})
    assert model.output_shape == (None, 2)
