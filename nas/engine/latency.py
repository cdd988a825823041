"""Inference latency on the current device: what deployment cares about, and what parameters do not bound.

Warm-up calls are excluded (allocator, kernel selection, lazy init); each timed call is synchronised on
CUDA; the median and the 10th-90th percentile spread are reported, since one number from a shared
machine hides its noise.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from nas.errors import NasError


@dataclass(frozen=True)
class Latency:
    batch: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int

    @property
    def images_per_s(self) -> float:
        return self.batch / (self.median_ms / 1000)


@torch.no_grad()
def measure_latency(model: nn.Module, device: torch.device, batch: int, input_size: int = 32, in_channels: int = 3,
                    warmup: int = 10, runs: int = 50) -> Latency:
    """Forward-pass time of `model` in eval mode for one batch of `batch` images, in fp32."""
    if batch < 1 or warmup < 0 or runs < 3:
        raise NasError(f"latency needs batch >= 1, warmup >= 0 and runs >= 3 (got {batch}, {warmup}, {runs})")
    was_training = model.training
    model.eval().to(device)
    x = torch.randn(batch, in_channels, input_size, input_size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    try:
        for _ in range(warmup):
            model(x)
        sync()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            sync()
            times.append((time.perf_counter() - start) * 1000)
    finally:
        model.train(was_training)
    q = statistics.quantiles(times, n=10)
    return Latency(batch, statistics.median(times), q[0], q[-1], runs)
