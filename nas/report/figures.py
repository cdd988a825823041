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

from nas.arch.families import FAMILIES
from nas.report.tables import (
    ARCH_KNOBS,
    depth_history,
    finished_in_budget,
    leaderboard,
    pareto_front,
    rank_correlation,
    trained_seed_designs,
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
# Baselines without an accuracy get a row of their own under the accuracy axis (plot fractions): drawn among
# the scores, any height would read as one.
_SIZE_ROW, _ACCURACY_ROWS = (0.0, 0.12), (0.18, 1.0)
_SIZE_LANES = (0.3, 0.75)  # two lanes in the row, taken in turn by size, so that neighbours' names fit
_SIZE_ONLY = "baselines, size only (not trained)"
_COST_WORDS = {"params": "parameters", "macs": "MACs"}


def accuracy_range(values: Sequence[float]) -> list[float]:
    """An accuracy axis that fits the scores with a margin and never leaves [0, 1]: plotly's autorange put two
    points at 1.6% on an axis from -50% to 100%."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return [0.0, 1.0]
    lo, hi = min(finite), max(finite)
    pad = max(0.12 * (hi - lo), 0.01)
    return [max(0.0, lo - pad), min(1.0, hi + pad)]


def log_ticks(lo: float, hi: float, unit: str = "") -> tuple[list[float], list[str]]:
    """Ticks at 1-2-5 x 10^k between `lo` and `hi` (every integer step when that gives fewer than three), each
    labelled: plotly labels a log axis spanning less than a decade with one or two bare numbers."""
    for steps in ((1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        values = [m * 10.0**k for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
                  for m in steps if lo <= m * 10.0**k <= hi]
        if len(values) >= 3:
            break
    return values, [f"{v:g} {unit}".strip() for v in values]


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
                 size: tuple[float, float] | None = None) -> list[str | None]:
    """A textposition for each labelled point, in order of priority: the first position whose box meets no
    label placed before, no marker (the labelled ones and the unlabelled `obstacles`) and stays inside the
    plot of `size`; None where every position collides (the label is not drawn: its point's hover names it,
    where a label on top of another or cut at the edge could be read by neither)."""
    markers = [(x - r, y - r, x + r, y + r) for x, y, _, r in points] + [(x - 5, y - 5, x + 5, y + 5) for x, y in obstacles]
    placed: list[tuple[float, ...]] = []
    chosen = []
    for i, (x, y, text, radius) in enumerate(points):
        def cost(position: str) -> float:
            box = _box(x, y, text, position, radius)
            outside = 0.0 if size is None else (box[2] - box[0]) * (box[3] - box[1]) - _overlap(box, (0, 0, *size))
            return (sum(_overlap(box, b) for b in placed) + outside
                    + sum(_overlap(box, m) for j, m in enumerate(markers) if j != i))

        free = [p for p in LABEL_POSITIONS if cost(p) == 0]
        if free:
            placed.append(_box(x, y, text, free[0], radius))
        chosen.append(free[0] if free else None)
    return chosen


class _Canvas:
    """Data to pixel coordinates of one plot area whose axis ranges are set explicitly (so labels can be placed)."""

    def __init__(self, xs: Sequence[float], ys: Sequence[float], log_x: bool, height: int,
                 rows: tuple[tuple[float, float], tuple[float, float]] | None = None) -> None:
        tx = [math.log10(x) if log_x else x for x in xs if x and x > 0] or [0.0, 1.0]
        self.log_x = log_x
        pad_x = max(0.08 * (max(tx) - min(tx)), 0.15 if log_x else 0.05 * max(abs(v) for v in tx) or 1.0)
        self.x_range = [min(tx) - pad_x, max(tx) + pad_x]
        self.y_range = accuracy_range(ys)
        self.size = (WIDTH - _MARGIN["l"] - _MARGIN["r"], height - _MARGIN["t"] - _MARGIN["b"])
        self.rows = rows or ((0.0, 1.0), (0.0, 1.0))  # plot fractions of the y2 row and of the accuracy axis

    def px(self, x: float, y: float, y_fraction: bool = False) -> tuple[float, float]:
        """Pixels of a point on the accuracy axis, or (`y_fraction`) on the y2 row's [0, 1]."""
        tx = math.log10(x) if self.log_x else x
        fx = (tx - self.x_range[0]) / (self.x_range[1] - self.x_range[0])
        (lo, hi) = self.rows[0] if y_fraction else self.rows[1]
        fy = y if y_fraction else (y - self.y_range[0]) / (self.y_range[1] - self.y_range[0])
        return fx * self.size[0], (1 - lo - fy * (hi - lo)) * self.size[1]


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
    """A ring on the best trial at the score that ranks it (the final rung's where it ran: the leaderboard's and
    nas.record's rule), and the seed designs that trained at their score (a pruned one at its last): a distinct
    marker in their family's colour, named."""
    trained = trained_seed_designs(frame)
    groups = []
    for name, seeds in (("seed designs", trained[trained["outcome"] == "complete"]),
                        ("seed designs, pruned (last score)", trained[trained["outcome"] != "complete"])):
        marker = _seed_marker(seeds, done)
        if name != "seed designs":
            marker = {**marker, "symbol": "square-open", "color": marker["color"], "line": {"width": 2, "color": marker["color"]}}
        groups.append(_Marked(name, list(seeds["params"]), list(seeds["val_acc"]), list(seeds["seed_design"]),
                              [_trial_hover(r, fidelity) for _, r in seeds.iterrows()], marker,
                              extra={"legendgroup": "trials", "legendgrouptitle_text": "trials (val acc)"}))
    board = leaderboard(frame, top=1) if len(done) else done
    if len(board):
        best = board.iloc[0]
        final = pd.notna(best["confirm_acc"])
        label = ("best" if is_seed(best) else f"best: trial {best['number']}") + (" (final rung)" if final else "")
        groups.insert(0, _Marked("best trial", [best["params"]], [best["confirm_acc"] if final else best["val_acc"]],
                                 [label], [_trial_hover(best, fidelity)],
                                 {"symbol": "circle-open", "size": 20, "color": COLORS["best"], "line": {"width": 2}}))
    return groups


def _final_rung_traces(done: pd.DataFrame, fidelity: Mapping[str, Any]) -> list[go.Scatter]:
    """The final rung's scores of the trials it trained, each joined to its short score by a dotted line: the
    best ring sits on the score that ranks, so that score is drawn for every trial that has one."""
    rows = done[done["confirm_acc"].notna()]
    if rows.empty:
        return []
    xs = [v for p in rows["params"] for v in (p, p, None)]
    ys = [v for s, f in zip(rows["val_acc"], rows["confirm_acc"]) for v in (s, f, None)]
    group = {"legendgroup": "final", "legendgrouptitle_text": "final rung (val acc, longer)"}
    return [go.Scatter(name="short → final", x=xs, y=ys, mode="lines", hoverinfo="skip",
                       line={"dash": "dot", "width": 1, "color": "#777"}, **group),
            go.Scatter(name="final rung score", x=rows["params"], y=rows["confirm_acc"], mode="markers",
                       marker={"symbol": "diamond-open", "size": 9, "color": "#111", "line": {"width": 1.5}},
                       hovertext=[_trial_hover(r, fidelity) for _, r in rows.iterrows()], hoverinfo="text", **group)]


def _results(retrained: Sequence[Mapping[str, Any]], baselines: Sequence[Mapping[str, Any]]) -> list[_Marked]:
    """Retrained candidates and hand-designed baselines (test accuracy), and baselines not yet trained: their
    size only, in a row of their own under the accuracy axis (y2: any height among the scores would read as one)."""
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
            _Marked(_SIZE_ONLY, [b["params"] for b in untrained],
                    [_SIZE_LANES[i % len(_SIZE_LANES)] for i in range(len(untrained))],
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
        placed = [next(positions) for _ in g.x]  # None: no free place, the hover names the point
        fig.add_trace(go.Scatter(name=g.name, x=g.x, y=g.y, yaxis="y2" if g.on_y2 else "y", mode="markers+text",
                                 text=[_short(str(t)) if p else "" for t, p in zip(g.text, placed)],
                                 textposition=[p or "top center" for p in placed],
                                 marker=g.marker,
                                 hovertext=g.hover, hoverinfo="text", cliponaxis=False, **g.extra))


def _protocols(done: pd.DataFrame, results: Sequence[Mapping[str, Any]], fidelity: Mapping[str, Any]) -> str:
    """The figure's subtitle: which protocol each kind of point was scored with."""
    parts = [f"trials: val acc, {_schedules([short_schedule(r, fidelity) for _, r in done.iterrows()])}"]
    if results:
        parts.append(f"retrained and baselines: test acc, {_schedules([e.get('schedule', '') for e in results])}")
    return " · ".join(parts)


def _front_trace(frame: pd.DataFrame, costs: Sequence[str], x: str, fidelity: Mapping[str, Any]) -> go.Scatter:
    """The study's front (nas.report.tables.pareto_front: the short score against `costs`, the rule `nas
    leaderboard --front` lists) on the `x` axis: a staircase where the front is against `x` alone, else its
    points (a front against several costs is not monotone in one)."""
    front = pareto_front(frame, costs).sort_values(x, kind="stable")
    alone = tuple(costs) == (x,)
    return go.Scatter(
        name="Pareto front" + ("" if alone else f" (accuracy vs {', '.join(_COST_WORDS.get(c, c) for c in costs)})"), x=front[x], y=front["val_acc"],
        mode="lines+markers" if alone else "markers", line={"shape": "hv", "width": 2, "color": COLORS["front"]},
        marker={"color": COLORS["front"], "size": 6 if alone else 12, "symbol": "circle" if alone else "circle-open",
                "line": {"width": 2, "color": COLORS["front"]}},
        hovertext=[_trial_hover(r, fidelity) for _, r in front.iterrows()], hoverinfo="text")


def pareto_figure(frame: pd.DataFrame, budget: int, retrained: Sequence[Mapping[str, Any]],
                  baselines: Sequence[Mapping[str, Any]], fidelity: Mapping[str, Any] | None = None,
                  costs: Sequence[str] = ("params",)) -> go.Figure:
    """Accuracy vs parameters: finished trials coloured by block family, seed designs and the best trial named,
    the front against the study's `costs`, the budget, the final rung's scores and the retrained results; labels
    placed so that none overlap. Baselines known by their size only sit in a labelled row of their own."""
    fidelity = fidelity or {}
    done = frame[finished_in_budget(frame)]
    drawn = set(trained_seed_designs(frame)["seed_design"])  # a seed design that trained is named where it scored
    not_yet_drawn = [b for b in baselines if b["test_acc"] is not None or b["name"] not in drawn]
    marked = _best_and_seeds(frame, done, fidelity) + _results(retrained, not_yet_drawn)
    size_row = any(g.x for g in marked if g.on_y2)
    accuracies = [*done["val_acc"], *done["confirm_acc"].dropna(), *(y for g in marked if not g.on_y2 for y in g.y)]
    canvas = _Canvas([*done["params"], budget, *(x for g in marked for x in g.x)], accuracies, True, _PARETO_HEIGHT,
                     (_SIZE_ROW, _ACCURACY_ROWS) if size_row else None)
    fig = go.Figure(_family_traces(done, fidelity))
    fig.add_trace(_front_trace(frame, costs, "params", fidelity))
    fig.add_traces(_final_rung_traces(done, fidelity))
    fig.add_trace(go.Scatter(name=f"budget {budget:,}", x=[budget, budget], y=canvas.y_range, mode="lines",
                             line={"dash": "dash", "color": COLORS["budget"]}, hoverinfo="name"))
    finals = done[done["confirm_acc"].notna()]
    _add_marked(fig, marked, canvas, [*zip(done["params"], done["val_acc"]), *zip(finals["params"], finals["confirm_acc"])])
    results = [*retrained, *(b for b in baselines if b["test_acc"] is not None)]
    rows = {"yaxis": {"title": "accuracy", "tickformat": ".1%", "range": canvas.y_range}}
    if size_row:  # the x axis under the size row; the row shaded and named
        rows = {"yaxis": {**rows["yaxis"], "domain": list(_ACCURACY_ROWS)},
                "yaxis2": {"domain": list(_SIZE_ROW), "range": [0, 1], "showticklabels": False, "showgrid": False,
                           "zeroline": False, "fixedrange": True, "title": {"text": "size only", "font": {"size": 11}}},
                "shapes": [{"type": "rect", "xref": "paper", "yref": "paper", "x0": 0, "x1": 1, "y0": _SIZE_ROW[0],
                            "y1": _SIZE_ROW[1], "fillcolor": "#f1f1f1", "line": {"width": 0}, "layer": "below"}]}
    fig.update_layout(
        title={"text": "Accuracy vs parameters (hover a point for its architecture and protocol)",
               "subtitle": {"text": html.escape(_protocols(done, results, fidelity))}},
        xaxis={"title": "trainable parameters", "type": "log", "tickformat": "~s", "range": canvas.x_range,
               **({"anchor": "y2"} if size_row else {}),
               **({"dtick": "D2"} if canvas.x_range[1] - canvas.x_range[0] > 1.2 else {})},  # 1-2-5 ticks
        legend=_LEGEND, height=_PARETO_HEIGHT, margin=_MARGIN, **rows)
    return fig


def macs_figure(frame: pd.DataFrame, fidelity: Mapping[str, Any] | None = None) -> go.Figure:
    """Accuracy vs MACs per image: a parameter budget does not bound compute, so the front against compute (what
    `--objectives accuracy,macs` searches) is drawn too, seed designs as named squares."""
    fidelity = fidelity or {}
    done = frame[finished_in_budget(frame)]
    seeds = done[_seeds(done)]
    canvas = _Canvas(list(done["macs"].dropna()), list(done["val_acc"]), True, 460)
    fig = go.Figure(_family_traces(done, fidelity, "macs"))
    front = _front_trace(frame, ("macs",), "macs", fidelity)
    fig.add_trace(front.update(name="front (accuracy vs MACs)"))
    _add_marked(fig, [_Marked("seed designs", list(seeds["macs"]), list(seeds["val_acc"]), list(seeds["seed_design"]),
                              [_trial_hover(r, fidelity) for _, r in seeds.iterrows()], _seed_marker(seeds, done))],
                canvas, list(zip(done["macs"], done["val_acc"])))
    fig.update_layout(title="Accuracy vs compute (multiply-accumulates per image)", height=460, margin=_MARGIN,
                      xaxis={"title": "MACs per image", "type": "log", "tickformat": "~s", "dtick": "D2",  # 1-2-5 ticks
                             "range": canvas.x_range},
                      yaxis={"title": "accuracy", "tickformat": ".1%", "range": canvas.y_range}, legend=_LEGEND)
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
        xaxis={"title": "trial number"}, yaxis={"title": "validation accuracy (pruned: last score)", "tickformat": ".1%",
                                                "range": accuracy_range(list(history["score"]))},
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
              f"{tau_text(list(ranks['val_acc']), list(ranks['confirm_acc']))}",
        xaxis={"tickvals": [0, 1], "ticktext": [f"short schedule<br>{html.escape(short)}",
                                                f"final rung<br>{html.escape(final)}"],
               "range": [-1.1, 2.1], "showgrid": False, "zeroline": False},
        yaxis={"title": "rank (1 = best)", "autorange": "reversed", "dtick": 1, "zeroline": False},
        height=max(320, 60 + 44 * n), margin={"t": 60, "r": 20})
    return fig


def format_tau(tau: float) -> str:
    """Kendall tau as the report writes it (+0.33); 'undefined' where one side is constant."""
    return "undefined (one side is constant)" if math.isnan(tau) else f"{tau:+.2f}"


MIN_RANKED = 3  # two pairs' tau is +1 or -1 whatever the proxy's quality: it says nothing


def tau_text(x: Sequence[float], y: Sequence[float]) -> str:
    """'Kendall τ = +0.33' of paired scores, or 'too few to rank' below MIN_RANKED pairs."""
    if len(x) < MIN_RANKED:
        return f"too few to rank (n = {len(x)} < {MIN_RANKED})"
    return f"Kendall τ = {format_tau(rank_correlation(x, y)[0])}"


def rank_figure(candidates: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Short-schedule validation accuracy against full-schedule test accuracy per retrained candidate, named where
    a label fits (candidates often share a score: their names would sit on top of each other)."""
    xs, ys = [c["val_acc"] for c in candidates], [c["test_acc"] for c in candidates]
    canvas = _Canvas(xs, ys, False, 420)
    canvas.x_range = accuracy_range(xs)
    fig = go.Figure()
    _add_marked(fig, [_Marked("retrained", xs, ys, [c["name"] for c in candidates],
                              [_result_hover(c) for c in candidates], {"color": "#1b9e77", "size": 10})], canvas)
    fig.update_layout(
        title="Does the search score rank the retrained models?",
        xaxis={"title": "search score (val acc: final rung where it ran, else short schedule)", "tickformat": ".1%",
               "range": canvas.x_range},
        yaxis={"title": f"test acc ({_schedules([c.get('schedule', '') for c in candidates])})", "tickformat": ".1%",
               "range": canvas.y_range},
        height=420, margin=_MARGIN, showlegend=False)
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


def _log_axis_ticks(log_range: Sequence[float], unit: str) -> dict[str, Any]:
    values, texts = log_ticks(10 ** log_range[0], 10 ** log_range[1], unit)
    return {"tickvals": values, "ticktext": texts}


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
               "range": canvas.x_range, **(_log_axis_ticks(canvas.x_range, "ms") if canvas.log_x else {})},
        yaxis={"title": "test accuracy", "tickformat": ".1%", "range": canvas.y_range},
        legend=_LEGEND, height=460, margin=_MARGIN)
    return fig
