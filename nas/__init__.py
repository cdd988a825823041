"""nas: neural architecture search for ResNet image classifiers under a parameter budget.

The public names load on first use (PEP 562), so `nas count`, `nas space` and `--help` answer without
importing torch, which alone takes seconds."""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {  # name: (module, attribute)
    "Arch": ("nas.arch", "Arch"),
    "NasError": ("nas.errors", "NasError"),
    "SearchHooks": ("nas.api", "SearchHooks"),
    "SearchResult": ("nas.api", "SearchResult"),
    "Study": ("nas.api", "Study"),
    "bench_architecture": ("nas.api", "bench_architecture"),
    "build_model": ("nas.arch.model", "build_model"),
    "count_macs": ("nas.arch.counting", "count_macs"),
    "count_params": ("nas.arch.counting", "count_params"),
    "export_run": ("nas.export", "export"),
    "load_model": ("nas.runs", "load_model"),
    "measure_latency": ("nas.engine.latency", "measure_latency"),
    "train_architecture": ("nas.api", "train_architecture"),
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'nas' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
