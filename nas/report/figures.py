"""The report's search figures: accuracy vs parameters (block families, seed designs, Pareto front, retrained
results), the search history per depth, the short schedule's ranks against the final rung's, and retrained
accuracy against inference latency.

Pure functions of the trials table (`nas.report.tables` computes from it) and of result dicts: this module only
draws; `nas.report.page` places the figures. Every score's hover names its protocol (`nas.report.text`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from nas import record
from nas.arch.families import FAMILIES
from nas.report.tables import (
    ARCH_KNOBS,
    depth_history,
    finished_in_budget,
    leaderboard,
    pareto_front,
    rank_correlation,
)
from nas.report.text import count, final_schedule, pct, run_schedule, short_schedule

WIDTH = 1200  # the page's plot width (its max-width); labels are placed for it and static files drawn at it
COLORS = {"front": "#e41a1c", "retrained": "#edc948", "baselines": "#555555", "budget": "#555555", "best": "#111111"}
# Block families take these in the registry's order (nas.arch.families), so one family looks the same in every
# report; families a study holds but this install does not register take the colours after them.
FAMILY_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#9c755f", "#8c8c8c", "#76b7b2", "#ff9da7", "#bab0ac",
                  "#17becf", "#edc948", "#af7aa1")
DEPTH_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")
LABEL_POSITIONS = ("top center", "bottom center", "top right", "bottom right", "top left", "bottom left",
                   "middle right", "middle left")
_MARGIN = {"l": 70, "r": 210, "t": 90, "b": 60}  # fixed (legend on the right): labels are placed in pixels
_LEGEND = {"x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top", "groupclick": "toggleitem"}
_PARETO_HEIGHT = 580
_UNTRAINED_ROWS = (0.05, 0.14, 0.23)  # heights (fractions of the plot) of baselines without an accuracy, in turn


def family_color(family: str, families: Sequence[str] = ()) -> str:
    """A block family's colour: by its place in the registry, else after them by its place among `families`."""
    order = [*FAMILIES, *sorted(f for f in {*families, family} if f not in FAMILIES)]
    return FAMILY_PALETTE[order.index(family) % len(FAMILY_PALETTE)]


def depth_color(depth: Any) -> str:
    """One colour per number of layers, the same in every figure (history, ranks)."""
    return DEPTH_COLORS[(int(depth) - 1) % len(DEPTH_COLORS)]


# ------------------------------------------------------------------------------ labels


Label = tuple[float, float, str, float]  # marker centre (x, y px; y down), text, marker radius (px)


def _box(x: float, y: float, text: str, position: str, radius: float) -> tuple[float, float, float, float]:
    """Pixel box (x0, y0, x1, y1; y down) that plotly gives `text` at `position` around a marker at (x, y):
    about 7 px per character of the 12 px font, set off by the marker's radius."""
    w, h, gap = 7.2 * len(text) + 4, 16.0, radius + 2
    vertical, horizontal = position.split()
    x0 = {"center": x - w / 2, "right": x + gap, "left": x - gap - w}[horizontal]
    y0 = {"top": y - gap - h, "bottom": y + gap, "middle": y - h / 2}[vertical]
    return x0, y0, x0 + w, y0 + h


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def place_labels(points: Sequence[Label], obstacles: Sequence[tuple[float, float]] = (),
                 size: tuple[float, float] | None = None) -> list[str]:
    """A textposition for each labelled point, in order of priority: the first position whose box meets no
    label placed before, no marker (the labelled ones and the unlabelled `obstacles`) and stays inside the
    plot of `size`, else the one that overlaps least."""
    markers = [(x - r, y - r, x + r, y + r) for x, y, _, r in points] + [(x - 5, y - 5, x + 5, y + 5) for x, y in obstacles]
    placed: list[tuple[float, ...]] = []
    chosen = []
    for i, (x, y, text, radius) in enumerate(points):
        def cost(position: str) -> float:
            box = _box(x, y, text, position, radius)
            outside = 0.0 if size is None else (box[2] - box[0]) * (box[3] - box[1]) - _overlap(box, (0, 0, *size))
            return (sum(_overlap(box, b) for b in placed) + outside
                    + sum(_overlap(box, m) for j, m in enumerate(markers) if j != i))

        best = min(LABEL_POSITIONS, key=lambda p: (cost(p) > 0, cost(p), LABEL_POSITIONS.index(p)))
        placed.append(_box(x, y, text, best, radius))
        chosen.append(best)
    return chosen


