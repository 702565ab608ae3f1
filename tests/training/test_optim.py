"""Tests for training.optim: optimisers by name, schedules with warm-up, clipping, EMA, serialisation."""

import math

import keras
import numpy as np
import pytest

from training import optim


def _minimise_quadratic(optimizer, steps=60):
    """Run ``steps`` updates on ``|w - 3|^2`` from ``w = 0``; return the final distance to the optimum."""
    w = keras.Variable(np.zeros(4, dtype="float32"))
    for _ in range(steps):
        grad = 2.0 * (w.numpy() - 3.0)
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(grad), w)])
    return float(np.abs(w.numpy() - 3.0).max())


@pytest.mark.parametrize(
    "name,cls,lr", [("sgd", "SGD", 0.1), ("momentum", "SGD", 0.05), ("nesterov", "SGD", 0.05), ("adagrad", "Adagrad", 1.0),
                    ("rmsprop", "RMSprop", 0.1), ("adam", "Adam", 0.3), ("adamw", "AdamW", 0.3)]
)
def test_every_optimizer_builds_and_minimises(name, cls, lr):
    opt = optim.get_optimizer(name, lr)
    assert type(opt).__name__ == cls
    assert _minimise_quadratic(opt) < 0.3  # from a distance of 3


def test_momentum_flags():
    assert optim.get_optimizer("sgd").momentum == 0.0
    heavy = optim.get_optimizer("momentum")
    assert heavy.momentum == 0.9 and not heavy.nesterov
    nesterov = optim.get_optimizer("nesterov", momentum=0.8)
    assert nesterov.momentum == 0.8 and nesterov.nesterov
    assert optim.get_optimizer("rmsprop").momentum == 0.0
    assert optim.get_optimizer("adamw").weight_decay == pytest.approx(0.004)
    assert optim.get_optimizer("adam", weight_decay=1e-4).weight_decay == pytest.approx(1e-4)
    assert optim.get_optimizer("ADAM", beta_1=0.5).beta_1 == 0.5
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.get_optimizer("lbfgs")


def test_gradient_clipping_limits_the_step():
    for kwargs in ({"clipnorm": 0.01}, {"global_clipnorm": 0.01}, {"clipvalue": 0.005}):
        opt = optim.get_optimizer("sgd", 1.0, **kwargs)
        w = keras.Variable(np.zeros(4, dtype="float32"))
        opt.apply_gradients([(keras.ops.ones(4) * 100.0, w)])
        assert np.linalg.norm(w.numpy()) <= 0.01 + 1e-6, kwargs
        assert np.linalg.norm(w.numpy()) > 0.0


def test_constant_and_cosine_schedules():
    assert optim.make_schedule("constant", 0.01) == 0.01
    cosine = optim.make_schedule("cosine", 0.1, decay_steps=100, alpha=0.1)
    assert optim.learning_rate_at(cosine, 0) == pytest.approx(0.1)
    assert optim.learning_rate_at(cosine, 50) == pytest.approx(0.1 * (0.1 + 0.9 * 0.5), rel=1e-5)
    assert optim.learning_rate_at(cosine, 100) == pytest.approx(0.01, rel=1e-5)
    assert optim.learning_rate_at(cosine, 500) == pytest.approx(0.01, rel=1e-5)


def test_step_and_exponential_schedules():
    step = optim.make_schedule("step", 1.0, decay_steps=10, gamma=0.5)
    assert [optim.learning_rate_at(step, s) for s in (0, 9, 10, 25)] == pytest.approx([1.0, 1.0, 0.5, 0.25])
    smooth = optim.make_schedule("exponential", 1.0, decay_steps=10, gamma=0.5)
    assert optim.learning_rate_at(smooth, 5) == pytest.approx(math.sqrt(0.5), rel=1e-5)
    with pytest.raises(ValueError, match="decay_steps"):
        optim.make_schedule("cosine", 0.1)
    with pytest.raises(ValueError, match="unknown schedule"):
        optim.make_schedule("cyclic", 0.1, decay_steps=5)


def test_linear_warmup_then_schedule():
    schedule = optim.make_schedule("step", 0.1, decay_steps=10, gamma=0.5, warmup_steps=4)
    values = [optim.learning_rate_at(schedule, s) for s in (0, 1, 3, 4, 13, 14)]
    assert values == pytest.approx([0.025, 0.05, 0.1, 0.1, 0.1, 0.05])
    constant = optim.make_schedule("constant", 0.2, warmup_steps=2)
    assert [optim.learning_rate_at(constant, s) for s in (0, 1, 100)] == pytest.approx([0.1, 0.2, 0.2])
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.LinearWarmup(0.1, 0)


