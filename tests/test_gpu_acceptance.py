"""benchmarks/gpu_acceptance.py --dry-run: every check of the GPU acceptance run, tiny and on CPU, so the
script cannot rot while no GPU is at hand. One dry run (about a minute on 2 cores) serves every test."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_acceptance.py"
CHECKS = ["device", "resume", "bf16_autocast", "fp16_autocast", "oom_trial", "resident_data", "bench_resnet18",
          "bench_narrow", "search", "retrain_winner", "retrain_se"]


@pytest.fixture(scope="module")
def run_script(benchmark_script):
    return lambda *args, out: benchmark_script("gpu_acceptance", *args, out=out)


@pytest.fixture(scope="module")
def dry_run(run_script, cifar_tarball, tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, Path]:
    out = tmp_path_factory.mktemp("acceptance") / "out"
    proc = run_script("--dry-run", "--data", str(cifar_tarball), out=out)
    assert (out / "summary.json").is_file(), proc.stderr[-3000:]
    return proc, json.loads((out / "summary.json").read_text()), out


@pytest.mark.slow  # the whole dry run, about a minute: the default suite stays under 10 minutes
def test_every_check_runs_and_passes_or_is_skipped_with_a_reason(dry_run):
    proc, summary, _ = dry_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["schema"] == 1 and summary["dry_run"] is True and summary["device"] == "cpu"
    assert summary["passed"] is True and summary["failed"] == []
    assert [c["name"] for c in summary["checks"]] == CHECKS
    for c in summary["checks"]:
        assert set(c) == {"name", "status", "reason", "seconds", "figures"}, c["name"]
        assert c["status"] in ("passed", "skipped"), (c["name"], c["reason"])
        assert (c["status"] == "skipped") == bool(c["reason"]), c["name"]
        assert c["seconds"] >= 0 and isinstance(c["figures"], dict)
    skipped = {c["name"]: c["reason"] for c in summary["checks"] if c["status"] == "skipped"}
    assert list(skipped) == ["fp16_autocast"] and "no CUDA" in skipped["fp16_autocast"]
    assert summary["elapsed_s"] <= summary["budget_s"]
    assert {"python", "torch", "optuna", "plotly"} <= set(summary["versions"])


@pytest.mark.slow  # the whole dry run, about a minute: the default suite stays under 10 minutes
def test_the_figures_say_what_each_check_proved(dry_run):
    _, summary, _ = dry_run
    fig = {c["name"]: c["figures"] for c in summary["checks"]}
    assert fig["device"]["auto"] == "cpu" and fig["device"]["bf16_matmul_peak_tflops"] > 0
    resume = fig["resume"]["auto"]
    assert resume["identical"] and resume["control_identical"] and resume["max_weight_diff"] == 0.0
    assert len(resume["losses"]) == 2 and resume["losses"] == resume["resumed_losses"]
    assert fig["bf16_autocast"]["autocast"] == "torch.bfloat16" and fig["bf16_autocast"]["status"] == "ok"
    assert fig["oom_trial"]["outcomes"][0] == "oom" and "complete" in fig["oom_trial"]["outcomes"][1:]
    assert fig["resident_data"]["h2d_bytes_per_step"] == 0
    for bench in ("bench_resnet18", "bench_narrow"):
        assert fig[bench]["images_per_s"] > 0 and fig[bench]["baseline_images_per_s"] > 0
        assert 0 < fig[bench]["peak_fraction"] and fig[bench]["achieved_flops"] > 0
    search = fig["search"]
    assert search["trained"] == search["trials"] == 3 and search["report_bytes"] > 0
    assert search["final_rung"] and search["winner"]["trial"] == search["final_rung"][0]["trial"]
    assert search["trials_per_minute"] > 0
    assert fig["retrain_winner"]["trial"] == search["winner"]["trial"]
    for retrain in ("retrain_winner", "retrain_se"):
        assert 0 <= fig[retrain]["test_acc"] <= 1 and fig[retrain]["epochs"] == 1 and fig[retrain]["wall_s"] > 0
    assert fig["retrain_se"]["params"] == 4_697_742  # [4,4,3] with its one SE unit at the stem, as examples/ describes it


@pytest.mark.slow  # the whole dry run, about a minute: the default suite stays under 10 minutes
def test_the_log_holds_every_check_and_every_command(dry_run):
    _, _, out = dry_run
    text = (out / "log.txt").read_text()
    for name in CHECKS:
        assert f"== {name}" in text
    for command in ("$ nas bench", "$ nas search", "$ nas leaderboard", "$ nas show best", "$ nas retrain"):
        assert command in text


def test_missing_data_is_refused_before_anything_runs(run_script, tmp_path):
    proc = run_script("--dry-run", "--data", str(tmp_path / "absent.tar.gz"), out=tmp_path / "out")
    assert proc.returncode == 2 and "never downloads" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_schedule_fills_the_time_with_whole_epochs_or_a_subset(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    from gpu_acceptance import schedule

    assert schedule(100, 1000, 45_000, max_epochs=10, min_images=1280) == (2, 0)  # 100,000 images: 2 epochs
    assert schedule(1000, 1000, 45_000, max_epochs=10, min_images=1280) == (10, 0)  # capped
    assert schedule(20, 1000, 45_000, max_epochs=10, min_images=1280) == (1, 20_000)  # one epoch of a subset
    assert schedule(-5, 1000, 45_000, max_epochs=10, min_images=1280) == (1, 1280)  # no time: the smallest run


def test_only_runs_the_named_checks_and_the_device_and_skips_the_rest_saying_why(run_script, cifar_tarball,
                                                                                  tmp_path):
    """--only reruns what failed in less device time: the checks not named are recorded, not lost."""
    proc = run_script("--dry-run", "--data", str(cifar_tarball), "--only", "resume", out=tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    checks = json.loads((tmp_path / "out" / "summary.json").read_text())["checks"]
    assert [c["name"] for c in checks] == CHECKS
    status = {c["name"]: (c["status"], c["reason"]) for c in checks}
    assert status["device"] == ("passed", None) and status["resume"] == ("passed", None)
    assert all(status[n] == ("skipped", "not named in --only") for n in CHECKS if n not in ("device", "resume"))


def test_only_refuses_a_check_that_does_not_exist(run_script, tmp_path, cifar_tarball):
    proc = run_script("--dry-run", "--data", str(cifar_tarball), "--only", "search,serach", out=tmp_path / "out")
    assert proc.returncode == 2 and "--only serach: no such check" in proc.stderr and "retrain_se" in proc.stderr
    assert not (tmp_path / "out").exists()
