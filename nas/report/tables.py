"""Search results as plain tables: trials, Pareto front, leaderboard, rank correlation.

Computing is kept apart from drawing (as in Optuna's visualization package): everything
here is pandas/NumPy, tested without plotly; `nas.report.page` only draws these tables. Trials are
read through `nas.record`, which owns what the search stores and the rule for "best".
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from nas import record
from nas.arch import Arch
from nas.atomic import write_text_atomic
from nas.errors import NasError
from nas.record import Record

ARCH_KNOBS = tuple(f.name for f in dataclasses.fields(Arch))
# Knobs flattened to text ("2-2-2-2", "global"); read back as text so "2" stays "2".
TEXT_KNOBS = ("blocks", "channels", "kernels", "skip_kernels", "pool")
BASE_COLUMNS = (
    "number", "state", "outcome", "reason", "val_acc", "confirm_acc", "confirm_epochs", "confirm_images",
    "seed_design", "params", "macs", "over_budget_by", "arch_id", "duration_s", "datetime_start",
)  # fmt: skip
CURVE_PREFIX = "val_acc_ep"  # one column per reported epoch: val_acc_ep1, val_acc_ep2, ...
RECIPE_PREFIX = "recipe."
SAMPLED_PREFIX = "sampled."  # trial.params as the sampler drew them


# ------------------------------------------------------------------------------ trial table


def _joined(value: Any) -> Any:
    """Lists as readable text ("2-2-2-2"); anything else unchanged."""
    return "-".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value


def _knob_text(name: str, value: Any) -> Any:
    """Readable, CSV-stable form of one architecture knob (pool None means global pooling)."""
    if name == "pool":
        return "global" if value is None else str(value)
    return _joined(value)


def _flatten(prefix: str, mapping: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts become dotted columns (recipe.optimizer.lr); lists become a-b-c."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(f"{prefix}{key}.", value))
        else:
            flat[f"{prefix}{key}"] = _joined(value)
    return flat


def _every_field(stored: Any) -> dict[str, Any]:
    """A trial's architecture with every field, as the network has it: a study from before a field existed reads
    with its default, and the stem's width is C_1 where the architecture leaves it to follow C_1."""
    if not stored:
        return {}
    arch = Arch.from_dict(dict(stored)).to_dict()
    return {**arch, "stem_channels": arch["stem_channels"] or arch["channels"][0]}


def _curve(r: Record) -> dict[int, float]:
    return {int(epoch): float(acc) for epoch, acc in r.curve}