class _Canvas:
    """Data to pixel coordinates of one plot area whose axis ranges are set explicitly (so labels can be placed)."""

    def __init__(self, xs: Sequence[float], ys: Sequence[float], log_x: bool, height: int) -> None:
        tx = [math.log10(x) if log_x else x for x in xs if x and x > 0] or [0.0, 1.0]
        self.log_x = log_x
        pad_x = max(0.08 * (max(tx) - min(tx)), 0.15 if log_x else 0.05 * max(abs(v) for v in tx) or 1.0)
        pad_y = max(0.12 * (max(ys) - min(ys)), 0.01) if ys else 0.05
        self.x_range = [min(tx) - pad_x, max(tx) + pad_x]
        self.y_range = [min(ys) - pad_y, max(ys) + pad_y] if ys else [0.0, 1.0]
        self.size = (WIDTH - _MARGIN["l"] - _MARGIN["r"], height - _MARGIN["t"] - _MARGIN["b"])

    def px(self, x: float, y: float, y_fraction: bool = False) -> tuple[float, float]:
        tx = math.log10(x) if self.log_x else x
        fx = (tx - self.x_range[0]) / (self.x_range[1] - self.x_range[0])
        fy = y if y_fraction else (y - self.y_range[0]) / (self.y_range[1] - self.y_range[0])
        return fx * self.size[0], (1 - fy) * self.size[1]


# ------------------------------------------------------------------------------ pareto


def _trial_hover(row: pd.Series, fidelity: Mapping[str, Any]) -> str:
    """Everything needed to recognise (and rebuild) a trial's architecture, and the protocol of its scores."""
    knobs = "<br>".join(f"{k}: {html.escape(str(row[k]))}" for k in ARCH_KNOBS if k in row and pd.notna(row[k]))
    seed = f" (seed design {html.escape(str(row['seed_design']))})" if is_seed(row) else ""
    final = (f"<br>val acc {pct(row['confirm_acc'])} final rung ({html.escape(final_schedule(row, fidelity))})"
             if pd.notna(row.get("confirm_acc")) else "")
    return (f"<b>trial {row['number']}</b>{seed} {html.escape(str(row.get('arch_id', '')))}<br>"
            f"val acc {pct(row['val_acc'])} ({html.escape(short_schedule(row, fidelity))}){final}<br>"
            f"params {count(row['params'])} · MACs {count(row.get('macs'))}<br>{knobs}")


def is_seed(row: Mapping[str, Any]) -> bool:
    """Whether a trial (a row of the trials table) is one of the space's seed designs."""
    value = row.get("seed_design")
    return isinstance(value, str) and value not in ("", "nan", "None")


def _seeds(frame: pd.DataFrame) -> pd.Series:
    """Mask of the trials that are seed designs (the space's `seeds:`, tried first)."""
    return frame["seed_design"].map(lambda v: is_seed({"seed_design": v})).astype(bool)


def _result_hover(e: Mapping[str, Any]) -> str:
    spread = f" ± {pct(e['test_acc_std'])}" if e.get("test_acc_std") is not None else ""
    schedule = f" ({html.escape(e['schedule'])})" if e.get("schedule") else ""
    search = (f"<br>search score: val acc {pct(e['val_acc'])} ({html.escape(e.get('val_schedule') or 'search')})"
              if e.get("val_acc") is not None else "")
    return (f"<b>{html.escape(str(e['name']))}</b><br>test acc {pct(e['test_acc'])}{spread}{schedule}{search}"
            f"<br>params {count(e['params'])}")


