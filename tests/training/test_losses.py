"""Tests for training.losses: hand-computed values, invariants, MONAI references, serialisation."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from training import losses as L


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype("float32")


@pytest.fixture
def seg_batch(rng):
    """Labels (2, 8, 8) with 3 classes and a softmax prediction that is right more often than not."""
    labels = rng.integers(0, 3, size=(2, 8, 8))
    logits = rng.normal(size=(2, 8, 8, 3)) + 2.0 * np.eye(3)[labels]
    return labels, logits.astype("float32"), _softmax(logits)


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


# ---------------------------------------------------------------------------------------------
# Segmentation losses
# ---------------------------------------------------------------------------------------------


def test_soft_dice_matches_hand_computed_value():
    # One sample, four pixels, two classes. Class 1 truth = [1, 1, 0, 0], prediction p1 = [.8, .6, .2, 0].
    truth = np.array([[1, 1, 0, 0]])
    p1 = np.array([[0.8, 0.6, 0.2, 0.0]], dtype="float32")
    pred = np.stack([1 - p1, p1], axis=-1)
    # class 1: 2 * (.8 + .6) / (2 + 1.6) = 0.77778
    # class 0: truth [0, 0, 1, 1], p0 = [.2, .4, .8, 1.]: 2 * (.8 + 1.) / (2 + 2.4) = 0.81818
    expected = 1 - (2 * 1.4 / 3.6 + 2 * 1.8 / 4.4) / 2
    got = _np(L.soft_dice_loss(truth, pred, smooth_nr=0.0, smooth_dr=0.0))
    np.testing.assert_allclose(got, [expected], rtol=1e-6)
    fg_only = _np(L.soft_dice_loss(truth, pred, include_background=False, smooth_nr=0.0, smooth_dr=0.0))
    np.testing.assert_allclose(fg_only, [1 - 2 * 1.4 / 3.6], rtol=1e-6)
    scores = _np(L.soft_dice_score(truth, pred, smooth_nr=0.0, smooth_dr=0.0))
    np.testing.assert_allclose(scores, [[2 * 1.8 / 4.4, 2 * 1.4 / 3.6]], rtol=1e-6)


def test_label_formats_give_the_same_loss(seg_batch):
    labels, _, probs = seg_batch
    as_int = _np(L.soft_dice_loss(labels, probs))
    as_channel = _np(L.soft_dice_loss(labels[..., None], probs))
    as_one_hot = _np(L.soft_dice_loss(np.eye(3, dtype="float32")[labels], probs))
    np.testing.assert_allclose(as_int, as_channel, rtol=1e-6)
    np.testing.assert_allclose(as_int, as_one_hot, rtol=1e-6)
    assert as_int.shape == (2,)


def test_dice_perfect_prediction_and_empty_masks():
    labels = np.zeros((1, 6, 6), dtype="int32")
    labels[0, 2:4, 2:4] = 1
    perfect = np.eye(2, dtype="float32")[labels]
    np.testing.assert_allclose(_np(L.soft_dice_loss(labels, perfect)), [0.0], atol=1e-6)
    # Truth and prediction both empty for class 1: the smoothing makes Dice 1 (loss 0), never NaN.
    empty = np.zeros((1, 6, 6), dtype="int32")
    background_only = np.eye(2, dtype="float32")[empty]
    loss = _np(L.soft_dice_loss(empty, background_only, include_background=False))
    np.testing.assert_allclose(loss, [0.0], atol=1e-6)
    # Empty truth but a confident false positive: loss close to 1.
    loss_fp = _np(L.soft_dice_loss(empty, perfect, include_background=False))
    assert loss_fp[0] > 0.99


def test_batch_dice_pools_over_the_batch(seg_batch):
    labels, _, probs = seg_batch
    pooled = _np(L.soft_dice_loss(labels, probs, batch=True))
    assert pooled.shape == ()
    onehot = np.eye(3)[labels]
    inter = (onehot * probs).sum(axis=(0, 1, 2))
    den = onehot.sum(axis=(0, 1, 2)) + probs.sum(axis=(0, 1, 2))
    np.testing.assert_allclose(pooled, np.mean(1 - 2 * inter / den), rtol=1e-5)


def test_from_logits_equals_softmax_first(seg_batch):
    labels, logits, probs = seg_batch
    for fn in (L.soft_dice_loss, L.generalized_dice_loss, L.tversky_loss, L.cross_entropy, L.focal_loss):
        np.testing.assert_allclose(
            _np(fn(labels, logits, from_logits=True)), _np(fn(labels, probs)), rtol=1e-4, err_msg=fn.__name__
        )


def test_losses_work_in_3d_and_return_float32_under_half_precision(rng):
    labels = rng.integers(0, 2, size=(2, 6, 6, 6))
    probs = _softmax(rng.normal(size=(2, 6, 6, 6, 2)))
    for fn in (L.soft_dice_loss, L.generalized_dice_loss, L.dice_ce_loss, L.focal_loss, L.tversky_loss):
        out = fn(labels, probs.astype("float16"))
        assert out.dtype == "float32" and tuple(out.shape) == (2,), fn.__name__
        np.testing.assert_allclose(_np(out), _np(fn(labels, probs)), rtol=2e-3, err_msg=fn.__name__)


def test_single_sigmoid_channel_is_binary(rng):
    mask = rng.integers(0, 2, size=(2, 8, 8))
    p = rng.uniform(0.05, 0.95, size=(2, 8, 8, 1)).astype("float32")
    two_channel = np.concatenate([1 - p, p], axis=-1)
    np.testing.assert_allclose(
        _np(L.soft_dice_loss(mask, p)), _np(L.soft_dice_loss(mask, two_channel, include_background=False)), rtol=1e-5
    )
    np.testing.assert_allclose(_np(L.cross_entropy(mask, p)), _np(L.cross_entropy(mask, two_channel)), rtol=1e-5)
    logit = np.log(p / (1 - p))
    np.testing.assert_allclose(_np(L.cross_entropy(mask, logit, from_logits=True)), _np(L.cross_entropy(mask, p)), rtol=1e-4)


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
    plain = _np(L.soft_dice_loss(labels, miss_tiny))[0]
    generalised = _np(L.generalized_dice_loss(labels, miss_tiny))[0]
    assert generalised > plain
    uniform = _np(L.generalized_dice_loss(labels, miss_tiny, weight_type="uniform", smooth_nr=0, smooth_dr=0))[0]
    onehot = np.eye(3)[labels]
    expected = 1 - 2 * (onehot * miss_tiny).sum() / (onehot.sum() + miss_tiny.sum())
    np.testing.assert_allclose(uniform, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="weight_type"):
        L.generalized_dice_loss(labels, miss_tiny, weight_type="cubic")


def test_cross_entropy_matches_keras_and_label_smoothing(seg_batch):
    labels, _, probs = seg_batch
    ref = keras.losses.SparseCategoricalCrossentropy(reduction=None)(labels, probs)
    np.testing.assert_allclose(_np(L.cross_entropy(labels, probs)), _np(ref).mean(axis=(1, 2)), rtol=1e-5)
    smooth_ref = keras.losses.CategoricalCrossentropy(label_smoothing=0.2, reduction=None)(np.eye(3)[labels], probs)
    np.testing.assert_allclose(
        _np(L.cross_entropy(labels, probs, label_smoothing=0.2)), _np(smooth_ref).mean(axis=(1, 2)), rtol=1e-5
    )
    np.testing.assert_allclose(_np(L.smooth_labels(np.array([[0.0, 1.0]]), 0.2)), [[0.1, 0.9]], rtol=1e-6)
    with pytest.raises(ValueError, match="label_smoothing"):
        L.smooth_labels(np.array([[0.0, 1.0]]), 1.0)


def test_weighted_cross_entropy_hand_computed():
    labels = np.array([[0, 1]])
    probs = np.array([[[0.5, 0.5], [0.2, 0.8]]], dtype="float32")
    # voxel CEs: -log .5, -log .8; weights 1 and 3 -> (1 * 0.6931 + 3 * 0.2231) / 4
    expected = (np.log(2) + 3 * -np.log(0.8)) / 4
    np.testing.assert_allclose(_np(L.cross_entropy(labels, probs, class_weights=[1, 3])), [expected], rtol=1e-5)
    np.testing.assert_allclose(
        _np(L.cross_entropy(labels, probs, class_weights=[2, 2])), _np(L.cross_entropy(labels, probs)), rtol=1e-6
    )
    with pytest.raises(ValueError, match="class_weights"):
        L.cross_entropy(labels, probs, class_weights=[1, 2, 3])


def test_focal_loss_reduces_to_cross_entropy_and_matches_keras(seg_batch):
    labels, _, probs = seg_batch
    np.testing.assert_allclose(_np(L.focal_loss(labels, probs, gamma=0.0)), _np(L.cross_entropy(labels, probs)), rtol=1e-5)
    ref = keras.losses.CategoricalFocalCrossentropy(alpha=0.25, gamma=2.0, reduction=None)(np.eye(3)[labels], probs)
    np.testing.assert_allclose(
        _np(L.focal_loss(labels, probs, gamma=2.0, alpha=0.25)), _np(ref).mean(axis=(1, 2)), rtol=1e-4
    )
    assert np.all(_np(L.focal_loss(labels, probs)) < _np(L.cross_entropy(labels, probs)))
    with pytest.raises(ValueError, match="gamma"):
        L.focal_loss(labels, probs, gamma=-1.0)


def test_tversky_half_half_is_dice_and_beta_punishes_misses(seg_batch):
    labels, _, probs = seg_batch
    np.testing.assert_allclose(
        _np(L.tversky_loss(labels, probs, smooth_nr=0, smooth_dr=0)),
        _np(L.soft_dice_loss(labels, probs, smooth_nr=0, smooth_dr=0)),
        rtol=1e-5,
    )
    # A prediction that misses half of the foreground (false negatives only).
    truth = np.zeros((1, 4, 4), dtype="int32")
    truth[0, :2] = 1
    under = np.where(np.arange(4)[None, :, None] < 1, truth, 0)
    pred = np.eye(2, dtype="float32")[under]
    fn_heavy = _np(L.tversky_loss(truth, pred, alpha=0.1, beta=0.9, include_background=False))
    fp_heavy = _np(L.tversky_loss(truth, pred, alpha=0.9, beta=0.1, include_background=False))
    assert fn_heavy[0] > fp_heavy[0]


def test_dice_ce_is_the_weighted_sum(seg_batch):
    labels, _, probs = seg_batch
    combined = _np(L.dice_ce_loss(labels, probs, lambda_dice=0.7, lambda_ce=0.3))
    parts = 0.7 * _np(L.soft_dice_loss(labels, probs)) + 0.3 * _np(L.cross_entropy(labels, probs))
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


@pytest.fixture
def monai_losses():
    pytest.importorskip("monai")
    torch = pytest.importorskip("torch")
    import monai.losses

    return torch, monai.losses


@pytest.mark.slow  # importing torch + MONAI takes several seconds
@pytest.mark.parametrize("spatial", [(9, 7), (5, 6, 4)])
@pytest.mark.parametrize("batch,include_background", [(False, True), (True, False)])
def test_dice_family_matches_monai(monai_losses, rng, spatial, batch, include_background):
    torch, ml = monai_losses
    labels = rng.integers(0, 3, size=(2, *spatial))
    labels[1] = np.where(labels[1] == 2, 0, labels[1])  # class 2 absent in sample 1
    logits = rng.normal(size=(2, *spatial, 3)).astype("float32")

    def to_torch(x):
        return torch.from_numpy(np.moveaxis(np.asarray(x), -1, 1).copy())

    t_logits, t_labels = to_torch(logits), to_torch(labels[..., None].astype("int64"))
    common = dict(include_background=include_background, to_onehot_y=True, softmax=True, batch=batch)
    cases = [
        (L.soft_dice_loss, ml.DiceLoss(**common), {}),
        (L.generalized_dice_loss, ml.GeneralizedDiceLoss(**common), {}),
        (L.tversky_loss, ml.TverskyLoss(alpha=0.3, beta=0.7, **common), dict(alpha=0.3, beta=0.7)),
        (L.dice_ce_loss, ml.DiceCELoss(**common), {}),
    ]
    for fn, ref, kwargs in cases:
        ours = _np(fn(labels, logits, include_background=include_background, batch=batch, from_logits=True, **kwargs))
        expected = float(ref(t_logits, t_labels))
        np.testing.assert_allclose(np.mean(ours), expected, rtol=1e-4, atol=1e-6, err_msg=fn.__name__)


# ---------------------------------------------------------------------------------------------
# Registration losses and regularisers
# ---------------------------------------------------------------------------------------------


def test_ssd_hand_computed():
    a = np.zeros((2, 2, 2, 1), dtype="float32")
    b = a.copy()
    b[0, 0, 0, 0] = 2.0
    np.testing.assert_allclose(_np(L.ssd_loss(a, b)), [1.0, 0.0])
    assert L.mse_loss is L.ssd_loss


def test_l1_hand_computed_in_2d_and_3d():
    a = np.zeros((2, 2, 2, 1), dtype="float32")
    b = a.copy()
    b[0, 0, 0, 0] = -2.0
    b[1] = 0.5
    np.testing.assert_allclose(_np(L.l1_loss(a, b)), [0.5, 0.5])
    np.testing.assert_allclose(_np(L.l1_loss(b, b)), [0.0, 0.0])
    volume = np.arange(2 * 3 * 3 * 3 * 2, dtype="float32").reshape(2, 3, 3, 3, 2)
    np.testing.assert_allclose(_np(L.l1_loss(volume, volume + 3.0)), [3.0, 3.0], rtol=1e-6)
    assert L.mae_loss is L.l1_loss


@pytest.mark.parametrize("shape,window", [((2, 16, 16, 1), 5), ((1, 10, 12, 11, 1), (3, 5, 3))])
def test_local_ncc_invariances(rng, shape, window):
    x = rng.random(shape).astype("float32")
    noise = rng.random(shape).astype("float32")
    same = _np(L.local_ncc_loss(x, x, window=window, eps=1e-8))
    affine = _np(L.local_ncc_loss(x, 3.0 * x + 1.0, window=window, eps=1e-8))
    unrelated = _np(L.local_ncc_loss(x, noise, window=window, eps=1e-8))
    np.testing.assert_allclose(same, 0.0, atol=1e-3)
    np.testing.assert_allclose(affine, 0.0, atol=1e-3)  # NCC ignores local brightness and contrast
    assert np.all(unrelated > 0.7)
    assert L.local_ncc(x, x, window=window).shape[1:-1] == tuple(
        s - w + 1 for s, w in zip(shape[1:-1], (window,) * 3 if isinstance(window, int) else window)
    )
    with pytest.raises(ValueError, match="larger than the image"):
        L.local_ncc_loss(x, x, window=40)


def test_mutual_information_properties(rng):
    x = rng.random((2, 16, 16, 1)).astype("float32")
    noise = rng.random((2, 16, 16, 1)).astype("float32")
    mi_self = _np(L.mutual_information(x, x))
    mi_inverted = _np(L.mutual_information(x, 1.0 - x))
    mi_noise = _np(L.mutual_information(x, noise))
    assert np.all(mi_self > 5 * mi_noise)
    np.testing.assert_allclose(mi_inverted, mi_self, rtol=1e-3)  # MI ignores invertible intensity maps
    np.testing.assert_allclose(_np(L.mutual_information(noise, x)), mi_noise, rtol=1e-4)  # symmetric
    np.testing.assert_allclose(_np(L.global_mutual_information_loss(x, x)), -mi_self, rtol=1e-6)
    with pytest.raises(ValueError, match="num_bins"):
        L.mutual_information(x, x, num_bins=1)


def _grid(shape):
    return np.stack(np.meshgrid(*[np.arange(s, dtype="float32") for s in shape], indexing="ij"), axis=-1)


@pytest.mark.parametrize("shape", [(9, 8), (7, 8, 6)])
def test_bending_energy_and_gradient_norm_golden(shape):
    rank = len(shape)
    coords = _grid(shape)
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(rank, rank)).astype("float32")
    affine = (coords @ matrix.T + 2.0)[None]
    np.testing.assert_allclose(_np(L.bending_energy(affine)), [0.0], atol=1e-4)
    # Gradient norm of an affine field: every derivative is an entry of the matrix.
    np.testing.assert_allclose(_np(L.gradient_norm(affine)), [np.sum(matrix**2) / rank], rtol=1e-5)
    np.testing.assert_allclose(_np(L.gradient_norm(affine, norm="l1")), [np.sum(np.abs(matrix)) / rank], rtol=1e-5)
    # u_0 = x_0^2: the only second derivative is d2u_0/dx_0^2 = 2 -> energy 4 in component 0, mean 4 / rank.
    quadratic = np.zeros((*shape, rank), dtype="float32")
    quadratic[..., 0] = coords[..., 0] ** 2
    np.testing.assert_allclose(_np(L.bending_energy(quadratic[None])), [4.0 / rank], rtol=1e-5)
    # u_0 = x_0 * x_1: mixed derivative 1, counted twice -> energy 2 in component 0.
    mixed = np.zeros((*shape, rank), dtype="float32")
    mixed[..., 0] = coords[..., 0] * coords[..., 1]
    np.testing.assert_allclose(_np(L.bending_energy(mixed[None])), [2.0 / rank], rtol=1e-5)


def test_displacement_regularisers_reject_bad_fields():
    with pytest.raises(ValueError, match="displacement field"):
        L.bending_energy(np.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="at least 5"):
        L.bending_energy(np.zeros((1, 4, 8, 2)))
    with pytest.raises(ValueError, match="norm"):
        L.gradient_norm(np.zeros((1, 8, 8, 2)), norm="l3")


# ---------------------------------------------------------------------------------------------
# Generative losses
# ---------------------------------------------------------------------------------------------


def test_kl_divergence_golden():
    z_mean = np.array([[0.0, 0.0], [1.0, 0.0]], dtype="float32")
    z_log_var = np.array([[0.0, 0.0], [0.0, np.log(2.0)]], dtype="float32")
    # sample 2: 0.5 * 1^2 + 0.5 * (2 - 1 - log 2)
    np.testing.assert_allclose(_np(L.kl_divergence(z_mean, z_log_var)), [0.0, 0.5 + 0.5 * (1 - np.log(2))], rtol=1e-6)


def test_minimax_generator_loss_saturates_where_non_saturating_does_not():
    """d loss / d logit: minimax -D(G(z)), non-saturating -(1 - D(G(z))); at D = 0.01 the ratio is 99."""
    import tensorflow as tf

    logit = tf.constant([np.log(0.01 / 0.99)], tf.float32)  # the discriminator gives the fake D = 0.01
    grads = {}
    for kind in ("minimax", "non_saturating"):
        with tf.GradientTape() as tape:
            tape.watch(logit)
            loss = L.gan_generator_loss(logit, kind=kind)
        grads[kind] = float(tape.gradient(loss, logit)[0])
    np.testing.assert_allclose(grads["minimax"], -0.01, rtol=1e-4)
    np.testing.assert_allclose(grads["non_saturating"], -0.99, rtol=1e-4)


def test_gan_losses_golden():
    real = np.array([2.0, 0.0], dtype="float32")
    fake = np.array([-1.0, 1.0], dtype="float32")
    softplus = lambda x: np.log1p(np.exp(x))  # noqa: E731
    np.testing.assert_allclose(
        _np(L.gan_discriminator_loss(real, fake)), softplus(-real).mean() + softplus(fake).mean(), rtol=1e-6
    )
    np.testing.assert_allclose(_np(L.gan_generator_loss(fake)), softplus(-fake).mean(), rtol=1e-6)
    probs_real, probs_fake = 1 / (1 + np.exp(-real)), 1 / (1 + np.exp(-fake))
    np.testing.assert_allclose(
        _np(L.gan_discriminator_loss(probs_real, probs_fake, from_logits=False)),
        _np(L.gan_discriminator_loss(real, fake)),
        rtol=1e-5,
    )
    np.testing.assert_allclose(_np(L.gan_discriminator_loss(real, fake, kind="least_squares")), 0.5 * 1.0 + 0.5 * 1.0)
    np.testing.assert_allclose(_np(L.gan_generator_loss(fake, kind="least_squares")), 0.5 * (4 + 0) / 2)
    np.testing.assert_allclose(_np(L.gan_discriminator_loss(real, fake, kind="wasserstein")), 0.0 - 1.0)
    np.testing.assert_allclose(_np(L.gan_generator_loss(fake, kind="wasserstein")), 0.0)
    np.testing.assert_allclose(_np(L.gan_generator_loss(fake, kind="minimax")), -softplus(fake).mean(), rtol=1e-6)
    np.testing.assert_allclose(_np(L.gan_generator_loss(probs_fake, kind="minimax", from_logits=False)),
                               np.log(1 - probs_fake).mean(), rtol=1e-5)
    np.testing.assert_allclose(_np(L.gan_discriminator_loss(real, fake, kind="minimax")),
                               _np(L.gan_discriminator_loss(real, fake)), rtol=1e-6)
    with pytest.raises(ValueError, match="kind"):
        L.gan_generator_loss(fake, kind="hinge")


def test_gradient_penalty_of_a_linear_critic():
    weights = np.array([3.0, 4.0], dtype="float32")  # gradient norm 5 everywhere

    def critic(x, training=False):
        return ops.sum(x * weights, axis=-1)

    real = np.ones((4, 2), dtype="float32")
    fake = np.zeros((4, 2), dtype="float32")
    np.testing.assert_allclose(_np(L.gradient_penalty(critic, real, fake, seed=0)), (5.0 - 1.0) ** 2, rtol=1e-5)
    np.testing.assert_allclose(
        _np(L.gradient_penalty(critic, real, fake, alpha=np.full((4, 1), 0.3), target_norm=5.0)), 0.0, atol=1e-6
    )


# ---------------------------------------------------------------------------------------------
# Keras Loss classes
# ---------------------------------------------------------------------------------------------


def test_loss_classes_match_functions_and_round_trip(seg_batch):
    labels, _, probs = seg_batch
    for name, cls in L.LOSSES.items():
        if name in ("ssd", "mse", "l1", "mae", "lncc", "gmi", "bending_energy", "gradient_norm"):
            continue
        loss = L.get(name)
        assert isinstance(loss, cls)
        restored = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(restored) is cls and restored.get_config() == loss.get_config()
        np.testing.assert_allclose(_np(restored(labels, probs)), np.mean(_np(loss.call(labels, probs))), rtol=1e-6)
    weighted = L.DiceCELoss(class_weights=(1.0, 2.0, 3.0), batch=True)
    assert weighted.get_config()["class_weights"] == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="unknown loss"):
        L.get("dice_loss_typo")


def test_registration_loss_classes(rng):
    x = rng.random((2, 12, 12, 1)).astype("float32")
    ddf = rng.normal(size=(2, 8, 8, 2)).astype("float32")
    np.testing.assert_allclose(_np(L.LocalNCCLoss(window=5)(x, x)), np.mean(_np(L.local_ncc_loss(x, x, window=5))))
    np.testing.assert_allclose(_np(L.GlobalMutualInformationLoss()(x, x)), np.mean(_np(L.global_mutual_information_loss(x, x))))
    np.testing.assert_allclose(_np(L.SSDLoss()(x, 0 * x)), np.mean(x**2), rtol=1e-6)
    np.testing.assert_allclose(_np(L.L1Loss()(x, 0 * x)), np.mean(np.abs(x)), rtol=1e-6)
    assert isinstance(keras.losses.deserialize(keras.losses.serialize(L.get("l1"))), L.L1Loss)
    np.testing.assert_allclose(_np(L.BendingEnergyLoss()(ddf, ddf)), np.mean(_np(L.bending_energy(ddf))), rtol=1e-6)
    np.testing.assert_allclose(_np(L.GradientNormLoss(norm="l1")(ddf, ddf)), np.mean(_np(L.gradient_norm(ddf, norm="l1"))), rtol=1e-6)
    restored = keras.losses.deserialize(keras.losses.serialize(L.LocalNCCLoss(window=(3, 5))))
    assert restored.get_config()["window"] == [3, 5]


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
