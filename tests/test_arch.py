import json

import pytest

from nas import Arch
from nas.errors import NasError


def test_defaults_give_resnet18_layout():
    a = Arch(blocks=(2, 2, 2, 2), channels=(64, 128, 256, 512))
    assert a.kernels == (3, 3, 3, 3) and a.skip_kernels == (1, 1, 1, 1)
    assert a.pool is None and a.pool_size == 4 and a.num_classes == 10
    assert a.feature_sizes == (32, 16, 8, 4)


def test_lists_become_tuples_and_the_object_is_frozen():
    a = Arch(blocks=[1, 1], channels=[8, 16])
    assert a.blocks == (1, 1) and isinstance(a.channels, tuple)
    with pytest.raises(AttributeError):
        a.blocks = (2, 2)  # type: ignore[misc]


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(blocks=(2, 2), channels=(64,)), "channels=[64] has 1 entries"),
    (dict(blocks=(), channels=()), "blocks=() is empty"),
    (dict(blocks=(2, 0), channels=(8, 16)), "blocks[1]=0"),
    (dict(blocks=(1, 1), channels=(8, 0)), "channels[1]=0"),
    (dict(blocks=(1,), channels=(8,), kernels=4), "kernels[0]=4"),
    (dict(blocks=(1,), channels=(8,), kernels=-3), "kernels[0]=-3"),
    (dict(blocks=(1, 1), channels=(8, 8), skip_kernels=(1, 2)), "skip_kernels[1]=2"),
    (dict(blocks=(1, 1), channels=(8, 8), pool=17), "pool=17 is invalid: the last feature map is 16x16"),
    (dict(blocks=(1,), channels=(8,), pool=0), "pool=0"),
    (dict(blocks=(1,), channels=(8,), block="dense"), "block='dense' is unknown: choose one of basic, bottleneck"),
    (dict(blocks=(1,), channels=(8,), se_ratio=16), "se_ratio=16 exceeds channels[0]=8"),
    (dict(blocks=(1,), channels=(12,), groups=8), "groups=8 does not divide channels 12"),
    (dict(blocks=(1,), channels=(2,), block="bottleneck"), "too narrow for a bottleneck"),
    (dict(blocks=(1,), channels=(8,), dropout=1.0), "dropout=1.0"),
    (dict(blocks=(1,), channels=(8,), num_classes=0), "num_classes=0"),
    (dict(blocks=(1,), channels=(8,), kernels="3"), "kernels='3' must be an integer or a list"),
    (dict(blocks=(1.5,), channels=(8,)), "blocks[0]=1.5"),
])
def test_invalid_architectures_name_field_value_and_rule(kwargs, fragment):
    with pytest.raises(NasError) as e:
        Arch(**kwargs)
    assert fragment in str(e.value)


def test_dict_and_json_round_trip():
    a = Arch(blocks=(2, 1), channels=(32, 64), kernels=(5, 3), skip_kernels=(1, 3), pool=2,
             block="bottleneck", se_ratio=4, groups=2, dropout=0.1, num_classes=100)
    assert Arch.from_dict(a.to_dict()) == a
    assert Arch.from_json(a.to_json()) == a
    assert json.loads(a.to_json())["blocks"] == [2, 1]


def test_from_dict_rejects_unknown_and_missing_fields():
    with pytest.raises(NasError, match="unknown architecture field.*'width'.*valid fields"):
        Arch.from_dict({"blocks": [1], "channels": [8], "width": 2})
    with pytest.raises(NasError, match="missing"):
        Arch.from_dict({"blocks": [1]})
    with pytest.raises(NasError, match="malformed"):
        Arch.from_json("{not json")


def test_id_is_stable_and_ignores_what_does_not_change_the_network():
    a = Arch(blocks=(2, 2), channels=(16, 32))
    assert a.id == Arch(blocks=[2, 2], channels=[16, 32], kernels=3).id
    assert len(a.id) == 10
    # layer 1 never uses its skip kernel; explicit global pool equals pool=None
    assert a.id == Arch(blocks=(2, 2), channels=(16, 32), skip_kernels=(7, 1)).id
    assert a.id == Arch(blocks=(2, 2), channels=(16, 32), pool=16).id
    assert a.id != Arch(blocks=(2, 2), channels=(16, 32), skip_kernels=(1, 3)).id
    assert a.id != Arch(blocks=(2, 2), channels=(16, 32), pool=8).id