def _schedules(texts: Sequence[str]) -> str:
    """The protocols a group of points was scored with (usually one) for its legend title."""
    unique = sorted({t for t in texts if t})
    return " / ".join(unique) if unique else "protocol not recorded"


def _short(text: str, limit: int = 32) -> str:
    """A point's label cut to `limit` characters (its hover has the whole name)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _families(done: pd.DataFrame) -> list[str]:
    return sorted(done["block"].fillna("?").astype(str).unique()) if "block" in done else []


def _seed_marker(seeds: pd.DataFrame, done: pd.DataFrame) -> dict[str, Any]:
    """Seed designs: a black-edged square in their family's colour (a study with no trials has no families)."""
    families = _families(done)
    colors = [family_color(str(b), families) for b in seeds["block"]] if "block" in seeds else []
    return {"symbol": "square", "size": 12, "line": {"width": 2, "color": "#111"}, "color": colors}


def _family_traces(done: pd.DataFrame, fidelity: Mapping[str, Any], cost: str = "params") -> list[go.Scatter]:
    """One trace per block family of the finished trials that are not seed designs (drawn apart)."""
    families, traces = _families(done), []
    for family in families:
        rows = done[(done["block"].fillna("?").astype(str) == family) & ~_seeds(done)]
        traces.append(go.Scatter(
            name=family, legendgroup="trials", legendgrouptitle_text="trials (val acc)", x=rows[cost],
            y=rows["val_acc"], mode="markers", marker={"color": family_color(family, families), "size": 8, "opacity": 0.8},
            hovertext=[_trial_hover(r, fidelity) for _, r in rows.iterrows()], hoverinfo="text"))
    return traces


@dataclass
class _Marked:
    """A trace whose points carry text labels: positions are chosen across all such traces at once."""

    name: str
    x: list[float]
    y: list[float]
    text: list[str]
    hover: list[str]
    marker: dict[str, Any]
    on_y2: bool = False  # y is a fraction of the plot's height (results without an accuracy)
    extra: dict[str, Any] = field(default_factory=dict)


def _best_and_seeds(frame: pd.DataFrame, done: pd.DataFrame, fidelity: Mapping[str, Any]) -> list[_Marked]:
    """A ring on the best trial, and the seed designs that trained: a distinct marker in their family's colour,
    named."""
    seeds = done[_seeds(done)]
    groups = [_Marked("seed designs", list(seeds["params"]), list(seeds["val_acc"]), list(seeds["seed_design"]),
                      [_trial_hover(r, fidelity) for _, r in seeds.iterrows()],
                      _seed_marker(seeds, done),
                      extra={"legendgroup": "trials", "legendgrouptitle_text": "trials (val acc)"})]
    board = leaderboard(frame, top=1) if len(done) else done
    if len(board):
        best = board.iloc[0]
        label = "best" if is_seed(best) else f"best: trial {best['number']}"
        groups.insert(0, _Marked("best trial", [best["params"]], [best["val_acc"]], [label], [_trial_hover(best, fidelity)],
                                 {"symbol": "circle-open", "size": 20, "color": COLORS["best"], "line": {"width": 2}}))
    return groups


