"""Tests for training/trainer_base.py: global-batch scaling, EMA, ramps, batch unpacking."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from training import trainer_base as base


def test_global_mean_share_of_per_sample_losses_on_one_device():
    values = tf.constant([[1.0, 3.0], [5.0, 7.0], [0.0, 2.0]])  # per-sample means 2, 6, 1
    share = base.global_mean_share(values, global_batch=tf.constant(3.0))
    assert float(share) == pytest.approx(3.0)


def test_global_mean_share_of_an_empty_global_batch_is_zero_not_nan():
    assert float(base.global_mean_share(tf.zeros((0,)), global_batch=tf.constant(0.0))) == 0.0
    share = base.global_mean_share(tf.constant(4.0), tf.constant(0.0), local_batch=tf.constant(0.0))
    assert float(share) == 0.0


def test_global_mean_share_weights_a_scalar_mean_by_the_local_batch():
    share = base.global_mean_share(tf.constant(4.0), tf.constant(8.0), local_batch=tf.constant(2.0))
    assert float(share) == pytest.approx(1.0)  # 2 of 8 samples with mean 4 -> 1 of the global mean
    with pytest.raises(ValueError, match="local_batch"):
        base.global_mean_share(tf.constant(4.0), tf.constant(8.0))


def test_replica_helpers_outside_a_strategy_are_identities():
    x = tf.ones((5, 3))
    assert float(base.global_batch_size(x)) == 5.0
    assert float(base.replica_sum(tf.constant(2.5))) == 2.5
    assert int(base.replica_id()) == 0


def test_ema_update_moves_targets_towards_sources():
    target = keras.Variable(np.array([0.0, 10.0], "float32"))
    source = keras.Variable(np.array([1.0, 0.0], "float32"))
    counter = keras.Variable(np.array([3, 4], "int64"))
    base.ema_update([target, counter], [source, counter], 0.75)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(target), [0.25, 7.5])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(counter), [3, 4])  # integers untouched


def test_stateless_seed_changes_every_call():
    gen = keras.random.SeedGenerator(3)
    a, b = base.stateless_seed(gen).numpy(), base.stateless_seed(gen).numpy()
    assert a.shape == (2,) and not np.array_equal(a, b)


def test_sigmoid_rampup_and_dann_lambda_schedules():
    assert float(base.sigmoid_rampup(0, 10)) == pytest.approx(np.exp(-5.0))
    assert float(base.sigmoid_rampup(5, 10)) == pytest.approx(np.exp(-5.0 * 0.25))
    assert float(base.sigmoid_rampup(20, 10)) == pytest.approx(1.0)
    assert float(base.sigmoid_rampup(0, 0)) == 1.0
    lam = [float(base.dann_lambda(s, 100)) for s in (0, 10, 50, 100)]
    assert lam[0] == pytest.approx(0.0) and lam[-1] == pytest.approx(2 / (1 + np.exp(-10)) - 1)
    assert np.all(np.diff(lam) > 0)


def test_unpack_accepts_dicts_and_tuples_and_names_missing_keys():
    x, y = tf.zeros((2, 3)), tf.ones((2,))
    assert set(base.unpack({"image": x, "label": y, "extra": y}, ("image", "label"), "T")) == {"image", "label", "extra"}
    assert base.unpack((x, y), ("image", "label"), "T")["label"] is y
    with pytest.raises(KeyError, match="missing \\['label'\\]"):
        base.unpack({"image": x}, ("image", "label"), "T")
    with pytest.raises(ValueError, match="tuple of 1"):
        base.unpack((x,), ("image", "label"), "T")


def test_unpack_with_extra_images_accepts_the_dict_and_the_pair_forms():
    x, y, u = tf.zeros((2, 3)), tf.ones((2,)), tf.fill((4, 3), 2.0)
    forms = [
        {"image": x, "label": y, "unlabelled": u},
        {"image": x, "label": y, "unlabelled": {"image": u}},
        ((x, y), u),
        ({"image": x, "label": y}, {"image": u}),
        ((x, y), (u,)),
    ]
    for data in forms:
        images, labels, extra = base.unpack_with_extra_images(data, "unlabelled", "T", ("labelled", "unlabelled"))
        assert images is x and labels is y and extra is u
    with pytest.raises(KeyError, match="unlabelled"):
        base.unpack_with_extra_images({"image": x, "label": y}, "unlabelled", "T", ("labelled", "unlabelled"))
    with pytest.raises(KeyError, match="target part"):
        base.unpack_with_extra_images(((x, y), {"img": u}), "target_image", "T", ("source", "target"))
    with pytest.raises(ValueError, match="\\(source, target\\)"):
        base.unpack_with_extra_images(x, "target_image", "T", ("source", "target"))


def test_per_sample_loss_rebuilds_keras_losses_without_reduction():
    loss = base.per_sample_loss(keras.losses.MeanSquaredError(), "loss")
    values = loss(tf.zeros((4, 2)), tf.ones((4, 2)))
    assert tuple(values.shape) == (4,)
    assert base.per_sample_loss("mse", "loss")(tf.zeros((3, 2)), tf.ones((3, 2))).shape == (3,)
    with pytest.raises(ValueError, match="unknown Keras loss"):
        base.per_sample_loss("not_a_loss", "loss")
    with pytest.raises(TypeError, match="loss function"):
        base.per_sample_loss(3, "loss")


def test_check_positive_messages():
    base.check_positive(0.0, "w", "T", allow_zero=True)
    with pytest.raises(ValueError, match="T: w must be a finite number > 0"):
        base.check_positive(0.0, "w", "T")
    with pytest.raises(ValueError, match=">= 0"):
        base.check_positive(float("nan"), "w", "T", allow_zero=True)


def _dense_net(l2=0.0):
    inputs = keras.Input((3,))
    regularizer = keras.regularizers.L2(l2) if l2 else None
    outputs = keras.layers.Dense(2, kernel_initializer="ones", kernel_regularizer=regularizer)(inputs)
    return keras.Model(inputs, outputs)


def test_penalty_share_sums_the_networks_weight_penalties():
    net = _dense_net(l2=0.5)
    net(np.zeros((1, 3), "float32"))
    # L2(0.5) on a 3x2 kernel of ones: 0.5 * 6
    assert float(base.penalty_share(net)) == pytest.approx(3.0)
    assert float(base.penalty_share(_dense_net())) == 0.0


def test_weight_penalties_reach_the_trainers_updates(rng):
    """A kernel regulariser on a trained network must shrink its weights (it did not count before)."""
    from training import losses
    from training.multitask import MultiTaskTrainer

    x = rng.normal(size=(8, 3)).astype("float32")
    data = {"image": x, "out": np.zeros((8, 2), "float32")}
    kernels = {}
    for l2 in (0.0, 10.0):
        keras.utils.set_random_seed(0)
        trainer = MultiTaskTrainer(_dense_net(l2), {"out": losses.ssd_loss})
        trainer.compile(keras.optimizers.SGD(0.01))
        trainer.fit(data, batch_size=8, epochs=1, verbose=0)
        kernels[l2] = np.abs(trainer.network.layers[-1].kernel.numpy()).sum()
    assert kernels[10.0] < kernels[0.0] - 0.5  # 0.01 * 2 * 10 * 1 shrinks each of 6 weights by 0.2


def test_build_optimizers_builds_the_model_optimizer_or_defers_to_the_trainer():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    assert not model.optimizer.built
    base.build_optimizers(model)
    assert model.optimizer.built
    assert len(model.optimizer.variables) > 1  # iterations + Adam moments

    class WithOwnBuilder(keras.Model):
        calls = 0

        def build_optimizers(self):
            WithOwnBuilder.calls += 1

    base.build_optimizers(WithOwnBuilder())
    assert WithOwnBuilder.calls == 1
