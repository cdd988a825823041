import itertools
import json
from pathlib import Path

import pytest

from nas import Arch, count_params
from nas.errors import NasError
from nas.space import Choice, Range, load_space, parse_space, space_size
from nas.survey import survey

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_shipped_space_loads_and_has_candidates(path):
    assert space_size(load_space(path)) > 0


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_default_space_contains_every_hand_designed_example(path):
    arch = Arch.from_dict(json.loads(path.read_text())["arch"])
    assert load_space(ROOT / "search_spaces" / "default.yaml").contains(arch)


def test_space_arch_round_trip_and_layer1_skip_is_never_a_knob():
    sp = load_space(ROOT / "search_spaces" / "default.yaml")
    names = [k.name for k in sp.arch_knobs(3)]
    assert "skip_kernels_1" not in names and "skip_kernels_2" in names and "channels_3" in names
    values = {"layers": 3, "pool": None, "block": "basic", "se_ratio": 16, "groups": 1, "dropout": 0.0,
              "blocks_1": 4, "blocks_2": 4, "blocks_3": 3, "channels_1": 64, "channels_2": 128, "channels_3": 256,
              "kernels_1": 3, "kernels_2": 3, "kernels_3": 3, "skip_kernels_2": 1, "skip_kernels_3": 1}
    assert sp.arch(values) == Arch(blocks=(4, 4, 3), channels=(64, 128, 256), se_ratio=16)


def brute_force(sp):
    """Every distinct candidate via Space.arch and the scalar counter: the reference for the survey."""
    out = {}
    for n in sp.layers:
        knobs = [k for k in sp.arch_knobs(n)]
        for combo in itertools.product(*(k.values for k in knobs)):
            try:
                arch = sp.arch({"layers": n, **dict(zip((k.name for k in knobs), combo))})
                out[arch.id] = count_params(arch)
            except NasError:
                pass
    return sorted(out.values())


def test_enumeration_matches_brute_force_including_invalid_combinations():
    sp = parse_space({"layers": [1, 2], "blocks": [1, 2], "channels": [[8, 16], [4, 16]], "kernels": [1, 3],
                      "skip_kernels": [1, 3], "pool": ["global", 2, 8, 16], "block": ["basic", "bottleneck"],
                      "se_ratio": [0, 8], "groups": [1, 2]})
    s = survey(sp)
    assert s.method == "exact"
    assert sorted(s.params.tolist()) == brute_force(sp)
    assert s.size == len(brute_force(sp))


def test_large_spaces_are_sampled_and_say_so():
    s = survey(load_space(ROOT / "search_spaces" / "default.yaml"), samples=5000)
    assert s.method == "sampled" and s.evaluated == 5000 and s.size > 10**9
    assert 0.2 < s.fits(5_000_000) < 0.9


def test_train_section_becomes_knobs():
    sp = parse_space({"layers": [1], "blocks": [1], "channels": [8],
                      "train": {"lr": {"low": "1e-3", "high": 0.5, "log": True}, "optimizer": ["sgd", "adamw"],
                                "epochs": 3, "label_smoothing": [0.0, 0.1]}})
    assert Range("lr", 1e-3, 0.5, True, False) in sp.train
    assert Choice("optimizer", ("sgd", "adamw")) in sp.train
    assert Choice("epochs", (3,)) in sp.train


