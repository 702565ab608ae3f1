"""Tests for training.config: dataclass configs with command-line overrides and YAML/JSON files."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import yaml

from training.config import (
    ConfigError,
    add_arguments,
    config_from_namespace,
    field,
    field_choices,
    from_dict,
    load_config,
    parse_args,
    save_config,
    to_dict,
)


@dataclasses.dataclass
class ExampleConfig:
    """A config using every supported field type."""

    epochs: int = field(10, "passes over the training set")
    learning_rate: float = field(1e-3, "optimiser step size")
    mode: str = field("2d", "2d slices or 3d patches", choices=("2d", "3d"))
    augment: list[str] = field(["flip", "affine"], "augmentation chain")
    patch_size: tuple[int, ...] = field((16, 32, 32), "3D patch size (D, H, W)")
    mixed_precision: bool = field(False, "float16 compute")
    data_dir: str | None = field(None, "folder of NIfTI pairs")


def test_defaults_when_no_arguments():
    cfg = parse_args(ExampleConfig, [])
    assert cfg == ExampleConfig()
    assert cfg.augment == ["flip", "affine"]
    # A list default is copied per instance, so editing one config cannot leak into another.
    cfg.augment.append("noise")
    assert ExampleConfig().augment == ["flip", "affine"]


def test_command_line_overrides_with_types():
    cfg = parse_args(
        ExampleConfig,
        ["--epochs", "3", "--learning-rate", "0.01", "--mode", "3d", "--augment", "flip",
         "--patch-size", "8", "16", "16", "--mixed-precision", "--data-dir", "/tmp/x"],
    )
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.learning_rate == pytest.approx(0.01)
    assert cfg.mode == "3d"
    assert cfg.augment == ["flip"]
    assert cfg.patch_size == (8, 16, 16)
    assert cfg.mixed_precision is True
    assert cfg.data_dir == "/tmp/x"
    assert parse_args(ExampleConfig, ["--no-mixed-precision"]).mixed_precision is False


def test_help_shows_field_help_and_default(capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(ExampleConfig, ["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--learning-rate" in out and "optimiser step size" in out
    assert "(default: 0.001)" in out
    assert "--config" in out


@pytest.mark.parametrize(
    "argv",
    [["--epochs", "three"], ["--mode", "4d"], ["--patch-size", "8", "x"], ["--unknown", "1"]],
)
def test_bad_command_line_values_exit_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(ExampleConfig, argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err


def test_bad_choice_names_field_and_choices(capsys):
    with pytest.raises(SystemExit):
        parse_args(ExampleConfig, ["--mode", "4d"])
    err = capsys.readouterr().err
    assert "mode" in err and "'4d'" in err and "2d, 3d" in err


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_load_round_trip(tmp_path, suffix):
    cfg = ExampleConfig(epochs=7, mode="3d", augment=[], patch_size=(4, 8, 8), data_dir="d")
    path = save_config(cfg, tmp_path / f"sub/config{suffix}")
    assert path.is_file()
    assert load_config(ExampleConfig, path) == cfg
    # No temporary files are left next to the written file.
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_save_with_extra_sections_still_loads(tmp_path):
    cfg = ExampleConfig(epochs=2)
    path = save_config(cfg, tmp_path / "config.yaml", extra={"versions": {"keras": "3.x"}})
    raw = yaml.safe_load(path.read_text())
    assert raw["versions"] == {"keras": "3.x"}
    assert raw["config"]["epochs"] == 2
    assert load_config(ExampleConfig, path) == cfg


def test_config_file_then_command_line_precedence(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("epochs: 4\nmode: 3d\nlearning_rate: 0.5\n")
    cfg = parse_args(ExampleConfig, ["--config", str(path), "--epochs", "9"])
    assert cfg.epochs == 9  # command line beats the file
    assert cfg.mode == "3d"  # file beats the default
    assert cfg.learning_rate == 0.5
    assert cfg.augment == ["flip", "affine"]  # untouched default


def test_parse_args_extends_existing_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    add_arguments(parser, ExampleConfig)
    ns = parser.parse_args(["--quick", "--epochs", "1"])
    assert ns.quick is True
    assert config_from_namespace(ExampleConfig, ns).epochs == 1


def test_unknown_key_in_file_is_an_error_naming_file_and_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("epoch: 4\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml.*unknown setting\(s\) epoch"):
        load_config(ExampleConfig, path)


def test_wrong_type_in_file_is_an_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"epochs": 2.5}))
    with pytest.raises(ConfigError, match=r"bad\.json.*epochs: expected an integer"):
        load_config(ExampleConfig, path)
    with pytest.raises(ConfigError, match="mixed_precision: expected true/false"):
        from_dict(ExampleConfig, {"mixed_precision": "maybe"})
    with pytest.raises(ConfigError, match="epochs: null given"):
        from_dict(ExampleConfig, {"epochs": None})


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(ExampleConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config(ExampleConfig, bad)
    with pytest.raises(ConfigError, match=r"\.yaml, \.yml or \.json"):
        save_config(ExampleConfig(), tmp_path / "config.txt")


def test_to_dict_is_plain_and_json_serialisable():
    d = to_dict(ExampleConfig(patch_size=(1, 2, 3)))
    assert d["patch_size"] == [1, 2, 3]
    assert json.loads(json.dumps(d)) == d


def test_post_init_validation_errors_become_config_errors():
    @dataclasses.dataclass
    class Checked:
        epochs: int = field(1, "epochs")

        def __post_init__(self):
            if self.epochs < 1:
                raise ValueError("epochs must be >= 1")

    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        from_dict(Checked, {"epochs": 0})


@dataclasses.dataclass
class BoundedConfig:
    steps: int = field(0, "steps per epoch (0 = one pass)", minimum=0)
    rate: float = field(0.5, "a fraction", minimum=0, maximum=1)
    patch: tuple[int, ...] = field((8, 8), "patch", minimum=1)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"steps": -5}, "steps: must be >= 0, got -5"),
        ({"rate": 1.5}, "rate: must be >= 0 and <= 1, got 1.5"),
        ({"rate": "nan"}, "rate: must be >= 0 and <= 1, got nan"),
        ({"patch": [8, 0]}, "patch: must be >= 1, got 0"),
    ],
)
def test_bounds_are_checked_where_values_are_parsed(values, message, tmp_path):
    with pytest.raises(ConfigError, match=f"^cfg.yaml: {message}"):
        from_dict(BoundedConfig, values, source="cfg.yaml")
    assert from_dict(BoundedConfig, {"steps": 0, "rate": 1, "patch": [1, 2]}) == BoundedConfig(0, 1.0, (1, 2))


def test_presets_sit_between_the_config_file_and_the_typed_options(tmp_path):
    path = save_config(ExampleConfig(epochs=3, mode="3d"), tmp_path / "c.yaml")
    parser = argparse.ArgumentParser()
    add_arguments(parser, ExampleConfig)
    namespace = parser.parse_args(["--config", str(path), "--learning-rate", "0.5"])
    preset = {"epochs": 1, "learning_rate": 9.0}
    cfg = config_from_namespace(ExampleConfig, namespace, presets=[("--quick", preset)])
    assert (cfg.epochs, cfg.mode, cfg.learning_rate) == (1, "3d", 0.5)  # preset over file, option over preset
    with pytest.raises(ConfigError, match="^--quick: unknown setting"):
        config_from_namespace(ExampleConfig, namespace, presets=[("--quick", {"epoch": 1})])


def test_registry_field_takes_its_choices_from_the_registry():
    @dataclasses.dataclass
    class RegistryConfig:
        loss: str = field("dice", "a loss name", registry="loss")
        augment: list[str] = field(["flip"], "a chain", registry="augmentation")

    from data_utils.registry import REGISTRY

    parser = argparse.ArgumentParser()
    add_arguments(parser, RegistryConfig)
    cfg = config_from_namespace(RegistryConfig, parser.parse_args(["--loss", "tversky", "--augment", "flip", "elastic"]))
    assert cfg.loss == "tversky" and cfg.augment == ["flip", "elastic"]
    assert field_choices(dataclasses.fields(RegistryConfig)[0]) == tuple(REGISTRY.names("loss"))
    # The help lists the registry's names (looked up when it is shown, not when the parser is built).
    assert "--loss {" + ",".join(REGISTRY.names("loss")) + "}" in parser.format_help()
    assert "--augment {" + ",".join(REGISTRY.names("augmentation")) + "}" in parser.format_help()
    with pytest.raises(ConfigError, match="augment: 'rotate' is not one of"):
        from_dict(RegistryConfig, {"augment": ["rotate"]})
    with pytest.raises(ValueError, match="not both"):
        field("a", "b", choices=("a",), registry="loss")


def test_presets_apply_after_the_file_and_before_typed_options(tmp_path):
    path = save_config(ExampleConfig(epochs=7, learning_rate=0.5), tmp_path / "run.yaml")
    quick = {"epochs": 1, "mode": "3d"}
    cfg = parse_args(ExampleConfig, ["--config", str(path), "--quick", "--mode", "2d"], presets={"quick": quick})
    assert (cfg.epochs, cfg.learning_rate, cfg.mode) == (1, 0.5, "2d")
    assert parse_args(ExampleConfig, [], presets={"quick": quick}).epochs == ExampleConfig().epochs
    with pytest.raises(SystemExit):
        parse_args(ExampleConfig, ["--quick"], presets={"quick": {"epochs": "many"}})