def _results(retrained: Sequence[Mapping[str, Any]], baselines: Sequence[Mapping[str, Any]]) -> list[_Marked]:
    """Retrained candidates and hand-designed baselines (test accuracy), and baselines not yet trained (their
    size only, staggered along the bottom so that their names fit)."""
    def marked(name: str, entries: list, symbol: str, color: str) -> _Marked:
        std = [e.get("test_acc_std") for e in entries]
        return _Marked(name, [e["params"] for e in entries], [e["test_acc"] for e in entries],
                       [e["name"] for e in entries], [_result_hover(e) for e in entries],
                       {"color": color, "size": 14, "symbol": symbol, "line": {"width": 1, "color": "#222"}},
                       extra={"error_y": {"array": [s or 0 for s in std], "visible": any(s is not None for s in std)},
                              "legendgroup": "test", "legendgrouptitle_text": "test acc"})

    trained = [b for b in baselines if b["test_acc"] is not None]
    untrained = sorted((b for b in baselines if b["test_acc"] is None), key=lambda b: b["params"])
    return [marked("retrained", list(retrained), "star", COLORS["retrained"]),
            marked("baselines", trained, "diamond", COLORS["baselines"]),
            _Marked("baselines, not trained", [b["params"] for b in untrained],
                    [_UNTRAINED_ROWS[i % len(_UNTRAINED_ROWS)] for i in range(len(untrained))],
                    [b["name"] for b in untrained],
                    [f"<b>{html.escape(str(b['name']))}</b><br>params {count(b['params'])}<br>not trained"
                     for b in untrained], {"color": COLORS["baselines"], "size": 11, "symbol": "triangle-up-open"},
                    on_y2=True, extra={"legendgroup": "size", "legendgrouptitle_text": "size only"})]


def _add_marked(fig: go.Figure, groups: Sequence[_Marked], canvas: _Canvas,
                obstacles: Sequence[tuple[float, float]] = ()) -> None:
    """Add the labelled traces, each label at a position where it meets no other label and no marker
    (`obstacles`: the unlabelled points, in data coordinates)."""
    points = [(*canvas.px(x, y, g.on_y2), _short(str(t)), g.marker.get("size", 10) / 2 + 1)
              for g in groups for x, y, t in zip(g.x, g.y, g.text)]
    positions = iter(place_labels(points, [canvas.px(x, y) for x, y in obstacles], canvas.size))
    for g in groups:
        if not g.x:
            continue
        fig.add_trace(go.Scatter(name=g.name, x=g.x, y=g.y, yaxis="y2" if g.on_y2 else "y", mode="markers+text",
                                 text=[_short(str(t)) for t in g.text], textposition=[next(positions) for _ in g.x],
                                 marker=g.marker,
                                 hovertext=g.hover, hoverinfo="text", cliponaxis=False, **g.extra))


def _protocols(done: pd.DataFrame, results: Sequence[Mapping[str, Any]], fidelity: Mapping[str, Any]) -> str:
    """The figure's subtitle: which protocol each kind of point was scored with."""
    parts = [f"trials: val acc, {_schedules([short_schedule(r, fidelity) for _, r in done.iterrows()])}"]
    if results:
        parts.append(f"retrained and baselines: test acc, {_schedules([e.get('schedule', '') for e in results])}")
    return " · ".join(parts)


def pareto_figure(frame: pd.DataFrame, budget: int, retrained: Sequence[Mapping[str, Any]],
                  baselines: Sequence[Mapping[str, Any]], fidelity: Mapping[str, Any] | None = None) -> go.Figure:
    """Accuracy vs parameters: finished trials coloured by block family, seed designs and the best trial named,
    the Pareto front, the budget, and the retrained results; labels placed so that none overlap."""
    fidelity = fidelity or {}
    done = frame[finished_in_budget(frame)]
    front = pareto_front(frame)
    drawn = set(done.loc[_seeds(done), "seed_design"])  # a seed design that trained is named where it scored
    not_yet_drawn = [b for b in baselines if b["test_acc"] is not None or b["name"] not in drawn]
    marked = _best_and_seeds(frame, done, fidelity) + _results(retrained, not_yet_drawn)
    accuracies = [*done["val_acc"], *(y for g in marked if not g.on_y2 for y in g.y)]
    canvas = _Canvas([*done["params"], budget, *(x for g in marked for x in g.x)], accuracies, True, _PARETO_HEIGHT)
    fig = go.Figure(_family_traces(done, fidelity))
    fig.add_trace(go.Scatter(
        name="Pareto front", x=front["params"], y=front["val_acc"], mode="lines+markers",
        line={"shape": "hv", "width": 2, "color": COLORS["front"]}, marker={"color": COLORS["front"], "size": 6},
        hovertext=[_trial_hover(r, fidelity) for _, r in front.iterrows()], hoverinfo="text"))
    fig.add_trace(go.Scatter(name=f"budget {budget:,}", x=[budget, budget], y=canvas.y_range, mode="lines",
                             line={"dash": "dash", "color": COLORS["budget"]}, hoverinfo="name"))
    _add_marked(fig, marked, canvas, list(zip(done["params"], done["val_acc"])))
    results = [*retrained, *(b for b in baselines if b["test_acc"] is not None)]
    fig.update_layout(
        title={"text": "Accuracy vs parameters (hover a point for its architecture and protocol)",
               "subtitle": {"text": html.escape(_protocols(done, results, fidelity))}},
        xaxis={"title": "trainable parameters", "type": "log", "tickformat": "~s", "range": canvas.x_range,
               **({"dtick": "D2"} if canvas.x_range[1] - canvas.x_range[0] > 1.2 else {})},  # 1-2-5 ticks
        yaxis={"title": "accuracy", "tickformat": ".1%", "range": canvas.y_range},
        yaxis2={"overlaying": "y", "range": [0, 1], "visible": False},
        legend=_LEGEND, height=_PARETO_HEIGHT, margin=_MARGIN)
    return fig