def test_yaml_strings_like_5e2_are_numbers(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("layers: [1]\nblocks: ['1e0', 2]\nchannels: [1e1]\n")
    assert load_space(f).channels[0] == (10,)


@pytest.mark.parametrize("text, fragments", [
    ("", ["the file is empty"]),
    ("[1, 2]", ["must be a YAML mapping"]),
    ("layers: [1]\nblocks: [1]\n", ["channels: missing"]),
    ("layers: [0]\nblocks: [1]\nchannels: [8]", ["layers: 0 is invalid"]),
    ("layers: [1]\nblocks: [1]\nchannels: [8]\nkernels: [4, 3]", ["kernels: 4 is invalid: kernel sizes must be odd"]),
    ("layers: [1]\nblocks: [1]\nchannels: [8, x]", ["channels: 'x' is not an integer"]),
    ("layers: [1]\nblocks: [1]\nchannels: [8]\nwidth: 3", ["width: 3 is not a space field: valid fields are"]),
    ("layers: [2]\nblocks: [[1], [1], [1]]\nchannels: [8]", ["gives 3 per-layer lists but up to 2 layers"]),
    ("layers: [1]\nblocks: [1]\nchannels: [8]\npool: [global, -1]", ["pool: -1"]),
    ("layers: [1]\nblocks: [1]\nchannels: [8]\nblock: [dense]", ["block: 'dense' is not a block type: choose from basic, bottleneck"]),
    ("layers: [1]\nblocks: [1]\nchannels: [8]\ntrain: {lrate: 0.1}", ["train.lrate: 'lrate' is not a training setting"]),
    ("layers: [1]\nblocks: [1]\nchannels: [8]\ntrain: {lr: {low: 1, high: 0.1}}", ["train.lr", "low < high"]),
    ("layers: [1]\nblocks: [1]\nchannels: [8]\ntrain: {optimizer: [sgd, lbfgs]}", ["train.optimizer", "lbfgs"]),
    ("layers: [1]\nblocks: [1]\nchannels: [8]\npool: [64]", ["no candidate in this space is a valid network"]),
    ("layers: [1\nblocks", ["not valid YAML at line"]),
    ("layers: [0]\nblocks: [0]\nchannels: [0]", ["3 problem(s)", "layers: 0", "blocks: 0", "channels: 0"]),
])
def test_bad_space_files_report_every_problem_with_key_value_and_rule(tmp_path, text, fragments):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(NasError) as e:
        load_space(f)
    for fragment in fragments:
        assert fragment in str(e.value)
    assert str(f) in str(e.value)


def test_default_seeds_are_the_reports_designs_and_their_values_rebuild_them():
    sp = load_space(ROOT / "search_spaces" / "default.yaml")
    assert [name for name, _ in sp.seeds] == ["residual-network-design", "resnet10", "mini-project", "efficient-resnet-se"]
    for name, arch in sp.seeds:
        assert arch == Arch.from_dict(json.loads((ROOT / "examples" / f"{name}.json").read_text())["arch"])
        assert sp.arch(sp.values(arch)) == arch


def test_seeds_outside_the_space_or_invalid_are_named():
    base = {"layers": [2], "blocks": [1, 2], "channels": [8, 16]}
    with pytest.raises(NasError, match=r"'wide'.*outside the space"):
        parse_space({**base, "seeds": [{"name": "wide", "blocks": [1, 1], "channels": [8, 32]}]})
    with pytest.raises(NasError, match=r"seeds\[0\].*missing"):
        parse_space({**base, "seeds": [{"blocks": [1, 1]}]})
    with pytest.raises(NasError, match="must be a list of architectures"):
        parse_space({**base, "seeds": {"blocks": [1, 1]}})
    sp = parse_space({**base, "pool": ["global"], "seeds": [{"blocks": [1, 2], "channels": [8, 16], "pool": "global"}]})
    assert sp.seeds == (("seed-0", Arch(blocks=(1, 2), channels=(8, 16))),)


@pytest.mark.parametrize("train, fragments", [
    ({"optimizer": ["sgd", "adam"], "nesterov": True},
     ["train.optimizer: 'adam' with train.nesterov: True", "only to optimizer 'sgd'"]),
    ({"nesterov": [False, True], "optimizer": "adamw"}, ["train.nesterov: True with train.optimizer: 'adamw'"]),
    ({"nesterov": True, "momentum": {"low": 0, "high": 0.9}}, ["train.momentum: 0.0", "needs momentum > 0"]),
    ({"epochs": [5, 20], "warmup_epochs": {"low": 1, "high": 10}},
     ["train.epochs: 5 with train.warmup_epochs: 10.0", "< epochs (5)"]),
    ({"label_smoothing": {"low": 0, "high": 1.5}}, ["train.label_smoothing: 1.5", "must be in [0, 1)"]),
])
def test_impossible_training_combinations_are_rejected_at_load(train, fragments):
    with pytest.raises(NasError) as e:
        parse_space({"layers": [1], "blocks": [1], "channels": [8], "train": train})
    for fragment in fragments:
        assert fragment in str(e.value)


def test_possible_training_combinations_load_and_fit_the_search_recipe():
    from nas.recipe import Recipe

    search = Recipe(epochs=4, batch_size=128, lr=0.2, nesterov=True, schedule="onecycle", label_smoothing=0.1)
    base = {"layers": [1], "blocks": [1], "channels": [8]}
    sp = parse_space({**base, "train": {"optimizer": ["sgd", "adam"], "momentum": [0.0, 0.9], "warmup_epochs": 300,
                                        "epochs": 400, "nesterov": False}})
    sp.check_train(search)
    sp = parse_space({**base, "train": {"optimizer": ["sgd", "adamw"], "lr": {"low": 1e-3, "high": 0.4}}})
    sp.check_train(search)
    with pytest.raises(NasError, match=r"train.warmup_epochs: 5.0: .*< epochs \(4\)"):
        parse_space({**base, "train": {"warmup_epochs": [0, 5]}}).check_train(search)


def test_the_class_count_follows_the_data_unless_the_file_fixes_it():
    base = {"layers": [2], "blocks": [1, 2], "channels": [8, 16], "seeds": [{"blocks": [1, 1], "channels": [8, 16]}]}
    sp = parse_space(base)
    assert not sp.num_classes_fixed and sp.for_data(10) is sp
    wide = sp.for_data(100)
    assert wide.num_classes == 100 and wide.seeds[0][1].num_classes == 100 and wide.contains(wide.seeds[0][1])
    assert wide.arch(wide.values(wide.seeds[0][1])) == wide.seeds[0][1]
    fixed = parse_space({**base, "num_classes": 10})
    assert fixed.num_classes_fixed and fixed.for_data(10) is fixed
    with pytest.raises(NasError, match="fixes num_classes: 10 but the data has 100 classes: remove num_classes"):
        fixed.for_data(100)


def test_the_survey_counts_channels_by_the_architectures_own_rule():
    from nas.space import valid_channels

    sp = parse_space({"layers": [1], "blocks": [1], "channels": list(range(1, 40))})
    for block, se, groups in itertools.product(("basic", "bottleneck"), (0, 4, 16), (1, 2, 3, 4)):
        expected = []
        for c in sp.channels[0]:
            try:
                Arch(blocks=(1,), channels=(c,), block=block, se_ratio=se, groups=groups)
                expected.append(c)
            except NasError:
                pass
        assert valid_channels(sp, block, se, groups, 0) == tuple(expected)
