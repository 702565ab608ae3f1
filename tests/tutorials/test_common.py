"""tutorials/common.py: settings from command line, environment and QUICK; seeding; figures; the summary check."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tutorials"))
import common  # noqa: E402

from training.config import ConfigError  # noqa: E402


@pytest.fixture
def clean_env(monkeypatch):
    for var in common.ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_start_defaults_and_command_line(clean_env, tmp_path):
    tut = common.start("demo", "a demo", argv=["--out", str(tmp_path / "o")])
    assert (tut.name, tut.quick, tut.seed) == ("demo", False, 0)
    assert tut.out_dir == (tmp_path / "o").resolve() and tut.out_dir.is_dir()
    tut = common.start("demo", "a demo", argv=["--quick", "--seed", "2", "--out", str(tmp_path)])
    assert (tut.quick, tut.seed) == (True, 2)
    assert tut.pick(full=100, quick=3) == 3


def test_default_output_folder_is_under_results(clean_env):
    tut = common.start("demo_default_out", "a demo", argv=[])
    try:
        assert tut.out_dir == REPO_ROOT / "results" / "tutorials" / "demo_default_out"
    finally:
        tut.out_dir.rmdir()


def test_environment_and_quick_constant(clean_env, tmp_path):
    clean_env.setenv("TUTORIAL_QUICK", "1")
    clean_env.setenv("TUTORIAL_OUT", str(tmp_path / "env"))
    clean_env.setenv("TUTORIAL_SEED", "5")
    tut = common.start("demo", "a demo", argv=[])
    assert (tut.quick, tut.seed, tut.out_dir) == (True, 5, (tmp_path / "env").resolve())
    tut = common.start("demo", "a demo", argv=["--seed", "1", "--no-quick"])  # the command line beats the environment
    assert (tut.quick, tut.seed) == (False, 1)
    clean_env.delenv("TUTORIAL_QUICK")
    assert common.start("demo", "a demo", quick=True, argv=[]).quick is True  # QUICK = True in the first cell


def test_config_file_is_below_the_environment(clean_env, tmp_path):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(f"seed: 3\nquick: true\nout: {tmp_path / 'cfg'}\n")
    tut = common.start("demo", "a demo", argv=["--config", str(cfg)])
    assert (tut.quick, tut.seed, tut.out_dir) == (True, 3, (tmp_path / "cfg").resolve())
    clean_env.setenv("TUTORIAL_SEED", "4")
    assert common.start("demo", "a demo", argv=["--config", str(cfg)]).seed == 4


def test_bad_environment_value_names_the_variable(clean_env):
    clean_env.setenv("TUTORIAL_SEED", "one")
    with pytest.raises(ConfigError, match="TUTORIAL_SEED"):
        common.start("demo", "a demo", argv=[])


def test_bad_option_exits_with_usage(clean_env, capsys):
    with pytest.raises(SystemExit) as info:
        common.start("demo", "a demo", argv=["--seed", "x"])
    assert info.value.code == 2 and "--seed" in capsys.readouterr().err


def test_reseed_repeats_random_numbers(clean_env, tmp_path):
    import keras

    tut = common.start("demo", "a demo", argv=["--seed", "7", "--out", str(tmp_path)])
    a = keras.ops.convert_to_numpy(keras.random.normal((4,)))
    tut.reseed()
    b = keras.ops.convert_to_numpy(keras.random.normal((4,)))
    tut.reseed(1)
    c = keras.ops.convert_to_numpy(keras.random.normal((4,)))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_progress_and_tensorboard(tmp_path, capsys):
    import keras

    tut = common.Tutorial("demo", quick=True, out_dir=tmp_path, seed=0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[tut.progress("tiny model"), tut.tensorboard("run1")])
    shown = capsys.readouterr().out
    assert "tiny model" in shown and "3/3" in shown
    assert f"loss: {history.history['loss'][-1]:.4f}" in shown  # the last epoch's loss, not a running mean
    assert list((tmp_path / "logs" / "run1").rglob("*tfevents*")), "no TensorBoard event file written"
    # Each callback creates the optimiser's variables when training begins, before the first step is
    # traced (created inside it, they make TensorFlow trace that step twice).
    for callback in (tut.progress("again"), tut.tensorboard("run2")):
        fresh = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        fresh.compile(optimizer="adam", loss="mse")
        callback.set_model(fresh)
        callback.set_params({"epochs": 1, "steps": 1, "verbose": 0})
        callback.on_train_begin()
        assert fresh.optimizer.built and len(fresh.optimizer.variables) > 1


def test_save_figure_writes_png_and_closes(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tut = common.Tutorial("demo", quick=True, out_dir=tmp_path, seed=0)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = tut.save_figure(fig, "line.png")
    assert path == tmp_path / "line.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["line.png"]  # no temporary file left behind
    assert common.in_notebook() is False


def test_finish_writes_summary_and_checks_bars(tmp_path):
    tut = common.Tutorial("demo", quick=True, out_dir=tmp_path, seed=1)
    summary = tut.finish({"acc": 0.9, "loss": 0.2}, expect={"acc": (">=", 0.8), "loss": ("<=", 0.3)})
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved == summary
    assert saved["results"] == {"acc": 0.9, "loss": 0.2} and saved["seed"] == 1
    assert all(c["passed"] for c in saved["checks"].values())
    with pytest.raises(common.OutcomeNotReached, match="loss = 0.5000"):
        tut.finish({"acc": 0.9, "loss": 0.5}, expect={"acc": (">=", 0.8), "loss": ("<=", 0.3)})
    assert json.loads((tmp_path / "summary.json").read_text())["checks"]["loss"]["passed"] is False
    with pytest.raises(KeyError, match="dice"):
        tut.finish({"acc": 0.9}, expect={"dice": (">=", 0.5)})
    with pytest.raises(ValueError, match="operator"):
        tut.finish({"acc": 0.9}, expect={"acc": (">", 0.5)})


def test_script_mode_from_another_folder(tmp_path):
    """``python tutorials/<name>.py`` finds common.py from any working directory (no kit cloned)."""
    script = REPO_ROOT / "tutorials" / "width_and_depth.py"
    proc = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout and "--seed" in proc.stdout
    assert list(tmp_path.iterdir()) == []


def _setup_cell(script: Path) -> str:
    """The first code cell of a tutorial (the setup cell), as text."""
    jupytext = pytest.importorskip("jupytext")
    return next(c.source for c in jupytext.read(script).cells if c.cell_type == "code")


def test_every_tutorial_starts_with_the_same_setup_cell():
    scripts = sorted(p for p in (REPO_ROOT / "tutorials").glob("*.py") if p.stem != "common")
    cells = {p.name: _setup_cell(p) for p in scripts}
    assert len(set(cells.values())) == 1, "the setup cells differ: " + ", ".join(sorted(cells))


def test_setup_cell_clones_the_kit_on_a_fresh_machine_and_nothing_inside_a_checkout(tmp_path: Path):
    """On a fresh machine the cell clones KIT_URL into ./kit, installs it and imports common from there;
    run again (or inside a checkout) it clones nothing. pip is replaced by /bin/true: no network."""
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("the kit is not a git checkout here: nothing to clone from")
    cell = _setup_cell(REPO_ROOT / "tutorials" / "mlp_from_scratch.py")
    fresh = tmp_path / "colab"
    fresh.mkdir()
    origin = tmp_path / "origin"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{REPO_ROOT}", str(origin)], check=True)
    program = ("import sys; sys.executable = '/bin/true'; sys.path[0] = ''\n" + cell +
               "\nprint('COMMON', common.__file__)")
    env = {**os.environ, "KIT_URL": str(origin), "PYTHONPATH": ""}
    for attempt in ("first", "again"):
        run = subprocess.run([sys.executable, "-c", program], cwd=fresh, env=env, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, f"{attempt}: {run.stderr[-2000:]}"
        assert f"COMMON {fresh / 'kit' / 'tutorials' / 'common.py'}" in run.stdout, run.stdout
    inside = subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT / "tutorials", env=env,
                            capture_output=True, text=True, timeout=120)
    assert f"COMMON {REPO_ROOT / 'tutorials' / 'common.py'}" in inside.stdout, inside.stderr[-2000:]
    broken = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env={**env, "KIT_URL": str(tmp_path / "nowhere")},
                            capture_output=True, text=True, timeout=120)
    assert broken.returncode != 0 and "KIT_URL" in broken.stderr