def macs_figure(frame: pd.DataFrame, fidelity: Mapping[str, Any] | None = None) -> go.Figure:
    """Accuracy vs MACs per image: a parameter budget does not bound compute, so the front against compute (what
    `--objectives accuracy,macs` searches) is drawn too, seed designs as named squares."""
    fidelity = fidelity or {}
    done = frame[finished_in_budget(frame)]
    front = done.iloc[record.nondominated(list(zip(-done["val_acc"].astype(float), done["macs"].astype(float))))]
    front = front.sort_values("macs", kind="stable")
    seeds = done[_seeds(done)]
    fig = go.Figure(_family_traces(done, fidelity, "macs"))
    fig.add_trace(go.Scatter(
        name="seed designs", x=seeds["macs"], y=seeds["val_acc"], mode="markers+text", text=seeds["seed_design"],
        textposition="top center", marker=_seed_marker(seeds, done),
        hovertext=[_trial_hover(r, fidelity) for _, r in seeds.iterrows()], hoverinfo="text"))
    fig.add_trace(go.Scatter(
        name="front (accuracy vs MACs)", x=front["macs"], y=front["val_acc"], mode="lines+markers",
        line={"shape": "hv", "width": 2, "color": COLORS["front"]}, marker={"color": COLORS["front"], "size": 6},
        hovertext=[_trial_hover(r, fidelity) for _, r in front.iterrows()], hoverinfo="text"))
    fig.update_layout(title="Accuracy vs compute (multiply-accumulates per image)", height=460,
                      xaxis={"title": "MACs per image", "type": "log", "tickformat": "~s", "dtick": "D2"},  # 1-2-5 ticks
                      yaxis={"title": "accuracy", "tickformat": ".1%"}, legend={"groupclick": "toggleitem"})
    return fig


# ------------------------------------------------------------------------------ history and ranks


