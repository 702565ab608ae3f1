"""Run the kit's trainers on one device and under MirroredStrategy over two logical CPUs; compare.

TensorFlow fixes its logical devices when it initialises, so the comparison runs in a subprocess
(this file as a script); every trainer case runs in that one process to pay TensorFlow's start-up
once. Each case trains the same seeded networks on the same global batches three ways:

- ``one``: ``fit()`` under the default strategy (one device);
- ``two_fit``: ``fit()`` under ``MirroredStrategy`` with two replicas (half the batch each);
- ``two_run``: the trainer's own ``train_step`` inside an explicit ``strategy.run`` loop, reduced with
  ``strategy.reduce("MEAN", ...)``, as ``training.loop`` does.

Randomness inside the steps (GAN noise, diffusion noise and timesteps, mean-teacher perturbations)
is switched off or passed in with the batch, so the three runs must agree to float32 round-off.

Used by the tests through :func:`mirrored_results` (cached per test session)::

    results = mirrored_results()
    results["gan"]["one"]["history"]["d_loss"]
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASES = ("gan", "pix2pix", "mean_teacher", "multitask_fixed", "multitask_uncertainty", "task_conditioned",
         "registration", "diffusion", "dann", "mil")
EPOCHS = 2
GLOBAL_BATCH = 8


def cache_path(run_id: str) -> Path:
    """Where the results of test run ``run_id`` (pytest-xdist's ``testrunuid``) are kept."""
    return Path(tempfile.gettempdir()) / f"kit-mirrored-trainers-{run_id}.json"


def start_in_background(run_id: str) -> subprocess.Popen:
    """Start the subprocess now, without waiting (called by the pytest-xdist controller at start-up).

    The two workers are then busy with other tests while it runs, instead of one of them running
    it and the other idling on the lock when it reaches a second MirroredStrategy test.
    """
    cache = cache_path(run_id)
    with open(cache.with_suffix(".log"), "w") as log:
        process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--out", str(cache), *CASES],
                                   cwd=ROOT, env=_env(), stdout=log, stderr=log, start_new_session=True)
    cache.with_suffix(".started").touch()
    return process


def clean_up(run_id: str) -> None:
    """Delete the files of test run ``run_id`` (its subprocess has ended)."""
    for suffix in (".json", ".log", ".started", ".lock"):
        cache_path(run_id).with_suffix(suffix).unlink(missing_ok=True)


@functools.lru_cache(maxsize=None)
def mirrored_results(timeout: float = 540.0) -> dict:
    """Run every case in a subprocess (once per test session) and return ``{case: {run: summary}}``.

    A summary is ``{"history": {name: [per-epoch values]}, "weights": [sum |w| per weight]}``;
    a case that raised holds ``{"error": traceback}`` instead. Under pytest-xdist the workers of one
    run share the result through a file: the controller starts the subprocess when the session
    starts (``tests/conftest.py``) and the tests wait for its file; without that, the first worker
    to ask runs it and the others wait for it. Either way the two-replica training runs once per
    session, not once per worker.
    """
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id is None:
        return _run_cases(timeout)
    from data_utils.io import atomic_write_text

    cache = cache_path(run_id)
    if cache.with_suffix(".started").exists():
        deadline = time.monotonic() + timeout
        while not cache.exists():
            if time.monotonic() > deadline:
                log = cache.with_suffix(".log")
                raise RuntimeError(f"mirrored_trainers.py wrote no results in {timeout:.0f} s:\n"
                                   f"{log.read_text()[-4000:] if log.exists() else ''}")
            time.sleep(1.0)
        return _read(cache)
    with open(cache.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not cache.exists():
            atomic_write_text(cache, json.dumps(_run_cases(timeout)))
        return _read(cache)


def _read(cache: Path) -> dict:
    results = json.loads(cache.read_text())
    if "script_error" in results:
        raise RuntimeError(f"mirrored_trainers.py failed:\n{results['script_error'][-4000:]}")
    return results


def _env() -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}


def _run_cases(timeout: float) -> dict:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *CASES],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"mirrored_trainers.py failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_same_as_one_device(case: str, loss_tol: float = 1e-5, weight_tol: float = 1e-3) -> dict:
    """Assert that both two-replica runs of ``case`` reproduce the one-device run; return the gaps.

    Losses must agree to ``loss_tol`` (absolute and relative); the summed absolute weights to
    ``weight_tol`` (Adam turns round-off in near-zero gradients into steps of up to ``lr``, so a
    weight that receives no signal can differ by more than the losses do).

    Returns:
        ``{run: largest absolute loss difference}`` for the report.
    """
    import numpy as np

    runs = mirrored_results()[case]
    assert "error" not in runs, runs.get("error")
    one = runs["one"]
    gaps = {}
    for run in ("two_fit", "two_run"):
        other = runs[run]
        assert sorted(other["history"]) == sorted(one["history"]), run
        for key, values in one["history"].items():
            assert np.all(np.isfinite(values)), (case, key)
            np.testing.assert_allclose(other["history"][key], values, rtol=loss_tol, atol=loss_tol,
                                       err_msg=f"{case} {run} {key}")
        np.testing.assert_allclose(other["weights"], one["weights"], rtol=weight_tol, atol=weight_tol,
                                   err_msg=f"{case} {run} weights")
        gaps[run] = max(abs(a - b) for k in one["history"] for a, b in zip(one["history"][k], other["history"][k]))
    return gaps


