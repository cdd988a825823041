"""benchmarks/gpu_window.py --dry-run: the GPU window's stages (the main search, retrain --top 3, the full-width
table), tiny and on CPU, so the script cannot rot while no GPU is at hand. One dry run serves every test."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_window.py"
TABLE = ["table_found", "table_se443", "table_543", "table_resnet10", "table_resnet1111", "table_airbench94"]
STAGES = ["device", "search", "retrain_top3", *TABLE]


@pytest.fixture(scope="module")
def dry_run(benchmark_script, cifar_tarball, tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, Path]:
    out = tmp_path_factory.mktemp("window") / "out"
    proc = benchmark_script("gpu_window", "--dry-run", "--data", str(cifar_tarball), out=out)
    assert (out / "summary.json").is_file(), proc.stderr[-3000:]
    return proc, json.loads((out / "summary.json").read_text()), out


@pytest.fixture
def window(monkeypatch):
    """The script as a module, for its pure sizing functions."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import gpu_window

    return gpu_window


@pytest.mark.slow  # the whole dry run, about 90 s on 2 busy cores: the default suite stays under 10 minutes
def test_every_stage_runs_and_the_summary_holds_every_figure(dry_run):
    proc, summary, out = dry_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["schema"] == 1 and summary["dry_run"] is True and summary["device"] == "cpu"
    assert summary["script"] == "benchmarks/gpu_window.py" and summary["passed"] is True and summary["failed"] == []
    assert [s["name"] for s in summary["stages"]] == STAGES
    for s in summary["stages"]:
        assert set(s) == {"name", "status", "reason", "seconds", "figures"}, s["name"]
        assert s["status"] == "passed" and s["reason"] is None, (s["name"], s["reason"])
    assert summary["elapsed_s"] <= summary["budget_s"]
    assert {"python", "torch", "cuda", "optuna", "plotly"} <= set(summary["versions"])
    assert "gpu" in summary and summary["gpu"] is None  # the GPU's name on a GPU; none on CPU

    search = summary["search"]
    assert search["trials"] == search["trained"] == 3 and search["all_trials_fit"] is True
    assert search["trials_per_minute"] > 0 and search["trial_minutes_for_all"] > 0 and search["minutes"] > 0
    assert search["winner"]["trial"] is not None
    assert search["command"].startswith("nas search --budget 50k --trials 3 ") and "--timeout" in search["command"]

    assert len(summary["top3"]) == 3 and all(0 <= r["test_acc"] <= 1 for r in summary["top3"])
    table = summary["table"]
    assert [r["stage"] for r in table] == TABLE
    for row in table:
        assert row["status"] == "passed" and row["epochs"] == 1 and row["train_subset"] == 32, row
        assert len(row["test_acc"]) == 2 and row["mean"] == pytest.approx(sum(row["test_acc"]) / 2), row
        assert row["std"] is not None and row["params"] > 0, row
    assert {r["stage"]: r["protocol"] for r in table}["table_airbench94"] == "airbench"
    assert {r["protocol"] for r in table[:-1]} == {"fast"}
    assert (out / "log.txt").is_file()


@pytest.mark.slow  # the whole dry run, about 90 s on 2 busy cores: the default suite stays under 10 minutes
def test_the_stages_are_sized_from_measured_speed_and_ran_the_commands_the_issue_names(dry_run):
    _, summary, out = dry_run
    fig = {s["name"]: s["figures"] for s in summary["stages"]}
    search = fig["search"]
    assert search["trial_estimate_s"] > 0 and search["final_rung_estimate_s"] > 0
    assert 0 < search["timeout_s"] < search["allot_s"] and search["final_rung"]
    assert search["outcomes"]["complete"] >= 1 and search["report_bytes"] > 0
    for name in ("retrain_top3", *TABLE):
        f = fig[name]
        assert 0.1 <= f["schedule_fraction"] <= 1 and f["allot_s"] > 0 and f["process_s"] > 0, name
        assert all(n["images_per_s"] > 0 for n in f["networks"]), name
        assert f["planned_epochs"] >= 1, name
    assert fig["retrain_top3"]["seeds"] == 1 and len(fig["retrain_top3"]["runs"]) == 3
    assert fig["table_found"]["networks"][0]["arch"] == fig["retrain_top3"]["networks"][0]["arch"]
    text = (out / "log.txt").read_text()
    for name in STAGES:
        assert f"== {name}" in text
    for command in ("$ nas search --budget", "$ nas leaderboard", "$ nas retrain --top 3 --study window",
                    "$ nas retrain best --study window", "--protocol airbench", "--seeds 2"):
        assert command in text, command


def test_the_search_timeout_leaves_room_for_the_last_trial_and_one_rung_candidate_per_trial(window):
    # 100 s, 10 s of overhead, 10 s trials, a rung of up to 5 candidates at 20 s: 3 reserved, 2 trials + 1 started
    timeout, reserved = window.search_timeout(100, 10, 10, 5, 20)
    assert (timeout, reserved) == (20, 3)
    assert 10 + timeout + 10 + reserved * 20 == 100
    # plenty of time: every candidate is reserved for
    assert window.search_timeout(1000, 10, 10, 5, 20) == (880, 5)


def test_the_retrains_share_one_fraction_and_plan_out_the_last_when_time_is_short(window):
    costs = [(10.0, 100.0), (10.0, 100.0), (10.0, 100.0)]  # (fixed, whole schedule) seconds
    assert window.schedule_fraction(1000, costs) == (1.0, 3)
    fraction, planned = window.schedule_fraction(130, costs)  # 0.85 * 100 / 300
    assert planned == 3 and fraction == pytest.approx(0.85 * 100 / 300)
    fraction, planned = window.schedule_fraction(45, costs)  # three: 0.85 * 15 / 300 < 10%; two: 0.85 * 25 / 200
    assert planned == 2 and fraction == pytest.approx(0.85 * 25 / 200)


def test_missing_data_is_refused_before_anything_runs(benchmark_script, tmp_path):
    proc = benchmark_script("gpu_window", "--dry-run", "--data", str(tmp_path / "absent.tar.gz"), out=tmp_path / "out")
    assert proc.returncode == 2 and "never downloads" in proc.stderr
    assert not (tmp_path / "out").exists()
