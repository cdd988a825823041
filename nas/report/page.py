"""One self-contained interactive HTML report of a search: open it anywhere, offline.

plotly.js is inlined once (no CDN), so the page renders with the network off. Every
plot div has a stable id ("pareto", "history", "rung-ranks", "rank", "latency", ...) and every
table too ("leaderboard", "outcomes", "final"), so tests and readers can find them; the same ids
name the static files (`static`: figures/pareto.png). The numbers come from `nas.report.tables`, the
figures from `nas.report.figures` and `nas.report.writeup`; this module assembles the page.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from nas.arch import Arch
from nas.arch.counting import count_params
from nas.atomic import write_text_atomic
from nas.errors import NasError
from nas.report import figures as rf
from nas.report.figures import format_tau
from nas.report.tables import (
    final_rung_ranks,
    finished_in_budget,
    leaderboard,
    rank_correlation,
)
from nas.report.text import count, final_schedule, pct, run_schedule, short_schedule

PLOT_CONFIG = {"displaylogo": False, "responsive": True}


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


# ----------------------------------------------------------------------------------- tables

Cell = Any  # a value, or (value, note): the note (a protocol, an id) is written small beneath it


def _html_table(table_id: str, header: Sequence[str], rows: Sequence[Sequence[Cell]],
                classes: Mapping[str, str] | None = None) -> str:
    """An escaped HTML table whose cells may carry a note; `classes` styles columns by name ("wrap": wraps and
    aligns left; "score": wide enough for a protocol note on two lines)."""
    def attrs(column: str) -> str:
        return f' class="{(classes or {})[column]}"' if column in (classes or {}) else ""

    def cell(column: str, value: Cell) -> str:
        text, note = value if isinstance(value, tuple) else (value, "")
        small = f'<span class="note">{html.escape(str(note))}</span>' if note else ""
        return f"<td{attrs(column)}>{html.escape(str(text))}{small}</td>"

    head = "".join(f"<th{attrs(h)}>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(h, v) for h, v in zip(header, row)) + "</tr>\n" for row in rows)
    return f'<table id="{table_id}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>'


def _table(frame: pd.DataFrame, table_id: str) -> str:
    return frame.to_html(index=False, table_id=table_id, escape=True, border=0, na_rep="")


def _architecture(row: pd.Series) -> str:
    """One readable line (Arch.describe); the knobs as text for a record this version cannot rebuild."""
    try:
        return Arch.from_dict(json.loads(row["arch_json"])).describe()
    except (NasError, TypeError, ValueError, KeyError):
        return " ".join(f"{k}={row[k]}" for k in ("blocks", "channels", "block") if k in row and pd.notna(row[k]))


def leaderboard_table(frame: pd.DataFrame, fidelity: Mapping[str, Any], top: int = 10) -> str:
    """The best trials with each score's protocol beside it; the architecture wraps, so the table fits the page."""
    rows = []
    for _, r in leaderboard(frame, top=top).iterrows():
        seed = f" · seed design {r['seed_design']}" if rf.is_seed(r) else ""
        rows.append([r["rank"], r["number"],
                     (pct(r["confirm_acc"]), final_schedule(r, fidelity)) if pd.notna(r["confirm_acc"]) else "",
                     (pct(r["val_acc"]), short_schedule(r, fidelity)), count(r["params"]), count(r["macs"]),
                     (_architecture(r) + seed, f"id {r['arch_id']}")])
    header = ["rank", "trial", "val acc, final rung (ranks)", "val acc, short schedule", "params", "MACs", "architecture"]
    return _html_table("leaderboard", header, rows, {"architecture": "wrap", header[2]: "score", header[3]: "score"})


def outcomes_table(frame: pd.DataFrame) -> str:
    """Where the trials went: the over-budget share says whether the sampler wastes trials; with several block
    families, a column each says which families the search kept training and which it pruned or rejected."""
    outcome = frame["outcome"].fillna("(none)")
    counts = outcome.value_counts()
    shown = pd.DataFrame({"outcome": counts.index, "trials": counts.values})
    shown["share"] = (shown["trials"] / max(len(frame), 1)).map(pct)
    family = frame["block"].fillna("(none)").astype(str) if "block" in frame else None
    if family is not None and family.nunique() > 1:
        by_family = pd.crosstab(outcome, family).reindex(counts.index)
        shown = pd.concat([shown, by_family.reset_index(drop=True)], axis=1)
    return _table(shown, "outcomes")


