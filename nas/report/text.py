"""How the report writes numbers and, beside every score, the protocol that produced it.

A 4-epoch validation score of a quarter-width proxy and a 200-epoch test score of the full network sit
in one plot and one table; each carries its schedule ("4 ep x 5,000 img, width x0.25, val" against
"retrain 200 ep x 50,000 img, full width, test"), so unlike runs are never compared silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd


def pct(value: Any) -> str:
    """A fraction as a percentage; empty for a missing score."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2%}"


def count(value: Any) -> str:
    """An integer with thousands separators; empty when missing."""
    return "" if value is None or pd.isna(value) else f"{int(value):,}"


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _width(width: Any) -> str:
    if not _present(width):
        return ""
    return "full width" if float(width) >= 1 else f"width x{float(width):g}"


def schedule(epochs: Any, images: Any, width: Any, scored_on: str, prefix: str = "") -> str:
    """One schedule as text: "4 ep x 5,000 img, width x0.25, val"; unknown parts are left out, and 0 (or
    no) images means the whole training split."""
    parts = []
    if _present(epochs):
        per_epoch = f"{int(images):,} img" if _present(images) and int(images) > 0 else "full split"
        parts.append(f"{prefix}{float(epochs):g} ep x {per_epoch}".strip())
    elif prefix:
        parts.append(prefix.strip())
    parts += [p for p in (_width(width), scored_on) if p]
    return ", ".join(parts)


def short_schedule(row: Mapping[str, Any], fidelity: Mapping[str, Any]) -> str:
    """The search's short schedule of one trial (its recipe; the proxy width is the study's)."""
    return schedule(row.get("recipe.epochs"), row.get("recipe.train_subset"), fidelity.get("width"), "val")


def final_schedule(row: Mapping[str, Any], fidelity: Mapping[str, Any]) -> str:
    """The final rung's schedule of one trial: its record says epochs and images; same proxy width."""
    if not _present(row.get("confirm_acc")):
        return ""
    return schedule(row.get("confirm_epochs"), row.get("confirm_images"), fidelity.get("width"), "val")


def run_schedule(run: Mapping[str, Any], epochs: Any = None) -> str:
    """A retrained run's protocol: full width, its epochs (from its recipe, else its last curve point), its
    training images, scored on test."""
    if epochs is None and run.get("curves"):
        epochs = run["curves"][-1].get("epoch")
    return schedule(epochs, run.get("train_images"), 1.0, "test", prefix="retrain ")
