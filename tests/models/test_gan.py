"""GAN builders: DCGAN generator/discriminator, pix2pix U-Net generator and PatchGAN, 2D/3D, errors, learning."""

import keras
import numpy as np
import pytest

import models
from models.gan import (
    dcgan_discriminator,
    dcgan_generator,
    patchgan_discriminator,
    pix2pix_generator,
)


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("shape", [(16, 16, 1), (8, 8, 8, 1)], ids=["2d", "3d"])
def test_dcgan_pair_shapes_and_ranges(shape, rng):
    gen = dcgan_generator(8, shape, filters=(16, 8))
    disc = dcgan_discriminator(shape, filters=(8, 16))
    images = _np(gen(rng.normal(size=(3, 8)).astype("float32")))
    assert images.shape == (3, *shape) and np.all(np.abs(images) <= 1)
    assert _np(disc(images)).shape == (3, 1)


def test_dcgan_defaults_are_the_papers_64px_configuration():
    gen = models.get("dcgan_generator")
    # Radford et al. 2016, Fig. 1: z (100) -> 4x4x1024 -> 8x8x512 -> 16x16x256 -> 32x32x128 -> 64x64x3.
    assert gen.get_layer("to_map").output.shape == (None, 4, 4, 1024)
    assert gen.output_shape == (None, 64, 64, 3)
    disc = models.get("dcgan_discriminator")
    assert disc.get_layer("down4_act").output.shape == (None, 4, 4, 512)
    # No BatchNorm on the discriminator's input layer.
    assert "down1_norm" not in [layer.name for layer in disc.layers]


@pytest.mark.parametrize("shape", [(32, 32, 2), (16, 16, 16, 1)], ids=["2d", "3d"])
def test_pix2pix_generator_translates_to_the_target_channels(shape, rng):
    model = pix2pix_generator(shape, 3, filters=(4, 8, 16))
    x = rng.normal(size=(2, *shape)).astype("float32")
    y = _np(model(x))
    assert y.shape == (2, *shape[:-1], 3) and np.all(np.abs(y) <= 1)
    # Dropout (the conditional GAN's noise) acts in training only.
    np.testing.assert_allclose(_np(model(x)), y, atol=1e-6)
    assert not np.allclose(_np(model(x, training=True)), _np(model(x, training=True)))


def test_patchgan_gives_a_map_of_patch_logits(rng):
    model = patchgan_discriminator((32, 32, 1), target_channels=2, filters=(8, 16, 32))
    src, tgt = rng.normal(size=(2, 32, 32, 1)).astype("float32"), rng.normal(size=(2, 32, 32, 2)).astype("float32")
    logits = _np(model(np.concatenate([src, tgt], axis=-1)))
    # 32 -> 16 -> 8 (stride 2), then two valid 4x4 convs on padded maps: 8 -> 7 -> 6.
    assert logits.shape == (2, 6, 6, 1)


def test_patchgan_default_has_30x30_patches_of_70px():
    model = models.get("patchgan_discriminator")
    assert model.output_shape == (None, 30, 30, 1)
    # Receptive field of 4x4 convs with strides (2, 2, 2, 1, 1): 70 pixels (Isola et al. 2017).
    field = 1
    for stride in reversed((2, 2, 2, 1, 1)):
        field = field * stride + (4 - stride)
    assert field == 70


def test_patchgan_logit_sees_only_its_patch(rng):
    model = patchgan_discriminator((32, 32, 1), filters=(4, 8, 8))
    src = rng.normal(size=(1, 32, 32, 1)).astype("float32")
    tgt = rng.normal(size=(1, 32, 32, 1)).astype("float32")
    changed = tgt.copy()
    changed[0, 0, 0, 0] += 5.0  # top-left corner pixel
    diff = np.abs(_np(model(np.concatenate([src, changed], -1))) - _np(model(np.concatenate([src, tgt], -1))))
    diff = diff[0, ..., 0]
    assert diff[0, 0] > 0 and diff[-1, -1] == 0