def final_table(retrained: Sequence[Mapping[str, Any]], baselines: Sequence[Mapping[str, Any]]) -> str:
    """Retrained candidates and baselines on test, each score with its protocol."""
    rows = [[kind, e["name"], count(e["params"]),
             (pct(e.get("val_acc")), e.get("val_schedule") or "search score") if e.get("val_acc") is not None else "",
             (pct(e["test_acc"]) + (f" ± {pct(e['test_acc_std'])}" if e.get("test_acc_std") is not None else ""),
              e.get("schedule") or "")]
            for kind, entries in (("retrained", retrained), ("baseline", baselines)) for e in entries]
    return _html_table("final", ["kind", "name", "params", "val acc (search)", "test acc"], rows,
                       {"name": "wrap", "val acc (search)": "score", "test acc": "score"})


def _correlation_text(candidates: Sequence[Mapping[str, Any]]) -> str:
    """How well the search score ranks the retrained test accuracy; tau only from MIN_RANKED candidates."""
    x, y = [c["val_acc"] for c in candidates], [c["test_acc"] for c in candidates]
    if len(candidates) < rf.MIN_RANKED:
        return (f'<p id="rank-correlation">Over {len(candidates)} retrained candidates the search score cannot be '
                f"judged as a ranking: {rf.tau_text(x, y)}.</p>")
    tau, rho = rank_correlation(x, y)
    return (
        f'<p id="rank-correlation">Over {len(candidates)} retrained candidates, the search score (validation '
        f"accuracy: the final rung's where it trained the trial, else the short schedule's) ranks the retrained "
        f"test accuracy with Kendall τ = {format_tau(tau)} and Spearman ρ = {format_tau(rho)} "
        "(1 = same order, 0 = unrelated).</p>"
    )


# ------------------------------------------------------------------------------------- page


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1200px; padding: 0 0.5rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; font-size: 0.85rem; max-width: 100%; }
#leaderboard, #final { width: 100%; }
th, td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #ddd; text-align: right; vertical-align: top; }
th { background: #f3f3f3; }
td.wrap, th.wrap { text-align: left; overflow-wrap: anywhere; }
td.score { min-width: 12rem; }
.note { display: block; color: #777; font-size: 0.75rem; }
.summary { color: #444; }
"""


class _Figures:
    """The page's figures by div id: each drawn into the page once, and kept for the static export."""

    def __init__(self) -> None:
        self.by_id: dict[str, go.Figure] = {}

    def div(self, fig: go.Figure, div_id: str) -> str:
        self.by_id[div_id] = fig
        return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)


def render_report(frame: pd.DataFrame, *, budget: int, retrained: Sequence[dict] = (), baselines: Sequence[dict] = (),
                  title: str, runs: Sequence[dict] = (), importance: dict[str, float] | None = None,
                  fidelity: Mapping[str, Any] | None = None, costs: Sequence[str] = ("params",)) -> str:
    """The whole page as one HTML string (pure: no files touched). `runs` are retrained runs' metrics.json
    contents (curves, confusion matrices, latency); `importance` maps settings to their fANOVA importance;
    `fidelity` is the search's (config.json: the proxy width), so every score can name its protocol; `costs`
    are the study's objectives' costs (its front is against them)."""
    return _page(frame, budget=budget, retrained=retrained, baselines=baselines, title=title, runs=runs,
                 importance=importance, fidelity=fidelity, costs=costs)[0]


def _page(frame: pd.DataFrame, *, budget: int, retrained: Sequence[dict], baselines: Sequence[dict], title: str,
          runs: Sequence[dict], importance: dict[str, float] | None,
          fidelity: Mapping[str, Any] | None, costs: Sequence[str] = ("params",)) -> tuple[str, dict[str, go.Figure]]:
    """The page and its figures by div id."""
    if budget <= 0:
        raise NasError(f"budget must be a positive parameter count, but got budget={budget}")
    retrained = _checked(retrained, "retrained", ("name", "params", "test_acc"))
    baselines = _checked(baselines, "baseline", ("name", "params", "test_acc"))
    if any(e["test_acc"] is None for e in retrained):
        raise NasError("every retrained entry needs a test_acc (a number): drop the ones that did not finish")
    fidelity, figures = fidelity or {}, _Figures()
    retrained = _with_search_schedules(retrained, frame, fidelity)
    finished = int(finished_in_budget(frame).sum())
    over = int((frame["outcome"] == "over_budget").sum())
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="summary">{len(frame)} trials; {finished} finished within the budget of {budget:,} '
        f"parameters; {over} over budget ({pct(over / max(len(frame), 1))}).</p>",
        figures.div(rf.pareto_figure(frame, budget, retrained, baselines, fidelity, costs), "pareto"),
        figures.div(rf.macs_figure(frame, fidelity), "macs"),
        figures.div(rf.history_figure(frame, fidelity), "history"),
        *_rung_sections(frame, fidelity, figures),
        "<h2>Leaderboard (the final rung's score ranks; the short one where it did not run)</h2>",
        leaderboard_table(frame, fidelity),
    ]
    if retrained or baselines:
        sections += ["<h2>Retrained models and baselines (test set)</h2>", final_table(retrained, baselines)]
    candidates = [e for e in retrained if e.get("val_acc") is not None]
    if len(candidates) >= 2:
        sections += ["<h2>Rank correlation: search score vs retrained test accuracy</h2>",
                     _correlation_text(candidates), figures.div(rf.rank_figure(candidates), "rank")]
    if rf.has_latency(runs):
        sections += ["<h2>Accuracy vs inference latency</h2>", figures.div(rf.latency_figure(runs), "latency")]
    sections += _settings_sections(frame, importance or {}, figures) + _run_sections(runs, figures)
    sections += ["<h2>Trial outcomes</h2>", outcomes_table(frame)]
    body = "\n".join(sections)
    page = ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n"
            f'<script type="text/javascript">{get_plotlyjs()}</script>\n</head>\n<body>\n{body}\n</body>\n</html>\n')
    return page, figures.by_id


