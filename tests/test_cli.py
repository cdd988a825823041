"""The command line as a user runs it: a real subprocess, exit codes, stdout/stderr."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def nas(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_count_resnet18_json():
    r = nas("count", "--blocks", "2,2,2,2", "--channels", "64,128,256,512", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["params"] == 11_173_962 and d["macs"] == 555_422_720
    assert [x["name"] for x in d["layers"]][-1] == "head"


@pytest.mark.parametrize("args, code", [(["--help"], 0), (["search", "--help"], 0), (["count", "examples/resnet18.json"], 0),
                                        (["space", "search_spaces/tiny.yaml", "--budget", "5e6"], 0),
                                        (["search", "--budget", "5x"], 2)])
def test_help_count_space_and_a_bad_budget_answer_without_loading_torch_or_optuna(args, code):
    """The counter answers in microseconds; importing torch alone took the command 2.7 s."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "nas", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == code, r.stderr
    loaded = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "nas.cli" in loaded and not {"torch", "optuna"} & loaded


def test_count_arch_file_and_table():
    r = nas("count", "examples/efficient-resnet-se.json")
    assert r.returncode == 0, r.stderr
    assert "4,697,742" in r.stdout and "layer3" in r.stdout and "se16@stem" in r.stdout


def test_count_flags_cover_block_options():
    r = nas("count", "--blocks", "1,1", "--channels", "16,32", "--kernels", "5", "--skip-kernels", "1,3",
            "--pool", "2", "--block", "bottleneck", "--se", "--se-ratio", "4", "--groups", "2", "--classes", "100", "--json")
    assert r.returncode == 0, r.stderr
    arch = json.loads(r.stdout)["arch"]
    assert arch["block"] == "bottleneck" and arch["se_ratio"] == 4 and arch["pool"] == 2 and arch["num_classes"] == 100


