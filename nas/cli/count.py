"""Commands that look at architectures and spaces without training: `nas count`, `nas space`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.table import Table
from rich.text import Text

from nas.arch import Arch
from nas.arch.bounds import Bounds
from nas.arch.counting import breakdown, count_macs, count_params
from nas.cli.app import Json, command, out, print_json
from nas.cli.archflags import arch_command
from nas.errors import NasError
from nas.numbers import parse_count


@arch_command
def count(
    arch: Arch,
    as_json: Json = False,
) -> None:
    """Count parameters and MACs of one architecture, exactly, without building it."""
    rows = breakdown(arch)
    params, macs = count_params(arch), count_macs(arch)
    if as_json:
        print_json({"params": params, "macs": macs, "arch": arch.to_dict(), "id": arch.id,
                    "layers": [{"name": r.name, "params": r.params, "macs": r.macs, "output": r.output} for r in rows]})
        return
    table = Table(title=arch.describe(), title_justify="left")
    for col in ("stage", "output", "params", "MACs"):
        table.add_column(col, justify="left" if col in ("stage", "output") else "right")
    for r in rows:
        table.add_row(r.name, r.output, f"{r.params:,}", f"{r.macs:,}")
    table.add_section()
    table.add_row("total", "", Text(f"{params:,}", style="bold"), Text(f"{macs:,}", style="bold"))
    out.print(table)
    out.print(f"id {arch.id}: {params / 1e6:.3f}M parameters, {macs / 1e6:.1f}M MACs per image")


# -- space -----------------------------------------------------------------------------------
def _histogram(params: np.ndarray, budget: int | None, bins: int = 16) -> Table:
    table = Table(box=None, show_header=True, pad_edge=False)
    table.add_column("params", justify="right")
    table.add_column("share", justify="right")
    table.add_column("")
    if len(params) == 0:
        return table
    edges = np.unique(np.geomspace(max(params.min(), 1), params.max() + 1, bins + 1).astype(np.int64))
    counts, _ = np.histogram(params, edges)
    width = 40
    for lo, hi, c in zip(edges[:-1], edges[1:], counts):
        share = c / len(params)
        over = budget is not None and lo > budget
        bar = "█" * round(width * c / counts.max())
        table.add_row(f"{lo / 1e6:8.3f}M-{hi / 1e6:.3f}M", f"{100 * share:5.1f}%", Text(bar, style="red" if over else "green"))
    return table


@command
def space(
    space_file: Annotated[Path, typer.Argument(help="Search-space YAML file, or a bundled space's name: default, fast, tiny, cifar100, recipe-grid.")],
    budget: Annotated[Optional[str], typer.Option(help="Parameter budget: 5e6, 5M, 4.5m, 5_000_000.")] = None,
    max_macs: Annotated[Optional[str], typer.Option("--max-macs", help="Bound on MACs per image, as `nas search --max-macs`: 3e8, 300M.", show_default=False)] = None,
    samples: Annotated[int, typer.Option(help="Candidates to sample when the space is too large to enumerate.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    classes: Annotated[Optional[int], typer.Option("--classes", help="Count for data with this many classes (100 for CIFAR-100), as `nas search` does from its data; default: the space's own (10 unless it names num_classes).", show_default=False)] = None,
    as_json: Json = False,
) -> None:
    """Size of a search space and how much of it fits a budget and a MACs bound (exact where it can be enumerated)."""
    from nas.arch.space import load_space
    from nas.arch.survey import survey
    from nas.bundled import space_file as bundled_space

    cap = parse_count(budget) if budget is not None else None
    macs_cap = parse_count(max_macs, "--max-macs") if max_macs is not None else None
    if samples < 1:
        raise NasError(f"--samples={samples} must be >= 1")
    sp = load_space(bundled_space(space_file))
    if classes is not None:
        if classes < 2:
            raise NasError(f"--classes={classes} must be >= 2")
        sp = sp.for_data(classes)
    s = survey(sp, samples=samples, seed=seed)
    fit = s.fits(Bounds(cap, macs_cap)) if cap is not None or macs_cap is not None else None
    summary = {
        "space": sp.name, "num_classes": sp.num_classes, "size": s.size, "method": s.method, "evaluated": s.evaluated,
        "budget": cap, "max_macs": macs_cap, "fit_fraction": fit, "fit_count": round(fit * s.size) if fit is not None else None,
        "params_min": int(s.params.min()), "params_median": int(np.median(s.params)),
        "params_max": int(s.params.max()), "macs_min": int(s.macs.min()), "macs_median": int(np.median(s.macs)),
        "macs_max": int(s.macs.max()), "candidates_per_s": round(s.rate),
    }
    if as_json:
        print_json(summary)
        return
    how = "exactly, by enumeration" if s.method == "exact" else f"by sampling {s.evaluated:,} candidates uniformly"
    out.print(f"{sp.name}: {s.size:,} valid architectures; counted {how} at {s.rate:,.0f} candidates/s")
    if fit is not None:
        bounds = " and ".join(b for b in (cap and f"budget {cap:,}", macs_cap and f"{macs_cap:,} MACs") if b)
        out.print(f"{bounds}: {'' if s.method == 'exact' else '~'}{summary['fit_count']:,} fit ({100 * fit:.1f}%)")
    out.print(f"parameters: min {summary['params_min']:,}, median {summary['params_median']:,}, max {summary['params_max']:,}")
    out.print(f"MACs: min {summary['macs_min']:,}, median {summary['macs_median']:,}, max {summary['macs_max']:,}")
    out.print(_histogram(s.params, cap))