def _with_search_schedules(entries: Sequence[dict], frame: pd.DataFrame, fidelity: Mapping[str, Any]) -> list[dict]:
    """Each retrained candidate's search score with the schedule that produced it: the score that ranked its
    trial, so the final rung's where that trained it, else the short schedule's."""
    rows = {int(r["number"]): r for _, r in frame.iterrows()}
    out = []
    for e in entries:
        row = rows.get(e["trial"]) if isinstance(e.get("trial"), int) else None
        if e.get("val_schedule") or e.get("val_acc") is None or row is None:
            out.append(e)
            continue
        final = pd.notna(row["confirm_acc"]) and abs(row["confirm_acc"] - e["val_acc"]) < 1e-9
        out.append({**e, "val_schedule": ("final rung, " + final_schedule(row, fidelity)) if final
                    else ("short schedule, " + short_schedule(row, fidelity))})
    return out


def _rung_sections(frame: pd.DataFrame, fidelity: Mapping[str, Any], figures: _Figures) -> list[str]:
    """The proxy against the final rung, where it trained at least two trials."""
    ranks = final_rung_ranks(frame)
    if len(ranks) < 2:
        return []
    return ["<h2>Does the short schedule rank the final rung's trials as the final rung does?</h2>",
            '<p id="rung-correlation">Each line is one trial the final rung trained longer: its rank among them at '
            "the search's short schedule (left) and at the final rung (right). Kendall τ compares the two scores "
            "(1 = same order, 0 = unrelated, -1 = reversed).</p>",
            figures.div(rf.ranks_figure(ranks, fidelity), "rung-ranks")]


def _settings_sections(frame: pd.DataFrame, importance: dict[str, float], figures: _Figures) -> list[str]:
    """What the search's settings did: parallel coordinates, importance, and a pivot of the two most varied."""
    from nas.report import writeup as write_up

    varied = write_up.varied_settings(frame, importance)
    sections = (["<h2>Settings of the trained trials</h2>", figures.div(write_up.parallel_figure(frame), "parallel")]
                if varied else [])
    if importance:
        sections += ["<h2>Which settings mattered (fANOVA importance of the short score)</h2>",
                     figures.div(write_up.importance_figure(importance), "importance")]
    if len(varied) >= 2:
        sections += [f"<h2>Best score by {html.escape(varied[0])} and {html.escape(varied[1])}</h2>",
                     figures.div(write_up.pivot_figure(frame, varied[0], varied[1]), "pivot")]
    return sections


def _run_sections(runs: Sequence[dict], figures: _Figures, confusions: int = 4) -> list[str]:
    """Training curves of every retrained run, and per-class results of the best few."""
    from nas.report import writeup as write_up

    runs = [r for r in runs if r.get("curves")]  # runs written before curves were recorded are skipped
    if not runs:
        return []
    best = sorted((r for r in runs if r.get("confusion")), key=lambda r: -r["test_acc"])[:confusions]
    return ["<h2>Retrained runs: training curves</h2>", figures.div(write_up.curves_figure(runs), "curves"),
            *[figures.div(write_up.confusion_figure(r), f"confusion-{i}") for i, r in enumerate(best)]]


# ------------------------------------------------------------------------------------ files


