"""nas.engine.train: determinism, divergence, pruning, exact resume, progress."""

from __future__ import annotations

import dataclasses
import math
import re
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas.engine.train as train_mod
from nas.arch import Arch
from nas.arch.counting import count_params
from nas.engine.augment import channel_stats, normalize
from nas.engine.data import ImageSet, load_split, split_validation
from nas.engine.optimizers import OPTIMIZERS, Optimizer
from nas.engine.recipe import Recipe
from nas.engine.schedules import SCHEDULES, Schedule
from nas.engine.train import (
    EvalPoint,
    Lookahead,
    LrSchedule,
    evaluate,
    select_device,
    train,
)
from nas.errors import NasError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cifar(cifar_folder, tmp_path_factory) -> tuple[ImageSet, ImageSet]:
    """300 real CIFAR-10 training images split 240/60."""
    return split_validation(load_split(str(cifar_folder), "train", tmp_path_factory.mktemp("cache")), 60)


def tiny_net(seed: int = 0) -> nn.Module:
    """Stands in for nas.arch.model: conv-BN-ReLU twice, pool, linear (fast on CPU)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


FAST = Recipe(epochs=2, batch_size=40, lr=0.05, evals_per_epoch=2, warmup_epochs=0.5)


# --------------------------------------------------------------------------------------- device


def test_select_device_picks_cuda_only_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == CPU and select_device("cpu") == CPU
    with pytest.raises(NasError, match="no CUDA GPU.*--device cpu"):
        select_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto").type == "cuda"
    with pytest.raises(NasError, match="'tpu'"):
        select_device("tpu")


def test_fp16_on_cpu_is_a_user_error(cifar):
    with pytest.raises(NasError, match="fp16.*bf16 or fp32"):
        train(tiny_net(), dataclasses.replace(FAST, precision="fp16"), *cifar, CPU)


# --------------------------------------------------------------------------------------- engine


def strip_time(history: tuple[EvalPoint, ...]) -> list[tuple]:
    return [dataclasses.astuple(dataclasses.replace(p, seconds=0.0)) for p in history]


def test_same_seed_gives_identical_history_and_weights(cifar):
    a_net, b_net = tiny_net(), tiny_net()
    a, b = train(a_net, FAST, *cifar, CPU), train(b_net, FAST, *cifar, CPU)
    assert a.status == "ok" and len(a.history) == 4 and [p.epoch for p in a.history] == [0.5, 1.0, 1.5, 2.0]
    assert strip_time(a.history) == strip_time(b.history)
    assert all(torch.equal(x, y) for x, y in zip(a_net.state_dict().values(), b_net.state_dict().values()))
    assert a.images_seen == 2 * 6 * 40 and a.val_acc == a.history[-1].val_acc and 0 <= a.val_acc <= 1
    assert math.isfinite(a.train_loss_sum) and a.images_per_s > 0
    c = train(tiny_net(), dataclasses.replace(FAST, seed=1), *cifar, CPU)
    assert strip_time(c.history) != strip_time(a.history)


def test_every_optimizer_schedule_and_extra_runs(cifar):
    """One short run per option, so no branch is dead code."""
    train_set, val_set = cifar
    variants = [dict(optimizer=o) for o in ("adam", "adamw", "adagrad", "adamax", "adadelta", "rmsprop")] + [
        dict(schedule=s) for s in ("onecycle", "step", "plateau", "exponential", "cyclic", "restarts", "constant")] + [
        dict(nesterov=True, lookahead=True, grad_clip=0.1, label_smoothing=0.2, pad_mode="reflect", rotation=5.0,
             cutout=8, channels_last=False, train_subset=200, precision="bf16")]
    for v in variants:
        r = dataclasses.replace(FAST, epochs=1, evals_per_epoch=1, **v)
        result = train(tiny_net(), r, train_set, val_set, CPU)
        assert result.status == "ok" and len(result.history) == 1, v


def test_huge_learning_rate_ends_with_nonfinite_status(cifar):
    result = train(tiny_net(), dataclasses.replace(FAST, lr=1e6), *cifar, CPU)
    assert result.status == "nonfinite"
    assert result.val_acc == 0.0 and result.train_loss_sum == math.inf
    assert all(math.isfinite(p.train_loss) and math.isfinite(p.val_loss) for p in result.history)
    no_val = train(tiny_net(), dataclasses.replace(FAST, lr=1e6), cifar[0], None, CPU)
    assert no_val.status == "nonfinite"  # the training loss itself overflows


def test_an_exception_from_on_eval_propagates(cifar):
    class Pruned(Exception):
        pass

    seen = []

    def prune_at_second_point(point: EvalPoint) -> None:
        seen.append(point)
        if len(seen) == 2:
            raise Pruned

    with pytest.raises(Pruned):
        train(tiny_net(), FAST, *cifar, CPU, on_eval=prune_at_second_point)
    assert [p.epoch for p in seen] == [0.5, 1.0]


def test_training_without_validation_reports_nan_validation(cifar):
    result = train(tiny_net(), dataclasses.replace(FAST, epochs=1), cifar[0], None, CPU)
    assert result.status == "ok" and math.isnan(result.val_acc) and math.isfinite(result.history[-1].train_loss)


def test_resumed_run_ends_with_bit_identical_weights(cifar, tmp_path):
    r = dataclasses.replace(FAST, epochs=3, lookahead=True, schedule="plateau")
    whole_net = tiny_net()
    whole = train(whole_net, r, *cifar, CPU)

    class Crash(Exception):
        pass

    def crash_in_epoch_three(point: EvalPoint) -> None:
        if point.epoch > 2:
            raise Crash

    with pytest.raises(Crash):
        train(tiny_net(), r, *cifar, CPU, on_eval=crash_in_epoch_three, checkpoint_dir=tmp_path)
    torch.manual_seed(123)  # resume must not depend on the caller's global RNG
    resumed_net = tiny_net(seed=99)  # weights come from the checkpoint
    resumed = train(resumed_net, r, *cifar, CPU, checkpoint_dir=tmp_path)
    assert strip_time(resumed.history) == strip_time(whole.history)
    assert resumed.train_loss_sum == whole.train_loss_sum and resumed.images_seen == whole.images_seen
    for (name, x), y in zip(whole_net.state_dict().items(), resumed_net.state_dict().values()):
        assert torch.equal(x, y), name


def test_resume_with_another_recipe_is_refused(cifar, tmp_path):
    train(tiny_net(), dataclasses.replace(FAST, epochs=1), *cifar, CPU, checkpoint_dir=tmp_path)
    with pytest.raises(NasError, match="different recipe"):
        train(tiny_net(), dataclasses.replace(FAST, epochs=1, lr=0.01), *cifar, CPU, checkpoint_dir=tmp_path)


def test_batch_larger_than_the_data_is_a_user_error(cifar):
    with pytest.raises(NasError, match=r"batch_size=512 .* lower --batch-size \(or batch_size in the space's train:"):
        train(tiny_net(), dataclasses.replace(FAST, batch_size=512), *cifar, CPU)
    with pytest.raises(NasError, match=r"train_subset=9999 .* \(--train-subset\)"):
        train(tiny_net(), dataclasses.replace(FAST, train_subset=9999), *cifar, CPU)


def test_progress_on_a_terminal_is_a_bar_on_stderr(cifar, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    train(tiny_net(), dataclasses.replace(FAST, epochs=1), *cifar, CPU, progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "epoch 1.00" in err


def test_progress_in_a_log_is_a_plain_line_per_epoch_and_per_minute(cifar, capsys, monkeypatch):
    """nohup, SLURM and CI show no terminal bar; a 200-epoch retrain must still say it is alive."""
    train(tiny_net(), dataclasses.replace(FAST, epochs=2), *cifar, CPU, progress=True)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 2 and all("\x1b" not in line for line in lines)
    assert re.fullmatch(r"epoch 2/2: train loss \d+\.\d{4}, val acc \d+\.\d\d%, [\d,]+ images/s, 0:00:\d\d elapsed",
                        lines[1]), lines
    monkeypatch.setattr(train_mod._Progress, "LINE_EVERY_S", 0.0)  # every step is "a minute later"
    train(tiny_net(), dataclasses.replace(FAST, epochs=1), cifar[0], None, CPU, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("epoch 1/1: step 1/6, 0:00:") and len(lines) == 7
    assert "val acc" not in lines[-1] and lines[-1].startswith("epoch 1/1: train loss")
    train(tiny_net(), dataclasses.replace(FAST, epochs=1), *cifar, CPU)
    assert capsys.readouterr().err == ""


def test_evaluate_reports_accuracy_loss_and_per_class(cifar):
    net = tiny_net()
    e = evaluate(net, cifar[1], CPU)
    acc, loss, per_class = e.acc, e.loss, e.per_class
    acc_tta = evaluate(net, cifar[1], CPU, tta=True).acc
    assert sum(map(sum, e.confusion)) == len(cifar[1])  # every image counted once
    assert [row[i] / sum(row) for i, row in enumerate(e.confusion)] == pytest.approx(per_class)
    assert 0 <= acc <= 1 and 0 <= acc_tta <= 1 and loss > 0 and len(per_class) == 10
    counts = cifar[1].labels.bincount(minlength=10).double()
    assert acc == pytest.approx(float((torch.tensor(per_class, dtype=torch.float64) * counts).sum() / counts.sum()))
    assert net.training  # mode restored


# ------------------------------------------------------------------------------ lr and lookahead


def test_schedule_warms_up_then_follows_its_shape():
    s = LrSchedule(Recipe(epochs=10, warmup_epochs=1.0), steps_per_epoch=10)
    assert [s.factor(i) for i in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert s.factor(10) == 1.0 and s.factor(55) == pytest.approx(0.5) and s.factor(99) < 0.001
    one = LrSchedule(Recipe(epochs=10, schedule="onecycle"), steps_per_epoch=10)
    assert one.factor(0) == pytest.approx(1 / 25) and one.factor(30) == pytest.approx(1.0)
    step = LrSchedule(Recipe(epochs=10, schedule="step"), steps_per_epoch=10)
    assert [step.factor(i) for i in (49, 50, 75)] == [1.0, 0.1, pytest.approx(0.01)]


def test_plateau_cuts_the_rate_after_patience_points_without_gain():
    s = LrSchedule(Recipe(epochs=20, schedule="plateau"), steps_per_epoch=1)  # patience 1 point
    for loss in (1.0, 0.9, 0.9):
        s.observe(loss)
    assert s.factor(5) == 1.0
    s.observe(0.95)
    assert s.factor(5) == pytest.approx(0.1)


def test_lookahead_interpolates_slow_weights_every_k_steps():
    w = nn.Parameter(torch.zeros(1))
    opt = Lookahead(torch.optim.SGD([w], lr=1.0), k=5, alpha=0.5)
    for i in range(5):
        w.grad = torch.ones(1) * -1  # each fast step adds 1
        opt.step()
        if i < 4:
            assert w.item() == i + 1
    assert w.item() == 2.5  # slow 0 + 0.5 * (5 - 0); fast reset to slow
    assert train_mod.LOOKAHEAD_K == 5 and train_mod.LOOKAHEAD_ALPHA == 0.5


# --------------------------------------------------------------------------------- bench and CLI


def test_bench_reports_both_pipelines_and_the_peak_without_asserting_speed(cifar):
    from nas.engine.bench import bench

    r = bench(tiny_net(), cifar[0], CPU, Recipe(), batch_size=40, steps=2, rounds=1, workers=0)
    assert r.images_per_s > 0 and r.baseline_images_per_s > 0 and len(r.engine_samples) == 1
    assert r.speedup == pytest.approx(r.images_per_s / r.baseline_images_per_s)
    assert r.train_flops_per_image > 0 and r.peak_flops > 0
    assert r.peak_fraction == pytest.approx(r.achieved_flops / r.peak_flops)


def test_cli_train_prints_one_json_object_with_the_protocol_and_test_score(cifar_folder, tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from nas.cli import app

    monkeypatch.setenv("NAS_CACHE", str(tmp_path / "cache"))
    args = ["train", "--blocks", "1", "--channels", "8", "--data", str(cifar_folder), "--val-size", "50",
            "--epochs", "1", "--batch-size", "50", "--set", "evals_per_epoch=2", "--set", "weight_decay=1e-4",
            "--protocol", "fast", "--eval", "test", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    assert obj["status"] == "ok" and len(obj["history"]) == 2 and obj["recipe"]["weight_decay"] == 1e-4
    assert obj["protocol"] == "fast" and obj["epochs"] == 1 and obj["recipe"]["whiten"] and obj["recipe"]["tta"]
    assert 0 <= obj["test_acc"] <= 1 and obj["seconds"] > 0 and obj["params"] == count_params(Arch((1,), (8,)))
    bad = CliRunner().invoke(app, args[:-1] + ["--set", "learning_rate=1"])
    assert bad.exit_code == 2 and "valid keys" in bad.output
    bad = CliRunner().invoke(app, args[:-1] + ["--protocol", "quick"])
    assert bad.exit_code == 2 and "--protocol='quick' is unknown: choose one of reference, fast" in bad.output


@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one(cifar):
    """torch.compile needs a C++ compiler on CPU and takes about a minute to compile."""
    eager = train(tiny_net(), dataclasses.replace(FAST, epochs=1), *cifar, CPU)
    compiled = train(tiny_net(), dataclasses.replace(FAST, epochs=1, compile=True), *cifar, CPU)
    assert compiled.status == "ok"
    assert compiled.history[-1].train_loss == pytest.approx(eager.history[-1].train_loss, rel=1e-3)


# --------------------------------------------------------------------------------------- protocols


def test_whiten_stem_decorrelates_patches_and_freezes_the_stem(cifar):
    from nas.engine.augment import channel_stats
    from nas.engine.train import whiten_stem

    images = cifar[0].images
    net = tiny_net()
    whiten_stem(net, images, channel_stats(cifar[0]))
    conv = net[0]
    assert not conv.weight.requires_grad
    with torch.no_grad():  # the 8 filters are the top 4 whitening directions and their negations
        x = normalize(images, channel_stats(cifar[0]))
        out = F.conv2d(x, conv.weight[:4])
    flat = out.permute(1, 0, 2, 3).reshape(4, -1).double()
    cov = torch.cov(flat)
    assert torch.allclose(cov, torch.eye(4, dtype=torch.float64), atol=0.05), cov  # white: unit variance, uncorrelated
    assert torch.equal(conv.weight[4:], -conv.weight[:4])


def test_the_fast_protocol_is_reproducible_with_a_seed_and_differs_across_seeds(cifar):
    from nas.engine.recipe import protocol

    fast = protocol("fast").updated({"epochs": 2, "batch_size": 40})
    assert fast.whiten and fast.tta and fast.lookahead
    a_net, b_net = tiny_net(), tiny_net()
    a, b = train(a_net, fast, *cifar, CPU), train(b_net, fast, *cifar, CPU)
    assert a.status == "ok" and strip_time(a.history) == strip_time(b.history)
    assert all(torch.equal(x, y) for x, y in zip(a_net.state_dict().values(), b_net.state_dict().values()))
    c = train(tiny_net(), fast.updated({"seed": 1}), *cifar, CPU)
    assert strip_time(c.history) != strip_time(a.history)


AIRBENCH_TRICKS = dict(alternate_flip=True, bn_weight_frozen=True, bias_lr_scale=64.0, bn_momentum=0.4, lookahead=True,
                       lookahead_schedule="airbench", tta=True, tta_translate=True, crop_padding=2, pad_mode="reflect")


@pytest.mark.parametrize("option", [{"optimizer": o} for o in OPTIMIZERS] + [{"schedule": s} for s in SCHEDULES]
                         + [AIRBENCH_TRICKS])
def test_every_optimizer_and_schedule_resumes_bit_identically(cifar, tmp_path, option):
    """Each registered optimizer and schedule, with warm-up, stopped mid-run and resumed from its checkpoint, ends
    with the weights and history of the run that was never stopped; so does a run with every airbench trick (its
    flip order, BN-bias parameter group and EMA of the BN statistics)."""
    resumes_bit_identically(cifar, tmp_path, option)


def test_an_optimizer_and_a_schedule_added_as_one_entry_each_train_and_resume(cifar, tmp_path, monkeypatch):
    monkeypatch.setitem(OPTIMIZERS, "nadam", Optimizer("nadam", "NAdam", "beta1"))
    monkeypatch.setitem(SCHEDULES, "linear", Schedule("linear", lambda t: 1 - t))
    resumes_bit_identically(cifar, tmp_path, {"optimizer": "nadam", "schedule": "linear", "momentum": 0.9})
    assert LrSchedule(Recipe(epochs=4, schedule="linear"), 10).factor(20) == pytest.approx(0.5)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_steps_fused_or_foreach_on_cuda_and_like_the_plain_loop(name):
    """On CUDA each optimizer takes torch's fused or foreach implementation; CPU keeps the plain loop. No GPU
    here, so the CUDA flags are checked where torch also has the kernels, on CPU: the class accepts them and
    three steps land where the loop's do."""
    o = OPTIMIZERS[name]
    assert o.implementation("cpu") == {} and o.implementation("cuda") in ({"fused": True}, {"foreach": True})
    assert o.implementation("cuda") == ({"fused": True} if name in ("sgd", "sgd-nesterov", "adam", "adamw") else {"foreach": True})
    nets = [tiny_net(), tiny_net()]
    opts = [o.build(nets[0].parameters(), 0.01, 0.9, o.nesterov, 5e-4),
            o.build(nets[1].parameters(), 0.01, 0.9, o.nesterov, 5e-4, device_type="cuda")]
    assert all(g.get(flag) is None or not g[flag] for g in opts[0].param_groups for flag in ("fused", "foreach"))
    assert all(g[next(iter(o.implementation("cuda")))] for g in opts[1].param_groups)
    x, y = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.arange(8)
    for _ in range(3):
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
    for a, b in zip(*(net.parameters() for net in nets)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def resumes_bit_identically(cifar, tmp_path, option) -> None:
    r = dataclasses.replace(FAST, epochs=2, evals_per_epoch=2, warmup_epochs=0.5, **option)
    whole_net = tiny_net()
    whole = train(whole_net, r, *cifar, CPU)

    def stop_after_epoch_one(point: EvalPoint) -> None:
        if point.epoch == 1.5:  # epoch 1 is checkpointed: the resumed run starts epoch 2 from it
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_net(), r, *cifar, CPU, on_eval=stop_after_epoch_one, checkpoint_dir=tmp_path)
    resumed_net = tiny_net(seed=7)
    resumed = train(resumed_net, r, *cifar, CPU, checkpoint_dir=tmp_path)
    assert whole.status == "ok" and strip_time(resumed.history) == strip_time(whole.history)
    for (name, x), y in zip(whole_net.state_dict().items(), resumed_net.state_dict().values()):
        assert torch.equal(x, y), name


