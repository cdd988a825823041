"""One set of architecture flags for count, train and bench: an ARCH_FILE, or --blocks/--channels/..."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from nas.arch import Arch
from nas.arch.archfile import read_arch_file
from nas.arch.families import FAMILIES
from nas.arch.ops import ACTIVATIONS, POOLINGS, SE_PLACEMENTS, STEMS
from nas.bundled import example_file
from nas.cli.app import command
from nas.errors import NasError

ARCH_FLAGS: dict[str, tuple[Any, Any]] = {  # parameter: (annotation, default)
    "arch_file": (Annotated[Optional[Path], typer.Argument(help="Architecture file (JSON or YAML), or a bundled example's name (resnet10, wrn-16-4, ...: see examples/); or give --blocks and --channels.", show_default=False)], None),
    "blocks": (Annotated[Optional[str], typer.Option(help="Blocks per residual layer B_i, e.g. 2,2,2,2.")], None),
    "channels": (Annotated[Optional[str], typer.Option(help="Output channels per layer C_i, e.g. 64,128,256,512.")], None),
    "kernels": (Annotated[Optional[str], typer.Option(help="Conv kernel F_i: one odd value for all layers or one per layer. (default: 3)")], None),
    "skip_kernels": (Annotated[Optional[str], typer.Option("--skip-kernels", help="Shortcut conv kernel K_i (odd). (default: 1)")], None),
    "pool": (Annotated[Optional[int], typer.Option(help="Average-pool kernel P. (default: global)")], None),
    "block": (Annotated[str, typer.Option(help="Block family: " + "; ".join(f"{f.name}: {f.summary}" for f in FAMILIES.values()) + ".")], "basic"),
    "stem_channels": (Annotated[Optional[int], typer.Option("--stem-channels", help="Stem width, e.g. 16 for Wide ResNet. (default: C_1)")], None),
    "width_per_group": (Annotated[int, typer.Option("--width-per-group", help="resnext, res2net: one group's inner width at layer 1, e.g. 64 for ResNeXt-29 8x64d.")], 0),
    "scale": (Annotated[int, typer.Option(help="res2net: channel splits per block, >= 2 (4 in the paper).")], 0),
    "se": (Annotated[bool, typer.Option("--se/--no-se", help="Squeeze-and-excitation (reduction --se-ratio, placed by --se-placement).")], False),
    "se_ratio": (Annotated[int, typer.Option("--se-ratio", help="SE reduction ratio, used with --se.")], 16),
    "se_placement": (Annotated[str, typer.Option("--se-placement", help=f"With --se: {' | '.join(SE_PLACEMENTS)} (in every block, or one unit after the stem).")], "blocks"),
    "activation": (Annotated[str, typer.Option(help=f"Activation everywhere: {' | '.join(ACTIVATIONS)}.")], "relu"),
    "stem": (Annotated[str, typer.Option(help=f"Stem: {' | '.join(STEMS)} (patch: airbench's 2x2 conv with bias, no padding, no BN).")], "conv"),
    "pooling": (Annotated[str, typer.Option(help=f"The head's pool: {' | '.join(POOLINGS)}.")], "avg"),
    "groups": (Annotated[int, typer.Option(help="Groups in the KxK convs (ResNeXt cardinality).")], 1),
    "dropout": (Annotated[float, typer.Option(help="Dropout between a block's convs (after each unit of a plain net).")], 0.0),
    "classes": (Annotated[int, typer.Option("--classes", help="Number of classes.")], 10),
    "input_size": (Annotated[int, typer.Option("--input-size", help="Input image side in pixels.")], 32),
}


def _int_list(text: str | None, name: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x != "")
    except ValueError:
        raise NasError(f"--{name}={text!r} must be comma-separated integers, e.g. 2,2,2,2") from None


def arch_from_flags(arch_file: Path | None = None, **flags: Any) -> Arch:
    """An Arch from a file or from the ARCH_FLAGS (not both: a file is the whole architecture)."""
    f = {name: default for name, (_, default) in ARCH_FLAGS.items() if name != "arch_file"} | flags
    if arch_file is not None:
        given = [name for name, value in flags.items() if value != ARCH_FLAGS[name][1]]
        if given:
            raise NasError(f"give either an ARCH_FILE or flags, not both: {arch_file} is the whole architecture, "
                           f"so --{given[0].replace('_', '-')} would be ignored")
        return read_arch_file(example_file(arch_file)).arch
    if f["blocks"] is None or f["channels"] is None:
        raise NasError("no architecture given: pass an ARCH_FILE, or --blocks and --channels (e.g. --blocks 2,2,2,2 --channels 64,128,256,512)")
    b = _int_list(f["blocks"], "blocks")
    ks = _int_list(f["kernels"], "kernels") or (3,)
    sk = _int_list(f["skip_kernels"], "skip-kernels") or (1,)
    n = len(b or ())
    return Arch(blocks=b, channels=_int_list(f["channels"], "channels"),
                kernels=ks * n if len(ks) == 1 else ks, skip_kernels=sk * n if len(sk) == 1 else sk,
                pool=f["pool"], block=f["block"], se_ratio=f["se_ratio"] if f["se"] else 0, groups=f["groups"],
                dropout=f["dropout"], num_classes=f["classes"], input_size=f["input_size"],
                stem_channels=f["stem_channels"], width_per_group=f["width_per_group"], scale=f["scale"],
                se_placement=f["se_placement"], activation=f["activation"], stem=f["stem"], pooling=f["pooling"])


def arch_command(fn: Callable) -> Callable:
    """Register a command over one architecture: it gets ARCH_FILE and the --blocks/--channels/... flags
    (the same in count, train and bench) and is called with the `Arch` they describe."""
    own = inspect.signature(fn, eval_str=True)
    flags = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=a, default=d)
             for name, (a, d) in ARCH_FLAGS.items()]

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        return fn(arch_from_flags(**{name: kwargs.pop(name) for name in ARCH_FLAGS}), **kwargs)

    wrapper.__signature__ = own.replace(parameters=[*flags, *list(own.parameters.values())[1:]])  # for Typer
    return command(wrapper)
