"""The frozen description of one ResNet: the single source both the counter and the builder read.

Layout (the reference reports'): stem conv3x3(in_channels -> stem width, C_1 unless stem_channels
says otherwise) + BN + ReLU; N layers, layer i has B_i blocks with C_i output channels, the first
block of every layer after the first downsamples (stride 2; a 2x2 max-pool for plain blocks);
average pool of kernel P; Linear(features -> classes).

Block families (`block`): basic, bottleneck, preact (Wide ResNet), resnext, res2net, plain (SimpleNet: one
conv-BN-ReLU unit per block, max-pool downsampling; its 13 convs are a 64-wide stem plus layers
B=(3,3,2,1,2,1) with F=(3,3,3,3,1,3)), convgroup (airbench: every layer conv-maxpool-BN-act, then B_i - 1
units conv-BN-act); each is one record in nas/arch/families.py, the registry every rule here reads.

Network-wide extras: activation (relu, gelu) everywhere; stem 'conv' (conv3x3-BN-act) or 'patch'
(airbench's 2x2 patch conv with bias and no padding, then the activation: the whitening stem); pooling
avg or max for the head; head_bias and head_scale (the logits' multiplier, not a parameter).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any

from nas.arch.families import (
    FAMILIES,
    channel_problem,
    family,
    family_problem,
    layer_sizes,
    stem_problem,
    uses_skip,
)
from nas.arch.ops import ACTIVATIONS, POOLINGS, STEMS, Options
from nas.errors import NasError, shown
from nas.yamlfile import loads_json

NEW_DEFAULTS = {"stem_channels": None, "width_per_group": 0, "scale": 0, "se_placement": "blocks", "activation": "relu",
                "stem": "conv", "pooling": "avg", "head_bias": True, "head_scale": 1.0}  # left out of ids


def short_hash(obj: Any, length: int = 10) -> str:
    """A stable short id of JSON-able data (sorted keys), shared by architectures, recipes and protocols."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:length]


