"""Tests for training.distribute: strategy choice, TF_CONFIG helpers, loss scaling, and equal losses
on one device, two mirrored logical CPU devices and two workers on 127.0.0.1.

Logical CPU devices must be configured before TensorFlow initialises and a multi-worker strategy
owns its process, so those checks run in subprocesses (one per setting, several checks each).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from training import distribute

REPO = Path(__file__).resolve().parents[2]


def _run_python(code: str, timeout: float, env_extra: dict | None = None) -> dict:
    """Run ``code`` in a fresh interpreter at the repo root; return the JSON it prints last."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", **(env_extra or {}))
    env.pop("TF_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=timeout,
    )
    assert proc.returncode == 0, f"subprocess failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Fast checks in this process (one device, no TF_CONFIG)
# --------------------------------------------------------------------------------------------
@pytest.mark.skipif(len(tf.config.list_physical_devices("GPU")) > 1, reason="several GPUs: mirrored by design")
def test_get_strategy_on_one_device_is_the_default_strategy(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = distribute.get_strategy()
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1
    assert distribute.is_chief(strategy)
    assert distribute.num_replicas() == 1


def test_tf_config_workers_reads_the_cluster(monkeypatch):
    text = distribute.make_tf_config(["127.0.0.1:1001", "127.0.0.1:1002"], index=1)
    assert json.loads(text)["task"] == {"type": "worker", "index": 1}
    assert distribute.tf_config_workers(text) == ["127.0.0.1:1001", "127.0.0.1:1002"]
    monkeypatch.setenv("TF_CONFIG", text)
    assert len(distribute.tf_config_workers()) == 2
    monkeypatch.delenv("TF_CONFIG")
    assert distribute.tf_config_workers() == []


def test_tf_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="not valid JSON"):
        distribute.tf_config_workers("{cluster:")
    with pytest.raises(ValueError, match="cluster"):
        distribute.tf_config_workers('{"cluster": [1, 2]}')
    with pytest.raises(ValueError, match="index"):
        distribute.make_tf_config(["127.0.0.1:1"], index=1)
    with pytest.raises(ValueError, match="num_devices"):
        distribute.configure_cpu_devices(0)


def test_free_ports_are_distinct_and_bindable():
    import socket

    ports = distribute.free_ports(3)
    assert len(set(ports)) == 3
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_loss_scaling_on_one_replica():
    per_sample = tf.constant([1.0, 2.0, 3.0, 6.0])
    assert float(distribute.compute_average_loss(per_sample)) == pytest.approx(3.0)
    # The global batch (here 8 over all replicas) is the divisor, not the local batch.
    assert float(distribute.compute_average_loss(per_sample, global_batch_size=8)) == pytest.approx(1.5)
    # Extra axes are averaged per sample first.
    assert float(distribute.compute_average_loss(tf.ones((2, 3, 3)) * 4.0)) == pytest.approx(4.0)
    weighted = distribute.compute_average_loss(per_sample, sample_weight=tf.constant([1.0, 0.0, 0.0, 1.0]))
    assert float(weighted) == pytest.approx(7.0 / 4.0)
    assert float(distribute.scale_for_replicas(5.0)) == 5.0


def test_shard_by_data_sets_the_policy():
    ds = distribute.shard_by_data(tf.data.Dataset.range(4))
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA


# --------------------------------------------------------------------------------------------
# Two logical CPU devices (MirroredStrategy) vs one device, same global batch
# --------------------------------------------------------------------------------------------
_HELPERS = """
def summary(history, model):
    return {"history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
            "weights": [float(np.sum(np.abs(w))) for w in model.get_weights()]}

def regressor():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(1)])

def tiny_gan():
    from training.adversarial import GANTrainer  # two optimisers, its own train_step
    keras.utils.set_random_seed(1)
    gen = keras.Sequential([keras.Input((3,)), keras.layers.Dense(6)])
    disc = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])
    gan = GANTrainer(gen, disc, latent_dim=3, seed=0)
    gan.compile(keras.optimizers.SGD(0.05), keras.optimizers.SGD(0.05))
    return gan
"""


