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
    import nas.space
    from nas.arch import channel_problem

    assert nas.space.channel_problem is channel_problem
    assert channel_problem(8, "basic", 0, 4) is None and channel_problem(12, "bottleneck", 0, 3) is None
    assert channel_problem(12, "bottleneck", 0, 2, layer=1) == ("groups=2 does not divide bottleneck width 3 of "
                                                                "layer 1: pick groups that divide it")
