"""Numbers written by humans: budgets like `5e6`, `5M`, `4.5m`, `5_000_000` (YAML 1.1 reads `5e6`
and `1e-3` as strings, so space files go through here too); and numbers written for them: "1 epoch", "~45 s"."""

from __future__ import annotations

import math
import re

from nas.errors import NasError, shown

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}
_COUNT = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9_]*)?(?:e[+-]?[0-9]+)?)\s*([kmgb]?)\s*$", re.IGNORECASE)


def parse_count(value: object, name: str = "budget") -> int:
    """A positive whole count: 5e6, 5M, 5_000_000, 4.5m, 250k (fractions of one are rejected)."""
    if isinstance(value, bool):
        raise NasError(f"{name}={shown(value)} is not a number: write e.g. 5e6, 5M or 5_000_000")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        m = _COUNT.match(str(value))
        if not m:
            raise NasError(f"{name}={shown(value)} is not a count: write e.g. 5e6, 5M, 4.5m or 5_000_000")
        number = float(m.group(1).replace("_", "")) * _SUFFIX[m.group(2).lower()]
    if not math.isfinite(number) or number < 1 or number != int(number):
        raise NasError(f"{name}={shown(value)} must be a positive whole number (e.g. 5e6)")
    return int(number)


def parse_float(value: object, name: str) -> float:
    """A finite float from YAML or the command line, including strings like '1e-3'."""
    if isinstance(value, bool):
        raise NasError(f"{name}={shown(value)} must be a number")
    try:
        number = float(str(value).replace("_", "")) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise NasError(f"{name}={shown(value)} must be a number, e.g. 0.1 or 1e-3") from None
    if not math.isfinite(number):
        raise NasError(f"{name}={shown(value)} must be finite")
    return number


def parse_int(value: object, name: str) -> int:
    """An integer from YAML or the command line; '5e2' is accepted, 2.5 is not."""
    number = parse_float(value, name)
    if number != int(number):
        raise NasError(f"{name}={shown(value)} must be a whole number")
    return int(number)


def counted(n: int, noun: str) -> str:
    """'1 epoch', '2 epochs', '0 trials', '5,000 images': a count with its noun, as a person writes it."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def duration(seconds: float) -> str:
    """'~0.4 s', '~45 s', '~3.2 min', '~2.5 h': an estimate in the unit that reads best ('0.0 min' said nothing)."""
    if seconds < 90:
        return f"~{seconds:.1f} s" if seconds < 10 else f"~{seconds:.0f} s"
    return f"~{seconds / 60:.1f} min" if seconds < 5400 else f"~{seconds / 3600:.1f} h"