_MIRRORED = """
import json
from training import distribute
strategy = distribute.get_strategy(num_cpu_replicas=2)       # before anything initialises TF
import keras, numpy as np, tensorflow as tf
from training import loop, optim

out = {"strategy": [type(strategy).__name__, strategy.num_replicas_in_sync]}
try:
    distribute.configure_cpu_devices(3)
    out["reconfigure_error"] = ""
except RuntimeError as err:
    out["reconfigure_error"] = str(err)

# Helpers inside replicas: each replica holds 4 samples of loss 3 -> global mean 3.
run = lambda fn: float(strategy.reduce("SUM", strategy.run(fn), axis=None))
out["average_loss_sum"] = run(lambda: distribute.compute_average_loss(tf.fill([4], 3.0)))
out["scaled_sum"] = run(lambda: distribute.scale_for_replicas(tf.constant(2.0)))
out["keras_loss_sum"] = run(lambda: keras.losses.MeanSquaredError()(tf.zeros((4, 1)), tf.ones((4, 1))))

rng = np.random.default_rng(0)
x = rng.normal(size=(32, 6)).astype("float32")
y = (x[:, :1] * 2.0 - x[:, 1:2] + 0.5).astype("float32")
z = rng.normal(size=(32, 3)).astype("float32")
dict_ds = tf.data.Dataset.from_tensor_slices({"image": x, "label": y}).batch(8, drop_remainder=True)
tuple_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8, drop_remainder=True)
gan_ds = tf.data.Dataset.from_tensor_slices({"image": x, "latent": z}).batch(8, drop_remainder=True)

#HELPERS

for label, strat in (("one", tf.distribute.get_strategy()), ("two", strategy)):
    with strat.scope():
        m = regressor()
        opt = keras.optimizers.SGD(0.05, momentum=0.9)
    h = loop.train(m, dict_ds, 3, strategy=strat, verbose=0,
                   loss_fn=keras.losses.MeanSquaredError(reduction=None), optimizer=opt)
    out[f"teaching_{label}"] = summary(h, m)

    with strat.scope():
        m = regressor()
        m.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse")
    out[f"train_step_{label}"] = summary(loop.train(m, tuple_ds, 3, strategy=strat, verbose=0), m)

    with strat.scope():
        m = regressor()
        m.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse")
    out[f"fit_{label}"] = summary(m.fit(tuple_ds, epochs=3, verbose=0, shuffle=False), m)

    with strat.scope():  # the kit's Adam: its fused update must find each replica's copy of m and v
        m = regressor()
        m.compile(optimizer=optim.get_optimizer("adam", 0.01), loss="mse")
    out[f"fit_adam_{label}"] = summary(m.fit(tuple_ds, epochs=3, verbose=0, shuffle=False), m)

    for runner in ("loop", "fit"):
        with strat.scope():
            gan = tiny_gan()
        if runner == "loop":
            h = loop.train(gan, gan_ds, 2, strategy=strat, verbose=0)
        else:
            h = gan.fit(gan_ds, epochs=2, verbose=0, shuffle=False)
        out[f"gan_{runner}_{label}"] = summary(h, gan)

# Augmentation layers: each replica draws its own noise for its part of the batch.
from data_utils import augment
with strategy.scope():
    noise = augment.RandomGaussianNoise(seed=3, std=1.0, sample_std=False)
per_replica = strategy.run(tf.function(lambda: noise(tf.zeros((2, 8, 8, 1)), training=True)))
a, b = [v.numpy() for v in strategy.experimental_local_results(per_replica)]
out["augment_replica_max_difference"] = float(np.abs(a - b).max())
out["augment_replica_std"] = [float(a.std()), float(b.std())]

m = regressor()  # built outside the mirrored scope
m.compile(optimizer="sgd", loss="mse")
try:
    loop.train(m, tuple_ds, 1, strategy=strategy, verbose=0)
    out["outside_scope_error"] = ""
except ValueError as err:
    out["outside_scope_error"] = str(err)
print(json.dumps(out))
""".replace("#HELPERS", _HELPERS)


@pytest.fixture(scope="module")
def mirrored():
    return _run_python(_MIRRORED, timeout=300)


def _assert_same_run(a: dict, b: dict, rtol=1e-5, atol=1e-6):
    assert a["history"].keys() == b["history"].keys()
    for key in a["history"]:
        np.testing.assert_allclose(a["history"][key], b["history"][key], rtol=rtol, atol=atol, err_msg=key)
    np.testing.assert_allclose(a["weights"], b["weights"], rtol=rtol, atol=atol)


@pytest.mark.slow
def test_augmentation_layers_draw_different_randomness_on_each_replica(mirrored):
    # Same seed generator, same (zero) input on both replicas: the noise must still differ.
    assert mirrored["augment_replica_max_difference"] > 0.5
    assert mirrored["augment_replica_std"] == pytest.approx([1.0, 1.0], abs=0.25)


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus(mirrored):
    assert mirrored["strategy"] == ["MirroredStrategy", 2]
    assert "before TensorFlow creates" in mirrored["reconfigure_error"]
    assert mirrored["average_loss_sum"] == pytest.approx(3.0)
    assert mirrored["scaled_sum"] == pytest.approx(2.0)
    # Keras 3 loss objects already divide by the replica count (so do not scale them again).
    assert mirrored["keras_loss_sum"] == pytest.approx(1.0)
    assert "strategy.scope()" in mirrored["outside_scope_error"]


