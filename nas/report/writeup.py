"""The figures people put in their write-ups, drawn from what a study and its retrained runs recorded:
training curves across runs, per-class accuracy and confusion matrices, a recipe pivot, the search's
settings in parallel coordinates, and which settings mattered (Optuna's importance evaluators).

Pure functions of plain data (metrics.json contents, the trials table): `nas.report.page` places them.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nas.engine.recipe import Recipe
from nas.report.tables import SAMPLED_PREFIX, finished_in_budget, pivot

MIN_TRIALS_FOR_IMPORTANCE = 8  # fewer trained trials say nothing about which setting mattered
PALETTE = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")


def curves_figure(runs: Sequence[dict[str, Any]]) -> go.Figure:
    """Training loss and validation accuracy per epoch of every retrained run, overlaid; each run's test
    accuracy marked at its last epoch, so curves and the one number reported sit side by side."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "validation (line) and test (star) accuracy"))
    for i, run in enumerate(runs):
        color, name = PALETTE[i % len(PALETTE)], f"{run['name']} seed {run['seed']}"
        epochs = [c["epoch"] for c in run["curves"]]
        fig.add_trace(go.Scatter(x=epochs, y=[c["train_loss"] for c in run["curves"]], name=name, legendgroup=name,
                                 line={"color": color}), row=1, col=1)
        if any(c["val_acc"] is not None for c in run["curves"]):
            fig.add_trace(go.Scatter(x=epochs, y=[c["val_acc"] for c in run["curves"]], name=name, legendgroup=name,
                                     line={"color": color}, showlegend=False), row=1, col=2)
        fig.add_trace(go.Scatter(x=[epochs[-1] if epochs else 0], y=[run["test_acc"]], name=name, legendgroup=name,
                                 mode="markers", marker={"symbol": "star", "size": 13, "color": color},
                                 showlegend=False, hovertext=f"{name}: test acc {run['test_acc']:.2%}",
                                 hoverinfo="text"), row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(tickformat=".0%", row=1, col=2)
    fig.update_layout(height=420, margin={"t": 40}, legend={"orientation": "h", "y": -0.2})
    return fig


def confusion_figure(run: dict[str, Any]) -> go.Figure:
    """Per-class test accuracy and the confusion matrix (rows: true class, normalised to 100%)."""
    classes, matrix = run["classes"], run["confusion"]
    shares = [[n / max(sum(row), 1) for n in row] for row in matrix]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.3, 0.7], horizontal_spacing=0.18,
                        subplot_titles=("per-class accuracy", "confusion (row = true class)"))
    fig.add_trace(go.Bar(x=[shares[i][i] for i in range(len(classes))], y=classes, orientation="h",
                         marker={"color": PALETTE[0]}, name="accuracy", showlegend=False), row=1, col=1)
    fig.add_trace(go.Heatmap(z=shares, x=classes, y=classes, colorscale="Blues", zmin=0, zmax=1,
                             customdata=matrix, hovertemplate="true %{y}, predicted %{x}: %{customdata} images"
                                                              " (%{z:.1%})<extra></extra>"), row=1, col=2)
    fig.update_xaxes(tickformat=".0%", row=1, col=1)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=max(380, 22 * len(classes)), margin={"t": 80},
                      title=f"{run['name']} seed {run['seed']}: test acc {run['test_acc']:.2%}")
    return fig


def varied_settings(frame: pd.DataFrame, importance: Mapping[str, float] | None = None) -> list[str]:
    """Sampled settings that took more than one value among finished trials: training settings (the
    space's train: section, what recipe grids vary) first, then architecture knobs; the most important
    first where importance is known (else the most values first), so the pivot shows what mattered."""
    done = frame[finished_in_budget(frame)]
    counts = {c[len(SAMPLED_PREFIX):]: done[c].nunique() for c in frame.columns if c.startswith(SAMPLED_PREFIX)}
    training, importance = {f.name for f in dataclasses.fields(Recipe)}, importance or {}
    return sorted((name for name, n in counts.items() if n > 1),
                  key=lambda name: (name not in training, -importance.get(name, 0.0), -counts[name], name))