def test_round_trips(assert_round_trip, rng):
    assert_round_trip(pix2pix_generator((16, 16, 1), 1, filters=(4, 8)), rng.normal(size=(2, 16, 16, 1)).astype("float32"))
    assert_round_trip(patchgan_discriminator((16, 16, 1), filters=(4, 8, 8)),
                      rng.normal(size=(2, 16, 16, 2)).astype("float32"))
    assert_round_trip(dcgan_generator(4, (8, 8, 1), filters=(8, 4)), rng.normal(size=(2, 4)).astype("float32"))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dcgan_generator(8, (20, 20, 1), filters=(8, 4, 2)), "divisible by 8"),
        (lambda: dcgan_discriminator((30, 30, 1)), "divisible by 16"),
        (lambda: pix2pix_generator((64, 64, 1), 1), "divisible by 256"),
        (lambda: patchgan_discriminator((12, 12, 1)), "divisible by 8"),
    ],
)
def test_bad_arguments_give_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.slow
def test_pix2pix_default_has_reference_parameter_count():
    # Isola et al. 2017 U-Net-256 (encoder C64-C128-C256-C512x5): 54,425,859 parameters with 3 input
    # and 3 output channels, as in the TensorFlow pix2pix tutorial.
    assert models.get("pix2pix_generator").count_params() == 54_425_859


def _discs(n, size, seed):
    """Real images in [-1, 1]: a bright disk of random position on a dark background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(4, size - 4, (2, n, 1, 1))
    return np.where((yy - cy) ** 2 + (xx - cx) ** 2 <= 9, 1.0, -1.0)[..., None].astype("float32")


@pytest.mark.slow
def test_dcgan_losses_move_sensibly():
    """D learns to tell real from fake (loss far below chance, log 2); then G, against that D, lowers its loss."""
    latent, size = 8, 16
    real = _discs(256, size, seed=0)
    gen = dcgan_generator(latent, (size, size, 1), filters=(32, 16))
    disc = dcgan_discriminator((size, size, 1), filters=(16, 32))
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    disc.compile(keras.optimizers.Adam(1e-3, beta_1=0.5), bce)
    stacked = keras.Sequential([keras.Input((latent,)), gen, disc])

    rng = np.random.default_rng(1)
    z = rng.normal(size=(256, latent)).astype("float32")
    x = np.concatenate([real, gen.predict(z, verbose=0)])
    y = np.concatenate([np.ones((256, 1)), np.zeros((256, 1))]).astype("float32")

    # Losses in training mode: after ~50 steps BatchNorm's moving averages are not settled yet.
    def d_loss():
        return float(bce(y, disc(x, training=True)))

    d_start = d_loss()
    disc.fit(x, y, batch_size=32, epochs=3, shuffle=True, verbose=0)
    d_end = d_loss()
    assert d_end < 0.25 * np.log(2.0) < d_start, f"D loss {d_start:.3f} -> {d_end:.3f}"

    # Now train only G through the frozen D (the classic Keras GAN recipe).
    disc.trainable = False
    stacked.compile(keras.optimizers.Adam(1e-3, beta_1=0.5), bce)
    ones = np.ones((256, 1), "float32")

    def g_loss():
        return float(bce(ones, stacked(z, training=True)))

    g_start = g_loss()
    d_weights = [w.copy() for w in disc.get_weights()]
    stacked.fit(z, ones, batch_size=32, epochs=3, verbose=0)
    g_end = g_loss()
    # Measured a fall of about 40% over seeds.
    assert g_end < 0.8 * g_start, f"G loss {g_start:.3f} -> {g_end:.3f}"
    for before, after in zip(d_weights, disc.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # G's updates left D alone


def test_pix2pix_trainer_takes_the_registered_patchgan_as_it_is(rng):
    from training.adversarial import Pix2PixTrainer

    generator = pix2pix_generator((8, 8, 1), 1, filters=(4, 8))
    critic = models.get("patchgan_discriminator", input_shape=(8, 8, 1), target_channels=1, filters=(4, 8))
    assert critic.input_shape == (None, 8, 8, 2)  # concat([source, target]): what the trainer feeds
    trainer = Pix2PixTrainer(generator, critic, l1_weight=1.0)
    trainer.compile(keras.optimizers.SGD(0.0), keras.optimizers.SGD(0.0))
    source = rng.uniform(-1, 1, size=(2, 8, 8, 1)).astype("float32")
    logs = {k: float(v) for k, v in trainer.test_step({"image": source, "target": -source}).items()}  # eager
    real = _np(critic(np.concatenate([source, -source], -1)))
    fake = _np(critic(np.concatenate([source, _np(generator(source))], -1)))
    # Non-saturating discriminator loss: softplus(-real) + softplus(fake), averaged over patches.
    expected = np.mean(np.logaddexp(0, -real)) + np.mean(np.logaddexp(0, fake))
    assert logs["d_loss"] == pytest.approx(expected, rel=1e-4)