@pytest.mark.slow
@pytest.mark.parametrize("run", ["teaching", "train_step", "fit", "fit_adam", "gan_loop", "gan_fit"])
def test_two_replicas_match_one_device(mirrored, run):
    one, two = mirrored[f"{run}_one"], mirrored[f"{run}_two"]
    _assert_same_run(one, two)
    # The run trained: the loss moved (guards against comparing two untouched models).
    first_key = next(iter(one["history"]))
    assert one["history"][first_key][0] != one["history"][first_key][-1]


@pytest.mark.slow
def test_explicit_loop_matches_fit(mirrored):
    _assert_same_run(mirrored["train_step_one"], mirrored["fit_one"])
    _assert_same_run(mirrored["teaching_one"], mirrored["fit_one"])
    _assert_same_run(mirrored["gan_loop_one"], mirrored["gan_fit_one"])
    loss = mirrored["teaching_one"]["history"]["loss"]
    assert loss[-1] < 0.8 * loss[0]


# --------------------------------------------------------------------------------------------
# Two workers (MultiWorkerMirroredStrategy) as two processes on 127.0.0.1
# --------------------------------------------------------------------------------------------
_WORKER = """
import json, os, sys
from training import distribute
strategy = distribute.get_strategy()
import keras, numpy as np, tensorflow as tf
from training import loop

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 6)).astype("float32")
y = (x[:, :1] * 2.0 - x[:, 1:2] + 0.5).astype("float32")
ds = tf.data.Dataset.from_tensor_slices({"image": x, "label": y}).batch(16, drop_remainder=True)
multi = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
out = {"strategy": [multi, strategy.num_replicas_in_sync], "chief": distribute.is_chief(strategy)}
#HELPERS

for mode in ("teaching", "train_step"):
    with strategy.scope():
        m = regressor()
        opt = keras.optimizers.SGD(0.05, momentum=0.9)
        if mode == "train_step":
            m.compile(optimizer=opt, loss="mse")
    kwargs = dict(loss_fn=keras.losses.MeanSquaredError(reduction=None), optimizer=opt) if mode == "teaching" else {}
    out[mode] = summary(loop.train(m, ds, 3, strategy=strategy, verbose=0, **kwargs), m)

# A trainer with two optimisers and its own train_step (fit() fails under this strategy).
z = rng.normal(size=(64, 3)).astype("float32")
gan_ds = tf.data.Dataset.from_tensor_slices({"image": x, "latent": z}).batch(16, drop_remainder=True)
with strategy.scope():
    gan = tiny_gan()
out["gan"] = summary(loop.train(gan, gan_ds, 2, strategy=strategy, verbose=0), gan)
print(json.dumps(out), flush=True)
os._exit(0)  # skip the collective-ops shutdown handshake, which can wait for the peer
""".replace("#HELPERS", _HELPERS)

_REFERENCE = _WORKER.replace(
    "strategy = distribute.get_strategy()", "import tensorflow as tf\nstrategy = tf.distribute.get_strategy()"
)


@pytest.mark.slow
def test_two_workers_on_localhost_train_identically():
    ports = distribute.free_ports(2)
    workers = [f"127.0.0.1:{p}" for p in ports]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    procs = []
    for index in range(2):
        env_i = dict(env, TF_CONFIG=distribute.make_tf_config(workers, index))
        procs.append(subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_WORKER)], cwd=REPO, env=env_i,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    results = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=240)
            assert proc.returncode == 0, f"worker failed:\n{stderr[-4000:]}"
            results.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    w0, w1 = results
    assert w0["strategy"] == w1["strategy"] == [True, 2]
    assert (w0["chief"], w1["chief"]) == (True, False)
    modes = ("teaching", "train_step", "gan")
    for mode in modes:
        _assert_same_run(w0[mode], w1[mode], rtol=0, atol=0)   # the same all-reduced numbers
    # And the same as one process training on the same global batches.
    one = _one_device_reference()
    for mode in modes:
        _assert_same_run(w0[mode], one[mode])
    assert w0["teaching"]["history"]["loss"][-1] < w0["teaching"]["history"]["loss"][0]


def _one_device_reference() -> dict:
    """The worker script's runs on this process's single device (no subprocess needed)."""
    import contextlib
    import io

    code = textwrap.dedent(_REFERENCE).replace("os._exit(0)", "")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(compile(code, "<reference>", "exec"), {"__name__": "reference"})
    return json.loads(buffer.getvalue().strip().splitlines()[-1])
