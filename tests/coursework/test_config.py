"""Tests for coursework.config: the settings a group edits, --quick, --data and saved configs."""

import pytest

from coursework.config import QUICK, CourseworkConfig, build_parser, parse, resolve
from training.config import ConfigError, save_config


def test_defaults_are_the_baseline():
    cfg = parse([])
    assert cfg == CourseworkConfig()
    assert cfg.mode == "2d" and cfg.model == "unet" and cfg.run_name == "baseline"


def test_quick_applies_preset_then_typed_options_win():
    cfg = parse(["--quick", "--epochs", "1"])
    for key, value in QUICK.items():
        if key != "epochs":
            assert getattr(cfg, key) == value
    assert cfg.epochs == 1


def test_data_alias_and_patch_size():
    cfg = parse(["--data", "/some/folder", "--mode", "3d", "--patch-size", "8", "32", "32"])
    assert cfg.data_dir == "/some/folder"
    assert cfg.patch_size == (8, 32, 32)


def test_saved_config_reproduces_the_run_settings(tmp_path):
    cfg = parse(["--quick", "--seed", "7", "--augment", "flip"])
    path = save_config(cfg, tmp_path / "config.yaml", extra={"versions": {"keras": "3"}})
    again = parse(["--config", str(path)])
    assert again == cfg  # --quick is baked into the saved values, no flag needed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--mode", "4d"], "mode"),
        (["--augment", "rotate"], "augment"),
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--val-fraction", "0.6", "--test-fraction", "0.5"], "leave cases for training"),
        (["--run-name", "../x"], "run_name"),
        (["--mode", "3d", "--patch-size", "8", "8"], "patch_size"),
        (["--slice-shape", "96"], "slice_shape"),
    ],
)
def test_bad_settings_exit_with_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_resolve_reports_bad_config_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epoch: 3\n")
    namespace = build_parser("x", "y").parse_args(["--config", str(path)])
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown setting"):
        resolve(namespace)


def test_slice_shape_for_volumes_of_different_sizes():
    assert parse(["--slice-shape", "96", "96"]).slice_shape == (96, 96)
    assert parse([]).slice_shape == ()