def _as_tuple(name: str, value: Any, n: int) -> tuple[int, ...]:
    """Broadcast a scalar to one value per layer; keep sequences as tuples."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * n
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise NasError(f"{name}={shown(value)} must be an integer or a list of integers, one per layer")


def _check_ints(name: str, values: tuple[Any, ...], rule: str, ok) -> None:
    for i, v in enumerate(values):
        if not isinstance(v, int) or isinstance(v, bool) or not ok(v):
            raise NasError(f"{name}[{i}]={shown(v)} is invalid: {rule}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


OPTION_FIELDS = tuple(f.name for f in fields(Options))


@dataclass(frozen=True)
class Arch:
    """One network. Scalars for kernels/skip_kernels apply to every layer; pool=None is global;
    stem_channels=None makes the stem C_1 wide."""

    blocks: tuple[int, ...]
    channels: tuple[int, ...]
    kernels: tuple[int, ...] | int = 3
    skip_kernels: tuple[int, ...] | int = 1
    pool: int | None = None
    block: str = "basic"
    se_ratio: int = 0  # squeeze-and-excitation reduction ratio; 0 disables SE
    groups: int = 1  # grouped KxK convs (ResNeXt cardinality)
    dropout: float = 0.0  # between a block's convs (Wide ResNet); after each unit of a plain net
    num_classes: int = 10
    input_size: int = 32
    in_channels: int = 3
    stem_channels: int | None = None  # the stem's width (16 in Wide ResNet); None: C_1
    width_per_group: int = 0  # resnext/res2net: one group's inner width at layer 1 (0 for other blocks)
    scale: int = 0  # res2net: channel splits per block, >= 2 (0 for other blocks)
    se_placement: str = "blocks"  # "blocks": SE in every block; "stem": one SE unit after the stem
    activation: str = "relu"  # relu gelu, everywhere in the network
    stem: str = "conv"  # conv: conv3x3-BN-act; patch: airbench's 2x2 conv with bias, no padding, then act
    pooling: str = "avg"  # the head's pool: avg or max
    head_bias: bool = True  # the Linear head's bias
    head_scale: float = 1.0  # the logits' multiplier (airbench: 1/9); not a parameter

    def __post_init__(self) -> None:
        blocks = _as_tuple("blocks", self.blocks, 1)
        n = len(blocks)
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("blocks", blocks)
        for name in ("channels", "kernels", "skip_kernels"):
            set_(name, _as_tuple(name, getattr(self, name), n))
        self._validate()

    def _validate(self) -> None:
        n = self.num_layers
        if n == 0:
            raise NasError("blocks=() is empty: give at least one residual layer, e.g. blocks=(2,2)")
        for name in ("channels", "kernels", "skip_kernels"):
            if len(getattr(self, name)) != n:
                raise NasError(
                    f"{name}={shown(list(getattr(self, name)))} has {len(getattr(self, name))} entries but "
                    f"blocks={shown(list(self.blocks))} has {n}: give one value per layer"
                )
        _check_ints("blocks", self.blocks, "every layer needs at least 1 block", lambda v: v >= 1)
        _check_ints("channels", self.channels, "channel counts must be >= 1", lambda v: v >= 1)
        odd = "kernel sizes must be odd and >= 1 (padding k//2 keeps 'same' size)"
        _check_ints("kernels", self.kernels, odd, lambda v: v >= 1 and v % 2 == 1)
        _check_ints("skip_kernels", self.skip_kernels, odd, lambda v: v >= 1 and v % 2 == 1)
        for name, low in (("num_classes", 1), ("input_size", 1), ("in_channels", 1), ("groups", 1), ("se_ratio", 0)):
            v = getattr(self, name)
            if not _is_int(v) or v < low:
                raise NasError(f"{name}={shown(v)} is invalid: must be an integer >= {low}")
        family(self.block)  # an unknown family is one line naming the registered ones
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise NasError(f"dropout={shown(self.dropout)} is invalid: must be in [0, 1)")
        for name, choices in (("activation", ACTIVATIONS), ("stem", STEMS), ("pooling", POOLINGS)):
            if getattr(self, name) not in choices:
                raise NasError(f"{name}={shown(getattr(self, name))} is unknown: choose one of {', '.join(choices)}")
        if not isinstance(self.head_bias, bool):
            raise NasError(f"head_bias={shown(self.head_bias)} must be true or false")
        if isinstance(self.head_scale, bool) or not isinstance(self.head_scale, (int, float)) or not self.head_scale > 0:
            raise NasError(f"head_scale={shown(self.head_scale)} must be a number > 0 (airbench: 0.1111)")
        if min(self.feature_sizes) < 1:
            raise NasError(f"input_size={self.input_size} is too small for {self.num_layers} {self.block} layers "
                           f"(sides {list(self.feature_sizes)}): use fewer layers")
        final = self.feature_sizes[-1]
        if self.pool is not None:
            if not _is_int(self.pool) or not 1 <= self.pool <= final:
                raise NasError(
                    f"pool={shown(self.pool)} is invalid: the last feature map is {final}x{final}, "
                    f"so pool must be an integer from 1 to {final} (or None for global pooling)"
                )
        o = self.options
        problem = family_problem(o) or stem_problem(o)
        problem = problem or next(filter(None, (channel_problem(c, o, i) for i, c in enumerate(self.channels))), None)
        if problem:
            raise NasError(problem)

    # -- derived facts ---------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @cached_property
    def options(self) -> Options:
        """The network-wide options, as the counter and the layout take them."""
        return Options(**{name: getattr(self, name) for name in OPTION_FIELDS})

    @property
    def stem_width(self) -> int:
        return self.channels[0] if self.stem_channels is None else self.stem_channels

    @cached_property  # frozen dataclasses allow it: it writes the instance __dict__ directly
    def feature_sizes(self) -> tuple[int, ...]:
        """Spatial size after each layer (see layer_sizes)."""
        return layer_sizes(self.num_layers, self.input_size, self.options)[1]

    @cached_property
    def pool_size(self) -> int:
        return self.feature_sizes[-1] if self.pool is None else self.pool

    def skip_used(self, layer: int) -> bool:
        """Whether layer `layer` has a projection shortcut, so its K_i matters (see uses_skip)."""
        return uses_skip(self.block, layer, self.stem_channels, self.channels[0])

    def scaled(self, width: float) -> Arch:
        """The same network with every width times `width`, for cheap proxy training: channels and the
        stem are rounded up to a multiple of what the blocks divide them by (groups, the bottleneck
        divisor), width_per_group is scaled and kept >= 1 (groups and scale stay: they are counts),
        and the SE ratio is lowered to the narrowest width holding SE where needed. (Raising narrow
        layers to the SE ratio instead made every SE candidate up to 64 channels wide the same
        16-channel proxy, with the same score.)"""
        if not 0 < width <= 1:
            raise NasError(f"width={width!r} must be in (0, 1]: it scales channels down for proxy training")
        if width == 1:
            return self
        f = FAMILIES[self.block]
        step = (1 if "width_per_group" in f.reads else self.groups) * f.divisor
        scale = lambda c: max(step, -(-round(c * width) // step) * step)  # noqa: E731
        channels = tuple(scale(c) for c in self.channels)
        stem = None if self.stem_channels is None else scale(self.stem_channels)
        wpg = max(1, round(self.width_per_group * width)) if self.width_per_group else 0
        se_widths = channels if self.se_placement == "blocks" else (channels[0] if stem is None else stem,)
        return dataclasses.replace(self, channels=channels, stem_channels=stem, width_per_group=wpg,
                                   se_ratio=min(self.se_ratio, *se_widths))

    # -- identity and serialisation ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("blocks", "channels", "kernels", "skip_kernels"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Arch:
        if not isinstance(data, dict):
            raise NasError(f"an architecture must be a mapping of fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise NasError(f"unknown architecture field(s) {shown(unknown)}: valid fields are {', '.join(sorted(known))}")
        missing = [k for k in ("blocks", "channels") if k not in data]
        if missing:
            raise NasError(f"architecture is missing {missing}: 'blocks' and 'channels' are required")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Arch:
        try:
            return cls.from_dict(loads_json(text))
        except ValueError as e:  # malformed, or a key written twice
            raise NasError(f"architecture JSON is malformed ({e}): expected an object like {{\"blocks\": [2,2], \"channels\": [64,128]}}") from None

    @property
    def id(self) -> str:
        """Short stable hash of the network actually built: skip kernels of unused shortcuts ignored, a
        stem as wide as C_1 is the default stem, and the fields added with the block families are left
        out at their defaults, so architectures stored before them keep their ids."""
        d = self.to_dict()
        d["skip_kernels"] = [k if self.skip_used(i) else 1 for i, k in enumerate(self.skip_kernels)]
        d["pool"] = self.pool_size
        d["dropout"] = float(self.dropout)
        d["head_scale"] = float(self.head_scale)
        if self.stem_channels == self.channels[0]:
            d["stem_channels"] = None
        for name, default in NEW_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        return short_hash(d)

    def describe(self) -> str:
        """One line a human can read in a table: N=4 B=2-2-2-2 C=64-128-256-512 F=3 K=1 P=4 basic."""
        j = lambda xs: "-".join(map(str, xs))  # noqa: E731
        extras = [self.block]
        if self.stem_channels is not None:
            extras.append(f"stem{self.stem_channels}")
        if self.se_ratio:
            extras.append(f"se{self.se_ratio}" + ("@stem" if self.se_placement == "stem" else ""))
        if self.groups > 1:
            extras.append(f"g{self.groups}")
        if self.width_per_group:
            extras.append(f"w{self.width_per_group}")
        if self.scale:
            extras.append(f"s{self.scale}")
        if self.dropout:
            extras.append(f"drop{self.dropout:g}")
        extras += [v for v, default in ((self.activation, "relu"), (self.stem, "conv")) if v != default]
        if self.pooling != "avg":
            extras.append(f"{self.pooling}pool")
        if not self.head_bias or self.head_scale != 1:
            extras.append(f"head{'' if self.head_bias else '-nobias'}x{self.head_scale:.4g}")
        return (
            f"N={self.num_layers} B={j(self.blocks)} C={j(self.channels)} F={j(self.kernels)} "
            f"K={j(self.skip_kernels)} P={self.pool_size} {' '.join(extras)}"
        )