def history_figure(frame: pd.DataFrame, fidelity: Mapping[str, Any] | None = None) -> go.Figure:
    """Best short score so far per depth against trial number, with each trial of that depth as a marker
    (filled: complete; open: pruned, at its last score): is each depth's search still improving?"""
    history, fig = depth_history(frame), go.Figure()
    done = frame[finished_in_budget(frame)]
    schedule = _schedules([short_schedule(r, fidelity or {}) for _, r in done.iterrows()])
    for depth, rows in history.groupby("depth", sort=True):
        color, group = depth_color(depth), f"N={depth}"
        common = {"legendgroup": group, "legendgrouptitle_text": f"{group} layers"}
        fig.add_trace(go.Scatter(name="best so far", x=rows["number"], y=rows["best"], mode="lines",
                                 line={"shape": "hv", "color": color, "width": 2.5}, meta={"depth": int(depth)},
                                 hovertemplate=f"{group}: best %{{y:.2%}} by trial %{{x}}<extra></extra>", **common))
        for outcome, symbol in (("complete", "circle"), ("pruned", "x-thin-open")):
            part = rows[rows["outcome"] == outcome]
            if part.empty:
                continue
            fig.add_trace(go.Scatter(name=outcome, x=part["number"], y=part["score"], mode="markers",
                                     marker={"symbol": symbol, "color": color, "size": 7,
                                             "line": {"width": 1.5, "color": color}},
                                     hovertemplate=f"trial %{{x}} ({group}, {outcome}): %{{y:.2%}}<extra></extra>",
                                     **common))
    fig.update_layout(
        title=f"Search history per depth: best short score so far ({html.escape(schedule)})",
        xaxis={"title": "trial number"}, yaxis={"title": "validation accuracy (pruned: last score)", "tickformat": ".1%"},
        height=460, margin={"t": 60, "r": 20})
    return fig


def _rank_label(row: pd.Series) -> str:
    name = str(row["seed_design"]) if is_seed(row) else f"trial {row['number']}"
    return f"{name} (N={row['depth']})" if pd.notna(row.get("depth")) else name


def ranks_figure(ranks: pd.DataFrame, fidelity: Mapping[str, Any] | None = None) -> go.Figure:
    """Slope chart of the final rung's trials: rank at the short schedule (left) against rank at the final rung
    (right), one labelled line per trial, Kendall tau of the two scores in the title. Crossing lines are the
    proxy's mistakes."""
    fidelity = fidelity or {}
    tau, _ = rank_correlation(list(ranks["val_acc"]), list(ranks["confirm_acc"]))
    fig = go.Figure()
    for _, row in ranks.iterrows():
        label = _rank_label(row)
        color = depth_color(row["depth"]) if pd.notna(row["depth"]) else "#666"
        fig.add_trace(go.Scatter(
            name=label, x=[0, 1], y=[row["short_rank"], row["final_rank"]], mode="lines+markers+text",
            text=[f"{label} · {pct(row['val_acc'])}", f"{pct(row['confirm_acc'])} · {label}"],
            textposition=["middle left", "middle right"], line={"color": color, "width": 2},
            marker={"size": 10, "color": color, "symbol": "square" if is_seed(row) else "circle"},
            hovertext=[f"{html.escape(label)}: rank {row['short_rank']} at the short schedule, val acc "
                       f"{pct(row['val_acc'])} ({html.escape(short_schedule(row, fidelity))})",
                       f"{html.escape(label)}: rank {row['final_rank']} at the final rung, val acc "
                       f"{pct(row['confirm_acc'])} ({html.escape(final_schedule(row, fidelity))})"],
            hoverinfo="text", showlegend=False))
    n = len(ranks)
    short = _schedules([short_schedule(r, fidelity) for _, r in ranks.iterrows()])
    final = _schedules([final_schedule(r, fidelity) for _, r in ranks.iterrows()])
    fig.update_layout(
        title=f"Short-schedule vs final-rung ranks of the {n} trials the final rung trained: "
              f"Kendall τ = {format_tau(tau)}",
        xaxis={"tickvals": [0, 1], "ticktext": [f"short schedule<br>{html.escape(short)}",
                                                f"final rung<br>{html.escape(final)}"],
               "range": [-1.1, 2.1], "showgrid": False, "zeroline": False},
        yaxis={"title": "rank (1 = best)", "autorange": "reversed", "dtick": 1, "zeroline": False},
        height=max(320, 60 + 44 * n), margin={"t": 60, "r": 20})
    return fig


def format_tau(tau: float) -> str:
    """Kendall tau as the report writes it (+0.33); 'undefined' where one side is constant."""
    return "undefined (one side is constant)" if math.isnan(tau) else f"{tau:+.2f}"


