"""The analytic counter against torch itself, over thousands of generated architectures."""

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from nas import Arch, build_model, count_macs, count_params
from nas.counting import breakdown
from nas.errors import NasError

odd = st.sampled_from([1, 3, 5, 7, 9])


@st.composite
def archs(draw, max_layers: int = 5):
    n = draw(st.integers(1, max_layers))
    input_size = draw(st.sampled_from([8, 11, 16, 32]))
    a = dict(
        blocks=tuple(draw(st.integers(1, 3)) for _ in range(n)),
        channels=tuple(draw(st.sampled_from([4, 8, 12, 16, 24, 32])) for _ in range(n)),
        kernels=tuple(draw(odd) for _ in range(n)),
        skip_kernels=tuple(draw(odd) for _ in range(n)),
        block=draw(st.sampled_from(["basic", "bottleneck"])),
        se_ratio=draw(st.sampled_from([0, 0, 2, 4])),
        groups=draw(st.sampled_from([1, 1, 2])),
        dropout=draw(st.sampled_from([0.0, 0.2])),
        num_classes=draw(st.sampled_from([10, 100, 7])),
        input_size=input_size,
        in_channels=draw(st.sampled_from([3, 1])),
    )
    try:
        final = Arch(**a).feature_sizes[-1]
        return Arch(**a, pool=draw(st.none() | st.integers(1, final)))
    except NasError:
        assume(False)


def torch_params(arch: Arch) -> int:
    return sum(p.numel() for p in build_model(arch).parameters())


def torch_macs(arch: Arch) -> int:
    model = build_model(arch).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, arch.in_channels, arch.input_size, arch.input_size))
    return counter.get_total_flops() // 2


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(archs())
def test_analytic_params_equal_torch_numel(arch):
    assert count_params(arch) == torch_params(arch)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(archs(max_layers=4))
def test_analytic_macs_equal_torch_flop_counter(arch):
    assert count_macs(arch) == torch_macs(arch)


def test_resnet18_has_11173962_parameters():
    assert count_params(Arch(blocks=(2, 2, 2, 2), channels=(64, 128, 256, 512))) == 11_173_962


@pytest.mark.parametrize("arch", [
    Arch(blocks=(5, 4, 3), channels=(64, 128, 256)),
    Arch(blocks=(4, 4, 3), channels=(64, 128, 256), se_ratio=16),
    Arch(blocks=(2, 1, 1, 1), channels=(64, 128, 256, 512)),
])
def test_seed_designs_count_exactly_and_fit_5m(arch):
    assert count_params(arch) == torch_params(arch) < 5_000_000
    assert count_macs(arch) == torch_macs(arch)


def test_breakdown_sums_to_totals_and_names_each_stage():
    arch = Arch(blocks=(1, 2, 1), channels=(16, 32, 64), pool=2, se_ratio=4)
    rows = breakdown(arch)
    assert [r.name for r in rows] == ["stem", "layer1", "layer2", "layer3", "head"]
    assert sum(r.params for r in rows) == count_params(arch)
    assert sum(r.macs for r in rows) == count_macs(arch)
    assert rows[2].output == "32x16x16"