@pytest.mark.parametrize("block, groups, se_ratio", [("basic", 1, 16), ("basic", 1, 0), ("bottleneck", 1, 16),
                                                     ("basic", 4, 0), ("bottleneck", 2, 16)])
def test_proxies_are_valid_and_keep_the_default_space_s_widths_apart(block, groups, se_ratio):
    """A search at width x0.25 scores proxies: widths that collapse into one proxy get one score.
    (SE once raised every layer to the SE ratio, so 16-, 32-, 48- and 64-channel layers were one proxy.)"""
    widths = (16, 32, 48, 64, 96, 128)
    proxies = [Arch(blocks=(1, 1), channels=(c, 2 * c), block=block, groups=groups, se_ratio=se_ratio).scaled(0.25)
               for c in widths]
    assert len({p.id for p in proxies}) == len(widths)
    for c, p in zip(widths, proxies):
        assert c // 4 <= p.channels[0] < c // 4 + groups * (4 if block == "bottleneck" else 1)
        assert p.se_ratio == (min(se_ratio, p.channels[0]) if se_ratio else 0)
    full = Arch(blocks=(1, 1), channels=(64, 128), se_ratio=16)
    assert full.scaled(1) is full


def test_one_channel_rule_serves_the_architecture_and_the_space_survey():
    import nas.arch.space
    from nas.arch.families import channel_problem
    from nas.arch.ops import Options

    assert nas.arch.space.channel_problem is channel_problem
    assert channel_problem(8, Options("basic", groups=4)) is None
    assert channel_problem(12, Options("bottleneck", groups=3)) is None
    assert channel_problem(12, Options("bottleneck", groups=2), layer=1) == ("groups=2 does not divide bottleneck width 3 "
                                                                            "of layer 1: pick groups that divide it")
    assert channel_problem(12, Options("resnext", groups=8, width_per_group=1)) is None  # D = groups x width
    stem_se = Options("basic", se_ratio=16, se_placement="stem")
    assert channel_problem(8, stem_se, layer=1) is None and "the stem (C_1 wide)" in channel_problem(8, stem_se, layer=0)


# -- the block families ---------------------------------------------------------------------------------
FAMILY = {  # one valid architecture per family, with every family option set
    "basic": dict(blocks=(1, 2), channels=(16, 32), groups=2, stem_channels=8, se_ratio=4),
    "bottleneck": dict(blocks=(1, 2), channels=(16, 32), stem_channels=8, se_ratio=4, se_placement="stem"),
    "preact": dict(blocks=(2, 1), channels=(16, 32), stem_channels=16, dropout=0.3),
    "resnext": dict(blocks=(1, 1), channels=(16, 32), groups=4, width_per_group=2, stem_channels=8),
    "res2net": dict(blocks=(1, 1), channels=(16, 32), groups=2, width_per_group=2, scale=3, se_ratio=8),
    "plain": dict(blocks=(2, 1), channels=(16, 32), kernels=(3, 1), stem_channels=8, dropout=0.1),
}


