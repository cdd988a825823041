"""The hard limits a candidate must fit, and the one rule that says whether it does.

A search has a parameter budget and, optionally, a compute bound (MACs per image). Every place that
keeps, queues, samples, probes or counts candidates asks this value, so a new bound is one field here
and one line in each method, never a seventh copy of the rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nas.arch import Arch
from nas.arch.counting import count_macs, count_params
from nas.errors import NasError, label

MAX_PARAMS = 2_000_000_000  # what nas builds at all: 8 GB of float32 weights, 180x a ResNet-18: beyond is a typo


@dataclass(frozen=True)
class Bounds:
    params: int | None = None  # the budget; None: unbounded (`nas space` without --budget)
    macs: int | None = None  # --max-macs: multiply-accumulates of one image's forward pass

    def problem_of(self, params: int, macs: int) -> str | None:
        """Why a candidate with these counts is out, or None when it fits every bound."""
        if self.params is not None and params > self.params:
            return f"{params:,} parameters > budget {self.params:,}"
        if self.macs is not None and macs > self.macs:
            return f"{macs:,} MACs > --max-macs {self.macs:,}"
        return None

    def problem(self, arch: Arch) -> str | None:
        """Why `arch` is out (counted exactly, in microseconds), or None."""
        params = count_params(arch)
        return self.problem_of(params, count_macs(arch) if self.macs is not None else 0)

    def fits(self, arch: Arch) -> bool:
        return self.problem(arch) is None

    def mask(self, params: np.ndarray, macs: np.ndarray) -> np.ndarray:
        """The vectorised twin of fits, for a survey's arrays of counts."""
        ok = np.ones(np.shape(params), dtype=bool)
        if self.params is not None:
            ok &= params <= self.params
        return ok & (macs <= self.macs) if self.macs is not None else ok

    def __str__(self) -> str:
        parts = ([] if self.params is None else [f"budget {self.params:,}"]) + \
            ([] if self.macs is None else [f"--max-macs {self.macs:,}"])
        return " and ".join(parts) or "no bound"


def check_buildable(arch: Arch, what: str = "the architecture") -> None:
    """Refuse, before any data is read or memory allocated, a network too large to build: counting is exact
    and takes microseconds, while building 1e9 channels asks for 108 GB."""
    params = count_params(arch)
    if params > MAX_PARAMS:
        raise NasError(f"{what} ({label(arch.describe())}) has {params:,} parameters, over the {MAX_PARAMS:,} nas "
                       f"builds: check its channels and blocks (ResNet-18 has 11 million: channels [64, 128, 256, 512])")
