"""One self-contained interactive HTML report of a search: open it anywhere, offline.

plotly.js is inlined once (no CDN), so the page renders with the network off. Every
plot div has a stable id ("pareto", "history", "rank") and every table too
("leaderboard", "outcomes", "final"), so tests and readers can find them. The numbers
come from `nas.results`; this module only draws them.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from nas.checkpoint import write_text_atomic
from nas.counting import count_params
from nas.errors import NasError
from nas.results import ARCH_KNOBS as KNOBS, best_so_far, finished_in_budget, leaderboard, pareto_front, rank_correlation

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
COLORS = {"trials": "#8da0cb", "front": "#e41a1c", "retrained": "#1b9e77", "baselines": "#7570b3", "budget": "#555"}


# ------------------------------------------------------------------------------ validation


def _checked(entries: Iterable[dict], kind: str, required: Sequence[str]) -> list[dict]:
    """Reject malformed result dicts early, naming the entry and the fix."""
    checked = []
    for entry in entries:
        missing = [k for k in required if k not in entry]
        if missing:
            raise NasError(f"{kind} entry {entry!r} lacks {missing}: give each one {', '.join(required)}")
        for key in ("test_acc", "val_acc"):
            value = entry.get(key)
            if value is not None and not 0.0 <= value <= 1.0:
                raise NasError(
                    f"{kind} entry {entry.get('name')!r} has {key}={value}: give accuracy as a fraction in [0, 1], e.g. 0.93"
                )
        checked.append(entry)
    return checked


# ------------------------------------------------------------------------------ formatting


def _pct(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2%}"


def _count(value: Any) -> str:
    return "" if value is None or pd.isna(value) else f"{int(value):,}"


def _hover(row: pd.Series) -> str:
    """Everything needed to recognise (and rebuild) a trial's architecture."""
    knobs = "<br>".join(f"{k}: {html.escape(str(row[k]))}" for k in KNOBS if k in row and pd.notna(row[k]))
    return (
        f"<b>trial {row['number']}</b> {html.escape(str(row.get('arch_id', '')))}<br>"
        f"val acc {_pct(row['val_acc'])}<br>params {_count(row['params'])} · MACs {_count(row.get('macs'))}<br>{knobs}"
    )


# ---------------------------------------------------------------------------------- figures


def _result_trace(entries: list[dict], name: str, color: str, symbol: str, label: str) -> go.Scatter:
    std = [e.get("test_acc_std") for e in entries]
    return go.Scatter(
        name=name,
        x=[e["params"] for e in entries],
        y=[e["test_acc"] for e in entries],
        mode="markers+text",
        text=[e["name"] for e in entries],
        textposition=label,
        marker={"color": color, "size": 12, "symbol": symbol, "line": {"width": 1, "color": "#222"}},
        error_y={"array": [s or 0 for s in std], "visible": any(s is not None for s in std)},
        hovertext=[
            f"<b>{html.escape(str(e['name']))}</b><br>test acc {_pct(e['test_acc'])}"
            + (f" ± {_pct(e['test_acc_std'])}" if e.get("test_acc_std") is not None else "")
            + (f"<br>val acc {_pct(e['val_acc'])}" if e.get("val_acc") is not None else "")
            + f"<br>params {_count(e['params'])}"
            for e in entries
        ],
        hoverinfo="text",
    )


