"""How fast the engine trains, against the standard recipe and against the hardware.

The standard recipe is what the reference reports ran: a CIFAR dataset decoded in memory,
PIL transforms per image, a DataLoader with 2 workers, eager fp32, SGD. Both are timed
alternately, in rounds, after a warm-up, so background load on a shared machine hits both
alike; medians are reported. FLOPs come from FlopCounterMode on one training step; the
hardware reference is the best measured matmul rate on the same device.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from nas.engine.augment import channel_stats
from nas.engine.data import ImageSet
from nas.engine.precision import onednn_conv_kernel, resolve_precision, resolved
from nas.engine.recipe import Recipe
from nas.engine.train import train
from nas.errors import NasError


@dataclass(frozen=True)
class BenchResult:
    device: str
    precision: str  # the engine's, resolved: fp32, bf16 or fp16
    conv_kernel: str | None  # CPU: the oneDNN kernel a conv in that precision dispatches to (nas.engine.precision)
    batch_size: int
    steps: int  # timed optimiser steps per round and side
    rounds: int
    images_per_s: float  # this engine, median over rounds
    baseline_images_per_s: float  # the standard recipe, median over rounds
    speedup: float
    train_flops_per_image: float  # forward + backward, FlopCounterMode
    achieved_flops: float  # engine FLOP/s
    peak_flops: float  # measured FLOP/s in the engine's compute dtype: the better of a matmul and a conv
    peak_fraction: float
    engine_samples: tuple[float, ...]
    baseline_samples: tuple[float, ...]


class PilCifar(Dataset):
    """torchvision.datasets.CIFAR10's __getitem__, verbatim in effect: uint8 HWC array -> PIL -> transform."""

    def __init__(self, s: ImageSet, transform) -> None:
        self.data = s.images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C), as torchvision keeps it
        self.targets = s.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def standard_loader(s: ImageSet, batch_size: int, workers: int = 2) -> DataLoader:
    """The reports' input pipeline: RandomCrop(32, 4) + flip + ToTensor + Normalize per image."""
    from torchvision import transforms

    stats = channel_stats(s)
    t = transforms.Compose([transforms.RandomCrop(s.images.shape[-1], padding=4), transforms.RandomHorizontalFlip(),
                            transforms.ToTensor(), transforms.Normalize(stats.mean, stats.std)])
    return DataLoader(PilCifar(s, t), batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                      persistent_workers=workers > 0, pin_memory=False)


def baseline_images_per_s(model: nn.Module, loader: DataLoader, device: torch.device, steps: int) -> float:
    """Eager fp32 SGD over `steps` batches from `loader`; the first batch (worker start-up) is untimed."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model.train()
    batches = iter(loader)
    seen, start = 0, 0.0
    for i in range(steps + 1):
        x, y = next(batches)
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i == 0:
            _sync(device)
            start = time.perf_counter()
        else:
            seen += len(y)
    _sync(device)
    return seen / (time.perf_counter() - start)


def engine_images_per_s(model: nn.Module, recipe: Recipe, train_set: ImageSet, device: torch.device) -> float:
    """One short train() call: `recipe.train_subset` images, one epoch, no validation."""
    return train(model, recipe, train_set, None, device).images_per_s


def train_flops_per_image(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> float:
    """FLOPs of one forward + backward pass per image (FlopCounterMode counts 2 per MAC)."""
    model = copy.deepcopy(model).to(device)
    x = torch.randn(*shape, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return counter.get_total_flops() / shape[0]


def matmul_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None,
                      reps: int = 8) -> float:
    """Best observed n x n matmul rate: the reference a conv net can at most approach. A GPU needs a large
    product to reach it (an H200 gave 362 TFLOP/s bf16 at n=2048, launch-bound, and 752 at 8192), a CPU
    does not and would take seconds at 8192: hence the default side by device."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up: thread pools, cuBLAS handles
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def conv_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32, reps: int = 4) -> float:
    """Best observed rate of a large 3x3 convolution (256 -> 256 channels, 32x32, batch 32, channels_last)
    under autocast to `dtype`: on a CPU, oneDNN's bf16 convolutions can outrun its bf16 matmul, so a
    matmul-only peak let a conv net report over 100% of it."""
    x = torch.randn(32, 256, 32, 32, device=device).to(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3, device=device).to(memory_format=torch.channels_last)
    ctx = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else torch.autocast(device.type,
                                                                                                 enabled=False)
    best = float("inf")
    with torch.no_grad(), ctx:
        F.conv2d(x, w, padding=1)  # warm-up: oneDNN primitive creation
        for _ in range(reps):
            _sync(device)
            t = time.perf_counter()
            F.conv2d(x, w, padding=1)
            _sync(device)
            best = min(best, time.perf_counter() - t)
    return 2 * 32 * 256 * 256 * 9 * 32 * 32 / best


def peak_flops(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """The hardware reference in the engine's compute dtype: the better of a matmul and a convolution."""
    return max(matmul_peak_flops(device, dtype), conv_peak_flops(device, dtype))


def bench(model: nn.Module, train_set: ImageSet, device: torch.device, recipe: Recipe | None = None,
          batch_size: int = 128, steps: int = 10, rounds: int = 3, workers: int = 2) -> BenchResult:
    """Engine vs standard recipe images/s (alternating rounds after a warm-up), FLOP/s vs matmul peak."""
    if steps < 1 or rounds < 1:
        raise NasError(f"steps={steps} and rounds={rounds} must both be >= 1")
    if len(train_set) < (steps + 1) * batch_size:
        raise NasError(f"the benchmark needs {(steps + 1) * batch_size} images ((steps + 1) x batch size) but the "
                       f"training split has {len(train_set)}; lower --steps or --batch-size")
    r = recipe or Recipe()
    r = Recipe.from_dict({**r.to_dict(), "epochs": 1, "batch_size": batch_size, "train_subset": steps * batch_size,
                          "evals_per_epoch": 1, "warmup_epochs": 0.0})
    engine_model, base_model = copy.deepcopy(model), copy.deepcopy(model).to(device)
    loader = standard_loader(train_set, batch_size, workers)

    engine_images_per_s(engine_model, r, train_set, device)  # warm-up both sides
    baseline_images_per_s(base_model, loader, device, 1)
    engine, base = [], []
    for i in range(rounds):
        sides = [lambda: engine.append(engine_images_per_s(engine_model, r, train_set, device)),
                 lambda: base.append(baseline_images_per_s(base_model, loader, device, steps))]
        for side in sides if i % 2 == 0 else sides[::-1]:  # alternate who goes first
            side()

    precision = resolved(r.precision, device)
    amp_dtype, _ = resolve_precision(precision, device)
    kernel = onednn_conv_kernel(amp_dtype or torch.float32) if device.type == "cpu" else None
    shape = (batch_size, *train_set.images.shape[1:])
    flops = train_flops_per_image(model, shape, device)
    peak = peak_flops(device, amp_dtype or torch.float32)
    ips, bips = statistics.median(engine), statistics.median(base)
    return BenchResult(str(device), precision, kernel, batch_size, steps, rounds, ips, bips, ips / bips, flops, flops * ips, peak,
                       flops * ips / peak, tuple(engine), tuple(base))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # CUDA-only path


__all__ = ["BenchResult", "bench", "standard_loader", "matmul_peak_flops", "train_flops_per_image"]
