"""`nas retrain` end to end on real CIFAR-10 images: a tiny search, its best retrained, artifacts,
load_model reproducing the test accuracy, and a SIGKILLed run resuming to bit-identical weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import nas
from nas.arch import Arch
from nas.engine.recipe import Recipe
from nas.errors import NasError
from nas.retrain import (
    Candidate,
    file_candidate,
    protocol_key,
    recipe_overrides,
    resolve_recipe,
)
from nas.runs import load_stats, summarize

ROOT = Path(__file__).resolve().parents[1]
TINY = {"blocks": [1, 1], "channels": [8, 16]}
FAST = ["--epochs", "1", "--train-subset", "200", "--batch-size", "50"]


def nas_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    return {**os.environ, "NAS_CACHE": str(tmp_path_factory.mktemp("cache"))}


@pytest.fixture(scope="module")
def searched(small_cifar, env, tmp_path_factory) -> Path:
    """A real tiny `nas search` whose space samples one training knob (lr) for retrain to carry over."""
    results = tmp_path_factory.mktemp("results")
    space = results / "tiny-lr.yaml"
    space.write_text((ROOT / "search_spaces" / "tiny.yaml").read_text() + "train:\n  lr: [0.05]\n")
    r = nas_cli("search", "--budget", "50k", "--trials", "2", "--space", str(space), "--data", str(small_cifar),
                "--epochs", "1", "--train-subset", "300", "--val-subset", "100", "--val-size", "200", "--width", "1",
                "--pruner", "none", "--results-dir", str(results), "--study", "s", env=env)
    assert r.returncode == 0, r.stderr
    return results


# ------------------------------------------------------------------------------ end to end


def test_retrain_best_writes_every_artifact_and_load_model_reproduces_test_acc(searched, small_cifar, env, monkeypatch):
    r = nas_cli("retrain", "best", "--study", "s", "--results-dir", str(searched), *FAST, "--json", env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    (run,) = out["runs"]
    folder = Path(run["dir"])
    assert folder.parent == searched / "s" / "retrain" and folder.name.endswith("-seed0")
    for name in ("model.safetensors", "arch.json", "recipe.json", "metrics.json", "curves.html"):
        assert (folder / name).is_file(), name
    assert not (folder / "checkpoints").exists()  # superseded by the final weights

    # the best trial: the final rung's score first, then the short one, among completed in-budget trials
    # (ties: smaller, earlier); it carries the score that made it best
    import optuna
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{searched / 's' / 'study.db'}")
    done = [t for t in study.trials if t.user_attrs.get("outcome") == "complete" and t.user_attrs["params"] <= 50_000]
    final = {t.number: study.user_attrs.get(f"confirm.{t.number}", {}).get("val_acc") for t in done}
    best = min(done, key=lambda t: (final[t.number] is None, -(final[t.number] or 0), -t.value, t.user_attrs["params"], t.number))
    metrics = json.loads((folder / "metrics.json").read_text())
    deciding = final[best.number] if final[best.number] is not None else best.value
    assert metrics["trial"] == best.number and metrics["search_val_acc"] == deciding
    assert metrics["params"] == best.user_attrs["params"] and metrics["arch_id"] == best.user_attrs["arch_id"]
    assert len(metrics["per_class_acc"]) == 10 and metrics["test_images"] == 200 and len(metrics["curves"]) == 1
    assert {"torch", "python"} <= set(metrics["versions"]) and metrics["device"] == "cpu" and metrics["wall_seconds"] > 0

    # recipe = full defaults <- sampled lr <- flags
    recipe = Recipe.from_dict(json.loads((folder / "recipe.json").read_text()))
    assert recipe.lr == 0.05 and recipe.epochs == 1 and recipe.batch_size == 50 and recipe.train_subset == 200
    assert (recipe.optimizer, recipe.schedule, recipe.momentum, recipe.label_smoothing) == ("sgd", "cosine", 0.9, 0.0)
    assert Arch.from_json((folder / "arch.json").read_text()).to_dict() == best.user_attrs["arch"]  # full width

    # one line rebuilds the trained model; evaluating it again gives exactly the reported accuracy
    from nas.engine.data import load_split
    from nas.engine.train import evaluate
    model = nas.load_model(folder)
    assert not model.training
    monkeypatch.setenv("NAS_CACHE", env["NAS_CACHE"])  # the test split decoded by the subprocess
    e = evaluate(model, load_split(str(small_cifar), "test"), torch.device("cpu"), stats=load_stats(folder))
    acc, per_class = e.acc, e.per_class
    assert acc == metrics["test_acc"]
    assert per_class == pytest.approx(list(metrics["per_class_acc"].values()), abs=0)
    confusion = metrics["confusion"]  # [true][predicted]: sums to the test split, its diagonal is the accuracy
    assert sum(map(sum, confusion)) == metrics["test_images"] == 200 and metrics["classes"][0] == "airplane"
    assert sum(confusion[i][i] for i in range(10)) / 200 == metrics["test_acc"]

    # the report now holds the retrained result; re-running keeps the finished run untouched
    assert f"trial-{best.number}" in (searched / "s" / "report.html").read_text()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    again = nas_cli("retrain", "best", "--study", "s", "--results-dir", str(searched), *FAST, env=env)
    assert again.returncode == 0, again.stderr
    assert "finished, kept" in again.stderr and (folder / "model.safetensors").stat().st_mtime_ns == stamp
    board = nas_cli("leaderboard", "--study", "s", "--results-dir", str(searched), "--json", env=env)
    top = json.loads(board.stdout)["leaderboard"][0]
    assert top["trial"] == best.number and top["test_acc"] == metrics["test_acc"]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"retrain ended before its first checkpoint: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint appeared in time")
        time.sleep(0.02)


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])  # a crash; a preempted job (SLURM, kill)
def test_a_killed_or_stopped_retrain_resumes_to_bit_identical_weights(small_cifar, env, tmp_path, stop):
    arch_file = tmp_path / "tiny.json"
    arch_file.write_text(json.dumps({"name": "tiny", "arch": TINY}))
    args = ["retrain", "--arch", str(arch_file), "--data", str(small_cifar), "--epochs", "4", "--train-subset", "400",
            "--batch-size", "50", "--device", "cpu"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    r = nas_cli(*args, "--results-dir", str(whole), env=env)
    assert r.returncode == 0, r.stderr
    (reference,) = (whole / "baselines" / "tiny").glob("*/model.safetensors")

    proc = subprocess.Popen([sys.executable, "-m", "nas", *args, "--results-dir", str(killed)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = killed / "baselines" / "tiny" / reference.parent.name  # same protocol, same directory name
    _wait_for(run / "checkpoints" / "ckpt-00001.pt", proc)
    proc.send_signal(stop)
    _, stderr = proc.communicate(timeout=120)  # a generous bound on a hung run; promptness: no metrics.json below
    assert not (run / "metrics.json").exists(), "the run finished before it could be stopped"
    if stop == signal.SIGTERM:  # a clean stop: one line and 128 + 15, no traceback
        assert proc.returncode == 143 and "Traceback" not in stderr, stderr
        assert "stopped by SIGTERM: each run keeps its last complete epoch; run the same command to resume" in stderr

    r = nas_cli(*args, "--results-dir", str(killed), env=env)
    assert r.returncode == 0, r.stderr
    assert "resuming after epoch" in r.stderr
    a, b = load_file(reference), load_file(run / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((run / "metrics.json").read_text())["test_acc"] == \
        json.loads((reference.parent / "metrics.json").read_text())["test_acc"]


# ------------------------------------------------------------------------------ pure parts


def test_recipe_is_defaults_then_sampled_then_flags():
    sampled = recipe_overrides({"lr": 0.3, "optimizer": "adamw", "epochs": 4, "train_subset": 5000, "blocks_1": 2})
    assert sampled == {"lr": 0.3, "optimizer": "adamw"}  # fidelity keys and arch knobs are not carried over
    c = Candidate("t", Arch(**TINY), tuple(sampled.items()))
    r = resolve_recipe(c, {"lr": 0.01, "seed": 2})
    assert (r.lr, r.optimizer, r.epochs, r.seed, r.weight_decay, r.evals_per_epoch) == (0.01, "adamw", 200, 2, 5e-4, 1)
    assert protocol_key(r, 0, "cifar10") == protocol_key(resolve_recipe(c, {"lr": 0.01, "seed": 5}), 0, "cifar10")
    assert protocol_key(r, 0, "cifar10") != protocol_key(r, 5000, "cifar10")


def test_file_recipes_are_validated(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "arch": TINY, "recipe": {"schedule": "warm"}}))
    with pytest.raises(NasError, match="schedule"):
        file_candidate(bad)
    c = file_candidate(ROOT / "examples" / "resnet10.json")
    assert c.name == "resnet10" and c.arch.blocks == (2, 1, 1, 1)


def test_summary_averages_seeds_per_protocol():
    run = {"name": "a", "arch_id": "x", "protocol": "p", "params": 10, "macs": 5, "trial": 3,
           "search_val_acc": 0.5, "arch": "N=1"}
    entries = summarize([{**run, "seed": 0, "test_acc": 0.6}, {**run, "seed": 1, "test_acc": 0.8},
                         {**run, "protocol": "q", "seed": 0, "test_acc": 0.7}])
    assert [(e["name"], e["seeds"]) for e in entries] == [("a (p)", [0, 1]), ("a (q)", [0])]
    assert entries[0]["test_acc"] == pytest.approx(0.7) and entries[0]["test_acc_std"] == pytest.approx(0.1414, abs=1e-4)
    assert entries[1]["test_acc_std"] is None
