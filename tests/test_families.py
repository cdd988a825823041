"""Every registered block family passes the shared checks (tests/family_contract.py); a new one is one entry."""

from __future__ import annotations

import pytest
import torch
from family_contract import CHECKS

from nas import Arch, count_params
from nas.arch.families import FAMILIES, Family, family, register_family
from nas.arch.ops import Act, Block, Conv, Norm, Options, Site
from nas.arch.space import parse_space
from nas.errors import NasError


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one thread runs them far faster than two on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("block", list(FAMILIES))
def test_every_registered_family_passes_the_shared_checks(block, check):
    check(block)


def three_convs(b: Site, o: Options) -> Block:
    """A family written for this test: the basic block with a third conv(F)-BN-act in its branch."""
    act = Act(o.activation)
    body = (Conv(b.c_in, b.c_out, b.k, b.size, 2 if b.down else 1, o.groups), Norm(b.c_out), act,
            Conv(b.c_out, b.c_out, b.k, b.size, 1, o.groups), Norm(b.c_out), act,
            Conv(b.c_out, b.c_out, b.k, b.size, 1, o.groups), Norm(b.c_out))
    shortcut = (Conv(b.c_in, b.c_out, b.skip, b.size, 2 if b.down else 1), Norm(b.c_out))
    return Block(body, post=(act,), shortcut=shortcut, project=b.down | (b.c_in != b.c_out), residual=True)


def test_a_family_added_as_one_registry_entry_passes_the_shared_checks_unchanged(monkeypatch):
    monkeypatch.setitem(FAMILIES, "triple", Family("triple", three_convs, "three convs per block (a test family)"))
    for check in CHECKS:
        check("triple")
    # ... and the rest of the tool knows it: Arch, space files, the count
    arch = Arch(blocks=(1, 1), channels=(8, 16), block="triple")
    basic = Arch(blocks=(1, 1), channels=(8, 16))
    assert count_params(arch) - count_params(basic) == (8 * 8 * 9 + 16) + (16 * 16 * 9 + 32)
    assert parse_space({"layers": [2], "blocks": [1], "channels": [8, 16], "block": ["triple", "basic"]}).block == (
        "triple", "basic")


def test_an_unknown_family_names_the_registered_ones_and_a_second_entry_is_refused():
    with pytest.raises(NasError, match="block='wide' is unknown: choose one of basic, bottleneck, preact"):
        Arch(blocks=(1,), channels=(8,), block="wide")
    with pytest.raises(NasError, match="registered already"):
        register_family(family("basic"))
    with pytest.raises(NasError, match="reads=\\['depth'\\]"):
        Family("odd", three_convs, "reads a knob no Arch has", reads=("depth",))
