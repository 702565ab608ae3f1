"""Tests for training.losses.segmentation (and the shared one-hot helpers): hand-computed values,
invariants, MONAI references, the Loss classes and serialisation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_utils.registry import REGISTRY
from training import losses as L
from tests.training.losses.helpers import softmax, to_numpy


def test_soft_dice_matches_hand_computed_value():
    # One sample, four pixels, two classes. Class 1 truth = [1, 1, 0, 0], prediction p1 = [.8, .6, .2, 0].
    truth = np.array([[1, 1, 0, 0]])
    p1 = np.array([[0.8, 0.6, 0.2, 0.0]], dtype="float32")
    pred = np.stack([1 - p1, p1], axis=-1)
    # class 1: 2 * (.8 + .6) / (2 + 1.6) = 0.77778
    # class 0: truth [0, 0, 1, 1], p0 = [.2, .4, .8, 1.]: 2 * (.8 + 1.) / (2 + 2.4) = 0.81818
    expected = 1 - (2 * 1.4 / 3.6 + 2 * 1.8 / 4.4) / 2
    got = to_numpy(L.soft_dice_loss(truth, pred, smooth_nr=0.0, smooth_dr=0.0))
    np.testing.assert_allclose(got, [expected], rtol=1e-6)
    fg_only = to_numpy(L.soft_dice_loss(truth, pred, include_background=False, smooth_nr=0.0, smooth_dr=0.0))
    np.testing.assert_allclose(fg_only, [1 - 2 * 1.4 / 3.6], rtol=1e-6)
    scores = to_numpy(L.soft_dice_score(truth, pred, smooth_nr=0.0, smooth_dr=0.0))
    np.testing.assert_allclose(scores, [[2 * 1.8 / 4.4, 2 * 1.4 / 3.6]], rtol=1e-6)


def test_label_formats_give_the_same_loss(seg_batch):
    labels, _, probs = seg_batch
    as_int = to_numpy(L.soft_dice_loss(labels, probs))
    as_channel = to_numpy(L.soft_dice_loss(labels[..., None], probs))
    as_one_hot = to_numpy(L.soft_dice_loss(np.eye(3, dtype="float32")[labels], probs))
    np.testing.assert_allclose(as_int, as_channel, rtol=1e-6)
    np.testing.assert_allclose(as_int, as_one_hot, rtol=1e-6)
    assert as_int.shape == (2,)


def test_dice_perfect_prediction_and_empty_masks():
    labels = np.zeros((1, 6, 6), dtype="int32")
    labels[0, 2:4, 2:4] = 1
    perfect = np.eye(2, dtype="float32")[labels]
    np.testing.assert_allclose(to_numpy(L.soft_dice_loss(labels, perfect)), [0.0], atol=1e-6)
    # Truth and prediction both empty for class 1: the smoothing makes Dice 1 (loss 0), never NaN.
    empty = np.zeros((1, 6, 6), dtype="int32")
    background_only = np.eye(2, dtype="float32")[empty]
    loss = to_numpy(L.soft_dice_loss(empty, background_only, include_background=False))
    np.testing.assert_allclose(loss, [0.0], atol=1e-6)
    # Empty truth but a confident false positive: loss close to 1.
    loss_fp = to_numpy(L.soft_dice_loss(empty, perfect, include_background=False))
    assert loss_fp[0] > 0.99


def test_batch_dice_pools_over_the_batch(seg_batch):
    labels, _, probs = seg_batch
    pooled = to_numpy(L.soft_dice_loss(labels, probs, batch=True))
    assert pooled.shape == ()
    onehot = np.eye(3)[labels]
    inter = (onehot * probs).sum(axis=(0, 1, 2))
    den = onehot.sum(axis=(0, 1, 2)) + probs.sum(axis=(0, 1, 2))
    np.testing.assert_allclose(pooled, np.mean(1 - 2 * inter / den), rtol=1e-5)


def test_from_logits_equals_softmax_first(seg_batch):
    labels, logits, probs = seg_batch
    for fn in (L.soft_dice_loss, L.generalized_dice_loss, L.tversky_loss, L.cross_entropy, L.focal_loss):
        np.testing.assert_allclose(
            to_numpy(fn(labels, logits, from_logits=True)), to_numpy(fn(labels, probs)), rtol=1e-4, err_msg=fn.__name__
        )


def test_losses_work_in_3d_and_return_float32_under_half_precision(rng):
    labels = rng.integers(0, 2, size=(2, 6, 6, 6))
    probs = softmax(rng.normal(size=(2, 6, 6, 6, 2)))
    for fn in (L.soft_dice_loss, L.generalized_dice_loss, L.dice_ce_loss, L.focal_loss, L.tversky_loss):
        out = fn(labels, probs.astype("float16"))
        assert out.dtype == "float32" and tuple(out.shape) == (2,), fn.__name__
        np.testing.assert_allclose(to_numpy(out), to_numpy(fn(labels, probs)), rtol=2e-3, err_msg=fn.__name__)


def test_single_sigmoid_channel_is_binary(rng):
    mask = rng.integers(0, 2, size=(2, 8, 8))
    p = rng.uniform(0.05, 0.95, size=(2, 8, 8, 1)).astype("float32")
    two_channel = np.concatenate([1 - p, p], axis=-1)
    np.testing.assert_allclose(
        to_numpy(L.soft_dice_loss(mask, p)), to_numpy(L.soft_dice_loss(mask, two_channel, include_background=False)), rtol=1e-5
    )
    np.testing.assert_allclose(to_numpy(L.cross_entropy(mask, p)), to_numpy(L.cross_entropy(mask, two_channel)), rtol=1e-5)
    logit = np.log(p / (1 - p))
    np.testing.assert_allclose(to_numpy(L.cross_entropy(mask, logit, from_logits=True)), to_numpy(L.cross_entropy(mask, p)), rtol=1e-4)


def test_mismatched_label_channels_raise(seg_batch):
    labels, _, probs = seg_batch
    with pytest.raises(ValueError, match="channels"):
        L.soft_dice_loss(np.eye(2)[labels % 2], probs)
    with pytest.raises(ValueError, match="rank"):
        L.soft_dice_loss(labels[0, 0], probs)


def test_generalized_dice_weights_small_structures_more():
    # Truth: class 1 large, class 2 tiny. Missing the tiny structure costs more under generalised Dice.
    labels = np.zeros((1, 10, 10), dtype="int32")
    labels[0, :5] = 1
    labels[0, 9, 9] = 2
    miss_tiny = np.eye(3, dtype="float32")[np.where(labels == 2, 0, labels)]
    plain = to_numpy(L.soft_dice_loss(labels, miss_tiny))[0]
    generalised = to_numpy(L.generalized_dice_loss(labels, miss_tiny))[0]
    assert generalised > plain
    uniform = to_numpy(L.generalized_dice_loss(labels, miss_tiny, weight_type="uniform", smooth_nr=0, smooth_dr=0))[0]
    onehot = np.eye(3)[labels]
    expected = 1 - 2 * (onehot * miss_tiny).sum() / (onehot.sum() + miss_tiny.sum())
    np.testing.assert_allclose(uniform, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="weight_type"):
        L.generalized_dice_loss(labels, miss_tiny, weight_type="cubic")


def test_cross_entropy_matches_keras_and_label_smoothing(seg_batch):
    labels, _, probs = seg_batch
    ref = keras.losses.SparseCategoricalCrossentropy(reduction=None)(labels, probs)
    np.testing.assert_allclose(to_numpy(L.cross_entropy(labels, probs)), to_numpy(ref).mean(axis=(1, 2)), rtol=1e-5)
    smooth_ref = keras.losses.CategoricalCrossentropy(label_smoothing=0.2, reduction=None)(np.eye(3)[labels], probs)
    np.testing.assert_allclose(
        to_numpy(L.cross_entropy(labels, probs, label_smoothing=0.2)), to_numpy(smooth_ref).mean(axis=(1, 2)), rtol=1e-5
    )
    np.testing.assert_allclose(to_numpy(L.smooth_labels(np.array([[0.0, 1.0]]), 0.2)), [[0.1, 0.9]], rtol=1e-6)
    with pytest.raises(ValueError, match="label_smoothing"):
        L.smooth_labels(np.array([[0.0, 1.0]]), 1.0)


def test_weighted_cross_entropy_hand_computed():
    labels = np.array([[0, 1]])
    probs = np.array([[[0.5, 0.5], [0.2, 0.8]]], dtype="float32")
    # voxel CEs: -log .5, -log .8; weights 1 and 3 -> (1 * 0.6931 + 3 * 0.2231) / 4
    expected = (np.log(2) + 3 * -np.log(0.8)) / 4
    np.testing.assert_allclose(to_numpy(L.cross_entropy(labels, probs, class_weights=[1, 3])), [expected], rtol=1e-5)
    np.testing.assert_allclose(
        to_numpy(L.cross_entropy(labels, probs, class_weights=[2, 2])), to_numpy(L.cross_entropy(labels, probs)), rtol=1e-6
    )
    with pytest.raises(ValueError, match="class_weights"):
        L.cross_entropy(labels, probs, class_weights=[1, 2, 3])


def test_focal_loss_reduces_to_cross_entropy_and_matches_keras(seg_batch):
    labels, _, probs = seg_batch
    np.testing.assert_allclose(to_numpy(L.focal_loss(labels, probs, gamma=0.0)), to_numpy(L.cross_entropy(labels, probs)), rtol=1e-5)
    ref = keras.losses.CategoricalFocalCrossentropy(alpha=0.25, gamma=2.0, reduction=None)(np.eye(3)[labels], probs)
    np.testing.assert_allclose(
        to_numpy(L.focal_loss(labels, probs, gamma=2.0, alpha=0.25)), to_numpy(ref).mean(axis=(1, 2)), rtol=1e-4
    )
    assert np.all(to_numpy(L.focal_loss(labels, probs)) < to_numpy(L.cross_entropy(labels, probs)))
    with pytest.raises(ValueError, match="gamma"):
        L.focal_loss(labels, probs, gamma=-1.0)


def test_tversky_half_half_is_dice_and_beta_punishes_misses(seg_batch):
    labels, _, probs = seg_batch
    np.testing.assert_allclose(
        to_numpy(L.tversky_loss(labels, probs, smooth_nr=0, smooth_dr=0)),
        to_numpy(L.soft_dice_loss(labels, probs, smooth_nr=0, smooth_dr=0)),
        rtol=1e-5,
    )
    # A prediction that misses half of the foreground (false negatives only).
    truth = np.zeros((1, 4, 4), dtype="int32")
    truth[0, :2] = 1
    under = np.where(np.arange(4)[None, :, None] < 1, truth, 0)
    pred = np.eye(2, dtype="float32")[under]
    fn_heavy = to_numpy(L.tversky_loss(truth, pred, alpha=0.1, beta=0.9, include_background=False))
    fp_heavy = to_numpy(L.tversky_loss(truth, pred, alpha=0.9, beta=0.1, include_background=False))
    assert fn_heavy[0] > fp_heavy[0]


def test_dice_ce_is_the_weighted_sum(seg_batch):
    labels, _, probs = seg_batch
    combined = to_numpy(L.dice_ce_loss(labels, probs, lambda_dice=0.7, lambda_ce=0.3))
    parts = 0.7 * to_numpy(L.soft_dice_loss(labels, probs)) + 0.3 * to_numpy(L.cross_entropy(labels, probs))
    np.testing.assert_allclose(combined, parts, rtol=1e-6)


def test_losses_are_differentiable_and_graph_safe(seg_batch):
    labels, logits, _ = seg_batch
    variable = tf.Variable(logits)

    def grads(fn):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(fn(labels, variable, from_logits=True))
        return tape.gradient(loss, variable)

    for fn in (L.soft_dice_loss, L.generalized_dice_loss, L.dice_ce_loss, L.focal_loss, L.tversky_loss):
        g = grads(fn).numpy()
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, fn.__name__
    # Inside a traced graph (as in fit()) the result is the same.
    np.testing.assert_allclose(tf.function(grads)(L.dice_ce_loss).numpy(), grads(L.dice_ce_loss).numpy(), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# References: MONAI (optional dependency)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # importing torch + MONAI takes several seconds
@pytest.mark.parametrize("spatial", [(9, 7), (5, 6, 4)])
@pytest.mark.parametrize("batch,include_background", [(False, True), (True, False)])
def test_dice_family_matches_monai(monai, rng, spatial, batch, include_background):
    ml = monai.losses
    labels = rng.integers(0, 3, size=(2, *spatial))
    labels[1] = np.where(labels[1] == 2, 0, labels[1])  # class 2 absent in sample 1
    logits = rng.normal(size=(2, *spatial, 3)).astype("float32")

    t_logits, t_labels = monai.channels_first(logits), monai.channels_first(labels[..., None].astype("int64"))
    common = dict(include_background=include_background, to_onehot_y=True, softmax=True, batch=batch)
    cases = [
        (L.soft_dice_loss, ml.DiceLoss(**common), {}),
        (L.generalized_dice_loss, ml.GeneralizedDiceLoss(**common), {}),
        (L.tversky_loss, ml.TverskyLoss(alpha=0.3, beta=0.7, **common), dict(alpha=0.3, beta=0.7)),
        (L.dice_ce_loss, ml.DiceCELoss(**common), {}),
    ]
    for fn, ref, kwargs in cases:
        ours = to_numpy(fn(labels, logits, include_background=include_background, batch=batch, from_logits=True, **kwargs))
        expected = float(ref(t_logits, t_labels))
        np.testing.assert_allclose(np.mean(ours), expected, rtol=1e-4, atol=1e-6, err_msg=fn.__name__)


def test_loss_classes_match_functions_and_round_trip(seg_batch):
    labels, _, probs = seg_batch
    for name in ("dice", "generalized_dice", "dice_ce", "cross_entropy", "focal", "tversky"):
        cls = REGISTRY.get("loss", name)
        loss = L.get(name)
        assert isinstance(loss, cls)
        restored = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(restored) is cls and restored.get_config() == loss.get_config()
        np.testing.assert_allclose(to_numpy(restored(labels, probs)), np.mean(to_numpy(loss.call(labels, probs))), rtol=1e-6)
    weighted = L.DiceCELoss(class_weights=(1.0, 2.0, 3.0), batch=True)
    assert weighted.get_config()["class_weights"] == [1.0, 2.0, 3.0]
    with pytest.raises(KeyError, match="unknown loss"):
        L.get("dice_loss_typo")


def test_compiled_model_learns_and_reloads(tmp_path, rng):
    images = rng.random((8, 8, 8, 1)).astype("float32")
    labels = (images[..., 0] > 0.5).astype("int32")
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 1, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.1), loss=L.DiceCELoss(batch=True))
    before = model.evaluate(images, labels, verbose=0)
    model.fit(np.tile(images, (40, 1, 1, 1)), np.tile(labels, (40, 1, 1)), batch_size=8, shuffle=False, verbose=0)
    assert model.evaluate(images, labels, verbose=0) < 0.6 * before
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded.loss, L.DiceCELoss) and reloaded.loss.get_config()["batch"] is True


@pytest.mark.parametrize("name", ["dice", "generalized_dice", "dice_ce", "cross_entropy", "focal", "tversky",
                                  "ssd", "l1", "lncc", "gmi", "bending_energy", "gradient_norm"])
def test_each_loss_class_takes_its_functions_options_and_defaults(name):
    import inspect

    cls = REGISTRY.get("loss", name)
    fn = cls._options_of or cls._function
    keywords = {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}
    assert cls.options() == keywords
    config = cls().get_config()
    assert {k: config[k] for k in keywords} == {k: list(v) if isinstance(v, tuple) else v for k, v in keywords.items()}
    with pytest.raises(TypeError, match="unknown options"):
        cls(not_an_option=1)
