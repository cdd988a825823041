"""Which number format a device trains in: the one decision behind `precision: auto`.

bf16 autocast pays on a CPU only where oneDNN has native bf16 kernels: AMX (Sapphire Rapids and
later) or AVX512_BF16 (Cooper Lake, AMD Zen 4). There it trains about twice as fast as fp32 (an AMD
EPYC with avx512_bf16: ResNet-18 105.6 against 52.5 images/s); without those instructions bf16 is
emulated and slower than fp32. CUDA takes bf16 where the GPU supports it, else fp16 with loss scaling.
Every result records the precision it resolved to, never "auto".
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable

import torch

from nas.errors import NasError

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs with native bf16 kernels in oneDNN
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them; empty where /proc/cpuinfo is absent (macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    return frozenset(line.partition(":")[2].split())


def cpu_runs_bf16(flags: Iterable[str] | None = None) -> bool:
    """Whether this CPU (or one with `flags`) has native bf16 kernels, so bf16 autocast is the fast choice."""
    have = cpu_flags() if flags is None else frozenset(flags)
    return any(f in have for f in CPU_BF16_FLAGS)


def resolved(precision: str, device: torch.device, flags: Iterable[str] | None = None) -> str:
    """"fp32", "bf16" or "fp16": what `precision` means on `device`; `flags` stands in for the CPU's own."""
    if precision == "auto":
        if device.type != "cuda":
            return "bf16" if cpu_runs_bf16(flags) else "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"  # CUDA-only path
    if precision == "fp16" and device.type != "cuda":
        raise NasError(f"precision='fp16' needs a CUDA device, but training runs on {device}; "
                       f"use precision bf16 or fp32 on CPU")
    if precision not in DTYPES:
        raise NasError(f"precision={precision!r} is unknown: choose one of auto, {', '.join(DTYPES)}")
    return precision


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None for fp32, whether a GradScaler is needed: fp16 only, whose range is narrow)."""
    name = resolved(precision, device)
    return DTYPES[name], name == "fp16"


def onednn_conv_kernel(dtype: torch.dtype = torch.bfloat16) -> str | None:
    """The oneDNN convolution kernel a small training conv in `dtype` dispatches to on this CPU, e.g.
    "brg_conv_fwd:avx512_core_bf16" (native) or a "ref:" / "gemm:" one (emulated); None where oneDNN says
    nothing. The proof that bf16 runs natively, read from oneDNN's own verbose log (printed on fd 1)."""
    x = torch.randn(8, 16, 16, 16).to(memory_format=torch.channels_last)
    w = torch.randn(16, 16, 3, 3).to(memory_format=torch.channels_last)
    with tempfile.TemporaryFile() as log:
        saved = os.dup(1)
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                torch.nn.functional.conv2d(x.to(dtype), w.to(dtype), padding=1)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        found = re.search(r",convolution,([^,]+),", log.read().decode(errors="replace"))
    return found.group(1) if found else None
