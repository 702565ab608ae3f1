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
        (["--mode", "4d"], "mode: '4d' is not one of 2d, 3d"),
        (["--augment", "rotate"], "augment"),
        (["--epochs", "0"], "epochs: must be >= 1, got 0"),
        (["--steps-per-epoch", "-5"], "steps_per_epoch: must be >= 0, got -5"),
        (["--depth", "0"], "depth: must be >= 1 and <= 8, got 0"),
        (["--base-filters", "0"], "base_filters: must be >= 1"),
        (["--batch-size", "-1"], "batch_size: must be >= 1"),
        (["--learning-rate", "0"], "learning_rate must be a positive number"),
        (["--learning-rate", "inf"], "learning_rate must be a positive number"),
        (["--overlays", "-2"], "overlays: must be >= 0"),
        (["--max-train-cases", "-1"], "max_train_cases: must be >= 0"),
        (["--stop-after-epochs", "-1"], "stop_after_epochs: must be >= 0"),
        (["--synthetic-cases", "2"], "synthetic_cases: must be >= 3"),
        (["--patches-per-volume", "0"], "patches_per_volume: must be >= 1"),
        (["--patch-size", "16", "0", "64"], "patch_size: must be >= 1, got 0"),
        (["--seed", "-3"], "seed: must be >= 0"),
        (["--epochs", "two"], "epochs: expected an integer, got 'two'"),
        (["--val-fraction", "0.6", "--test-fraction", "0.5"], "leave cases for training"),
        (["--run-name", "../x"], "run_name"),
        (["--mode", "3d", "--patch-size", "8", "8"], "patch_size"),
        (["--slice-shape", "96"], "slice_shape"),
        (["--no-such-option"], "unrecognized arguments: --no-such-option"),
    ],
)
def test_bad_settings_exit_with_status_2_and_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_resolve_reports_bad_config_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epoch: 3\n")
    namespace = build_parser("x", "y").parse_args(["--config", str(path)])
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown setting"):
        resolve(namespace)


def test_slice_shape_for_volumes_of_different_sizes():
    assert parse(["--slice-shape", "96", "96"]).slice_shape == (96, 96)
    assert parse([]).slice_shape == ()
