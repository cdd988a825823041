"""The behaviour every block family must have, as checks that take a family's name (Optuna's samplers_tests
pattern): tests/test_families.py runs each on every registered family, and on one a test registers itself.

Each check reads the family's record only (nas.arch.families), never its name, so a new family is covered
the moment it is registered.
"""

from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from nas import Arch, build_model, count_macs, count_params
from nas.arch.counting import count_many
from nas.arch.families import FAMILIES, KNOBS
from nas.arch.space import Space, parse_space
from nas.arch.survey import survey
from nas.errors import NasError


@st.composite
def family_archs(draw, max_layers: int = 3, block: str | None = None):
    """Any family with every option combined, narrow and small (8-16 px) so torch checks it fast."""
    n = draw(st.integers(1, max_layers))
    a = dict(
        block=block or draw(st.sampled_from(list(FAMILIES))),
        blocks=tuple(draw(st.integers(1, 3)) for _ in range(n)),
        channels=tuple(draw(st.sampled_from([4, 6, 8, 12, 16])) for _ in range(n)),
        kernels=tuple(draw(st.sampled_from([1, 3, 5])) for _ in range(n)),
        skip_kernels=tuple(draw(st.sampled_from([1, 3])) for _ in range(n)),
        se_ratio=draw(st.sampled_from([0, 0, 2, 4])),
        groups=draw(st.sampled_from([1, 1, 2, 3])),
        dropout=draw(st.sampled_from([0.0, 0.2])),
        num_classes=draw(st.sampled_from([10, 7])),
        input_size=draw(st.sampled_from([8, 11, 16])),
        in_channels=draw(st.sampled_from([3, 1])),
        stem_channels=draw(st.sampled_from([None, None, 4, 6, 8, 12])),
        activation=draw(st.sampled_from(["relu", "gelu"])),
        stem=draw(st.sampled_from(["conv", "conv", "patch"])),
        pooling=draw(st.sampled_from(["avg", "max"])),
        head_bias=draw(st.booleans()),
        head_scale=draw(st.sampled_from([1.0, 1 / 9])),
    )
    for knob in FAMILIES[a["block"]].reads:
        a[knob] = draw(st.integers(KNOBS[knob][0], KNOBS[knob][0] + 2))
    if a["se_ratio"] and draw(st.booleans()):
        a["se_placement"] = "stem"
    try:
        final = Arch(**a).feature_sizes[-1]
        return Arch(**a, pool=draw(st.none() | st.integers(1, final)))
    except NasError:
        assume(False)


def torch_counts(arch: Arch) -> tuple[int, int]:
    """(numel of every parameter, FLOPs / 2 of one image), from the built model itself."""
    model = build_model(arch).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = model(torch.zeros(2, arch.in_channels, arch.input_size, arch.input_size))
    assert y.shape == (2, arch.num_classes)
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 4


def _own_knobs(block: str, values: int = 2) -> dict[str, list[int]]:
    """Choices for the family knobs `block` reads, starting at each knob's least valid value."""
    return {k: list(range(KNOBS[k][0], KNOBS[k][0] + values)) for k in FAMILIES[block].reads}


def networks(sp: Space) -> dict[str, tuple[int, int]]:
    """Every distinct network of a space by brute force over all its knobs: id -> (params, MACs). Each maps
    back to knob values that rebuild it."""
    out = {}
    for n in sp.layers:
        knobs = sp.arch_knobs(n)
        for combo in itertools.product(*(k.values for k in knobs)):
            try:
                arch = sp.arch({"layers": n, **dict(zip((k.name for k in knobs), combo))})
            except NasError:
                continue
            out[arch.id] = (count_params(arch), count_macs(arch))
            assert sp.contains(arch) and sp.arch(sp.values(arch)) == arch
    return out


# -- the checks -------------------------------------------------------------------------------------------
def counts_what_torch_builds_and_runs(block: str) -> None:
    @settings(max_examples=40, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
    @given(family_archs(block=block))
    def check(arch: Arch) -> None:
        assert (count_params(arch), count_macs(arch)) == torch_counts(arch)

    check()


def counts_arrays_as_one_at_a_time(block: str) -> None:
    """`nas space` counts arrays of candidates through the same layout: stem widths that differ from C_1 in some
    candidates and not in others (a per-candidate projection), both SE placements, the stem and head options."""
    rng = np.random.default_rng(0)
    own = {k: v[-1] for k, v in _own_knobs(block).items()}
    for stem, se_placement, extras in ((None, "blocks", {}), (16, "blocks", dict(stem="patch", pooling="max")),
                                       (32, "stem", dict(head_bias=False, activation="gelu"))):
        opts = dict(block=block, stem_channels=stem, se_ratio=8, se_placement=se_placement, groups=2, **own, **extras)
        knobs = {name: rng.choice(values, (3, 64)) for name, values in (
            ("channels", [16, 32, 48]), ("blocks", [1, 2, 3]), ("kernels", [1, 3, 5]), ("skip_kernels", [1, 3]))}
        archs = [Arch(**{k: tuple(int(x) for x in v[:, j]) for k, v in knobs.items()}, input_size=16, **opts)
                 for j in range(64)]
        params, macs = count_many(list(knobs["channels"]), list(knobs["blocks"]), list(knobs["kernels"]),
                                  list(knobs["skip_kernels"]), None, input_size=16, options=archs[0].options,
                                  num_classes=10, in_channels=3)
        assert params.tolist() == [count_params(a) for a in archs]
        assert macs.tolist() == [count_macs(a) for a in archs]


def survey_counts_each_network_once(block: str) -> None:
    """A space of this family alone: the survey's exact count is the number of distinct networks a brute-force
    walk over every knob builds (knobs the family does not read make no new candidates), with their counts,
    and every one of them maps back to knob values that rebuild it."""
    sp = parse_space({"layers": [1, 2], "blocks": [[1], [1, 2]], "channels": [[8, 16], [16]], "kernels": [3],
                      "skip_kernels": [1, 3], "block": [block], "se_ratio": [0, 8], "groups": [1, 2],
                      "stem_channels": [None, 8, 6], "se_placement": ["blocks", "stem"], **_own_knobs(block)})
    expected = networks(sp)
    s = survey(sp)
    assert s.method == "exact" and s.size == len(expected) > 0
    assert sorted(zip(s.params.tolist(), s.macs.tolist())) == sorted(expected.values())


def trains_and_scales(block: str) -> None:
    """One SGD step lowers nothing to NaN, gradients reach every parameter, and the proxy width (x0.5) is
    a valid network of the same family that counts what torch builds."""
    arch = Arch(blocks=(2, 1), channels=(16, 32), block=block, groups=2, se_ratio=4,
                **{k: v[-1] for k, v in _own_knobs(block).items()}, input_size=16)
    torch.manual_seed(0)
    model = build_model(arch)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())
    half = arch.scaled(0.5)
    assert half.block == block and count_params(half) == torch_counts(half)[0] < count_params(arch)


CHECKS: list[Callable[[str], None]] = [counts_what_torch_builds_and_runs, counts_arrays_as_one_at_a_time,
                                       survey_counts_each_network_once, trains_and_scales]
