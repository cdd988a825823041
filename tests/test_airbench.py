"""airbench's tricks as recipe fields and network knobs (nas/engine/recipe.py PROTOCOLS["airbench"],
examples/airbench94.json): each does what it says; a run with all of them resumes bit for bit (tests/test_train.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import Arch, short_hash
from nas.arch.counting import count_macs, count_params
from nas.arch.model import build_model
from nas.engine.augment import crop_flip
from nas.engine.data import load_split, split_validation
from nas.engine.recipe import PROTOCOLS, Recipe, protocol
from nas.engine.train import LrSchedule, evaluate, make_optimizer, train
from nas.errors import NasError

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
AIRBENCH94 = Arch.from_dict(json.loads((ROOT / "examples" / "airbench94.json").read_text())["arch"])
SMALL = dataclasses.replace(AIRBENCH94, channels=(8, 16, 16), stem_channels=12, input_size=32)


@pytest.fixture(scope="module")
def cifar(cifar_folder, tmp_path_factory):
    """300 real CIFAR-10 training images split 240/60."""
    return split_validation(load_split(str(cifar_folder), "train", tmp_path_factory.mktemp("cache")), 60)


def small_recipe(**kw) -> Recipe:
    """The airbench protocol, shrunk to a few steps on 240 images."""
    return protocol("airbench").updated({"epochs": 3, "batch_size": 40, "evals_per_epoch": 1, **kw})


def test_airbench94_is_the_network_its_source_builds():
    model = build_model(AIRBENCH94)
    assert count_params(AIRBENCH94) == sum(p.numel() for p in model.parameters()) == 1_972_792
    assert count_macs(AIRBENCH94) == 118_147_360
    stem = model.stem[0]
    assert (stem.kernel_size, stem.padding, stem.bias is not None, stem.out_channels) == ((2, 2), (0, 0), True, 24)
    assert isinstance(model.stem[1], nn.GELU) and isinstance(model.pool, nn.MaxPool2d)
    assert model.head.bias is None and model.head.scale == pytest.approx(1 / 9)
    assert AIRBENCH94.feature_sizes == (15, 7, 3)  # 31 -> 15 -> 7 -> 3, floor pooling as nn.MaxPool2d(2)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    assert torch.allclose(model(x), F.linear(model.pool(model.layers(model.stem(x))).flatten(1), model.head.weight) / 9)


def test_dirac_init_makes_each_conv_pass_its_input_through_its_first_filters():
    model = build_model(dataclasses.replace(SMALL, channels=(16, 16, 16), stem_channels=16), init="dirac")
    conv = model.layers[1][1].body[0][0]  # a 16 -> 16 3x3 conv
    x = torch.randn(2, 16, 8, 8)
    assert torch.allclose(conv(x), x)
    widen = model.layers[0][0].body[0]  # 16 -> 16 at the first group; a widening conv keeps identity in its first C_in
    assert torch.allclose(widen(x)[:, :16], x)
    kaiming = build_model(dataclasses.replace(SMALL, channels=(16, 16, 16), stem_channels=16)).layers[1][1].body[0][0]
    assert not torch.allclose(kaiming(x), x)


def test_frozen_bn_scales_stay_one_and_bn_biases_take_the_scaled_lr(cifar):
    model = build_model(SMALL, init="dirac")
    r = small_recipe(epochs=1, lookahead=False, whiten=False)
    train(model, r, *cifar, CPU)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)  # frozen, still parameters
    assert any(not torch.equal(m.bias, torch.zeros_like(m.bias)) for m in norms)
    assert all(m.momentum == pytest.approx(0.4) for m in norms)
    opt = make_optimizer(model, r, 10)
    fast = next(g for g in opt.param_groups if g["lr_scale"] != 1)
    assert fast["lr_scale"] == 64 and fast["weight_decay"] == pytest.approx(r.weight_decay / 64)
    assert {id(p) for p in fast["params"]} == {id(m.bias) for m in norms}


def test_alternating_flip_mirrors_each_image_every_other_epoch():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4)
    gen = torch.Generator().manual_seed(0)
    first = torch.tensor([True, False])
    a = crop_flip(images, 0, "zeros", True, gen, first)
    b = crop_flip(images, 0, "zeros", True, gen, first ^ True)
    assert torch.equal(a[0], images[0].flip(2)) and torch.equal(a[1], images[1])
    assert torch.equal(b[0], images[0]) and torch.equal(b[1], images[1].flip(2))


def test_translate_tta_averages_the_mirror_pair_and_two_shifted_pairs(cifar):
    _, val = cifar
    model = build_model(SMALL).eval()
    from nas.engine.augment import channel_stats, normalize

    stats = channel_stats(val)
    x = normalize(val.images, stats)
    pair = lambda v: (model(v) + model(v.flip(3))) / 2  # noqa: E731
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    with torch.no_grad():
        expected = (pair(x) + (pair(padded[:, :, :32, :32]) + pair(padded[:, :, 2:, 2:])) / 2) / 2
    e = evaluate(model, val, CPU, tta=2, stats=stats)
    assert e.acc == pytest.approx((expected.argmax(1) == val.labels).float().mean().item())
    assert small_recipe().tta_level == 2 and Recipe(tta=True).tta_level == 1 and Recipe().tta_level == 0


def test_triangular_schedule_and_airbench_lookahead_have_airbench_shapes(cifar):
    s = LrSchedule(Recipe(epochs=100, schedule="triangular"), 1)
    assert s.factor(0) == pytest.approx(0.2) and s.factor(23) == pytest.approx(1.0)
    assert s.factor(99) == pytest.approx(1 - 0.93 * 76 / 77, abs=1e-6) and s.factor(50) < 1
    model = build_model(SMALL)
    opt = make_optimizer(model, small_recipe(), total_steps=100)
    assert opt.alpha(0) == pytest.approx(1.0) and opt.alpha(100) == pytest.approx(1 - 0.95 ** 5)
    stats = {id(t) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for t in (m.running_mean, m.running_var)}
    assert stats <= {id(t) for t in opt.fast}  # BN statistics are averaged with the weights


@pytest.mark.parametrize("field, value, words", [
    ("tta_translate", True, "set tta true as well"), ("alternate_flip", True, "set flip true as well"),
    ("bias_lr_scale", 0.0, "must be > 0"), ("bn_momentum", 0.0, "must be in (0, 1]"),
    ("lookahead_schedule", "ema", "must be one of: constant, airbench"),
])
def test_bad_trick_settings_name_the_field_and_the_fix(field, value, words):
    base = {"tta": False, "flip": False} if field in ("tta_translate", "alternate_flip") else {}
    with pytest.raises(NasError, match=field) as e:
        Recipe(**{**base, field: value})
    assert words in str(e.value)


def test_recipes_stored_before_the_new_fields_keep_their_hashes():
    old_fields = {k: v for k, v in Recipe().to_dict().items()
                  if k not in ("tta_translate", "alternate_flip", "bn_weight_frozen", "bias_lr_scale", "bn_momentum",
                               "lookahead_schedule")}
    assert short_hash(Recipe().identity()) == short_hash(old_fields)
    assert short_hash(PROTOCOLS["airbench"].identity()) != short_hash(Recipe().identity())


def test_a_failed_compile_falls_back_to_eager_with_one_line(cifar, monkeypatch, capsys):
    r = small_recipe(epochs=1)
    eager_net = build_model(SMALL, r.init, 0)
    eager = train(eager_net, r, *cifar, CPU)

    def broken_compiler(model, **kwargs):
        def run(x):
            raise RuntimeError("Compiler: g++ not found\nmore detail")
        return run

    monkeypatch.setattr(torch, "compile", broken_compiler)
    capsys.readouterr()
    net = build_model(SMALL, r.init, 0)
    fallback = train(net, dataclasses.replace(r, compile=True), *cifar, CPU)
    err = capsys.readouterr().err
    assert err.count("torch.compile failed") == 1
    assert "torch.compile failed (RuntimeError: Compiler: g++ not found); training goes on in eager mode" in err
    assert fallback.val_acc == eager.val_acc
    assert all(torch.equal(a, b) for a, b in zip(eager_net.state_dict().values(), net.state_dict().values()))