def pivot_figure(frame: pd.DataFrame, rows: str, columns: str) -> go.Figure:
    """The recipe pivot as a heatmap: the best score of every pair of two settings."""
    table = pivot(frame, rows, columns)
    text = [["" if math.isnan(v) else f"{v:.1%}" for v in row] for row in table.to_numpy()]
    fig = go.Figure(go.Heatmap(z=table.to_numpy(), x=[str(c) for c in table.columns], y=[str(r) for r in table.index],
                               text=text, texttemplate="%{text}", colorscale="Viridis",
                               hovertemplate=f"{rows} %{{y}}, {columns} %{{x}}: %{{z:.2%}}<extra></extra>"))
    fig.update_layout(height=360, margin={"t": 30}, xaxis_title=columns, yaxis_title=rows, xaxis_type="category",
                      yaxis_type="category")
    return fig


def _category(value: Any) -> str:
    """A setting as an axis label: whole numbers without ".0" (pandas reads 2 beside None as 2.0)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "(none)"
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _category_order(label: str) -> tuple:
    """(none) first, then numbers by value (2 before 16), then words."""
    try:
        return (label != "(none)", 0, float(label), "")
    except ValueError:
        return (label != "(none)", 1, 0.0, label)


def parallel_figure(frame: pd.DataFrame) -> go.Figure:
    """Every finished trial as a line through its settings, coloured by its score."""
    done = frame[finished_in_budget(frame)]
    dims = []
    for name in [c for c in frame.columns if c.startswith(SAMPLED_PREFIX)]:
        values = done[name]
        if values.nunique(dropna=False) < 2:
            continue
        if pd.api.types.is_numeric_dtype(values) and values.notna().all():
            dims.append({"label": name[len(SAMPLED_PREFIX):], "values": values})
        else:  # categories as their index, labelled; missing (pool None, a knob the trial's block does not use)
            labels = values.map(_category)
            cats = sorted(labels.unique(), key=_category_order)
            dims.append({"label": name[len(SAMPLED_PREFIX):], "values": labels.map(cats.index),
                         "tickvals": list(range(len(cats))), "ticktext": cats})
    dims += [{"label": "params", "values": done["params"]}, {"label": "val acc", "values": done["val_acc"]}]
    crowded = len(dims) > 10  # upright labels of many axes run into each other: tilt them
    fig = go.Figure(go.Parcoords(line={"color": done["val_acc"], "colorscale": "Viridis", "showscale": True},
                                 dimensions=dims, labelangle=-40 if crowded else 0))
    fig.update_layout(height=460 if crowded else 420, margin={"t": 110 if crowded else 60, "l": 70, "r": 60})
    return fig


def importances(study: optuna.Study) -> dict[str, float]:
    """Which settings explained the short score (Optuna's default evaluator, fANOVA), over the settings every
    trained trial shares; empty when too few trials trained to say. Rejected trials (completed at 0 for
    the sampler's sake) are left out: they would explain nothing but the budget."""
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.user_attrs.get("outcome") == "complete"]
    if len(done) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created in memory" line in the user's log
    try:
        trained = optuna.create_study(directions=study.directions)
        trained.add_trials(done)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # accuracy is the first value of a multi-objective study too
            found = optuna.importance.get_param_importances(trained, target=lambda t: t.values[0])
    except (RuntimeError, ValueError):  # no setting that the trials share
        return {}
    finally:
        optuna.logging.set_verbosity(verbosity)
    return {name: value for name, value in found.items() if value > 0}  # fixed settings explain nothing


def importance_figure(values: dict[str, float]) -> go.Figure:
    names = list(values)[::-1]
    fig = go.Figure(go.Bar(x=[values[n] for n in names], y=names, orientation="h", marker={"color": PALETTE[2]}))
    fig.update_layout(height=max(240, 26 * len(names)), margin={"t": 30}, xaxis_title="importance (fANOVA)",
                      xaxis_tickformat=".0%")
    return fig