def pareto_figure(frame: pd.DataFrame, budget: int, retrained: list[dict], baselines: list[dict]) -> go.Figure:
    """Accuracy vs parameters: every finished trial, the Pareto front, the budget, final results."""
    done = frame[finished_in_budget(frame)]
    front = pareto_front(frame)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            name="trials (val acc, search schedule)",
            x=done["params"], y=done["val_acc"], mode="markers",
            marker={"color": COLORS["trials"], "size": 8, "opacity": 0.75},
            hovertext=[_hover(r) for _, r in done.iterrows()], hoverinfo="text",
        )
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            name="Pareto front",
            x=front["params"], y=front["val_acc"], mode="lines+markers",
            line={"shape": "hv", "width": 2, "color": COLORS["front"]}, marker={"color": COLORS["front"], "size": 10},
            hovertext=[_hover(r) for _, r in front.iterrows()], hoverinfo="text",
        )
    )  # fmt: skip
    accuracies = [*done["val_acc"], *(e["test_acc"] for e in retrained + baselines if e["test_acc"] is not None)]
    low, high = (min(accuracies), max(accuracies)) if accuracies else (0.0, 1.0)
    fig.add_trace(
        go.Scatter(
            name=f"budget ({budget:,} params)", x=[budget, budget], y=[low, high], mode="lines",
            line={"dash": "dash", "color": COLORS["budget"]}, hoverinfo="name",
        )
    )  # fmt: skip
    if retrained:
        fig.add_trace(_result_trace(retrained, "retrained (test acc)", COLORS["retrained"], "star", "top center"))
    trained = [b for b in baselines if b["test_acc"] is not None]
    if trained:
        fig.add_trace(_result_trace(trained, "hand-designed baselines (test acc)", COLORS["baselines"], "diamond", "bottom center"))
    untrained = [b for b in baselines if b["test_acc"] is None]
    if untrained:  # no accuracy to plot: mark their size on a hidden 0..1 axis along the bottom
        fig.add_trace(
            go.Scatter(
                name="baselines (not trained)", x=[b["params"] for b in untrained], y=[0.03] * len(untrained),
                yaxis="y2", mode="markers+text", text=[b["name"] for b in untrained], textposition="top center",
                marker={"color": COLORS["baselines"], "size": 11, "symbol": "triangle-up-open"},
                hovertext=[f"<b>{html.escape(str(b['name']))}</b><br>params {_count(b['params'])}<br>not trained" for b in untrained],
                hoverinfo="text",
            )
        )  # fmt: skip
    fig.update_layout(
        title="Accuracy vs parameters",
        xaxis={"title": "trainable parameters", "type": "log", "tickformat": "~s"},
        yaxis={"title": "accuracy", "tickformat": ".1%"},
        yaxis2={"overlaying": "y", "range": [0, 1], "visible": False},
        legend={"orientation": "h", "y": -0.2},
        height=560, margin={"t": 60, "r": 20},
    )  # fmt: skip
    return fig


def history_figure(frame: pd.DataFrame) -> go.Figure:
    """Validation accuracy per trial and the best so far: is the search still improving?"""
    history = best_so_far(frame)
    fig = go.Figure(
        [
            go.Scatter(name="trial val acc", x=history["number"], y=history["val_acc"], mode="markers",
                       marker={"color": COLORS["trials"], "size": 7}),
            go.Scatter(name="best so far", x=history["number"], y=history["best"], mode="lines",
                       line={"shape": "hv", "color": COLORS["front"], "width": 2}),
        ]
    )  # fmt: skip
    fig.update_layout(
        title="Optimisation history (finished in-budget trials)",
        xaxis={"title": "trial number"}, yaxis={"title": "validation accuracy", "tickformat": ".1%"},
        height=420, margin={"t": 60, "r": 20},
    )  # fmt: skip
    return fig


def rank_figure(candidates: list[dict]) -> go.Figure:
    """Short-schedule validation accuracy against full-schedule test accuracy per candidate."""
    fig = go.Figure(
        go.Scatter(
            x=[c["val_acc"] for c in candidates], y=[c["test_acc"] for c in candidates], mode="markers+text",
            text=[c["name"] for c in candidates], textposition="top center", marker={"color": COLORS["retrained"], "size": 10},
        )
    )  # fmt: skip
    fig.update_layout(
        title="Does the search score rank the retrained models?",
        xaxis={"title": "val acc (search schedule)", "tickformat": ".1%"},
        yaxis={"title": "test acc (retrained)", "tickformat": ".1%"},
        height=420, margin={"t": 60, "r": 20},
    )  # fmt: skip
    return fig


# ----------------------------------------------------------------------------------- tables


def _table(frame: pd.DataFrame, table_id: str) -> str:
    return frame.to_html(index=False, table_id=table_id, escape=True, border=0, na_rep="")


