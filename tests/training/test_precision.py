"""Tests for training.precision: the policy switch, loss scaling for float16, and mixed-precision training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from training import loop, precision


@pytest.fixture(autouse=True)
def _float32_afterwards():
    yield
    precision.disable()  # never leak a 16-bit policy into other tests


def test_set_policy_and_disable():
    assert precision.set_policy("mixed_bfloat16") == "mixed_bfloat16"
    assert precision.current_policy() == "mixed_bfloat16"
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    assert layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32"
    precision.disable()
    assert precision.current_policy() == "float32"
    assert keras.layers.Dense(2).compute_dtype == "float32"


def test_auto_is_float16_on_gpu_and_float32_on_cpu():
    expected = "mixed_float16" if precision.gpu_available() else "float32"
    assert precision.resolve_policy("auto") == expected
    assert precision.set_policy("auto") == expected


def test_auto_with_cpu_bf16_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(precision, "gpu_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    assert precision.resolve_policy("auto", cpu_bf16=True) == "mixed_bfloat16"
    assert precision.resolve_policy("auto") == "float32"
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    assert precision.resolve_policy("auto", cpu_bf16=True) == "float32"
    monkeypatch.setattr(precision, "gpu_available", lambda: True)
    assert precision.resolve_policy("auto", cpu_bf16=True) == "mixed_float16"


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="mixed_float16"):
        precision.set_policy("float16")


def test_policy_context_restores_the_previous_policy():
    precision.set_policy("mixed_bfloat16")
    with precision.policy("mixed_float16") as name:
        assert name == "mixed_float16" == precision.current_policy()
    assert precision.current_policy() == "mixed_bfloat16"
    with pytest.raises(RuntimeError):
        with precision.policy("float32"):
            raise RuntimeError("boom")
    assert precision.current_policy() == "mixed_bfloat16"


def test_wrap_optimizer_adds_loss_scaling_only_for_float16():
    sgd = keras.optimizers.SGD(0.1)
    assert precision.wrap_optimizer(sgd, "float32") is sgd
    assert precision.wrap_optimizer(sgd, "mixed_bfloat16") is sgd
    wrapped = precision.wrap_optimizer(sgd, "mixed_float16")
    assert isinstance(wrapped, keras.optimizers.LossScaleOptimizer)
    assert precision.wrap_optimizer(wrapped, "mixed_float16") is wrapped
    with precision.policy("mixed_float16"):
        assert precision.needs_loss_scaling()
        assert isinstance(precision.wrap_optimizer("adam"), keras.optimizers.LossScaleOptimizer)
    assert not precision.needs_loss_scaling()


def test_cpu_supports_bf16_reads_the_cpu_flags():
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        flags = ""
    assert precision.cpu_supports_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_small_conv_net_outputs_float32_probabilities_under_bfloat16():
    with precision.policy("mixed_bfloat16"):
        model = precision.small_conv_net((16, 16, 1), num_classes=3, width=4)
    out = model(np.zeros((2, 16, 16, 1), "float32"))
    assert out.dtype == "float32" and tuple(out.shape) == (2, 3)
    np.testing.assert_allclose(np.sum(keras.ops.convert_to_numpy(out), axis=-1), 1.0, rtol=1e-5)
    assert model.layers[1].compute_dtype == "bfloat16"


@pytest.mark.slow
@pytest.mark.parametrize("policy_name", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_training_follows_float32(policy_name):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (x[:, :1] * 2.0 - x[:, 1:2]).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices({"image": x, "label": y}).batch(16)
    losses = {}
    for name in ("float32", policy_name):
        with precision.policy(name):
            keras.utils.set_random_seed(0)
            model = keras.Sequential([
                keras.Input((8,)), keras.layers.Dense(16, activation="tanh"),
                keras.layers.Dense(1), keras.layers.Activation("linear", dtype="float32"),
            ])
            optimizer = precision.wrap_optimizer(keras.optimizers.SGD(0.05))
        history = loop.train(model, ds, 4, loss_fn=keras.losses.MeanSquaredError(reduction=None),
                             optimizer=optimizer, verbose=0)
        losses[name] = history.history["loss"]
        assert model.layers[0].kernel.dtype == "float32"  # master weights stay float32
    assert losses[policy_name][-1] < 0.7 * losses[policy_name][0]
    # bfloat16 keeps ~3 significant digits, float16 ~4: the curves agree to a few per cent.
    np.testing.assert_allclose(losses[policy_name], losses["float32"], rtol=0.05)


@pytest.mark.slow
def test_measure_training_throughput_returns_samples_per_second():
    for clock in ("wall", "cpu"):
        value = precision.measure_training_throughput(
            "mixed_bfloat16", input_shape=(16, 16, 1), batch_size=4, steps=2, warmup=1, clock=clock
        )
        assert np.isfinite(value) and value > 0
    assert precision.current_policy() == "float32"  # the measurement does not leave its policy behind


def test_measure_training_throughput_rejects_an_unknown_clock():
    with pytest.raises(ValueError, match="clock"):
        precision.measure_training_throughput("float32", clock="gpu")
