"""Batched augmentation on the device: no per-image Python, one explicit generator.

Crop and flip are one gather on the uint8 batch (the source index of every output pixel is
computed, with padding expressed as out-of-range indices), so the float batch is written
once, already in channels_last layout. Rotation (grid_sample) and cutout (a mask) are
applied to the whole batch only when enabled.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nas.engine.data import ImageSet
from nas.engine.recipe import Recipe
from nas.errors import NasError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and std of pixel values scaled to [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class Augment:
    """What the random training transform does; built from a Recipe."""

    crop_padding: int = 4
    pad_mode: str = "zeros"  # zeros reflect
    flip: bool = True
    rotation: float = 0.0  # max degrees
    cutout: int = 0  # square side, pixels

    @classmethod
    def from_recipe(cls, r: Recipe) -> Augment:
        return cls(r.crop_padding, r.pad_mode, r.flip, r.rotation, r.cutout)


def channel_stats(s: ImageSet) -> ChannelStats:
    """CIFAR-10's published statistics for CIFAR-10 (as the reports used), else computed from `s`.

    Pass the *training* set: normalising with statistics of the set being evaluated would leak.
    """
    if s.classes == CIFAR10_CLASSES and tuple(s.images.shape[1:]) == (3, 32, 32):
        return ChannelStats(CIFAR10_MEAN, CIFAR10_STD)
    x = s.images.to(torch.float64).div_(255).transpose(0, 1).reshape(s.images.shape[1], -1)  # (C, N*H*W)
    std = x.std(dim=1)
    if bool((std == 0).any()):
        raise NasError("a colour channel is constant across the training images, so it cannot be normalised; "
                       "check the dataset decodes correctly")
    return ChannelStats(tuple(x.mean(dim=1).tolist()), tuple(std.tolist()))


def normalize(images: torch.Tensor, stats: ChannelStats, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, C, H, W) -> (x/255 - mean)/std in `dtype`, as one multiply-add per element."""
    scale, shift = _affine(stats, images.device)
    return torch.addcmul(shift, images.to(torch.float32), scale).to(dtype)


@functools.lru_cache(maxsize=16)
def _affine(stats: ChannelStats, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of `normalize`, made once per device: building them per batch cost two blocking
    host-to-device copies per step on CUDA."""
    std = torch.tensor(stats.std, dtype=torch.float32, device=device)
    mean = torch.tensor(stats.mean, dtype=torch.float32, device=device)
    return (1 / (255 * std))[:, None, None], (-mean / std)[:, None, None]


def crop_flip(images: torch.Tensor, padding: int, pad_mode: str, flip: bool, gen: torch.Generator,
              mirror: torch.Tensor | None = None) -> torch.Tensor:
    """Random crop (after virtual padding) and horizontal flip of a uint8 batch, as one gather.

    Output has the input's shape, laid out channels_last. Zero padding is black (pixel 0),
    as torchvision's RandomCrop(padding=p) on the raw image. `mirror` (B,) says which images to flip,
    where the caller decides (alternating flip); otherwise each is flipped with probability 1/2.
    """
    b, _, h, w = images.shape
    dev = images.device
    dy = _randint(2 * padding + 1, b, gen, dev) - padding  # (B,) shift of the crop window
    dx = _randint(2 * padding + 1, b, gen, dev) - padding
    rows = dy[:, None] + torch.arange(h, device=dev)  # (B, H) source row of each output row
    cols = dx[:, None] + torch.arange(w, device=dev)  # (B, W)
    if flip:
        mirror = _randint(2, b, gen, dev).bool() if mirror is None else mirror.to(dev)
        cols = torch.where(mirror[:, None], cols.flip(1), cols)
    if pad_mode == "reflect":
        rows, cols = _reflect(rows, h), _reflect(cols, w)
        inside = None
    else:
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # (B, H, W)
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    batch = torch.arange(b, device=dev)[:, None, None]
    out = images[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C): advanced dims come first
    if inside is not None:
        out = out * inside[..., None]
    return out.permute(0, 3, 1, 2)  # (B, C, H, W) view, channels_last memory


def rotate(x: torch.Tensor, max_degrees: float, gen: torch.Generator) -> torch.Tensor:
    """Rotate each image by a uniform angle in [-max, max] degrees (bilinear, zero fill)."""
    b = x.shape[0]
    theta = (torch.rand(b, generator=gen, device=gen.device).to(x.device) * 2 - 1) * math.radians(max_degrees)
    cos, sin, zero = theta.cos(), theta.sin(), torch.zeros_like(theta)
    affine = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(affine.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero a size x size square per image at a uniform centre (DeVries & Taylor; may hang off the edge)."""
    b, _, h, w = x.shape
    cy, cx = _randint(h, b, gen, x.device), _randint(w, b, gen, x.device)
    top, left = cy - size // 2, cx - size // 2
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_y = (ys[None] >= top[:, None]) & (ys[None] < top[:, None] + size)  # (B, H)
    in_x = (xs[None] >= left[:, None]) & (xs[None] < left[:, None] + size)  # (B, W)
    keep = ~(in_y[:, :, None] & in_x[:, None, :])  # (B, H, W)
    return x * keep[:, None].to(x.dtype)


def augment_batch(images: torch.Tensor, aug: Augment, stats: ChannelStats, gen: torch.Generator,
                  dtype: torch.dtype = torch.float32, mirror: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 batch -> augmented, normalised float batch (channels_last layout); `mirror` as in crop_flip."""
    x = images
    if aug.crop_padding or aug.flip:
        x = crop_flip(x, aug.crop_padding, aug.pad_mode, aug.flip, gen, mirror)
    if aug.rotation:
        # rotate raw [0, 1] pixels so the corners fill with black, like the crop padding
        x = rotate(x.to(torch.float32).div_(255), aug.rotation, gen).mul_(255)
    x = normalize(x, stats, dtype)
    if aug.cutout:
        x = cutout(x, aug.cutout, gen)  # after normalising: the square becomes the mean colour
    return x.contiguous(memory_format=torch.channels_last)  # no-op unless rotation ran


def _randint(high: int, n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """n draws from [0, high) on the generator's device, moved to `device`."""
    return torch.randint(high, (n,), generator=gen, device=gen.device).to(device)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror out-of-range indices without repeating the edge (numpy 'reflect', torch 'reflect')."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)