@pytest.mark.parametrize("block", sorted(FAMILY))
def test_every_family_round_trips_and_describes_its_options(block):
    a = Arch(block=block, **FAMILY[block])
    assert Arch.from_dict(a.to_dict()) == a and Arch.from_json(a.to_json()) == a
    assert block in a.describe()
    if a.stem_channels:
        assert f"stem{a.stem_channels}" in a.describe()
    if a.scale:
        assert f"w{a.width_per_group} s{a.scale}" in a.describe()


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(stem_channels=0), "stem_channels=0 is invalid: must be an integer >= 1, or None for C_1"),
    (dict(stem_channels="16"), "stem_channels='16' is invalid"),
    (dict(stem_channels=12, groups=8, channels=(8, 16)), "groups=8 does not divide stem_channels=12"),
    (dict(width_per_group=4), "width_per_group=4 is invalid for block='basic': only block resnext or res2net reads it"),
    (dict(width_per_group=-1, block="resnext"), "width_per_group=-1 is invalid: must be an integer >= 0"),
    (dict(block="resnext"), "width_per_group=0 is invalid for block='resnext': must be >= 1"),
    (dict(block="res2net", width_per_group=4), "scale=0 is invalid for block='res2net': must be >= 2"),
    (dict(block="res2net", width_per_group=4, scale=1), "scale=1 is invalid for block='res2net': must be >= 2"),
    (dict(block="resnext", width_per_group=4, scale=4), "scale=4 is invalid for block='resnext': only block res2net"),
    (dict(scale=2.5), "scale=2.5 is invalid: must be an integer >= 0"),
    (dict(se_placement="head", se_ratio=4), "se_placement='head' is unknown: choose one of blocks, stem"),
    (dict(se_placement="stem"), "se_placement='stem' is invalid with se_ratio=0"),
    (dict(se_placement="stem", se_ratio=16, stem_channels=8), "se_ratio=16 exceeds stem_channels=8"),
    (dict(se_placement="stem", se_ratio=16), "se_ratio=16 exceeds channels[0]=8: the stem (C_1 wide) holds the SE unit"),
    (dict(block="wide"), "block='wide' is unknown: choose one of basic, bottleneck, preact, resnext, res2net, plain"),
])
def test_bad_family_options_name_field_value_rule_and_fix(kwargs, fragment):
    with pytest.raises(NasError) as e:
        Arch(**{"blocks": (1, 1), "channels": (8, 16), **kwargs})
    assert fragment in str(e.value)


def test_ids_of_architectures_stored_before_the_families_are_unchanged():
    """Ids computed by the code before stem_channels, width_per_group, scale and se_placement existed."""
    old = {"blocks": [4, 4, 3], "channels": [64, 128, 256], "kernels": [3, 3, 3], "skip_kernels": [1, 1, 1],
           "pool": None, "block": "basic", "se_ratio": 16, "groups": 1, "dropout": 0.0, "num_classes": 10,
           "input_size": 32, "in_channels": 3}
    assert Arch.from_dict(old).id == "1639fa4d50"
    assert Arch(blocks=(2, 2, 2, 2), channels=(64, 128, 256, 512)).id == "a6b40ee22d"
    assert Arch(blocks=(1, 2), channels=(16, 32), block="bottleneck", groups=2, dropout=0.1, skip_kernels=(1, 3),
                pool=2, num_classes=100).id == "9158779fb6"


def test_id_follows_the_network_built_by_the_family_options():
    a = Arch(blocks=(1, 1), channels=(16, 32))
    assert a.id == Arch(blocks=(1, 1), channels=(16, 32), stem_channels=16).id  # a C_1-wide stem is the default
    assert a.id == Arch(blocks=(1, 1), channels=(16, 32), stem_channels=16, skip_kernels=(3, 1)).id  # unused K_1
    wide_stem = Arch(blocks=(1, 1), channels=(16, 32), stem_channels=8)
    assert wide_stem.id != a.id and wide_stem.skip_used(0)
    assert wide_stem.id != Arch(blocks=(1, 1), channels=(16, 32), stem_channels=8, skip_kernels=(3, 1)).id
    plain = Arch(blocks=(1, 1), channels=(16, 32), block="plain")
    assert plain.id == Arch(blocks=(1, 1), channels=(16, 32), block="plain", skip_kernels=(3, 5)).id  # no shortcuts
    se = Arch(blocks=(1, 1), channels=(16, 32), se_ratio=4)
    assert se.id != Arch(blocks=(1, 1), channels=(16, 32), se_ratio=4, se_placement="stem").id


@pytest.mark.parametrize("block", sorted(FAMILY))
@pytest.mark.parametrize("width", [0.05, 0.25, 0.5])
def test_proxies_of_every_family_are_valid_and_scale_every_width(block, width):
    a = Arch(block=block, **FAMILY[block])
    p = a.scaled(width)  # Arch validates on construction: reaching here means valid
    assert p.block == a.block and p.groups == a.groups and p.scale == a.scale and p.blocks == a.blocks
    assert all(q <= c for q, c in zip(p.channels, a.channels)) and p.channels != a.channels
    assert (p.stem_channels is None) == (a.stem_channels is None)
    if a.width_per_group:
        assert 1 <= p.width_per_group <= a.width_per_group