def _trial_row(r: Record, t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    arch = _every_field(r.arch)
    return {
        "number": r.number,
        "state": r.state.name,
        "outcome": r.outcome if record.OUTCOME in t.user_attrs else None,
        "reason": r.reason,
        "val_acc": r.short_acc,
        "confirm_acc": r.final_acc,
        "confirm_epochs": (r.final or {}).get("epochs"),  # the final rung's schedule, where it trained this trial
        "confirm_images": (r.final or {}).get("train_subset"),
        "seed_design": r.seed_design,
        "params": r.params,
        "macs": r.macs,
        "over_budget_by": r.over_budget_by,
        "arch_id": r.arch_id,
        "duration_s": t.duration.total_seconds() if t.duration is not None else None,
        "datetime_start": t.datetime_start,
        **{knob: _knob_text(knob, arch[knob]) if knob in arch else None for knob in ARCH_KNOBS},
        "arch_json": json.dumps(dict(r.arch), sort_keys=True) if r.arch else None,
        **_flatten(RECIPE_PREFIX, dict(r.recipe or {})),
        **{f"{SAMPLED_PREFIX}{name}": value for name, value in r.sampled.items()},
        **{f"{CURVE_PREFIX}{epoch}": acc for epoch, acc in sorted(_curve(r).items())},
    }


def _ordered(columns: Sequence[str]) -> list[str]:
    """Base columns first, curve columns last in epoch order, the rest as first seen."""
    curve = sorted((c for c in columns if c.startswith(CURVE_PREFIX)), key=lambda c: int(c[len(CURVE_PREFIX) :]))
    rest = [c for c in columns if c not in BASE_COLUMNS and c not in curve]
    return [*BASE_COLUMNS, *rest, *curve]


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial of a `nas` study, every architecture knob readable."""
    if len(study.directions) != len(record.objectives_of(study)):
        raise NasError(
            f"study {study.study_name!r} has {len(study.directions)} objectives but names none of them: "
            "pass a study created by `nas search` (accuracy first, then --objectives' costs)"
        )
    attrs = study.user_attrs
    frame = pd.DataFrame([_trial_row(Record.of(t, attrs), t) for t in study.get_trials(deepcopy=False)])
    frame = frame.reindex(columns=_ordered(list(frame.columns)))
    for column in ("val_acc", "confirm_acc", "confirm_epochs", "confirm_images"):
        frame[column] = frame[column].astype(float)
    frame["seed_design"] = frame["seed_design"].astype("str")  # missing stays missing, as read_trials_csv reads it
    return frame


def write_trials_csv(frame: pd.DataFrame, path: Path) -> Path:
    """CSV of `trials_frame`, written atomically so a reader never sees half a table."""
    return write_text_atomic(frame.to_csv(index=False), Path(path))


def read_trials_csv(path: Path) -> pd.DataFrame:
    """Inverse of `write_trials_csv`: knob text stays text, datetime_start is parsed."""
    path = Path(path)
    if not path.is_file():
        raise NasError(f"trials table {path} does not exist; `nas search` writes it into its study folder")
    frame = pd.read_csv(path, dtype={k: str for k in (*TEXT_KNOBS, "seed_design")}, parse_dates=["datetime_start"])
    return frame.reindex(columns=_ordered(list(frame.columns)))


# --------------------------------------------------------------------- selections of trials


def finished_in_budget(frame: pd.DataFrame) -> pd.Series:
    """Mask of trials that trained to the end within the budget: the only fair comparison.

    Duplicates (outcome "duplicate") are excluded so one architecture counts once.
    """
    return (
        (frame["state"] == TrialState.COMPLETE.name)
        & (frame["outcome"] == "complete")
        & np.isfinite(frame["val_acc"].astype(float))
        & frame["params"].notna()
        & ~(frame["over_budget_by"].astype(float) > 0)
    )


def pareto_front(frame: pd.DataFrame, costs: Sequence[str] = ("params",)) -> pd.DataFrame:
    """Non-dominated finished in-budget trials (max short-schedule val_acc, min each of `costs`), by params
    ascending; exact ties are all kept. The one front of a study: nas.record.front applies the same rule (and
    score) to records, for `nas leaderboard --front` and the search's final rung."""
    done = frame[finished_in_budget(frame)]
    keep = record.nondominated(list(zip(-done["val_acc"].astype(float), *(done[c].astype(float) for c in costs))))
    return done.iloc[keep].sort_values(["params", "number"], kind="stable")


def leaderboard(frame: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """Best `top` finished in-budget trials: those the final rung confirmed first, by their longer-trained
    score, then the rest by the short one; ties go to the smaller model, then the earlier trial."""
    if top < 1:
        raise NasError(f"leaderboard size must be >= 1, but got top={top}")
    done = frame[finished_in_budget(frame)]
    key = lambda i: record.rank_key(None if pd.isna(done.at[i, "confirm_acc"]) else done.at[i, "confirm_acc"],  # noqa: E731
                                    done.at[i, "val_acc"], done.at[i, "params"], done.at[i, "number"])
    board = done.loc[sorted(done.index, key=key)].head(top)
    board = board.reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    return board


def pivot(frame: pd.DataFrame, rows: str, columns: str) -> pd.DataFrame:
    """Best short-schedule validation accuracy of the finished in-budget trials for every pair of two
    settings (e.g. optimizer x lr), the table the reports drew by hand from their grids. A setting is a
    recipe field (what the trial trained with), else a sampled knob, else an architecture knob."""
    done = frame[finished_in_budget(frame)]
    return done.pivot_table(index=_setting(frame, rows), columns=_setting(frame, columns), values="val_acc",
                            aggfunc="max")


def _setting(frame: pd.DataFrame, name: str) -> str:
    for column in (f"{RECIPE_PREFIX}{name}", f"{SAMPLED_PREFIX}{name}", name):
        if column in frame.columns:
            return column
    known = sorted({c.removeprefix(RECIPE_PREFIX).removeprefix(SAMPLED_PREFIX) for c in frame.columns
                    if c.startswith((RECIPE_PREFIX, SAMPLED_PREFIX)) or c in ARCH_KNOBS})
    raise NasError(f"--pivot setting {name!r} is not in this study: choose from {', '.join(known)}")


def trained_seed_designs(frame: pd.DataFrame) -> pd.DataFrame:
    """The seed designs the search trained within the budget, complete or pruned, with the score they reached
    (a pruned one's last): a seed design the study trained is never "not trained"."""
    seed = frame["seed_design"].map(lambda v: isinstance(v, str) and v not in ("", "nan", "None")).astype(bool)
    in_budget = ~(frame["over_budget_by"].astype(float) > 0) & frame["params"].notna()
    pruned = seed & in_budget & (frame["outcome"] == "pruned")
    rows = frame[(seed & finished_in_budget(frame)) | pruned]
    rows = rows.assign(val_acc=rows["val_acc"].where(~pruned[rows.index], _last_score(rows)))
    return rows[rows["val_acc"].notna()]


def best_so_far(frame: pd.DataFrame) -> pd.DataFrame:
    """Finished in-budget trials by number with the running best val_acc (optimisation history)."""
    done = frame[finished_in_budget(frame)].sort_values("number")
    return done[["number", "val_acc"]].assign(best=done["val_acc"].cummax()).reset_index(drop=True)


def depth_of(frame: pd.DataFrame) -> pd.Series:
    """Each trial's number of residual layers: the sampled `layers` where the sampler drew it, else its blocks
    (a space with one depth samples none); missing for a trial that recorded no architecture."""
    blocks = frame["blocks"] if "blocks" in frame.columns else pd.Series(None, index=frame.index, dtype=object)
    from_blocks = blocks.map(lambda b: len(b.split("-")) if isinstance(b, str) and b else None)
    sampled = f"{SAMPLED_PREFIX}layers"
    depth = frame[sampled].where(frame[sampled].notna(), from_blocks) if sampled in frame.columns else from_blocks
    return pd.to_numeric(depth, errors="coerce").round().astype("Int64")


def _last_score(frame: pd.DataFrame) -> pd.Series:
    """The last validation score each trial reported (a pruned trial's score when it was stopped)."""
    curve = [c for c in frame.columns if c.startswith(CURVE_PREFIX)]
    if not curve:
        return pd.Series(np.nan, index=frame.index)
    return frame[curve].astype(float).ffill(axis=1).iloc[:, -1]


def depth_history(frame: pd.DataFrame) -> pd.DataFrame:
    """The search's progress per depth (the search gives each depth its turn and its own sampler): every
    trained in-budget trial (complete or pruned) with its depth, its score (complete: the short score;
    pruned: its last reported score) and the best complete short score of its depth so far."""
    in_budget = ~(frame["over_budget_by"].astype(float) > 0) & frame["params"].notna()
    pruned = in_budget & (frame["outcome"] == "pruned")
    keep = finished_in_budget(frame) | pruned
    rows = pd.DataFrame({"number": frame["number"], "depth": depth_of(frame), "outcome": frame["outcome"],
                         "score": frame["val_acc"].astype(float).where(~pruned, _last_score(frame)),
                         "complete": finished_in_budget(frame)})[keep & depth_of(frame).notna()]
    rows = rows.sort_values(["depth", "number"])
    best = rows["score"].where(rows["complete"]).groupby(rows["depth"]).cummax()
    rows["best"] = best.groupby(rows["depth"]).ffill()
    return rows.drop(columns="complete").reset_index(drop=True)


def final_rung_ranks(frame: pd.DataFrame) -> pd.DataFrame:
    """The trials the final rung trained, with their rank among them at the short schedule and at the final
    rung (1 = best; ties go to the earlier trial, so each trial has its own place). Does the proxy rank the
    candidates the way longer training does?"""
    done = frame[finished_in_budget(frame) & np.isfinite(frame["confirm_acc"].astype(float))]
    done = done.assign(depth=depth_of(done)).sort_values("number")
    short = done.sort_values(["val_acc", "number"], ascending=[False, True])
    final = done.sort_values(["confirm_acc", "number"], ascending=[False, True])
    return done.assign(short_rank=pd.Series(range(1, len(done) + 1), index=short.index),
                       final_rank=pd.Series(range(1, len(done) + 1), index=final.index)).reset_index(drop=True)


# ----------------------------------------------------------------------- rank correlation


def _kendall_tau_b(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b (tie-corrected), one row of pairs at a time: O(n^2) time, O(n) memory."""
    concordance = tied_a = tied_b = 0.0
    n = len(a)
    for i in range(n - 1):
        sa = np.sign(a[i + 1 :] - a[i])
        sb = np.sign(b[i + 1 :] - b[i])
        concordance += float((sa * sb).sum())
        tied_a += float((sa == 0).sum())
        tied_b += float((sb == 0).sum())
    pairs = n * (n - 1) / 2
    denominator = math.sqrt((pairs - tied_a) * (pairs - tied_b))
    return concordance / denominator if denominator else math.nan


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of average ranks (ties share their mean rank)."""
    ra = pd.Series(a).rank(method="average").to_numpy()
    rb = pd.Series(b).rank(method="average").to_numpy()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum()) / denominator if denominator else math.nan


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(Kendall tau-b, Spearman rho) of paired scores; NaN when one side is constant.

    Written here because pandas delegates both to SciPy, which `nas` does not depend on.
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise NasError(f"rank correlation needs two equally long 1-D sequences, but got shapes {a.shape} and {b.shape}")
    if len(a) < 2:
        raise NasError(f"rank correlation needs at least 2 pairs, but got {len(a)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise NasError("rank correlation needs finite scores, but got NaN or inf: drop unfinished candidates first")
    return _kendall_tau_b(a, b), _spearman(a, b)
