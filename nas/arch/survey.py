"""How much of a space fits a budget: exact enumeration where the space is small enough,
uniform sampling over candidates otherwise, both through the vectorised counter.

Every block family vectorises (no builder in nas/arch/families.py branches on a per-layer knob), so each group of
candidates sharing N, pool and the network-wide options is one call of `count_many`.

The arrays are float64, not int64: a hostile choice (blocks: 2**63) cannot overflow them, and every
count below 2**53 is exact in them; a space whose candidates count beyond that is refused, where int64
would have wrapped around silently (found by fuzzing)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from nas.arch.bounds import Bounds
from nas.arch.counting import count_many
from nas.arch.space import PER_LAYER, Combo, Space, combo_size, static_combos
from nas.errors import NasError

ENUMERATE_LIMIT = 4_000_000  # candidates counted exactly before switching to sampling
EXACT_BELOW = 2.0 ** 53  # float64 holds every integer below this exactly


@dataclass(frozen=True)
class Survey:
    size: int  # valid architectures in the space
    method: str  # "exact" or "sampled"
    evaluated: int  # candidates actually counted
    params: np.ndarray  # parameter counts of the evaluated candidates
    seconds: float
    macs: np.ndarray  # their multiply-accumulates per image, in the same order

    def fits(self, bounds: Bounds) -> float:
        """Fraction of the space within the bounds (exact, or an unbiased estimate)."""
        return float(bounds.mask(self.params, self.macs).mean())

    @property
    def rate(self) -> float:
        return self.evaluated / max(self.seconds, 1e-9)


def _layer_choices(space: Space, combo: Combo) -> list[tuple[int, ...]]:
    """Choice lists in (blocks, channels, kernels, skip) order for each layer of the combo's net."""
    out = []
    for i in range(combo.n):
        out += [space.blocks[i], combo.chans[i], space.kernels[i], combo.skips[i]]
    return out


def _count(space: Space, combo: Combo, knobs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(params, macs) of the combo's candidates, one entry per point of the knobs' (broadcast) grid."""
    n = combo.n
    per = {name: [knobs[4 * i + j] for i in range(n)] for j, name in enumerate(PER_LAYER)}
    counts = count_many(per["channels"], per["blocks"], per["kernels"], per["skip_kernels"], combo.pool,
                        input_size=space.input_size, options=combo.options,
                        num_classes=space.num_classes, in_channels=space.in_channels)
    shape = np.broadcast_shapes(*(k.shape for k in knobs))
    params, macs = (np.broadcast_to(c, shape).ravel() for c in counts)
    return params, macs


def survey(space: Space, samples: int = 200_000, seed: int = 0, limit: int = ENUMERATE_LIMIT) -> Survey:
    start = time.perf_counter()
    combos = list(static_combos(space))
    sizes = np.array([combo_size(space, c) for c in combos], dtype=np.float64)
    total = int(sum(combo_size(space, c) for c in combos))
    exact = total <= limit
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(samples, sizes / sizes.sum()) if not exact else None
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for k, combo in enumerate(combos):
        lists = [np.asarray(c, dtype=np.float64) for c in _layer_choices(space, combo)]
        if exact:  # sparse grids: broadcasting inside the counter yields the full product
            knobs = np.meshgrid(*lists, indexing="ij", sparse=True)
        elif draws[k]:
            knobs = [c[rng.integers(0, len(c), draws[k])] for c in lists]
        else:
            continue
        parts.append(_count(space, combo, knobs))
    params, macs = ([np.concatenate(c) for c in zip(*parts)] if parts else [np.zeros(0)] * 2)
    if len(params) and max(params.max(), macs.max()) >= EXACT_BELOW:
        raise NasError(f"space {space.name!r} has candidates with over {EXACT_BELOW:.1e} parameters or MACs, beyond "
                       f"exact counting: list fewer blocks, channels or smaller kernels")
    params, macs = params.astype(np.int64), macs.astype(np.int64)
    return Survey(total, "exact" if exact else "sampled", len(params), params, time.perf_counter() - start, macs)
