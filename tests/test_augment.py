"""Augmentation does what each key says, batched, per example, and only on the training split."""

import pytest
import torch

from trainlab.config import AugmentConfig, build_config
from trainlab.data import augment

from conftest import quick_config


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _batch(b=64, h=12, w=12):
    torch.manual_seed(0)
    return torch.rand(b, 1, h, w)


def test_hflip_mirrors_about_half_the_examples_exactly():
    x = _batch()
    out = augment.geometric(x, AugmentConfig(hflip=True), _gen())
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((flipped | same).all())
    # Each of 64 images flips with p = 0.5: Binomial(64, 0.5), mean 32, sigma 4; 16..48 is +-4 sigma
    # (a fixed generator, so one draw; the bound is for a changed draw, P(outside) ~ 1e-4).
    assert 16 < int(flipped.sum()) < 48


def test_crop_padding_moves_each_example_by_whole_pixels_within_the_padding():
    x = _batch()
    p = 2
    out = augment.geometric(x, AugmentConfig(crop_padding=p), _gen())
    shifts = set()
    for o, i in zip(out, x):
        padded = torch.nn.functional.pad(i, (p, p, p, p))
        matches = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                   if torch.equal(o, padded[:, dy:dy + 12, dx:dx + 12])]
        assert matches, "every output is one crop of the zero-padded input"
        shifts.add(matches[0])
    # Drawn per example, not once per batch: 64 draws from 25 shifts give ~23 distinct (a single
    # draw per batch gives 1); > 5 is a property of the draw, not a tolerance.
    assert len(shifts) > 5


def test_shift_and_rotate_change_images_but_keep_most_of_them():
    x = torch.zeros(32, 1, 28, 28)
    x[:, :, 8:20, 8:20] = 1.0  # a centred square
    for cfg in (AugmentConfig(shift=0.1), AugmentConfig(rotate=20)):
        out = augment.geometric(x, cfg, _gen())
        assert not torch.allclose(out, x)
        mass = out.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
        # Moved or turned, not destroyed: a 12x12 square centred in 28x28 stays inside the frame
        # under a 10% (2.8 px) shift or a 20-degree turn, so interpolation keeps its mass up to
        # edge blur; +-20% is a property of the geometry, not of rounding (float32: ~1e-7).
        assert bool(((mass > 0.8) & (mass < 1.2)).all())


def test_resized_crop_zooms_in_without_bringing_in_the_border():
    # A constant image stays constant: every output pixel samples inside the outermost input pixel
    # centres, where bilinear weights summing to 1 reproduce the constant up to their rounding
    # (4 products and sums of float32 values <= 1: a few ulps of 1, under 1e-6).
    ones = torch.ones(64, 1, 28, 28)
    assert float((augment.geometric(ones, AugmentConfig(resized_crop=0.3), _gen()) - 1).abs().max()) < 1e-6
    # A centred 8x8 square grows by 1/area: the crop keeps 0.3..1 of the area, so each image's
    # square is magnified by 1..3.3x (blurred at its edges) and the batch's mean mass is > 1.3x.
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    out = augment.geometric(x, AugmentConfig(resized_crop=0.3), _gen())
    mass = out.sum(dim=(1, 2, 3)) / 64.0
    assert float(mass.mean()) > 1.3 and float(mass.min()) > 0.5


def test_rotation_is_bounded_by_the_angle():
    x = torch.zeros(1, 1, 33, 33)
    x[0, 0, 16, 4:29] = 1.0  # a horizontal bar through the centre
    out = augment.geometric(x.repeat(200, 1, 1, 1), AugmentConfig(rotate=10), _gen())
    # The bar's end rows: a 10-degree turn moves the ends by at most 12 * sin(10 deg) ~ 2.1 pixels.
    rows = out[:, 0].sum(dim=2)  # (B, H)
    active = (rows > 0.05).nonzero()[:, 1]  # rows the bar reaches (0.05: above interpolation dust)
    # 2.1 pixels, +1 for bilinear interpolation's spread onto the next row: 3.
    assert int(active.min()) >= 16 - 3 and int(active.max()) <= 16 + 3


def test_brightness_and_contrast_follow_colorjitters_definition():
    # Mid-grey images in [0.25, 0.75]: factors within 1 +- 0.3 keep them inside [0, 1], so no pixel
    # is clamped and the definitions can be checked exactly (to float32 rounding, ~1e-7 per operation).
    x = 0.25 + 0.5 * _batch(b=256)
    bright = augment.photometric(x, AugmentConfig(brightness=0.3), _gen())
    ratio = (bright / x).flatten(1)                                   # (B, H*W): one factor per image
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)
    assert ratio.min() >= 0.7 - 1e-6 and ratio.max() <= 1.3 + 1e-6
    assert ratio[:, 0].std() > 0.1  # drawn per image: U[0.7, 1.3] has std 0.6 / sqrt(12) = 0.17
    contrasted = augment.photometric(x, AugmentConfig(contrast=0.3), _gen())
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    # Each image's mean grey is kept, and its deviations from it are scaled by one factor in [0.7, 1.3].
    assert torch.allclose(contrasted.mean(dim=(1, 2, 3), keepdim=True), mean, atol=1e-5)
    before, after = (x - mean).flatten(1), (contrasted - mean).flatten(1)       # (B, H*W)
    scale = (after * before).sum(1, keepdim=True) / (before * before).sum(1, keepdim=True)  # least squares
    assert torch.allclose(after, scale * before, atol=1e-5)
    assert scale.min() >= 0.7 - 1e-5 and scale.max() <= 1.3 + 1e-5
    # Brightness past 1 is clamped to white; the same generator seed gives the same images.
    white = augment.photometric(torch.ones(64, 1, 4, 4), AugmentConfig(brightness=1.0), _gen())
    assert white.max() <= 1.0 and white.min() >= 0.0
    assert torch.equal(augment.photometric(x, AugmentConfig(brightness=0.3, contrast=0.3), _gen(1)),
                       augment.photometric(x, AugmentConfig(brightness=0.3, contrast=0.3), _gen(1)))