# --------------------------------------------------------------------------------------------
# The script (runs in the subprocess)
# --------------------------------------------------------------------------------------------


def _cases():
    """``{name: (make_trainer, dataset)}``; ``make_trainer()`` builds seeded networks and compiles."""
    import keras
    import numpy as np
    import tensorflow as tf
    from keras import layers

    from training import losses

    rng = np.random.default_rng(0)
    n = GLOBAL_BATCH * 2  # two steps per epoch

    def batches(data):
        return tf.data.Dataset.from_tensor_slices(data).batch(GLOBAL_BATCH, drop_remainder=True)

    def conv_net(shape, out_channels, activation=None, pool=False):
        inp = keras.Input(shape)
        h = layers.Conv2D(4, 3, padding="same", activation="tanh")(inp)
        if pool:
            h = layers.GlobalAveragePooling2D()(h)
            out = layers.Dense(out_channels, activation=activation)(h)
        else:
            out = layers.Conv2D(out_channels, 3, padding="same", activation=activation)(h)
        return keras.Model(inp, out)

    images = rng.normal(size=(n, 8, 8, 1)).astype("float32")
    labels = rng.integers(0, 2, n).astype("int32")
    masks = rng.integers(0, 3, (n, 8, 8)).astype("int32")
    vectors = rng.normal(size=(n, 4)).astype("float32")

    def gan():
        from training.adversarial import GANTrainer
        g = keras.Sequential([keras.Input((3,)), layers.Dense(64, activation="tanh"), layers.Reshape((8, 8, 1))])
        d = conv_net((8, 8, 1), 1, pool=True)
        t = GANTrainer(g, d, latent_dim=3, gan_loss="non_saturating", seed=0)
        t.compile(keras.optimizers.Adam(1e-2), keras.optimizers.Adam(1e-2))
        return t

    def pix2pix():
        from training.adversarial import Pix2PixTrainer
        t = Pix2PixTrainer(conv_net((8, 8, 1), 1), conv_net((8, 8, 2), 1), l1_weight=10.0, gan_loss="least_squares")
        t.compile(keras.optimizers.Adam(1e-2), keras.optimizers.Adam(1e-2))
        return t

    def mean_teacher():
        from training.semi_supervised import MeanTeacher
        t = MeanTeacher(conv_net((8, 8, 1), 3, "softmax"), supervised_loss=losses.dice_ce_loss,
                        rampup_steps=3, ema_decay=0.9, rotation=0.0, translation=0.0, scale=0.0, noise_std=0.0)
        t.compile(keras.optimizers.Adam(1e-2))
        return t

    def multitask(weighting):
        from training.multitask import MultiTaskTrainer
        inp = keras.Input((8, 8, 1))
        h = layers.Conv2D(4, 3, padding="same", activation="tanh")(inp)
        seg = layers.Conv2D(3, 1, activation="softmax")(h)
        cls = layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(h))
        model = keras.Model(inp, {"segmentation": seg, "classification": cls})
        t = MultiTaskTrainer(model, {"segmentation": losses.dice_ce_loss, "classification": losses.cross_entropy},
                             weighting=weighting)
        t.compile(keras.optimizers.Adam(1e-2))
        return t

    def task_conditioned():
        from training.multitask import TaskConditionedTrainer
        image, task = keras.Input((8, 8, 1)), keras.Input((2,))
        h = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, padding="same", activation="tanh")(image))
        out = layers.Dense(2, activation="softmax")(layers.Concatenate()([h, task]))
        t = TaskConditionedTrainer(keras.Model([image, task], out), 2, losses.cross_entropy)
        t.compile(keras.optimizers.Adam(1e-2))
        return t

    def registration():
        from training.registration_training import RegistrationTrainer
        net = conv_net((8, 8, 2), 2)
        t = RegistrationTrainer(net, similarity="ssd", regulariser="gradient_norm", regularisation_weight=0.1,
                                label_weight=0.5)
        t.compile(keras.optimizers.Adam(1e-2))
        return t

    def diffusion():
        from training.diffusion_training import DiffusionTrainer
        x_t, t = keras.Input((8, 8, 1)), keras.Input((), dtype="int32")
        t_embedding = layers.Reshape((1, 1, 4))(layers.Embedding(10, 4)(t))
        h = layers.Conv2D(4, 3, padding="same")(x_t) + t_embedding
        net = keras.Model([x_t, t], layers.Conv2D(1, 3, padding="same")(keras.activations.tanh(h)))
        t = DiffusionTrainer(net, timesteps=10, ema_decay=0.9)
        t.compile(keras.optimizers.Adam(1e-2))
        return t

    def dann():
        from training.domain_adaptation import DANNTrainer
        fe = keras.Sequential([keras.Input((4,)), layers.Dense(6, activation="tanh")])
        lc = keras.Sequential([keras.Input((6,)), layers.Dense(2, activation="softmax")])
        dc = keras.Sequential([keras.Input((6,)), layers.Dense(1)])
        t = DANNTrainer(fe, lc, dc, total_steps=4)
        t.compile(keras.optimizers.Adam(1e-2))
        return t

    def mil():
        from training.mil import MILTrainer, attention_mil_model
        t = MILTrainer(attention_mil_model((4,), embedding_dim=6, attention_dim=5, max_instances=3))
        t.compile(keras.optimizers.Adam(1e-2))
        return t

    rand01 = rng.random((n, 8, 8, 1)).astype("float32")
    bag_mask = np.ones((n, 3), "float32")
    bag_mask[::2, 2] = 0.0
    return {
        "gan": (gan, batches({"image": images, "latent": rng.normal(size=(n, 3)).astype("float32")})),
        "pix2pix": (pix2pix, batches({"image": images, "target": np.tanh(images)})),
        "mean_teacher": (mean_teacher, batches({"image": images, "label": masks, "unlabelled": images[::-1]})),
        "multitask_fixed": (lambda: multitask("fixed"),
                            batches({"image": images, "segmentation": masks, "classification": labels})),
        "multitask_uncertainty": (lambda: multitask("uncertainty"),
                                  batches({"image": images, "segmentation": masks, "classification": labels})),
        "task_conditioned": (task_conditioned, batches({"image": images, "task": labels, "label": labels[::-1].copy()})),
        "registration": (registration, batches({
            "moving": rand01, "fixed": rand01[::-1].copy(),
            "moving_label": (rand01 > 0.5).astype("float32"), "fixed_label": (rand01[::-1] > 0.5).astype("float32"),
        })),
        "diffusion": (diffusion, batches({
            "image": np.tanh(images), "noise": rng.normal(size=images.shape).astype("float32"),
            "timestep": rng.integers(0, 10, n).astype("int32"),
        })),
        "dann": (dann, batches(({"image": vectors, "label": labels}, {"image": vectors[::-1] + 1.0}))),
        "mil": (mil, batches({"bag": rng.normal(size=(n, 3, 4)).astype("float32"), "mask": bag_mask, "label": labels})),
    }