def test_the_new_schedules_have_their_shapes():
    steps = 700

    def curve(kind: str) -> list[float]:
        s = LrSchedule(Recipe(epochs=7, schedule=kind), 100)
        return [s.factor(i) for i in range(steps)]

    exp = curve("exponential")
    assert exp[0] == 1.0 and abs(exp[-1] - 0.01) < 1e-3 and all(a > b for a, b in zip(exp, exp[1:]))
    cyc = curve("cyclic")
    peaks = [i for i in range(1, steps - 1) if cyc[i - 1] < cyc[i] >= cyc[i + 1]]
    assert len(peaks) == 4 and min(cyc) >= 0.1 - 1e-9 and max(cyc) <= 1.0
    sgdr = curve("restarts")  # cosine cycles of 100, 200 and 400 steps, each restarting at the peak
    assert [i for i in range(1, steps) if sgdr[i] > sgdr[i - 1]] == [100, 300]
    assert sgdr[0] == sgdr[100] == sgdr[300] == 1.0


def test_keep_best_ends_with_the_best_validation_point_and_resumes_with_it(cifar, tmp_path):
    r = dataclasses.replace(FAST, epochs=3, evals_per_epoch=2, keep_best=True, lr=0.5)
    whole_net = tiny_net()
    whole = train(whole_net, r, *cifar, CPU)
    best = max(p.val_acc for p in whole.history)
    assert whole.val_acc == best and whole.history[-1].val_acc < best  # the last point is not the best here
    assert evaluate(whole_net, cifar[1], CPU, stats=channel_stats(cifar[0])).acc == best  # the weights are that point's

    def stop_in_epoch_three(point: EvalPoint) -> None:
        if point.epoch == 2.5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_net(), r, *cifar, CPU, on_eval=stop_in_epoch_three, checkpoint_dir=tmp_path)
    resumed_net = tiny_net(seed=3)
    assert train(resumed_net, r, *cifar, CPU, checkpoint_dir=tmp_path).val_acc == best
    assert all(torch.equal(x, y) for x, y in zip(whole_net.state_dict().values(), resumed_net.state_dict().values()))
    with pytest.raises(NasError, match="keep_best needs a validation split.*--val-size"):
        train(tiny_net(), r, cifar[0], None, CPU)
