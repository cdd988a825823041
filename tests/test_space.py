import itertools
import json
from pathlib import Path

import pytest
from family_contract import networks

from nas import Arch, count_macs, count_params
from nas.arch.bounds import Bounds
from nas.arch.space import Choice, Range, load_space, parse_space, space_size
from nas.arch.survey import survey
from nas.engine.recipe import Recipe
from nas.errors import NasError

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_shipped_space_loads_and_has_candidates(path):
    assert space_size(load_space(path)) > 0


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_a_shipped_space_contains_every_hand_designed_example(path):
    """CIFAR-10 designs lie in the default space, airbench's in fast.yaml, the CIFAR-100 report's families in
    cifar100.yaml."""
    arch = Arch.from_dict(json.loads(path.read_text())["arch"])
    space = "cifar100.yaml" if arch.num_classes != 10 else "fast.yaml" if arch.block == "convgroup" else "default.yaml"
    assert load_space(ROOT / "search_spaces" / space).for_data(arch.num_classes).contains(arch)


def test_space_arch_round_trip_and_layer1_skip_is_never_a_knob():
    sp = load_space(ROOT / "search_spaces" / "default.yaml")
    names = [k.name for k in sp.arch_knobs(3)]
    assert "skip_kernels_1" not in names and "skip_kernels_2" in names and "channels_3" in names
    values = {"layers": 3, "pool": None, "block": "basic", "se_ratio": 16, "groups": 1, "dropout": 0.0, "se_placement": "blocks",
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


def test_a_tied_width_doubles_per_layer_and_the_survey_counts_it_exactly():
    """Efficient ResNets' sweep: one width n in {16, 32, 48, 64}, C_i = n * 2^(i-1), instead of per-layer channels;
    the survey counts the tied candidates only, as brute force finds them (groups 16 leaves some widths invalid
    for the bottleneck block only: they must drop out there and nowhere else)."""
    tied = {"layers": [2, 3], "blocks": [1, 2], "width": [16, 32, 48, 64], "kernels": [3], "skip_kernels": [1, 3],
            "pool": ["global", 2], "block": ["basic", "bottleneck"], "groups": [1, 16]}
    sp = parse_space(tied)
    assert "channels_1" not in [k.name for k in sp.arch_knobs(3)] and Choice("width", (16, 32, 48, 64)) in sp.arch_knobs(3)
    arch = sp.arch({**sp.values(Arch(blocks=(2, 1, 2), channels=(48, 96, 192))), "width": 48})
    assert arch.channels == (48, 96, 192) and sp.contains(arch) and sp.arch(sp.values(arch)) == arch
    assert not sp.contains(Arch(blocks=(2, 1, 2), channels=(48, 96, 96))) and not sp.contains(Arch(blocks=(1, 1), channels=(8, 16)))
    s = survey(sp)
    assert s.method == "exact" and sorted(s.params.tolist()) == brute_force(sp) and s.size == len(brute_force(sp))
    free = survey(parse_space({**{k: v for k, v in tied.items() if k != "width"}, "channels": [16, 32, 48, 64]}))
    assert s.size < free.size  # 4 widths, not 4^N channel tuples
    with pytest.raises(NasError, match="width: .* give width or channels, not both"):
        parse_space({**tied, "channels": [16, 32]})
    with pytest.raises(NasError, match="width: 0 is invalid: a tied width n"):
        parse_space({**tied, "width": [0, 16]})


def test_large_spaces_are_sampled_and_say_so():
    s = survey(load_space(ROOT / "search_spaces" / "default.yaml"), samples=5000)
    assert s.method == "sampled" and s.evaluated == 5000 and s.size > 10**9
    assert 0.2 < s.fits(Bounds(5_000_000)) < 0.9


def test_the_survey_counts_huge_candidates_exactly_and_refuses_those_beyond_exact_counting():
    """int64 arrays raised OverflowError for blocks: 2**63 (found by fuzzing) and wrapped silently on C**2 * k**2."""
    wide = parse_space({"layers": [1], "blocks": [1], "channels": [2**17, 2**17 + 1], "kernels": [9]})
    s = survey(wide)  # about 2.8e12 parameters and 2.9e15 MACs each: exact, far beyond int32 or float32
    assert sorted(s.params.tolist()) == brute_force(wide) and s.params.max() > 10**12
    assert sorted(s.macs.tolist()) == [count_macs(Arch(blocks=(1,), channels=(c,), kernels=(9,))) for c in (2**17, 2**17 + 1)]
    for huge in ({"blocks": [2**63]}, {"channels": [2**40]}, {"blocks": [2**40], "channels": [2**10]}):
        with pytest.raises(NasError, match="beyond exact counting"):
            survey(parse_space({"layers": [1], "blocks": [1], "channels": [8], **huge}))


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
    ("layers: [1]\nblocks: [1]\nchannels: [8]\ndepth: 3", ["depth: 3 is not a space field: valid fields are"]),
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
    assert count_params(sp.seeds[-1][1]) == 4_697_742  # "Efficient ResNets": one SE unit, at the stem


def test_cifar100_seeds_are_the_report_s_families_under_5m_and_their_values_rebuild_them():
    sp = load_space(ROOT / "search_spaces" / "cifar100.yaml").for_data(100)
    assert {arch.block for _, arch in sp.seeds} == {"preact", "resnext", "res2net", "plain"}
    assert set(sp.block) >= {"preact", "resnext", "res2net", "plain"} and len(sp.block) > 1  # the family is a knob
    for name, arch in sp.seeds:
        assert arch == Arch.from_dict(json.loads((ROOT / "examples" / f"{name}.json").read_text())["arch"])
        assert sp.arch(sp.values(arch)) == arch and count_params(arch) < 5_000_000


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
    from nas.engine.recipe import Recipe

    search = Recipe(epochs=4, batch_size=128, lr=0.2, nesterov=True, schedule="onecycle", label_smoothing=0.1)
    base = {"layers": [1], "blocks": [1], "channels": [8]}
    sp = parse_space({**base, "train": {"optimizer": ["sgd", "adam"], "momentum": [0.0, 0.9], "warmup_epochs": 300,
                                        "epochs": 400, "nesterov": False}})
    sp.check_train(search)
    sp = parse_space({**base, "train": {"optimizer": ["sgd", "adamw"], "lr": {"low": 1e-3, "high": 0.4}}})
    sp.check_train(search)
    with pytest.raises(NasError, match=r"train.warmup_epochs: 5.0: .*< epochs \(4\)"):
        parse_space({**base, "train": {"warmup_epochs": [0, 5]}}).check_train(search)


def test_plain_sgd_nesterov_sgd_and_adam_share_one_optimizer_axis():
    base = {"layers": [1], "blocks": [1], "channels": [8]}
    sp = parse_space({**base, "train": {"optimizer": ["sgd", "sgd-nesterov", "adam"]}})
    assert sp.train == (Choice("optimizer", ("sgd", "sgd-nesterov", "adam")),)
    sp.check_train(Recipe(nesterov=True))
    with pytest.raises(NasError, match="train.optimizer: 'sgd-nesterov' with train.momentum: 0.0"):
        parse_space({**base, "train": {"optimizer": ["sgd", "sgd-nesterov"], "momentum": [0.0, 0.9]}})


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
    from nas.arch.ops import Options
    from nas.arch.space import valid_channels

    sp = parse_space({"layers": [1], "blocks": [1], "channels": list(range(1, 40))})
    for block, se, groups, placement in itertools.product(("basic", "bottleneck", "preact", "resnext", "plain"),
                                                          (0, 4, 16), (1, 2, 3, 4), ("blocks", "stem")):
        if placement == "stem" and not se:
            continue
        o = Options(block, se, groups, width_per_group=2 if block == "resnext" else 0, se_placement=placement)
        expected = []
        for c in sp.channels[0]:
            try:
                Arch(blocks=(1,), channels=(c,), **{f: getattr(o, f) for f in ("block", "se_ratio", "groups",
                                                                            "width_per_group", "se_placement")})
                expected.append(c)
            except NasError:
                pass
        assert valid_channels(sp, o, 0) == tuple(expected)


FAMILIES_SPACE = {"layers": [1, 2], "blocks": [[1], [1, 2]], "channels": [[8, 16], [16]], "kernels": [3],
                  "skip_kernels": [1, 3], "block": ["basic", "bottleneck", "preact", "resnext", "res2net", "plain"],
                  "se_ratio": [0, 8], "groups": [1, 2], "stem_channels": [None, 8, 6], "width_per_group": [1, 4],
                  "scale": [2, 3], "se_placement": ["blocks", "stem"]}


def test_enumeration_matches_brute_force_over_every_family_and_family_knob():
    """Knobs a family does not read (width_per_group outside resnext/res2net, layer 1's skip kernel where the stem
    is C_1 wide, every skip kernel of a plain net) make no new candidates: the survey counts networks, not knobs."""
    sp = parse_space(FAMILIES_SPACE)
    s = survey(sp)
    expected = networks(sp)
    assert s.method == "exact" and s.size == len(expected)
    assert sorted(zip(s.params.tolist(), s.macs.tolist())) == sorted(expected.values())


def test_a_family_s_own_knobs_are_set_off_for_other_families():
    sp = parse_space(FAMILIES_SPACE)
    names = [k.name for k in sp.arch_knobs(2)]
    assert {"stem_channels", "width_per_group", "scale", "se_placement", "skip_kernels_1"} <= set(names)
    values = {"layers": 1, "pool": None, "block": "basic", "se_ratio": 0, "groups": 1, "dropout": 0.0,
              "stem_channels": None, "width_per_group": 4, "scale": 3, "se_placement": "stem",
              "blocks_1": 1, "channels_1": 8, "kernels_1": 3, "skip_kernels_1": 3}
    assert sp.arch(values) == Arch(blocks=(1,), channels=(8,))  # width, scale, SE placement and K_1 unread
    assert sp.arch({**values, "block": "res2net"}) == Arch(blocks=(1,), channels=(8,), block="res2net",
                                                           width_per_group=4, scale=3)
    stem = sp.arch({**values, "stem_channels": 6})
    assert stem.skip_kernels == (3,) and sp.arch(sp.values(stem)) == stem
    # spaces that list no family knob keep the knobs (and Optuna parameters) they always had
    assert [k.name for k in parse_space({"layers": [1], "blocks": [1], "channels": [8]}).arch_knobs(1)] == [
        "pool", "block", "se_ratio", "groups", "dropout", "blocks_1", "channels_1", "kernels_1"]


@pytest.mark.parametrize("extra, fragments", [
    ({"block": ["basic", "resnext"]}, ["width_per_group: missing: block resnext needs width_per_group choices"]),
    ({"block": ["res2net"], "width_per_group": [8]}, ["scale: missing: block res2net needs scale choices"]),
    ({"width_per_group": [8]}, ["width_per_group: [8] is read by block resnext or res2net only"]),
    ({"scale": [4], "block": ["resnext"], "width_per_group": [4]}, ["scale: [4] is read by block res2net only"]),
    ({"block": ["resnext"], "width_per_group": [0, 8]}, ["width_per_group: 0 is invalid: must be >= 1"]),
    ({"block": ["res2net"], "width_per_group": [8], "scale": [1]}, ["scale: 1 is invalid: must be >= 2"]),
    ({"stem_channels": [0, "x"]}, ["stem_channels: 0 must be null", "stem_channels: 'x' must be null"]),
    ({"se_placement": ["stem"]}, ["se_placement: 'stem' needs an se_ratio choice >= 1"]),
    ({"se_placement": ["head"], "se_ratio": [4]}, ["se_placement: 'head' is not an SE placement: choose from blocks, stem"]),
    ({"block": ["wide"]}, ["block: 'wide' is not a block type: choose from basic, bottleneck, preact, resnext, res2net, plain"]),
    ({"seeds": [{"blocks": [1], "channels": [8], "block": "preact", "stem_channels": 16}]}, ["is outside the space"]),
])
def test_bad_family_knobs_in_a_space_name_key_value_and_rule(extra, fragments):
    with pytest.raises(NasError) as e:
        parse_space({"layers": [1], "blocks": [1], "channels": [8], **extra})
    for fragment in fragments:
        assert fragment in str(e.value)