def test_noise_has_the_configured_std():
    x = torch.zeros(256, 1, 28, 28)
    out = augment.add_noise(x, 0.3, _gen())
    # The sample std of 256 * 784 = 200,704 normal draws has relative standard error
    # 1 / sqrt(2n) = 1.6e-3: rel=0.02 is 12 sigma (any CPU's generator path, float32 sums ~1e-7).
    assert out.std().item() == pytest.approx(0.3, rel=0.02)


def test_augmentation_reduces_overfitting_on_a_small_set(tmp_path):
    from trainlab.train import train
    common = dict(data={"limit": 300}, model={"hidden": [256]}, optim={"name": "adam", "lr": 0.003},
                  train={"epochs": 15, "final": "last"})
    plain = train(build_config(quick_config(**common)), out=tmp_path / "plain")
    augmented = train(build_config(quick_config(**common, regularize={
        "augment": {"crop_padding": 1, "rotate": 10, "noise": 0.1}})), out=tmp_path / "aug")
    gap = lambda r: r.history[-1]["train_accuracy"] - r.history[-1]["val_accuracy"]  # noqa: E731
    # Harder training examples: lower training fit and a smaller train/validation gap. Measured
    # over train.seed=0..4: train loss higher by 0.61..0.68; gap smaller by 0.071..0.150 (seed 0:
    # 0.075, ~4 of the 60 validation images). Digits runs move by ~1e-6 under another CPU's
    # rounding (see test_train.py), so no further margin is needed.
    assert augmented.history[-1]["train_loss"] > plain.history[-1]["train_loss"]
    assert gap(augmented) < gap(plain)


@pytest.mark.parametrize("loader", ["device", "stream"])
def test_brightness_reaches_the_training_batches_and_never_the_validation_ones(loader):
    # Real 8x8 digits through the loader the training loop uses (make_batches), both ways batches are
    # made: each training image's pixels come out times one factor of its own, validation's as they are.
    from trainlab import data
    from trainlab.data.loader import make_batches

    cfg = build_config(quick_config(data={"loader": loader, "workers": 0},
                                    regularize={"augment": {"brightness": 0.4}}))
    splits = data.load(cfg)
    mean, std = splits.mean[0], splits.std[0]
    batches = make_batches(splits, "train", 64, torch.device("cpu"), torch.float32, cfg, train=True)
    order = batches.order(cfg.train.seed, 1)
    x, _ = next(iter(batches.epoch(cfg.train.seed, 1)))
    pixels = x * std + mean                        # (64, 1, 8, 8) back on digits' scale, white = 16
    raw = splits.train.x[order[:64]].to(torch.float32) * batches.unit
    white = splits.white
    # Pixels a factor > 1 pushed past white are clamped there, to 16, not to 1 (as if the images were
    # torchvision's [0, 1] floats: the digits would turn into blots); the rest keep one ratio per
    # image. Normalising and undoing it in float32 moves a pixel of at most 16 by a few ulp (16 x 6e-8
    # x a few, < 1e-5); divided by a kept raw value of at least 0.8 a ratio moves by < 2e-5, so 1e-3
    # (and the 1e-5 relative slack at white) are 50x clear of rounding and far below the 0.8 factor range.
    assert white == 16 and pixels.max() <= white * (1 + 1e-5) and pixels.max() > white * 0.99
    kept = (raw > 0.05 * white) & (pixels < white * (1 - 1e-5))
    ratios = [(pixels[i][kept[i]] / raw[i][kept[i]]) for i in range(64)]
    assert all(r.max() - r.min() < 1e-3 for r in ratios)
    factors = torch.stack([r.median() for r in ratios])
    assert factors.min() >= 0.6 - 1e-4 and factors.max() <= 1.4 + 1e-4
    assert factors.std() > 0.1  # U[0.6, 1.4] has std 0.8 / sqrt(12) = 0.23; no augmentation gives 0
    val = make_batches(splits, "val", 64, torch.device("cpu"), torch.float32, cfg)
    xv, _ = next(iter(val.epoch()))
    expected = (splits.val.x[:64].to(torch.float32) * val.unit - mean) / std
    assert torch.allclose(xv, expected, atol=1e-5)