def leaderboard_table(frame: pd.DataFrame, top: int = 10) -> str:
    board = leaderboard(frame, top=top)
    shown = pd.DataFrame(
        {
            "rank": board["rank"],
            "trial": board["number"],
            "val acc 5x (final rung)": board["confirm_acc"].map(_pct),
            "val acc (short)": board["val_acc"].map(_pct),
            "seed design": board["seed_design"],
            "params": board["params"].map(_count),
            "MACs": board["macs"].map(_count),
            **{k: board[k] for k in KNOBS if k in board},
            "arch id": board["arch_id"],
        }
    )
    return _table(shown, "leaderboard")


def outcomes_table(frame: pd.DataFrame) -> str:
    """Where the trials went: the over-budget share says whether the sampler wastes trials."""
    counts = frame["outcome"].fillna("(none)").value_counts()
    shown = pd.DataFrame({"outcome": counts.index, "trials": counts.values})
    shown["share"] = (shown["trials"] / max(len(frame), 1)).map(_pct)
    return _table(shown, "outcomes")


def final_table(retrained: list[dict], baselines: list[dict]) -> str:
    rows = [
        {
            "kind": kind,
            "name": e["name"],
            "params": _count(e["params"]),
            "val acc (search)": _pct(e.get("val_acc")),
            "test acc": _pct(e["test_acc"])
            + (f" ± {_pct(e['test_acc_std'])}" if e.get("test_acc_std") is not None else ""),
        }
        for kind, entries in (("retrained", retrained), ("baseline", baselines))
        for e in entries
    ]
    return _table(pd.DataFrame(rows), "final")


def _coefficient(value: float) -> str:
    return "undefined (one side is constant)" if math.isnan(value) else f"{value:+.2f}"


def _correlation_text(candidates: list[dict]) -> str:
    tau, rho = rank_correlation([c["val_acc"] for c in candidates], [c["test_acc"] for c in candidates])
    return (
        f'<p id="rank-correlation">Over {len(candidates)} retrained candidates, the search-schedule validation '
        f"accuracy ranks the retrained test accuracy with Kendall τ = {_coefficient(tau)} and Spearman ρ = {_coefficient(rho)} "
        "(1 = same order, 0 = unrelated).</p>"
    )