@pytest.mark.parametrize("flags, params", [
    (["--blocks", "4,4,4", "--channels", "160,320,640", "--block", "preact", "--stem-channels", "16",
      "--dropout", "0.3"], 36_479_194),  # WRN-28-10
    (["--blocks", "3,3,3", "--channels", "256,512,1024", "--block", "resnext", "--stem-channels", "64",
      "--groups", "8", "--width-per-group", "64"], 34_426_698),  # ResNeXt-29 8x64d
    (["--blocks", "3,3,3", "--channels", "256,512,1024", "--block", "res2net", "--stem-channels", "64",
      "--width-per-group", "24", "--scale", "4", "--se", "--se-placement", "stem", "--classes", "100"],
     4_609_652 + 2 * 64 * 4 + 4 + 64),  # Res2Net-29 with one SE unit (ratio 16) after its 64-wide stem
    (["--blocks", "3,3,2,1,2,1", "--channels", "128,128,256,512,512,256", "--kernels", "3,3,3,3,1,3",
      "--block", "plain", "--stem-channels", "64", "--classes", "100"], 4_613_028),
], ids=["wrn-28-10", "resnext-29-8x64d", "res2net-29-se-stem", "simplenet"])
def test_count_flags_cover_the_block_families(flags, params):
    r = nas("count", *flags, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["params"] == params
    assert d["arch"]["block"] == (flags[flags.index("--block") + 1] if "--block" in flags else "basic")


def test_space_reports_exact_counts_for_small_spaces():
    r = nas("space", "search_spaces/tiny.yaml", "--budget", "50k", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["method"] == "exact" and d["size"] == d["evaluated"] == 1872 and 0 < d["fit_count"] < 1872


def test_space_counts_for_the_class_count_it_is_given():
    """Only the classifier depends on the class count: every candidate gains 90 x (its last width + a bias) for 100 classes."""
    ten, hundred = (json.loads(nas("space", "search_spaces/tiny.yaml", *extra, "--json").stdout)
                    for extra in ([], ["--classes", "100"]))
    assert (ten["num_classes"], hundred["num_classes"]) == (10, 100) and ten["size"] == hundred["size"]
    assert hundred["params_min"] == ten["params_min"] + 90 * 9 and hundred["params_max"] == ten["params_max"] + 90 * 33


def test_space_samples_large_spaces_and_prints_a_histogram():
    r = nas("space", "search_spaces/default.yaml", "--budget", "5e6", "--samples", "20000")
    assert r.returncode == 0, r.stderr
    assert "by sampling 20,000 candidates" in r.stdout and "█" in r.stdout


@pytest.mark.parametrize("args, fragment", [
    (["count"], "no architecture given"),
    (["count", "--blocks", "2,2", "--channels", "64"], "has 1 entries"),
    (["count", "--blocks", "2,x", "--channels", "64,128"], "--blocks='2,x' must be comma-separated integers"),
    (["count", "--blocks", "2", "--channels", "8", "--kernels", "2"], "kernels[0]=2"),
    (["count", "missing.json"], "cannot read architecture file"),
    (["count", "examples/resnet18.json", "--blocks", "1"], "not both"),
    (["count", "examples/resnet18.json", "--se"], "--se would be ignored"),
    (["train", "examples/resnet18.json", "--groups", "2"], "--groups would be ignored"),
    (["count", "--blocks", "1", "--channels", "8", "--pool", "64"], "pool=64 is invalid"),
    (["count", "--blocks", "1", "--channels", "8", "--block", "resnext"], "width_per_group=0 is invalid for block='resnext'"),
    (["count", "--blocks", "1", "--channels", "8", "--scale", "4"], "scale=4 is invalid for block='basic'"),
    (["count", "--blocks", "1", "--channels", "8", "--se-placement", "stem"], "se_placement='stem' is invalid with se_ratio=0"),
    (["count", "examples/wrn-16-4.json", "--stem-channels", "16"], "--stem-channels would be ignored"),
    (["space", "search_spaces/tiny.yaml", "--budget", "5x"], "budget='5x' is not a count"),
    (["space", "search_spaces/tiny.yaml", "--budget", "0"], "positive whole number"),
    (["space", "search_spaces/tiny.yaml", "--budget", "1.5"], "positive whole number"),
    (["space", "nope.yaml"], "cannot read space file"),
    (["space", "search_spaces/tiny.yaml", "--classes", "1"], "--classes=1 must be >= 2"),
])
def test_bad_input_exits_nonzero_with_one_line_and_no_traceback(args, fragment):
    r = nas(*args)
    assert r.returncode == 2
    assert fragment in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("budget, expected", [("5e6", 5_000_000), ("5M", 5_000_000), ("5_000_000", 5_000_000),
                                              ("4.5m", 4_500_000), ("250k", 250_000)])
def test_budget_spellings(budget, expected):
    from nas.numbers import parse_count
    assert parse_count(budget) == expected


def test_train_reports_validation_by_default_and_test_only_when_asked(small_cifar):
    common = ["train", "--blocks", "1", "--channels", "8", "--data", str(small_cifar), "--epochs", "1",
              "--val-size", "100", "--batch-size", "64", "--json"]
    val_only = json.loads(nas(*common).stdout)
    assert 0 <= val_only["val_acc"] <= 1 and "test_acc" not in val_only
    r = nas(*common, "--eval", "test")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert 0 <= d["test_acc"] <= 1 and len(d["test_per_class"]) == 10
    bad = nas(*common[:-1], "--eval", "train")
    assert bad.returncode == 2 and "--eval='train' is unknown" in bad.stderr


def test_train_without_validation_says_nothing_about_it_and_counts_the_subset(small_cifar, terminal):
    """--val-size 0 (retrain's default) showed `val nan%` on every epoch of the terminal's bar and nan columns in
    the table; and the title counted the split less validation (580 here, 49,800 on CIFAR-10), not the
    --train-subset each epoch trains on. In a real terminal, as a person runs it."""
    common = ["-m", "nas", "train", "--blocks", "1", "--channels", "8", "--data", str(small_cifar), "--epochs", "2",
              "--train-subset", "128", "--batch-size", "64"]
    code, lines = terminal([*common, "--val-size", "0"], columns=120)
    shown = "\n".join(lines)
    assert code == 0, shown
    assert "epoch 2.00 loss" in shown and "(128 train, no validation)" in shown  # the bar ran; the title
    assert "nan" not in shown and "val" not in shown.replace("no validation", ""), shown
    code, lines = terminal([*common, "--val-size", "100"], columns=120)
    shown = "\n".join(lines)
    assert code == 0 and "(128 train, 100 val)" in shown and "val acc" in shown, shown


def test_the_search_plan_writes_counts_and_times_as_a_person_does(monkeypatch):
    """It printed "1 epochs", "1 trials", "up to 1 candidates", and "<= ~0.0 min for 0 trials" for a finished study
    resumed: the plan `nas search` prints, from a SearchPlan as the search makes it."""
    import dataclasses
    import io

    from rich.console import Console

    from nas.cli import search_output
    from nas.search.config import Fidelity
    from nas.search.job import SearchPlan

    plan = SearchPlan(space="tiny", depths=(2,), budget=50_000, max_macs=None, trials=1, done=0, device="cpu",
                      storage="sqlite:///study.db", fidelity=Fidelity(1, 128, 100, 1.0, 1), train_images=128,
                      val_images=1, sampler="tpe", pruner="halving", per_depth=False, objectives=("accuracy",),
                      grid=None, seeded=(), seconds_per_trial=1.5, final_rung="proxy", rung_size=1, workers=1,
                      threads_per_worker=2)

    def printed(**changes) -> str:
        buf = io.StringIO()
        monkeypatch.setattr(search_output, "out", Console(file=buf, width=300))
        search_output.PrintedSearch(confirm=True).started(dataclasses.replace(plan, **changes))
        return buf.getvalue()

    one = printed()
    assert "budget 50,000 params, 1 trial (0 already done)" in one
    assert "fidelity: 1 epoch x 128 images, width x1, 1 validation image, pruner halving" in one
    assert "~1.5 s per full trial, <= ~1.5 s for 1 trial (pruning cuts this)" in one
    assert "final rung: up to 1 candidate (best of each depth, best seed design) trained 5x longer, ~7.5 s" in one
    assert "nothing left to train" in printed(done=1) and "0.0 min" not in printed(done=1)
    assert "base recipe: reference (optimizer sgd, lr 0.1" in printed(base_recipe="reference (optimizer sgd, lr 0.1)")
    many = printed(trials=200, seconds_per_trial=30.0, rung_size=3, train_images=5000, val_images=2000)
    assert "200 trials" in many and "<= ~1.7 h for 200 trials" in many and "up to 3 candidates" in many
    assert "~7.5 min" in many  # the final rung: 3 candidates x 5 x 30 s


def test_a_cifar100_search_over_the_families_runs_end_to_end(small_cifar100, search_args, nas_cli, outcomes, tmp_path):
    """search_spaces/cifar100.yaml on 400 real CIFAR-100 images: the report's four designs are trained first,
    then the sampler's own candidates (any family), and the final rung; every trained network is a valid
    100-class Arch within the budget whose count is the one recorded. OMP_NUM_THREADS=1: these proxies are
    tiny, and two threads on a busy 2-core machine make every op wait (50 s instead of 20)."""
    from nas import Arch, count_params
    from nas.record import ARCH, OUTCOME, PARAMS, SEED_DESIGN, TRAINED

    args = search_args(small_cifar100, tmp_path / "res", "--budget", "5e6", "--space", str(ROOT / "search_spaces" / "cifar100.yaml"),
                       "--width", "0.05", "--val-subset", "50", trials=6)
    r = nas_cli(args, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr
    trials = [t for t in outcomes(f"sqlite:///{tmp_path / 'res' / 's' / 'study.db'}")
              if t.user_attrs.get(OUTCOME) in TRAINED]
    assert len(trials) == 6 and "final rung" in r.stdout
    seeds = {t.user_attrs[SEED_DESIGN]: Arch.from_dict(t.user_attrs[ARCH]) for t in trials if SEED_DESIGN in t.user_attrs}
    assert {name: a.block for name, a in seeds.items()} == {"wrn-16-4": "preact", "resnext29-32x4d": "resnext",
                                                            "res2net29-24w4s": "res2net", "simplenet-13": "plain"}
    for t in trials:
        arch = Arch.from_dict(t.user_attrs[ARCH])
        assert arch.num_classes == 100 and count_params(arch) == t.user_attrs[PARAMS] <= 5_000_000
        assert arch.width_per_group == 0 or arch.block in ("resnext", "res2net")  # a family's knobs, only there