def test_schedules_and_optimizers_serialise(tmp_path):
    schedule = optim.make_schedule("cosine", 0.01, decay_steps=50, warmup_steps=5)
    opt = optim.get_optimizer("adamw", schedule, global_clipnorm=1.0)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(restored, keras.optimizers.AdamW) and restored.global_clipnorm == 1.0
    for step in (0, 3, 5, 30):
        assert optim.learning_rate_at(restored, step) == pytest.approx(optim.learning_rate_at(schedule, step))
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=opt, loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer._learning_rate, optim.LinearWarmup)
    assert int(loaded.optimizer.iterations) == 1


def test_ema_weights_are_written_into_the_model_after_fit(rng):
    x = rng.normal(size=(64, 3)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5]], dtype="float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    opt = optim.get_optimizer("sgd", 0.05, use_ema=True, ema_momentum=0.9)
    model.compile(optimizer=opt, loss="mse")
    model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    averages = [v.numpy() for v in opt._model_variables_moving_average]
    for weight, average in zip(model.trainable_weights, averages):
        np.testing.assert_allclose(weight.numpy(), average, rtol=1e-6)
    assert model.evaluate(x, y, verbose=0) < 0.5 * float(np.mean(y**2))


def test_get_spans_the_run_with_a_schedule():
    opt = optim.get("adam", 0.01, total_steps=100, warmup_steps=10, clipnorm=1.0)
    assert isinstance(opt, keras.optimizers.Adam) and opt.clipnorm == 1.0
    assert optim.learning_rate_at(opt, 0) == pytest.approx(0.001)
    assert optim.learning_rate_at(opt, 10) == pytest.approx(0.01)
    assert optim.learning_rate_at(opt, 55) == pytest.approx(0.005, rel=1e-4)  # half-way through the cosine
    assert optim.learning_rate_at(opt, 100) == pytest.approx(0.0, abs=1e-8)
    assert optim.learning_rate_at(optim.get("sgd", 0.1), 1000) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="total_steps"):
        optim.get("adam", total_steps=5, warmup_steps=5)


def _fit_twice(make_optimizer_a, make_optimizer_b, build, x, y, **compile_kwargs):
    """Train the same seeded model with two optimisers; return both final weights and optimiser
    variables (the step count, the learning rate, then each weight's m and v)."""
    results = []
    for make in (make_optimizer_a, make_optimizer_b):
        keras.utils.set_random_seed(1)
        model = build()
        model.compile(make(), "mse", **compile_kwargs)
        model.fit(x, y, epochs=4, batch_size=8, verbose=0, shuffle=False)
        results.append([np.asarray(w) for w in model.weights] + [np.asarray(v) for v in model.optimizer.variables])
    return results


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_fused_adam_matches_keras_adam(rng, name, jit_compile):
    """The kit's Adam and AdamW (one fused kernel per variable) give Keras' updates to round-off,
    in graph mode and compiled by XLA; weights and both moments, after 32 updates."""
    x = rng.normal(size=(64, 5)).astype("float32")
    y = rng.normal(size=(64, 2)).astype("float32")
    build = lambda: keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    reference = keras.optimizers.Adam if name == "adam" else keras.optimizers.AdamW
    kit, ref = _fit_twice(lambda: optim.get_optimizer(name, 0.01), lambda: reference(0.01), build, x, y,
                          jit_compile=jit_compile)
    assert type(optim.get_optimizer(name, 0.01)) is (optim.Adam if name == "adam" else optim.AdamW)
    assert len(kit) == len(ref) == 4 + 2 + 2 * 4  # 4 weights, step and rate, m and v of each weight
    for a, b in zip(kit, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not np.allclose(kit[0], _fit_twice(lambda: optim.get_optimizer(name, 0.0), lambda: reference(0.0),
                                              build, x, y)[0][0])  # the weights moved


def test_fused_adam_with_sparse_gradients_and_amsgrad(rng):
    """An embedding's sparse gradient (``IndexedSlices``) and AMSGrad take Keras' own update: same results."""
    ids = rng.integers(0, 10, size=(64, 3))
    y = rng.normal(size=(64, 1)).astype("float32")
    build = lambda: keras.Sequential([keras.Input((3,), dtype="int32"), keras.layers.Embedding(10, 4),
                                      keras.layers.Flatten(), keras.layers.Dense(1)])
    for kwargs in ({}, {"amsgrad": True}):
        kit, ref = _fit_twice(lambda: optim.get_optimizer("adam", 0.01, **kwargs),
                              lambda: keras.optimizers.Adam(0.01, **kwargs), build, ids, y)
        for a, b in zip(kit, ref):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_fused_adam_is_saved_and_loaded_with_the_model(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=optim.get_optimizer("adam", 0.01, beta_1=0.8), loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is optim.Adam and loaded.optimizer.beta_1 == pytest.approx(0.8)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