def rank_figure(candidates: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Short-schedule validation accuracy against full-schedule test accuracy per retrained candidate."""
    fig = go.Figure(go.Scatter(
        x=[c["val_acc"] for c in candidates], y=[c["test_acc"] for c in candidates], mode="markers+text",
        text=[c["name"] for c in candidates], textposition="top center", marker={"color": "#1b9e77", "size": 10},
        hovertext=[_result_hover(c) for c in candidates], hoverinfo="text"))
    fig.update_layout(
        title="Does the search score rank the retrained models?",
        xaxis={"title": "search score (val acc: final rung where it ran, else short schedule)", "tickformat": ".1%"},
        yaxis={"title": f"test acc ({_schedules([c.get('schedule', '') for c in candidates])})", "tickformat": ".1%"},
        height=420, margin={"t": 60, "r": 20})
    return fig


# ------------------------------------------------------------------------------ latency


def _latency_points(runs: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """(run, its batch-1 latency) for every run that recorded one."""
    return [(run, lat) for run in runs for lat in run.get("latency") or [] if lat.get("batch") == 1
            and lat.get("median_ms") is not None and run.get("test_acc") is not None]


def has_latency(runs: Sequence[Mapping[str, Any]]) -> bool:
    return bool(_latency_points(runs))


def _latency_hover(run: Mapping[str, Any]) -> str:
    lats = " · ".join(f"batch {lat['batch']}: {lat['median_ms']:.2f} ms ({lat['p10_ms']:.2f}-{lat['p90_ms']:.2f})"
                      for lat in run.get("latency") or [])
    return (f"<b>{html.escape(str(run['name']))}</b> seed {run.get('seed')}<br>test acc {pct(run['test_acc'])} "
            f"({html.escape(run.get('schedule') or run_schedule(run))})<br>params {count(run.get('params'))}<br>"
            f"{lats}<br>on {html.escape(_device(run))}")


def _device(run: Mapping[str, Any]) -> str:
    return str(run.get("device_name") or run.get("device") or "?")


def latency_figure(runs: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Test accuracy against inference latency at batch 1 (median; bars: 10th-90th percentile) of every
    retrained run, one colour per device: latency measured on different machines is not comparable."""
    points = _latency_points(runs)
    xs = [lat[k] for _, lat in points for k in ("p10_ms", "median_ms", "p90_ms")]  # the bars fit too
    canvas = _Canvas(xs, [run["test_acc"] for run, _ in points], max(xs) > 5 * min(xs), 460)
    groups = []
    for i, device in enumerate(sorted({_device(run) for run, _ in points})):
        mine = [(r, lat) for r, lat in points if _device(r) == device]
        groups.append(_Marked(
            f"on {device}", [lat["median_ms"] for _, lat in mine], [r["test_acc"] for r, _ in mine],
            [f"{r['name']} s{r.get('seed')}" for r, _ in mine], [_latency_hover(r) for r, _ in mine],
            {"color": DEPTH_COLORS[i % len(DEPTH_COLORS)], "size": 11, "line": {"width": 1, "color": "#222"}},
            extra={"showlegend": True, "error_x": {"type": "data", "symmetric": False,
                               "array": [lat["p90_ms"] - lat["median_ms"] for _, lat in mine],
                               "arrayminus": [lat["median_ms"] - lat["p10_ms"] for _, lat in mine]}}))
    fig = go.Figure()
    _add_marked(fig, groups, canvas)
    schedules = _schedules([r.get("schedule") or run_schedule(r) for r, _ in points])
    fig.update_layout(
        title={"text": "Retrained runs: test accuracy vs inference latency",
               "subtitle": {"text": html.escape(f"batch 1, median of timed calls (bars: 10th-90th percentile), fp32, "
                                                f"on the device that trained the run · test acc, {schedules}")}},
        xaxis={"title": "latency per batch of 1 (ms)", "type": "log" if canvas.log_x else "linear",
               "range": canvas.x_range},
        yaxis={"title": "test accuracy", "tickformat": ".1%", "range": canvas.y_range},
        legend=_LEGEND, height=460, margin=_MARGIN)
    return fig
