"""The analytic counter against torch itself, over thousands of generated architectures."""

import json
from pathlib import Path

import pytest
import torch
from family_contract import family_archs, torch_counts
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from nas import Arch, build_model, count_macs, count_params
from nas.arch.counting import breakdown
from nas.arch.families import FAMILIES
from nas.errors import NasError

ROOT = Path(__file__).resolve().parents[1]

odd = st.sampled_from([1, 3, 5, 7, 9])


@pytest.fixture(autouse=True)
def one_thread():
    """These networks are tiny: one thread runs them 10-50x faster than two on a busy 2-core machine,
    where every op waits for the other thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
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


# -- the block families (each family's own checks: tests/family_contract.py) ----------------------------
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(family_archs())
def test_every_family_counts_the_parameters_torch_builds(arch):
    assert count_params(arch) == sum(p.numel() for p in build_model(arch).parameters())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(family_archs())
def test_every_family_counts_exactly_what_torch_builds_and_runs(arch):
    assert (count_params(arch), count_macs(arch)) == torch_counts(arch)


@pytest.mark.slow
@pytest.mark.parametrize("block", list(FAMILIES))
def test_every_family_counts_exactly_what_torch_builds_thousands_of_times(block):
    @settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
    @given(family_archs(max_layers=4, block=block))
    def check(arch):
        assert (count_params(arch), count_macs(arch)) == torch_counts(arch)

    check()


@pytest.mark.parametrize("arch, params", [
    (Arch(blocks=(4, 4, 4), channels=(160, 320, 640), stem_channels=16, block="preact"), 36_479_194),  # WRN-28-10
    (Arch(blocks=(3, 3, 3), channels=(256, 512, 1024), stem_channels=64, block="resnext", groups=8,
          width_per_group=64), 34_426_698),  # ResNeXt-29 8x64d
    (Arch(blocks=(4, 4, 3), channels=(64, 128, 256), se_ratio=16, se_placement="stem"), 4_697_742),  # Efficient ResNets
    (Arch(blocks=(4, 4, 3), channels=(64, 128, 256)), 4_697_162),  # ... without its SE unit
], ids=["wrn-28-10", "resnext-29-8x64d", "efficient-resnets", "efficient-resnets-without-se"])
def test_published_counts_are_exact(arch, params):
    assert count_params(arch) == params


@pytest.mark.parametrize("name, params, macs", [
    ("wrn-16-4", 2_772_020, 392_635_392), ("resnext29-32x4d", 4_868_004, 774_148_096),
    ("res2net29-24w4s", 4_609_652, 713_527_296), ("simplenet-13", 4_613_028, 571_302_912),
    ("efficient-resnet-se", 4_697_742, 798_690_304), ("found-cpu200e", 2_504_622, 609_722_880),
    ("airbench94", 1_972_792, 118_147_360),  # the parameters of the network airbench94's source builds
    ("airbench95", 4_606_520, 301_560_864),  # airbench95's: "4.61M" in its paper
    # the ResNet-10 report's narrow models, stated 0.19M / 3.15M / 4.13M: matched only with 3x3 shortcuts (K=3)
    ("resnet12-narrow", 195_738, 28_754_560), ("resnet14-4-narrow", 3_152_410, 75_944_960),
    ("resnet14-5-narrow", 4_130_458, 57_070_592),
])
def test_the_example_files_count_what_the_readme_says(name, params, macs):
    arch = Arch.from_dict(json.loads((ROOT / "examples" / f"{name}.json").read_text())["arch"])
    assert (count_params(arch), count_macs(arch)) == (params, macs)
    assert params < 5_000_000
