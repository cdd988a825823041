"""nas.engine.precision: auto picks bf16 exactly where the CPU has native bf16 kernels, and results record it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from nas.engine.data import load_split, split_validation
from nas.engine.precision import (
    cpu_flags,
    cpu_runs_bf16,
    onednn_conv_kernel,
    resolve_precision,
    resolved,
)
from nas.engine.recipe import Recipe
from nas.engine.train import train
from nas.errors import NasError

CPU = torch.device("cpu")
ZEN4 = "fpu sse sse2 avx2 avx512f avx512bw avx512_vnni avx512_bf16".split()  # an AMD EPYC (Zen 4) flag list
SAPPHIRE_RAPIDS = "sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16 amx_int8".split()
COOPER_LAKE_LESS = "sse2 avx2 avx512f avx512bw avx512_vnni".split()  # AVX-512 without bf16 (Cascade Lake)
HASWELL = "sse2 avx avx2 fma".split()


@pytest.mark.parametrize("flags, expected", [(ZEN4, "bf16"), (SAPPHIRE_RAPIDS, "bf16"),
                                             (COOPER_LAKE_LESS, "fp32"), (HASWELL, "fp32"), ([], "fp32")])
def test_auto_resolves_by_the_cpus_bf16_flags(flags, expected):
    assert cpu_runs_bf16(flags) == (expected == "bf16")
    assert resolved("auto", CPU, flags) == expected


def test_explicit_precisions_stand_and_fp16_on_cpu_is_refused():
    assert resolved("fp32", CPU, ZEN4) == "fp32" and resolved("bf16", CPU, HASWELL) == "bf16"
    assert resolve_precision("fp32", CPU) == (None, False)
    assert resolve_precision("bf16", CPU) == (torch.bfloat16, False)
    with pytest.raises(NasError, match="fp16.*needs a CUDA device.*bf16 or fp32"):
        resolved("fp16", CPU)
    with pytest.raises(NasError, match="'fp8' is unknown: choose one of auto, fp32, bf16, fp16"):
        resolved("fp8", CPU)


def test_this_machines_flags_are_read_from_proc_cpuinfo():
    flags = cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this system")
    assert "sse2" in flags or "fp" in flags  # x86-64 always has SSE2; aarch64 reports "fp"
    assert resolved("auto", CPU) == ("bf16" if cpu_runs_bf16() else "fp32")


def test_onednn_dispatches_a_native_bf16_kernel_where_the_flags_say_so():
    kernel = onednn_conv_kernel(torch.bfloat16)
    if kernel is None:
        pytest.skip("oneDNN printed no convolution kernel (torch built without oneDNN?)")
    if cpu_runs_bf16():
        assert "bf16" in kernel and not kernel.startswith("ref"), kernel
    assert onednn_conv_kernel(torch.float32) is not None


def test_a_training_result_records_the_resolved_precision(cifar_folder, tmp_path):
    train_set, val_set = split_validation(load_split(str(cifar_folder), "train", tmp_path), 60)
    for asked in ("auto", "fp32", "bf16"):
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(8, 10))
        r = dataclasses.replace(Recipe(epochs=1, batch_size=60), precision=asked)
        result = train(net, r, train_set, val_set, CPU)
        assert result.precision == resolved(asked, CPU) and result.precision != "auto"
