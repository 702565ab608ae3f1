"""Tests for training.callbacks: atomic files, checkpoints that resume (also after SIGKILL), the NaN
stop that keeps the last good checkpoint, the CSV log and the loss-curve PNG."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from training import callbacks as cb
from training import loop

REPO = Path(__file__).resolve().parents[2]


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def _data(rng, n=32):
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (x[:, :1] - x[:, 1:2]).astype("float32")


# --------------------------------------------------------------------------------------------
# CheckpointStore
# --------------------------------------------------------------------------------------------
def test_checkpoint_store_round_trip_includes_optimizer_state(tmp_path):
    model = _model()
    model.optimizer.build(model.trainable_variables)
    for step in range(4):  # four eager updates give the optimiser a non-trivial state
        grads = [keras.ops.ones_like(v) * (step + 1) for v in model.trainable_variables]
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
    store = cb.CheckpointStore(str(tmp_path), keep=2)
    assert store.latest() is None and store.restore(model) == 0
    assert store.save(model, epoch=1, logs={"loss": 0.5})

    fresh = _model(seed=5)
    assert not np.allclose(fresh.get_weights()[0], model.get_weights()[0])
    assert store.restore(fresh) == 1
    for a, b in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(fresh.optimizer.iterations) == int(model.optimizer.iterations) == 4
    for a, b in zip(fresh.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    record = store.latest()
    assert record["epoch"] == 1 and record["logs"] == {"loss": 0.5}
    assert (tmp_path / record["weights"]).exists()


def test_checkpoint_store_keeps_only_the_newest_files(tmp_path):
    model, store = _model(), cb.CheckpointStore(str(tmp_path), keep=2)
    for epoch in (1, 2, 3):
        store.save(model, epoch)
    names = sorted(n for n in os.listdir(tmp_path) if n.endswith(".weights.h5"))
    assert names == ["epoch-0002.weights.h5", "epoch-0003.weights.h5"]
    assert store.latest()["epoch"] == 3


def test_checkpoint_store_refuses_nan_and_keeps_the_last_good_one(tmp_path):
    model, store = _model(), cb.CheckpointStore(str(tmp_path))
    assert store.save(model, 1)
    index_before = (tmp_path / "checkpoint.json").read_bytes()
    weights_before = (tmp_path / "epoch-0001.weights.h5").read_bytes()
    assert not store.save(model, 2, logs={"loss": float("nan")})
    kernel = model.layers[0].kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    assert not cb.weights_are_finite(model)
    assert not store.save(model, 2, logs={"loss": 1.0})
    assert (tmp_path / "checkpoint.json").read_bytes() == index_before
    assert (tmp_path / "epoch-0001.weights.h5").read_bytes() == weights_before
    assert not (tmp_path / "epoch-0002.weights.h5").exists()


def test_checkpoint_store_errors_speak_to_the_user(tmp_path):
    with pytest.raises(ValueError, match="keep"):
        cb.CheckpointStore(str(tmp_path), keep=0)
    store = cb.CheckpointStore(str(tmp_path))
    store.save(_model(), 1)
    unbuilt = keras.Sequential([keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="build the model"):
        store.restore(unbuilt)
    os.remove(tmp_path / "epoch-0001.weights.h5")
    with pytest.raises(FileNotFoundError, match="epoch-0001"):
        store.latest()


# --------------------------------------------------------------------------------------------
# Resume, NaN stop, CSV, plots through fit() and the explicit loop
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("runner", ["fit", "loop"])
def test_resume_continues_exactly_where_it_stopped(tmp_path, rng, runner):
    x, y = _data(rng)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

    def run(model, epochs, extra_callbacks=()):
        cbs = list(extra_callbacks)
        if runner == "fit":
            return model.fit(ds, epochs=epochs, verbose=0, callbacks=cbs, shuffle=False)
        return loop.train(model, ds, epochs, verbose=0, callbacks=cbs)

    reference = _model()
    run(reference, 4)
    first = _model()
    run(first, 2, [cb.ResumableCheckpoint(str(tmp_path), verbose=False)])
    second = _model(seed=9)  # a new process would start from different weights
    resumer = cb.ResumableCheckpoint(str(tmp_path), verbose=False)
    history = run(second, 4, [resumer])
    assert resumer.resumed_from == 2
    assert len(history.history["loss"]) == 2  # only epochs 3 and 4 ran
    for a, b in zip(second.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert second._initial_epoch is None  # later fit() calls start at 0 again


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["fit", "loop"])
def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, rng, runner, capsys):
    x, y = _data(rng, n=56)
    x[48:] = np.nan  # the 7th batch of 8: epoch 2 (4 batches per epoch), batch 3
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()
    model = _model()
    stopper, ckpt = cb.StopOnNaN(), cb.ResumableCheckpoint(str(tmp_path / "ckpt"), verbose=False)
    csv_path = tmp_path / "history.csv"
    cbs = [stopper, ckpt, cb.AtomicCSVLogger(str(csv_path))]
    if runner == "fit":
        model.fit(ds, epochs=5, steps_per_epoch=4, verbose=0, callbacks=cbs)
    else:
        loop.train(model, ds, 5, steps_per_epoch=4, verbose=0, callbacks=cbs)
    assert stopper.stopped_at == (2, 3)
    assert "epoch 2, batch 3" in stopper.message
    err = capsys.readouterr().err
    assert "epoch 2, batch 3" in err
    assert "the last good checkpoint (epoch 1) stays in" in err  # said by the store, which knows
    assert ckpt.store.latest()["epoch"] == 1
    restored = _model(seed=3)
    assert ckpt.store.restore(restored) == 1
    assert cb.weights_are_finite(restored)
    assert not cb.weights_are_finite(model)  # the NaN reached the weights, not the file
    assert cb.read_history_csv(str(csv_path))["epoch"][0] == 1.0


def test_refused_checkpoint_says_what_is_kept(tmp_path, capsys):
    store = cb.CheckpointStore(str(tmp_path / "ckpt"))
    model = _model()
    assert not store.save(model, 1, {"loss": float("nan")})
    assert "no earlier checkpoint exists" in capsys.readouterr().err
    assert store.save(model, 1, {"loss": 1.0})
    assert not store.save(model, 2, {"loss": float("inf")})
    assert "the last good checkpoint (epoch 1)" in capsys.readouterr().err
    message = "training stopped. Try a lower learning rate"
    stopper = cb.StopOnNaN()
    stopper.set_model(model)
    stopper.on_train_batch_end(0, {"loss": float("nan")})
    assert message in stopper.message and "kept" not in stopper.message


def test_best_epoch_is_kept_atomically_and_remembered_across_a_resume(tmp_path, monkeypatch):
    saved = []  # every serialisation of a model to a weight file
    real_save = cb.atomic_save_weights
    monkeypatch.setattr(cb, "atomic_save_weights", lambda model, path: (saved.append(os.path.basename(path)), real_save(model, path))[1])

    def epoch_end(callback, model, epoch, val_loss):
        for w in model.trainable_weights:
            w.assign(w + 1.0)  # each epoch leaves different weights
        callback.on_epoch_end(epoch, {"loss": 1.0, "val_loss": val_loss})
        return [w.copy() for w in model.get_weights()]

    model = _model()
    first = cb.ResumableCheckpoint(str(tmp_path), verbose=False, monitor="val_loss")
    first.set_model(model)
    first.on_train_begin()
    best_weights = epoch_end(first, model, 0, 1.0)
    epoch_end(first, model, 1, 2.0)  # worse: the best stays epoch 1
    assert first.best == {"monitor": "val_loss", "value": 1.0, "epoch": 1, "weights": "best-epoch-0001.weights.h5"}
    # A new process: a fresh callback reads the best value back instead of starting from infinity.
    model2 = _model(seed=5)
    second = cb.ResumableCheckpoint(str(tmp_path), verbose=False, monitor="val_loss")
    second.set_model(model2)
    second.on_train_begin()
    assert second.resumed_from == 2 and second.best["epoch"] == 1
    epoch_end(second, model2, 2, 1.5)  # better than epoch 2, worse than epoch 1: not the best
    assert second.best["epoch"] == 1
    restored = _model(seed=7)
    restored.load_weights(second.best_weights_path)
    for a, b in zip(restored.get_weights(), best_weights):
        np.testing.assert_array_equal(a, b)
    saved.clear()
    new_best = epoch_end(second, model2, 3, 0.5)
    assert saved == ["best-epoch-0004.weights.h5"]
    assert second.best["epoch"] == 4 and second.store.latest()["best"]["epoch"] == 4
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("best-")) == ["best-epoch-0004.weights.h5"]
    restored.load_weights(second.best_weights_path)
    for a, b in zip(restored.get_weights(), new_best):
        np.testing.assert_array_equal(a, b)
    # A best epoch's state is serialised once; its epoch checkpoint is a copy of that file.
    assert (tmp_path / "epoch-0004.weights.h5").read_bytes() == (tmp_path / "best-epoch-0004.weights.h5").read_bytes()
    with pytest.raises(ValueError, match="mode"):
        cb.ResumableCheckpoint(str(tmp_path), mode="lowest")


def test_csv_logger_rewrites_rows_after_a_resume(tmp_path):
    path = str(tmp_path / "h.csv")
    model = _model()
    logger = cb.AtomicCSVLogger(path)
    logger.set_model(model)
    logger.on_train_begin()
    for epoch in range(3):
        logger.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "val_loss": 2.0})
    model._initial_epoch = 2  # as if resumed after epoch 2
    logger = cb.AtomicCSVLogger(path)
    logger.set_model(model)
    logger.on_train_begin()
    logger.on_epoch_end(2, {"loss": 0.25, "val_loss": 1.5, "dice": 0.7})
    columns = cb.read_history_csv(path)
    assert columns["epoch"] == [1.0, 2.0, 3.0]
    assert columns["loss"] == [1.0, 0.5, 0.25]
    assert np.isnan(columns["dice"][0]) and columns["dice"][2] == 0.7


def test_plot_history_writes_a_png(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("epoch,loss,val_loss,dice\n1,1.0,1.2,0.3\n2,0.5,0.8,0.6\n")
    out = cb.plot_history(str(path), str(tmp_path / "fig" / "loss.png"))
    data = Path(out).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert sorted(os.listdir(tmp_path / "fig")) == ["loss.png"]
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        cb.plot_history(str(tmp_path / "missing.csv"), str(tmp_path / "x.png"))
    (tmp_path / "bad.csv").write_text("loss\n1.0\n")
    with pytest.raises(ValueError, match="epoch"):
        cb.plot_history(str(tmp_path / "bad.csv"), str(tmp_path / "x.png"))


def test_plot_history_draws_the_chosen_panels_under_the_given_title(tmp_path, monkeypatch):
    import matplotlib.figure

    drawn = {}
    save = matplotlib.figure.Figure.savefig

    def spy(fig, *args, **kwargs):
        drawn["title"] = fig._suptitle.get_text()
        drawn["panels"] = [ax.get_title() for ax in fig.axes if ax.get_title()]
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    path = tmp_path / ".run.incomplete" / "h.csv"
    path.parent.mkdir()
    path.write_text("epoch,loss,val_loss,dice,val_dice,dice_bladder,accuracy\n1,1.0,1.2,0.3,0.2,0.1,0.9\n")
    plotter = cb.LossCurvePlotter(str(path), str(tmp_path / "loss.png"), title="baseline", keys=("loss", "dice", "lr"))
    plotter.set_model(_model())
    plotter.on_train_end()
    assert drawn == {"title": "baseline", "panels": ["loss", "dice"]}
    cb.plot_history(str(path), str(tmp_path / "all.png"))
    assert drawn["title"] == ".run.incomplete" and drawn["panels"] == ["loss", "accuracy", "dice", "dice_bladder"]


def test_loss_curve_plotter_redraws_after_every_epoch(tmp_path):
    csv_path, png = tmp_path / "h.csv", tmp_path / "loss.png"
    callbacks = keras.callbacks.CallbackList(
        [cb.AtomicCSVLogger(str(csv_path)), cb.LossCurvePlotter(str(csv_path), str(png), every=2)], model=_model()
    )
    callbacks.on_train_begin()
    callbacks.on_epoch_end(0, {"loss": 1.0})
    assert not png.exists()  # every=2: nothing drawn after epoch 1
    callbacks.on_epoch_end(1, {"loss": 0.5})
    assert png.read_bytes()[:4] == b"\x89PNG"
    png.unlink()
    callbacks.on_train_end()  # the last state is always drawn
    assert png.exists()
    assert cb.read_history_csv(str(csv_path))["epoch"] == [1.0, 2.0]
    drawn = png.stat().st_mtime_ns
    callbacks.on_train_begin()
    callbacks.on_train_end()  # ... once: the CSV has not changed since
    assert png.stat().st_mtime_ns == drawn
    callbacks.on_train_begin()
    callbacks.on_epoch_end(2, {"loss": 0.4})  # every=2: not drawn after epoch 3, so at the end
    assert png.stat().st_mtime_ns == drawn
    callbacks.on_train_end()
    assert png.stat().st_mtime_ns != drawn


# --------------------------------------------------------------------------------------------
# A real kill: SIGKILL a training process mid-epoch, start it again
# --------------------------------------------------------------------------------------------
_TRAIN_SCRIPT = '''
import json, os, sys, time
import keras, numpy as np
from training import callbacks as cb

def main(folder, epochs=6, batch_pause=0.0):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype("float32")
    y = (x[:, :1] - x[:, 1:2]).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")

    class Announce(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            print(f"BEGIN {epoch + 1}", flush=True)
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(batch_pause)  # long enough epochs to be killed inside one

    ckpt = cb.ResumableCheckpoint(os.path.join(folder, "ckpt"), verbose=False)
    model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[ckpt, cb.AtomicCSVLogger(os.path.join(folder, "history.csv")), Announce()])
    return {"resumed_from": ckpt.resumed_from, "weights": [w.tolist() for w in model.get_weights()]}

if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1], batch_pause=float(sys.argv[2]))), flush=True)
'''


@pytest.mark.slow
def test_sigkill_mid_epoch_then_restart_resumes(tmp_path):
    script = tmp_path / "train_run.py"
    script.write_text(_TRAIN_SCRIPT)
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    kill_epoch = 3

    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), "0.15"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 90
    try:
        for line in proc.stdout:  # wait until epoch 3 has started, then kill without warning
            if line.strip() == f"BEGIN {kill_epoch}" or time.monotonic() > deadline:
                break
        time.sleep(0.2)  # inside epoch 3 (5 batches x 0.15 s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    saved = json.loads((run_dir / "ckpt" / "checkpoint.json").read_text())["epoch"]
    assert saved in (kill_epoch - 1, kill_epoch)

    done = subprocess.run([sys.executable, str(script), str(run_dir), "0"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(l for l in done.stdout.splitlines() if l.startswith("RESULT "))[7:])
    assert result["resumed_from"] == saved
    assert cb.read_history_csv(str(run_dir / "history.csv"))["epoch"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]

    namespace = {"__name__": "reference"}
    exec(compile(_TRAIN_SCRIPT, "train_run.py", "exec"), namespace)
    reference = namespace["main"](str(tmp_path / "uninterrupted"))
    for resumed, straight in zip(result["weights"], reference["weights"]):
        assert np.all(np.isfinite(resumed))
        np.testing.assert_allclose(resumed, straight, rtol=1e-5, atol=1e-6)