# ------------------------------------------------------------------------------------- page


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f3f3f3; }
.summary { color: #444; }
"""


def _div(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)


def render_report(
    frame: pd.DataFrame,
    *,
    budget: int,
    retrained: Sequence[dict] = (),
    baselines: Sequence[dict] = (),
    title: str,
    runs: Sequence[dict] = (),
    importance: dict[str, float] | None = None,
) -> str:
    """The whole page as one HTML string (pure: no files touched). `runs` are retrained runs' metrics.json
    contents (curves, confusion matrices); `importance` maps settings to their fANOVA importance."""
    if budget <= 0:
        raise NasError(f"budget must be a positive parameter count, but got budget={budget}")
    retrained = _checked(retrained, "retrained", ("name", "params", "test_acc"))
    baselines = _checked(baselines, "baseline", ("name", "params", "test_acc"))
    if any(e["test_acc"] is None for e in retrained):
        raise NasError("every retrained entry needs a test_acc (a number): drop the ones that did not finish")
    finished = int(finished_in_budget(frame).sum())
    over = int((frame["outcome"] == "over_budget").sum())
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="summary">{len(frame)} trials; {finished} finished within the budget of {budget:,} '
        f"parameters; {over} over budget ({_pct(over / max(len(frame), 1))}).</p>",
        _div(pareto_figure(frame, budget, retrained, baselines), "pareto"),
        _div(history_figure(frame), "history"),
        "<h2>Leaderboard (search-schedule validation accuracy)</h2>",
        leaderboard_table(frame),
    ]
    if retrained or baselines:
        sections += ["<h2>Retrained models and baselines (test set)</h2>", final_table(retrained, baselines)]
    candidates = [e for e in retrained if e.get("val_acc") is not None]
    if len(candidates) >= 2:
        sections += [
            "<h2>Rank correlation: search score vs retrained test accuracy</h2>",
            _correlation_text(candidates),
            _div(rank_figure(candidates), "rank"),
        ]
    sections += _settings_sections(frame, importance or {}) + _run_sections(runs)
    sections += ["<h2>Trial outcomes</h2>", outcomes_table(frame)]
    body = "\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n</head>\n<body>\n{body}\n</body>\n</html>\n'
    )


def _settings_sections(frame: pd.DataFrame, importance: dict[str, float]) -> list[str]:
    """What the search's settings did: parallel coordinates, importance, and a pivot of the two most varied."""
    from nas import figures

    varied = figures.varied_settings(frame)
    sections = ["<h2>Settings of the trained trials</h2>", _div(figures.parallel_figure(frame), "parallel")] if varied else []
    if importance:
        sections += ["<h2>Which settings mattered (fANOVA importance of the short score)</h2>",
                     _div(figures.importance_figure(importance), "importance")]
    if len(varied) >= 2:
        sections += [f"<h2>Best score by {html.escape(varied[0])} and {html.escape(varied[1])}</h2>",
                     _div(figures.pivot_figure(frame, varied[0], varied[1]), "pivot")]
    return sections


def _run_sections(runs: Sequence[dict], confusions: int = 4) -> list[str]:
    """Training curves of every retrained run, and per-class results of the best few."""
    from nas import figures

    runs = [r for r in runs if r.get("curves")]  # runs written before curves were recorded are skipped
    if not runs:
        return []
    best = sorted((r for r in runs if r.get("confusion")), key=lambda r: -r["test_acc"])[:confusions]
    return ["<h2>Retrained runs: training curves</h2>", _div(figures.curves_figure(runs), "curves"),
            *[_div(figures.confusion_figure(r), f"confusion-{i}") for i, r in enumerate(best)]]


def write_study_report(study: Any, results_dir: Path, examples: Path, frame: pd.DataFrame | None = None) -> Path:
    """Rewrite RESULTS/<study>/report.html with the search, its retrained candidates and the baselines
    (every examples/ architecture: retrained where a run exists, else its size alone)."""
    from nas.record import STUDY_BUDGET
    from nas.results import trials_frame
    from nas.retrain import baseline_root, file_candidate, finished_runs, retrain_root, summarize

    budget = study.user_attrs.get(STUDY_BUDGET)
    if budget is None:
        raise NasError(f"study {study.study_name!r} records no budget: it was not created by `nas search` or nas.Study")
    frame = trials_frame(study) if frame is None else frame
    runs = finished_runs(retrain_root(results_dir, study.study_name))
    retrained = [{k: e[k] for k in ("name", "params", "test_acc", "test_acc_std", "val_acc")} for e in summarize(runs)]
    baselines: list[dict[str, Any]] = []
    for path in sorted(Path(examples).glob("*.json")) if Path(examples).is_dir() else []:
        c = file_candidate(path)
        done = summarize(finished_runs(baseline_root(results_dir, c.name)))
        baselines += [{k: e.get(k) for k in ("name", "params", "test_acc", "test_acc_std")} for e in done] or [
            {"name": c.name, "params": count_params(c.arch), "test_acc": None, "test_acc_std": None}]
    from nas.artifacts import study_dir
    from nas.figures import importances

    return write_report(frame, study_dir(results_dir, study.study_name) / "report.html", budget=int(budget),
                        retrained=retrained, baselines=baselines, title=f"nas study {study.study_name}", runs=runs,
                        importance=importances(study))


def write_report(
    df: pd.DataFrame,
    path: Path,
    *,
    budget: int,
    retrained: Sequence[dict] = (),
    baselines: Sequence[dict] = (),
    title: str,
    runs: Sequence[dict] = (),
    importance: dict[str, float] | None = None,
) -> Path:
    """Write the report atomically (a browser refreshing it mid-search never sees half a page)."""
    page = render_report(df, budget=budget, retrained=retrained, baselines=baselines, title=title, runs=runs,
                         importance=importance)
    return write_text_atomic(page, Path(path))
