"""Learning-rate schedules: a registry of shapes, each the peak's multiplier as a pure function of the run's
progress t in [0, 1), so one setting means the same at 4 epochs and at 200.

A schedule is one `register_schedule(name)` entry; the recipe validates against the registry and
tests/test_train.py trains and resumes every entry. nas.engine.train.LrSchedule adds the linear warm-up and,
for schedules that follow the evaluation loss (plateau), the cuts and the state a checkpoint keeps. No torch
here: a recipe is checked where torch is not imported (`nas count`, `nas space`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from nas.registry import Registry

ONECYCLE_PCT, ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 0.3, 25.0, 1e4  # torch OneCycleLR defaults
EXPONENTIAL_END = 0.01  # exponential decay reaches 1% of the peak at the end
CYCLES, CYCLIC_LOW = 4, 0.1  # cyclic: 4 triangles between 10% and 100% of the peak (CyclicLR's shape)
RESTARTS = (1, 2, 4)  # SGDR (T_mult 2): cosine cycles of 1/7, 2/7 and 4/7 of the run
TRIANGLE_PEAK = 0.23  # triangular: where the lr peaks, as a fraction of the run (airbench)


@dataclass(frozen=True)
class Schedule:
    name: str
    shape: Callable[[float], float]  # t in [0, 1) -> multiplier of the peak lr
    follows_loss: bool = False  # scaled down by LrSchedule.observe when the evaluation loss stalls


SCHEDULES: Registry[Schedule] = Registry("schedule", "schedule")


def register_schedule(name: str, follows_loss: bool = False) -> Callable[[Callable[[float], float]], Callable[[float], float]]:
    def add(shape: Callable[[float], float]) -> Callable[[float], float]:
        SCHEDULES.add(name, Schedule(name, shape, follows_loss))
        return shape
    return add


@register_schedule("cosine")
def cosine(t: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * t))


@register_schedule("onecycle")
def onecycle(t: float) -> float:
    """torch's OneCycleLR (cosine annealing): up from 1/25 of the peak over 30%, then down to 1/250,000."""
    lo, end, p = 1 / ONECYCLE_DIV, 1 / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV), ONECYCLE_PCT
    if t < p:
        return lo + (1 - lo) * (1 - math.cos(math.pi * t / p)) / 2
    return end + (1 - end) * (1 + math.cos(math.pi * (t - p) / (1 - p))) / 2


@register_schedule("step")
def step(t: float) -> float:
    """x0.1 at 50% and at 75% of the run (the reference reports' 100/150 of 200 epochs)."""
    return 0.1 ** ((t >= 0.5) + (t >= 0.75))


@register_schedule("plateau", follows_loss=True)
def plateau(t: float) -> float:
    return 1.0


@register_schedule("exponential")
def exponential(t: float) -> float:
    return EXPONENTIAL_END ** t


@register_schedule("cyclic")
def cyclic(t: float) -> float:
    phase = (t * CYCLES) % 1
    return CYCLIC_LOW + (1 - CYCLIC_LOW) * (1 - abs(2 * phase - 1))


@register_schedule("restarts")
def restarts(t: float) -> float:
    """SGDR: cosine cycles, each restarting at the peak."""
    position = t * sum(RESTARTS)
    for length in RESTARTS:
        if position < length:
            return 0.5 * (1 + math.cos(math.pi * position / length))
        position -= length
    return 0.5 * (1 + math.cos(math.pi))


@register_schedule("constant")
def constant(t: float) -> float:
    return 1.0


@register_schedule("triangular")
def triangular(t: float) -> float:
    """airbench: 0.2 -> 1 over the first 23%, then down to 0.07."""
    return 0.2 + 0.8 * t / TRIANGLE_PEAK if t < TRIANGLE_PEAK else 1 - 0.93 * (t - TRIANGLE_PEAK) / (1 - TRIANGLE_PEAK)