def _summary(history: dict, trainer) -> dict:
    import numpy as np

    return {
        "history": {k: [float(v) for v in vs] for k, vs in history.items()},
        "weights": [float(np.sum(np.abs(w))) for w in trainer.get_weights()],
    }


def _explicit_loop(trainer, dataset, strategy) -> dict:
    """Epochs of ``strategy.run(trainer.train_step)``; returns the last step's logs of every epoch."""
    import tensorflow as tf

    @tf.function
    def step(batch):
        logs = strategy.run(trainer.train_step, args=(batch,))
        return {k: strategy.reduce("MEAN", v, axis=None) for k, v in logs.items()}

    history: dict[str, list] = {}
    for _ in range(EPOCHS):
        trainer.reset_metrics()
        for batch in strategy.experimental_distribute_dataset(dataset):
            logs = step(batch)
        for k, v in logs.items():
            history.setdefault(k, []).append(float(v))
    return history


def main(names: list[str]) -> None:
    from training import distribute

    two = distribute.get_strategy(num_cpu_replicas=2)  # before TensorFlow initialises
    import keras
    import tensorflow as tf

    cases = _cases()
    one = tf.distribute.get_strategy()
    out = {}
    for name in names:
        make, dataset = cases[name]
        runs = {}
        start = time.perf_counter()
        try:
            for run, strategy in (("one", one), ("two_fit", two), ("two_run", two)):
                keras.backend.clear_session()
                keras.utils.set_random_seed(7)
                with strategy.scope():
                    trainer = make()
                if run == "two_run":
                    history = _explicit_loop(trainer, dataset, strategy)
                else:
                    history = trainer.fit(dataset, epochs=EPOCHS, verbose=0, shuffle=False).history
                runs[run] = _summary(history, trainer)
        except Exception:  # reported to the test, which shows the traceback
            import traceback

            runs = {"error": traceback.format_exc()}
        out[name] = runs
        cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime
        print(f"{name}: {time.perf_counter() - start:.1f} s wall, {cpu:.1f} s cpu so far", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--out"]:  # started in the background: the results (or the failure) go to a file
        out, names = Path(args[1]), args[2:] or list(CASES)
        import contextlib
        import io
        import traceback

        from data_utils.io import atomic_write_text

        buffer = io.StringIO()
        try:
            with contextlib.redirect_stdout(buffer):
                main(names)
            atomic_write_text(out, buffer.getvalue().strip().splitlines()[-1])
        except BaseException:
            atomic_write_text(out, json.dumps({"script_error": traceback.format_exc()}))
            raise
    else:
        main(args or list(CASES))
