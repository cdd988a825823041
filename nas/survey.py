"""How much of a space fits a budget: exact enumeration where the space is small enough,
uniform sampling over candidates otherwise, both through the vectorised counter."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from nas.arch import Arch
from nas.counting import count_many
from nas.space import PER_LAYER, Space, combo_size, static_combos

ENUMERATE_LIMIT = 4_000_000  # candidates counted exactly before switching to sampling


@dataclass(frozen=True)
class Survey:
    size: int  # valid architectures in the space
    method: str  # "exact" or "sampled"
    evaluated: int  # candidates actually counted
    params: np.ndarray  # parameter counts of the evaluated candidates
    seconds: float

    def fits(self, budget: int) -> float:
        """Fraction of the space within the budget (exact, or an unbiased estimate)."""
        return float((self.params <= budget).mean())

    @property
    def rate(self) -> float:
        return self.evaluated / max(self.seconds, 1e-9)


def _layer_choices(space: Space, n: int, chans: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Choice lists in (blocks, channels, kernels, skip) order for each layer of an N-layer net."""
    out = []
    for i in range(n):
        skips = space.skip_kernels[i] if Arch.skip_used(i) else (1,)
        out += [space.blocks[i], chans[i], space.kernels[i], skips]
    return out


def _count(space: Space, n: int, pool, block: str, se: int, g: int, knobs: list[np.ndarray]) -> np.ndarray:
    sizes = Arch(blocks=(1,) * n, channels=(1,) * n, input_size=space.input_size).feature_sizes
    per = {name: [knobs[4 * i + j] for i in range(n)] for j, name in enumerate(PER_LAYER)}
    params, _ = count_many(per["channels"], per["blocks"], per["kernels"], per["skip_kernels"],
                           sizes[-1] if pool is None else pool, sizes=sizes, block=block, se_ratio=se,
                           groups=g, num_classes=space.num_classes, in_channels=space.in_channels)
    return np.broadcast_to(params, np.broadcast_shapes(*(k.shape for k in knobs))).ravel()


def survey(space: Space, samples: int = 200_000, seed: int = 0, limit: int = ENUMERATE_LIMIT) -> Survey:
    start = time.perf_counter()
    combos = list(static_combos(space))
    sizes = np.array([combo_size(space, c[0], c[-1]) for c in combos], dtype=np.float64)
    total = int(sum(combo_size(space, c[0], c[-1]) for c in combos))
    exact = total <= limit
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(samples, sizes / sizes.sum()) if not exact else None
    parts = []
    for k, (n, pool, block, se, g, _dropout, chans) in enumerate(combos):
        lists = [np.asarray(c, dtype=np.int64) for c in _layer_choices(space, n, chans)]
        if exact:  # sparse grids: broadcasting inside the counter yields the full product
            knobs = np.meshgrid(*lists, indexing="ij", sparse=True)
        elif draws[k]:
            knobs = [c[rng.integers(0, len(c), draws[k])] for c in lists]
        else:
            continue
        parts.append(_count(space, n, pool, block, se, g, knobs))
    params = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return Survey(total, "exact" if exact else "sampled", len(params), params, time.perf_counter() - start)