def _with_schedule(run: dict[str, Any]) -> dict[str, Any]:
    """A run's metrics.json with its protocol as text: the epochs its recipe.json names (else its curves)."""
    from nas.runs import RECIPE_FILE

    try:
        epochs = json.loads((Path(run["dir"]) / RECIPE_FILE).read_text()).get("epochs")
    except (OSError, ValueError, KeyError, AttributeError):
        epochs = None
    return {**run, "schedule": run_schedule(run, epochs)}


def _entries(runs: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """summarize()'s entries (one per architecture and protocol), each with its runs' protocol text."""
    from nas.runs import summarize

    texts = {(r["arch_id"], r["protocol"]): r["schedule"] for r in runs}
    return [{**{k: e.get(k) for k in keys}, "schedule": texts.get((e["arch_id"], e["protocol"]), "")}
            for e in summarize(runs)]


def _fidelity(results_dir: Path, study_name: str) -> dict[str, Any]:
    """The search's fidelity from its config.json (the proxy width is nowhere else); empty when unreadable."""
    from nas.artifacts import study_dir

    try:
        config = json.loads((study_dir(results_dir, study_name) / "config.json").read_text())
        return dict(config.get("config", {}).get("fidelity") or {})
    except (OSError, ValueError, AttributeError):
        return {}


def write_study_report(study: Any, results_dir: Path, examples: Path, frame: pd.DataFrame | None = None,
                       static: str | None = None) -> Path:
    """Rewrite RESULTS/<study>/report.html with the search, its retrained candidates and the baselines
    (every examples/ architecture for the study's class count: retrained where a run exists, else its size alone);
    `static` ("png" or "svg") also writes each figure to figures/NAME.png beside it."""
    from nas.arch.archfile import read_arch_file
    from nas.artifacts import study_dir
    from nas.record import STUDY_BUDGET, objectives_of
    from nas.report.tables import trials_frame
    from nas.report.writeup import importances
    from nas.runs import baseline_root, finished_runs, retrain_root

    budget = study.user_attrs.get(STUDY_BUDGET)
    if budget is None:
        raise NasError(f"study {study.study_name!r} records no budget: it was not created by `nas search` or nas.Study")
    check_static(static)
    frame = trials_frame(study) if frame is None else frame
    runs = [_with_schedule(r) for r in finished_runs(retrain_root(results_dir, study.study_name))]
    retrained = _entries(runs, ("name", "params", "test_acc", "test_acc_std", "val_acc", "trial"))
    baselines: list[dict[str, Any]] = []
    baseline_runs: list[dict[str, Any]] = []
    classes = set(frame["num_classes"].dropna().astype(int)) if "num_classes" in frame.columns else set()
    for path in sorted(Path(examples).glob("*.json")) if Path(examples).is_dir() else []:
        c = read_arch_file(path)
        if classes and c.arch.num_classes not in classes:  # a CIFAR-100 design is no baseline for CIFAR-10
            continue
        done = [_with_schedule(r) for r in finished_runs(baseline_root(results_dir, c.name))]
        baseline_runs += done
        baselines += _entries(done, ("name", "params", "test_acc", "test_acc_std")) or [
            {"name": c.name, "params": count_params(c.arch), "test_acc": None, "test_acc_std": None}]
    return write_report(frame, study_dir(results_dir, study.study_name) / "report.html", budget=int(budget),
                        retrained=retrained, baselines=baselines, title=f"nas study {study.study_name}",
                        runs=runs + baseline_runs, importance=importances(study),
                        fidelity=_fidelity(results_dir, study.study_name), static=static,
                        costs=objectives_of(study)[1:] or ("params",))


def check_static(static: str | None) -> None:
    """Refuse a static export that cannot run before any work (a format, kaleido, a browser)."""
    if static is not None:
        from nas.report.static import check

        check(static)


def write_report(df: pd.DataFrame, path: Path, *, budget: int, retrained: Sequence[dict] = (),
                 baselines: Sequence[dict] = (), title: str, runs: Sequence[dict] = (),
                 importance: dict[str, float] | None = None, fidelity: Mapping[str, Any] | None = None,
                 static: str | None = None, costs: Sequence[str] = ("params",)) -> Path:
    """Write the report atomically (a browser refreshing it mid-search never sees half a page); `static`
    ("png" or "svg") also writes every figure to figures/NAME.FORMAT beside it, for papers."""
    check_static(static)
    page, figs = _page(df, budget=budget, retrained=retrained, baselines=baselines, title=title, runs=runs,
                       importance=importance, fidelity=fidelity, costs=costs)
    written = write_text_atomic(page, Path(path))
    if static is not None:
        from nas.report.static import write_static

        write_static(figs, Path(path).parent / "figures", static)
    return written
