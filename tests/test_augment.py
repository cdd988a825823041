"""nas.engine.augment: each batched transform checked against a per-image reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from nas.engine.augment import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    Augment,
    ChannelStats,
    augment_batch,
    channel_stats,
    crop_flip,
    cutout,
    normalize,
    rotate,
)
from nas.engine.data import ImageSet


def batch(n: int = 64, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)  # no zeros: padding shows


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def windows(image: torch.Tensor, padding: int, mode: str) -> list[torch.Tensor]:
    """Every crop the reference transform (pad, then crop at any offset) can produce."""
    padded = F.pad(image[None].float(), (padding,) * 4, mode="constant" if mode == "zeros" else "reflect")[0]
    h, w = image.shape[1:]
    return [padded[:, y:y + h, x:x + w] for y in range(2 * padding + 1) for x in range(2 * padding + 1)]


@settings(max_examples=20, deadline=None)
@given(padding=st.integers(0, 6), mode=st.sampled_from(["zeros", "reflect"]), size=st.integers(8, 16),
       seed=st.integers(0, 2**31))
def test_every_crop_is_a_window_of_the_padded_image(padding, mode, size, seed):
    x = batch(8, size, seed % 1000)
    out = crop_flip(x, padding, mode, flip=False, gen=gen(seed))
    assert out.shape == x.shape and out.dtype == torch.uint8
    for i in range(len(x)):
        assert any(torch.equal(out[i].float(), w) for w in windows(x[i], padding, mode))


def test_zero_padding_is_black_and_offsets_cover_the_range():
    x = batch(512)
    out = crop_flip(x, 4, "zeros", flip=False, gen=gen())
    zero_rows = (out == 0).all(dim=(1, 3)).sum(1)  # fully black rows per image: |dy| of the crop
    assert zero_rows.max() == 4 and zero_rows.min() == 0
    assert (out == 0).float().mean() > 0  # padding appears as pixel value 0, not the mean colour


def test_flip_is_an_exact_mirror_with_both_outcomes():
    x = batch(256)
    out = crop_flip(x, 0, "zeros", flip=True, gen=gen())
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 0.35 < same.float().mean() < 0.65


def test_output_is_channels_last_and_reproducible_from_the_generator():
    x = batch()
    aug = Augment(crop_padding=4, pad_mode="reflect", flip=True, rotation=5.0, cutout=8)
    stats = ChannelStats(CIFAR10_MEAN, CIFAR10_STD)
    a, b = augment_batch(x, aug, stats, gen(7)), augment_batch(x, aug, stats, gen(7))
    assert torch.equal(a, b) and not torch.equal(a, augment_batch(x, aug, stats, gen(8)))
    assert a.dtype == torch.float32 and a.is_contiguous(memory_format=torch.channels_last)


def test_normalisation_gives_zero_mean_unit_std_per_channel():
    x = batch(200)
    x[:, 1] //= 2  # make channels differ
    s = ImageSet(x, torch.zeros(len(x), dtype=torch.int64), ("only",))
    stats = channel_stats(s)
    y = normalize(x, stats).double()
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(y.std(dim=(0, 2, 3)), torch.ones(3, dtype=torch.float64), atol=1e-4)


def test_cifar10_uses_the_published_statistics():
    x = batch(10)
    s = ImageSet(x, torch.arange(10), CIFAR10_CLASSES)
    assert channel_stats(s) == ChannelStats(CIFAR10_MEAN, CIFAR10_STD)
    pixel = normalize(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8), channel_stats(s))
    assert pixel[0, 0, 0, 0].item() == pytest.approx((1 - 0.4914) / 0.2470, rel=1e-5)


def test_cutout_zeroes_one_square_at_most_per_image():
    x = torch.ones(256, 3, 32, 32)
    out = cutout(x, 8, gen())
    zeros = (out[:, 0] == 0)
    assert bool((zeros == (out == 0).all(1)).all())  # the same square in every channel
    per_image = zeros.flatten(1).sum(1)
    assert per_image.max() == 64 and per_image.min() >= 16  # centre inside: at least a quarter visible
    rows, cols = zeros.any(2).sum(1), zeros.any(1).sum(1)
    assert bool((rows * cols == per_image).all())  # a rectangle, not scattered pixels


def test_rotation_by_a_tiny_angle_is_nearly_identity_and_large_angles_fill_corners():
    x = torch.rand(16, 3, 32, 32) + 1
    small = rotate(x, 1e-4, gen())
    assert small.shape == x.shape and (small[:, :, 4:-4, 4:-4] - x[:, :, 4:-4, 4:-4]).abs().max() < 1e-2
    big = rotate(x, 45.0, gen(1))
    corner_zero = (big[:, :, 0, 0] == 0).float().mean()
    assert corner_zero > 0.3  # corners fall outside the source for most angles near +-45


def test_disabled_augmentation_only_normalises():
    x = batch()
    stats = ChannelStats(CIFAR10_MEAN, CIFAR10_STD)
    out = augment_batch(x, Augment(crop_padding=0, flip=False), stats, gen())
    assert torch.allclose(out, normalize(x, stats))
    assert math.isfinite(float(out.abs().max()))
