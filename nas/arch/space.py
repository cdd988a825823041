"""Search-space files: load, validate every field at once, and turn chosen values into an `Arch`.

A space file is YAML (read by nas.yamlfile: safe and bounded) naming the choices for each ResNet knob:

    layers: [3, 4]                  # N
    blocks: [1, 2, 3]               # B_i: one list for every layer, or a list of lists per layer
    channels: [[32, 64], [64, 128], [128, 256], [256, 512]]
    # or, instead of channels, one tied width n with widths doubling per layer (C_i = n * 2^(i-1)):
    # width: [16, 32, 48, 64]
    kernels: [3, 5]                 # F_i
    skip_kernels: [1, 3]            # K_i (layer 1 always has an identity shortcut)
    pool: [global, 2]               # P
    block: [basic, bottleneck]      # also preact, resnext, res2net, plain, convgroup (nas/arch.py)
    se_ratio: [0, 16]
    se_placement: [blocks, stem]    # SE in every block, or one unit after the stem
    stem_channels: [null, 16]       # null: the stem is C_1 wide
    width_per_group: [16, 32]       # resnext and res2net only; scale: [4] for res2net only
    activation: [relu, gelu]        # also stem: [conv, patch], pooling: [avg, max], head_bias, head_scale
    train:                          # optional: Recipe fields, fixed / choices / ranges
      lr: {low: 0.02, high: 0.4, log: true}
      optimizer: [sgd, adamw]
      base: reference               # optional: the protocol trials start from (a grid's default: reference)
    seeds:                          # optional: known designs the search tries first and must beat
      - {name: resnet10, blocks: [2, 1, 1, 1], channels: [64, 128, 256, 512]}

This module knows nothing of Optuna: it exposes knobs (`Choice`, `Range`) that the search
turns into suggestions, and `Space.arch(values)` that turns the suggestions into an `Arch`.

A family's own knobs matter only for that family: the sampler proposes every knob, and `Space.arch`
sets those the chosen block does not read (width_per_group outside resnext/res2net, scale outside
res2net, se_placement without SE, unused skip kernels) to their off values, so such proposals are
one candidate (one id) and the search trains it once. The knobs added with the families appear only
in spaces that list them, so older studies keep their parameters.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from nas.arch import Arch
from nas.arch.families import (
    FAMILIES,
    KNOBS,
    channel_problem,
    layer_sizes,
    readers,
    stem_problem,
    unused_fields,
    uses_skip,
)
from nas.arch.ops import ACTIVATIONS, POOLINGS, SE_PLACEMENTS, STEMS, Options
from nas.engine.recipe import COUPLED, PROTOCOLS, Recipe
from nas.errors import NasError, label, shown
from nas.numbers import parse_float, parse_int
from nas.yamlfile import read_yaml

PER_LAYER = ("blocks", "channels", "kernels", "skip_kernels")
GLOBAL = ("pool", "block", "se_ratio", "groups", "dropout")
FAMILY = ("stem_channels", "width_per_group", "scale", "se_placement",  # knobs only where a space lists them
          "activation", "stem", "pooling", "head_bias", "head_scale")
WORDS = {"se_placement": (SE_PLACEMENTS, "an SE placement"), "activation": (ACTIVATIONS, "an activation"),
         "stem": (STEMS, "a stem"), "pooling": (POOLINGS, "a pooling")}  # knob: (choices, what one is)
SCALARS = {"num_classes": 10, "input_size": 32, "in_channels": 3}
DEFAULTS: dict[str, list[Any]] = {"kernels": [3], "skip_kernels": [1], "pool": ["global"], "block": ["basic"],
                                  "se_ratio": [0], "groups": [1], "dropout": [0.0], "stem_channels": [None],
                                  "width_per_group": [0], "scale": [0], "se_placement": ["blocks"],
                                  "activation": ["relu"], "stem": ["conv"], "pooling": ["avg"], "head_bias": [True],
                                  "head_scale": [1.0]}
KEYS = ("name", "description", "layers", *PER_LAYER, "width", *GLOBAL, *FAMILY, *SCALARS, "train", "seeds")


@dataclass(frozen=True)
class Choice:
    """A categorical knob."""

    name: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Range:
    """A numeric knob sampled between low and high (log-uniformly when log)."""

    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False


Knob = Union[Choice, Range]


@dataclass(frozen=True)
class Space:
    name: str
    layers: tuple[int, ...]
    blocks: tuple[tuple[int, ...], ...]  # per layer, length max(layers)
    channels: tuple[tuple[int, ...], ...]
    kernels: tuple[tuple[int, ...], ...]
    skip_kernels: tuple[tuple[int, ...], ...]
    pool: tuple[int | None, ...]  # None = global
    block: tuple[str, ...]
    se_ratio: tuple[int, ...]
    groups: tuple[int, ...]
    dropout: tuple[float, ...]
    stem_channels: tuple[int | None, ...] = (None,)  # None = C_1
    width_per_group: tuple[int, ...] = (0,)
    scale: tuple[int, ...] = (0,)
    se_placement: tuple[str, ...] = ("blocks",)
    activation: tuple[str, ...] = ("relu",)
    stem: tuple[str, ...] = ("conv",)
    pooling: tuple[str, ...] = ("avg",)
    head_bias: tuple[bool, ...] = (True,)
    head_scale: tuple[float, ...] = (1.0,)
    width: tuple[int, ...] = ()  # tied widths: C_i = n * 2^(i-1) for a chosen n (Efficient ResNets); () = channels
    train: tuple[Knob, ...] = ()
    base: str | None = None  # `train: base:`, the protocol (nas.engine.recipe.PROTOCOLS) trials start from
    seeds: tuple[tuple[str, Arch], ...] = ()  # (name, design) pairs, each inside the space
    num_classes: int = 10
    input_size: int = 32
    in_channels: int = 3
    num_classes_fixed: bool = False  # the file names num_classes; otherwise it follows the data (for_data)

    # -- knobs, in the order the search suggests them ----------------------------------------
    def listed(self, name: str) -> bool:
        """Whether the space gives a family knob choices of its own (only then is it a knob)."""
        return getattr(self, name) != tuple(DEFAULTS[name])

    def _skip_knob(self, layer: int) -> bool:
        """Layer 1's skip kernel is a knob only where a stem width other than C_1 can make it project."""
        return layer > 0 or self.listed("stem_channels")

    def _layer_knob(self, name: str, layer: int) -> bool:
        """Whether per-layer knob `name` is sampled for `layer`: not channels where one tied width sets them all,
        and layer 1's skip kernel only if the stem can differ from C_1."""
        return not (name == "channels" and self.width) and (name != "skip_kernels" or self._skip_knob(layer))

    def arch_knobs(self, n: int) -> list[Choice]:
        """Knobs of an N-layer candidate, in the order the search suggests them."""
        knobs = [Choice(g, getattr(self, g)) for g in GLOBAL]
        knobs += [Choice(g, getattr(self, g)) for g in FAMILY if self.listed(g)]
        knobs += [Choice("width", self.width)] if self.width else []
        for i in range(n):
            knobs += [Choice(f"{name}_{i + 1}", getattr(self, name)[i]) for name in PER_LAYER if self._layer_knob(name, i)]
        return knobs

    def tied(self, width: int, n: int) -> tuple[int, ...]:
        """The channels of an N-layer candidate of tied width `width`: doubling per layer."""
        return tuple(width * 2**i for i in range(n))

    def reads(self, knob: str, values: dict[str, Any]) -> bool:
        """Whether a candidate with `values`' block and se_ratio reads knob `knob`. The search samples no knob
        the block ignores (width_per_group for a basic block, se_placement without SE), so Optuna sees a
        family's knobs as conditional on it and TPE models each family's knobs apart."""
        return knob not in FAMILY or knob not in unused_fields(values["block"], values["se_ratio"])

    def arch(self, values: dict[str, Any]) -> Arch:
        """The candidate for chosen knob values (`layers` plus arch_knobs(N)); raises NasError
        when the combination is impossible (e.g. a pool larger than the last feature map).
        Options the chosen block does not read are set to their off values (see the module doc)."""
        n = values["layers"]
        chosen = {**{g: values[g] for g in GLOBAL}, **{g: values.get(g, getattr(self, g)[0]) for g in FAMILY}}
        chosen.update(unused_fields(chosen["block"], chosen["se_ratio"]))
        per_layer = {name: tuple(values[f"{name}_{i + 1}"] for i in range(n)) for name in ("blocks", "kernels")}
        per_layer["channels"] = (self.tied(values["width"], n) if self.width else
                                 tuple(values[f"channels_{i + 1}"] for i in range(n)))
        per_layer["skip_kernels"] = tuple(
            values[f"skip_kernels_{i + 1}"] if uses_skip(chosen["block"], i, chosen["stem_channels"], per_layer["channels"][0])
            else 1 for i in range(n))
        return Arch(**per_layer, **chosen, **self.fixed_arch_fields())

    def _family_value(self, name: str, arch: Arch) -> tuple[bool, Any]:
        """(whether the space can give `arch` its value of family knob `name`, the choice that does)."""
        choices, value = getattr(self, name), getattr(arch, name)
        if name in unused_fields(arch.block, arch.se_ratio):
            return True, choices[0]  # the block does not read it: any choice makes the same network
        if name == "stem_channels" and value not in choices and arch.stem_width == arch.channels[0]:
            value = next((c for c in (None, arch.channels[0]) if c in choices), value)  # a C_1-wide stem, as listed
        return value in choices, value

    def values(self, arch: Arch) -> dict[str, Any]:
        """The knob values that make `arch` (the inverse of `arch()`), e.g. to enqueue a known design."""
        pool = arch.pool if arch.pool in self.pool else None  # global pooling, however the design wrote it
        values: dict[str, Any] = {"layers": arch.num_layers, **{g: getattr(arch, g) for g in GLOBAL}, "pool": pool}
        values.update({g: self._family_value(g, arch)[1] for g in FAMILY if self.listed(g) and self.reads(g, values)})
        if self.width:
            values["width"] = arch.channels[0]
        for i in range(arch.num_layers):
            for name in PER_LAYER:
                if self._layer_knob(name, i):
                    v, choices = getattr(arch, name)[i], getattr(self, name)[i]
                    unused = name == "skip_kernels" and not arch.skip_used(i) and v not in choices
                    values[f"{name}_{i + 1}"] = choices[0] if unused else v
        return values

    def for_data(self, num_classes: int) -> Space:
        """This space, seeds included, for data with `num_classes` classes. The count follows the
        data unless the file fixed it; then another count is an error here, not a crash in training."""
        if num_classes == self.num_classes:
            return self
        if self.num_classes_fixed:
            raise NasError(f"space {self.name!r} fixes num_classes: {self.num_classes} but the data has {num_classes} "
                           f"classes: remove num_classes from the space file to follow the data, or pass data with "
                           f"{self.num_classes} classes")
        seeds = tuple((name, dataclasses.replace(arch, num_classes=num_classes)) for name, arch in self.seeds)
        return dataclasses.replace(self, num_classes=num_classes, seeds=seeds)

    def check_train(self, base: Recipe) -> None:
        """Raise NasError naming every `train:` value or combination that `base.updated` rejects, so a
        search finds out before its first trial (the loader checks against the default Recipe only)."""
        problems = recipe_problems(self.train, base)
        if problems:
            raise problems_error(self.name, "in the space's train: section with the trials' base recipe", problems)

    def fixed_arch_fields(self) -> dict[str, int]:
        return {"num_classes": self.num_classes, "input_size": self.input_size, "in_channels": self.in_channels}

    def contains(self, arch: Arch) -> bool:
        """Whether a search over this space can propose `arch` (used to check the seed designs)."""
        global_pool = arch.pool_size == arch.feature_sizes[-1]
        if arch.num_layers not in self.layers or not (arch.pool in self.pool or (global_pool and None in self.pool)):
            return False
        if any(getattr(arch, g) not in getattr(self, g) for g in GLOBAL if g != "pool"):
            return False
        if not all(self._family_value(g, arch)[0] for g in FAMILY):
            return False
        if self.width and (arch.channels[0] not in self.width or arch.channels != self.tied(arch.channels[0], arch.num_layers)):
            return False
        for name in PER_LAYER:
            for i, v in enumerate(getattr(arch, name)):
                if (name != "skip_kernels" or arch.skip_used(i)) and v not in getattr(self, name)[i]:
                    return False
        return all(getattr(arch, k) == v for k, v in self.fixed_arch_fields().items())

    @property
    def max_layers(self) -> int:
        return max(self.layers)


# -- loading ---------------------------------------------------------------------------------
MAX_LISTED = 10  # problems one message lists; the rest are counted
MAX_COMBINATIONS = 10_000  # of the COUPLED train: fields' choices, each checked (a default space has 1)


def problems_error(name: str, where: str, problems: list[str]) -> NasError:
    """One problem as one line; several as their count and the first MAX_LISTED, one per indented line: a
    file with thousands of bad values (a list of them, or aliases to one) still gets a message of a screen."""
    if len(problems) == 1:
        return NasError(f"{name}: {problems[0]}")
    more = [f"... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
    return NasError(f"{name}: {len(problems)} problem(s) {where}:\n  " + "\n  ".join(problems[:MAX_LISTED] + more))


class _Problems(list):
    """Every problem of a file, each naming key, value (cut: a value may be huge) and rule."""

    def add(self, key: str, value: Any, rule: str) -> None:
        self.append(f"{key}: {shown(value)} {rule}")


def _listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _ints(p: _Problems, key: str, raw: Any, rule: str, ok) -> tuple[int, ...]:
    out = []
    items = _listify(raw)
    if not items:
        p.add(key, raw, "is empty: give at least one choice")
    for v in items:
        try:
            iv = parse_int(v, key)
        except NasError:
            p.add(key, v, f"is not an integer: {rule}")
            continue
        if not ok(iv):
            p.add(key, v, f"is invalid: {rule}")
            continue  # an invalid value must not size anything (layers: 10**30 would allocate per layer)
        out.append(iv)
    if len(set(out)) != len(out):
        p.add(key, raw, "repeats a choice: list each choice once")
    return tuple(out)


_RULES = {
    "blocks": ("must be >= 1", lambda v: v >= 1),
    "channels": ("must be >= 1", lambda v: v >= 1),
    "kernels": ("kernel sizes must be odd and >= 1", lambda v: v >= 1 and v % 2 == 1),
    "skip_kernels": ("kernel sizes must be odd and >= 1", lambda v: v >= 1 and v % 2 == 1),
}


def _per_layer(p: _Problems, key: str, raw: Any, n_max: int) -> tuple[tuple[int, ...], ...]:
    rule, ok = _RULES[key]
    items = _listify(raw)
    if items and all(isinstance(x, list) for x in items):
        if len(items) != n_max:
            p.add(key, raw, f"gives {len(items)} per-layer lists but up to {n_max} layers are searched: give one list per layer, or one flat list for all")
        lists = [_ints(p, f"{key}[{i}]", x, rule, ok) for i, x in enumerate(items)]
        return tuple(lists + [lists[-1] if lists else (1,)] * (n_max - len(lists)))
    if any(isinstance(x, (list, dict)) for x in items):
        p.add(key, raw, "mixes lists and values: give one flat list, or one list per layer")
        return ((1,),) * n_max
    return (_ints(p, key, items, rule, ok),) * n_max


def _train_base(p: _Problems, raw: Any) -> str | None:
    """`train: base:`, the protocol a search's trials start from (None: the search decides)."""
    base = raw.get("base") if isinstance(raw, dict) else None
    if base is not None and base not in PROTOCOLS:
        p.add("train.base", base, f"is not a protocol: choose one of {', '.join(PROTOCOLS)}")
        return None
    return base


def _train_knobs(p: _Problems, raw: Any, base: str | None) -> tuple[Knob, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        p.add("train", raw, "must be a mapping of Recipe fields to values, choices or ranges")
        return ()
    fields = [f.name for f in dataclasses.fields(Recipe)]
    knobs: list[Knob] = []
    parsed = len(p)
    for key, value in raw.items():
        if key == "base":
            continue
        where = f"train.{key}"
        if key not in fields:
            p.add(where, key, f"is not a training setting: valid ones are base, {', '.join(sorted(fields))}")
            continue
        kind = type(getattr(Recipe(), key))
        knob = _range(p, where, key, value, kind) if isinstance(value, dict) else _choices(p, where, key, value, kind)
        if knob is not None:
            knobs.append(knob)
    if len(p) == parsed:  # with a knob that failed to parse, the others would be judged without it
        p.extend(recipe_problems(tuple(knobs), PROTOCOLS[base] if base else Recipe()))
    return tuple(knobs)


def _range(p: _Problems, where: str, key: str, value: dict, kind: type) -> Range | None:
    if set(value) - {"low", "high", "log"} or not {"low", "high"} <= set(value):
        p.add(where, value, "a range needs exactly 'low', 'high' and optionally 'log: true'")
    elif kind not in (int, float):
        p.add(where, value, f"is a range but {key} takes {kind.__name__} values: list the choices instead")
    else:
        try:
            low, high = parse_float(value["low"], f"{where}.low"), parse_float(value["high"], f"{where}.high")
        except NasError as e:
            p.append(str(e))
            return None
        log = value.get("log", False)
        if not isinstance(log, bool):
            p.add(f"{where}.log", log, "must be true or false")
        elif not low < high or (log and low <= 0):
            p.add(where, value, "needs low < high (and low > 0 with log: true)")
        else:
            return Range(key, low, high, log, kind is int)
    return None


def _choices(p: _Problems, where: str, key: str, value: Any, kind: type) -> Choice | None:
    choices = []
    for v in _listify(value):
        try:
            choices.append(_coerce(v, kind, where))
        except NasError as e:
            p.append(str(e))
    if not choices:
        p.add(where, value, "is empty: give at least one value")
        return None
    return Choice(key, tuple(choices))


def recipe_problems(knobs: tuple[Knob, ...], base: Recipe) -> list[str]:
    """What `base.updated` rejects among the knobs' values: each value of an independent field,
    and every combination of the COUPLED fields' values. Ranges are tried at their bounds, which
    is exact because every rule of Recipe bounds a field by a constant or by another field. Past
    MAX_COMBINATIONS that is itself the problem: 3 KB of choices would otherwise take hours to check."""
    tried = {k.name: k.values if isinstance(k, Choice) else
             tuple(int(v) if k.integer else v for v in (k.low, k.high)) for k in knobs}
    coupled = [name for name in tried if name in COUPLED]
    combinations = math.prod(len(tried[n]) for n in coupled)
    if combinations > MAX_COMBINATIONS:
        return [f"train: {', '.join(coupled)} give {combinations:,} combinations of "
                f"choices, more than {MAX_COMBINATIONS:,} to check: list fewer, or give a range {{low: ..., high: ...}}"]
    combos = [[(name, v)] for name in tried if name not in COUPLED for v in tried[name]]
    combos += [list(zip(coupled, values)) for values in itertools.product(*(tried[n] for n in coupled))]
    problems: dict[str, str] = {}  # rule broken -> the first combination that breaks it
    for combo in combos:
        try:
            base.updated(dict(combo))
        except NasError as e:
            problems.setdefault(str(e), " with ".join(f"train.{k}: {shown(v)}" for k, v in combo))
    return [f"{where}: {rule}" for rule, where in problems.items()]


def _seeds(p: _Problems, raw: Any, fixed: dict[str, int]) -> tuple[tuple[str, Arch], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        p.add("seeds", raw, "must be a list of architectures, e.g. - {name: resnet10, blocks: [2, 1, 1, 1], channels: [64, 128, 256, 512]}")
        return ()
    seeds = []
    for i, item in enumerate(raw):
        fields = {k: None if k == "pool" and v == "global" else v for k, v in item.items() if k != "name"}
        try:
            seeds.append((label(item.get("name", f"seed-{i}")), Arch.from_dict({**fixed, **fields})))
        except (NasError, TypeError) as e:
            p.add(f"seeds[{i}]", item, f"is not a valid architecture: {e}")
    return tuple(seeds)


def _scalars(p: _Problems, data: dict) -> dict[str, int]:
    scalars = {}
    for key, default in SCALARS.items():
        try:
            scalars[key] = parse_int(data.get(key, default), key)
            if scalars[key] < 1:
                p.add(key, data[key], "must be >= 1")
        except NasError:
            p.add(key, data.get(key), "must be a whole number >= 1")
            scalars[key] = default
    return scalars


def _pools(p: _Problems, raw: Any) -> tuple[int | None, ...]:
    pool: list[int | None] = []
    for v in _listify(raw):
        if v in ("global", None):
            pool.append(None)
            continue
        try:
            pool.append(parse_int(v, "pool"))
            if pool[-1] < 1:
                p.add("pool", v, "must be 'global' or an integer >= 1")
        except NasError:
            p.add("pool", v, "must be 'global' or an integer >= 1")
    return tuple(pool)


def _dropouts(p: _Problems, raw: Any) -> tuple[float, ...]:
    dropout = []
    for v in _listify(raw):
        try:
            dropout.append(parse_float(v, "dropout"))
            if not 0 <= dropout[-1] < 1:
                p.add("dropout", v, "must be in [0, 1)")
        except NasError:
            p.add("dropout", v, "must be a number in [0, 1)")
    return tuple(dropout)


def _stems(p: _Problems, raw: Any) -> tuple[int | None, ...]:
    stems: list[int | None] = []
    for v in _listify(raw):
        try:
            stems.append(None if v is None else parse_int(v, "stem_channels"))
            if stems[-1] is not None and stems[-1] < 1:
                p.add("stem_channels", v, "must be null (C_1 wide) or an integer >= 1")
        except NasError:
            p.add("stem_channels", v, "must be null (C_1 wide) or an integer >= 1")
    if len(set(stems)) != len(stems):
        p.add("stem_channels", raw, "repeats a choice: list each choice once")
    return tuple(stems)


def _family(p: _Problems, data: dict, block: tuple[str, ...], se_ratio: tuple[int, ...]) -> dict[str, tuple]:
    """The family knobs: stem_channels, width_per_group, scale, se_placement. A knob that no listed block
    reads is a problem (it would silently do nothing), and so is a listed block missing its knob."""
    out: dict[str, tuple] = {"stem_channels": _stems(p, data.get("stem_channels", DEFAULTS["stem_channels"]))}
    for name, (low, meaning) in KNOBS.items():
        users = readers(name)
        listed = [b for b in block if b in users]
        out[name] = _ints(p, name, data[name], f"must be >= {low} ({meaning})", lambda v, low=low: v >= low) \
            if name in data else tuple(DEFAULTS[name])
        if listed and name not in data:
            p.append(f"{name}: missing: block {listed[0]} needs {name} choices, e.g. {name}: [{max(low, 4)}]")
        if name in data and not listed:
            p.add(name, data[name], f"is read by block {' or '.join(users)} only, and block: lists neither: "
                                    f"add one to block:, or remove {name}")
    for name, (words, what) in WORDS.items():
        out[name] = tuple(_listify(data.get(name, DEFAULTS[name])))
        for v in out[name]:
            if v not in words:
                p.add(name, v, f"is not {what}: choose from {', '.join(words)}")
        if len(set(map(str, out[name]))) != len(out[name]):
            p.add(name, data.get(name), "repeats a choice: list each choice once")
    if "stem" in out["se_placement"] and not any(se_ratio):
        p.add("se_placement", "stem", "needs an se_ratio choice >= 1 (the stem's SE unit needs a reduction ratio)")
    out["head_bias"] = tuple(_listify(data.get("head_bias", DEFAULTS["head_bias"])))
    if not all(isinstance(v, bool) for v in out["head_bias"]) or len(set(out["head_bias"])) != len(out["head_bias"]):
        p.add("head_bias", data.get("head_bias"), "must list true and/or false, each once")
    scales = []
    for v in _listify(data.get("head_scale", DEFAULTS["head_scale"])):
        try:
            scales.append(parse_float(v, "head_scale"))
            if not scales[-1] > 0:
                p.add("head_scale", v, "must be a number > 0 (airbench: 0.1111)")
        except NasError:
            p.add("head_scale", v, "must be a number > 0 (airbench: 0.1111)")
    out["head_scale"] = tuple(scales)
    return out


def _coerce(value: Any, kind: type, where: str) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise NasError(f"{where}: {shown(value)} must be true or false")
        return value
    if kind is int:
        return parse_int(value, where)
    if kind is float:
        return parse_float(value, where)
    if not isinstance(value, str):
        raise NasError(f"{where}: {shown(value)} must be text")
    return value


def parse_space(data: Any, name: str = "space") -> Space:
    """Validate a space mapping; every problem is reported at once, each naming key, value and rule."""
    if not isinstance(data, dict):
        raise NasError(f"{name}: the file must be a YAML mapping of knobs (layers, blocks, channels, ...), got {type(data).__name__}")
    p = _Problems()
    for key in data:
        if key not in KEYS:
            p.add(label(str(key)), data[key], f"is not a space field: valid fields are {', '.join(KEYS)}")
    for key in ("layers", "blocks", "channels"):
        if key not in data and not (key == "channels" and "width" in data):
            p.append(f"{key}: missing: every space names the choices for layers, blocks and channels (or width)")
    layers = _ints(p, "layers", data.get("layers", [1]), "the number of residual layers must be between 1 and 64",
                   lambda v: 1 <= v <= 64)
    n_max = max(layers, default=1)
    width = _ints(p, "width", data["width"], "a tied width n (C_i = n * 2^(i-1)) must be >= 1",
                  lambda v: v >= 1) if "width" in data else ()
    if width and "channels" in data:
        p.add("width", data["width"], "ties every layer's channels: give width or channels, not both")
    per_layer = {k: _per_layer(p, k, data.get(k, DEFAULTS.get(k, [1])), n_max) for k in PER_LAYER}
    if width:  # each layer's possible channels, for the per-layer rules (valid_channels, contains)
        per_layer["channels"] = tuple(tuple(w * 2**i for w in width) for i in range(n_max))
    scalars = _scalars(p, data)
    pool = _pools(p, data.get("pool", DEFAULTS["pool"]))
    block = tuple(_listify(data.get("block", DEFAULTS["block"])))
    for b in block:
        if not isinstance(b, str) or b not in FAMILIES:
            p.add("block", b, f"is not a block type: choose from {', '.join(FAMILIES)}")
    se_ratio = _ints(p, "se_ratio", data.get("se_ratio", DEFAULTS["se_ratio"]), "0 (off) or a reduction ratio >= 1", lambda v: v >= 0)
    groups = _ints(p, "groups", data.get("groups", DEFAULTS["groups"]), "groups must be >= 1", lambda v: v >= 1)
    dropout = _dropouts(p, data.get("dropout", DEFAULTS["dropout"]))
    family = _family(p, data, block, se_ratio)
    base = _train_base(p, data.get("train"))
    train = _train_knobs(p, data.get("train"), base)
    seeds = _seeds(p, data.get("seeds"), scalars)
    space_name = label(data["name"]) if "name" in data else name
    if p:
        raise problems_error(name, "in the space file", p)
    space = Space(name=str(space_name), layers=layers, **per_layer, pool=pool, block=block, se_ratio=se_ratio,
                  groups=groups, dropout=dropout, **family, width=width, train=train, base=base, seeds=seeds, **scalars,
                  num_classes_fixed="num_classes" in data)
    outside = [f"seeds: {n!r} ({label(a.describe(), 200)}) is outside the space: add its values to the choices, or drop it"
               for n, a in seeds if not space.contains(a)]
    if outside:
        raise problems_error(name, "in the space file", outside)
    if space_size(space) == 0:
        raise NasError(f"{name}: no candidate in this space is a valid network (check pool sizes against the "
                       "last feature map, se_ratio against channels and the stem, groups against widths)")
    return space


def load_space(path: str | Path) -> Space:
    path = Path(path)
    data = read_yaml(path, "space file", "search_spaces/default.yaml")
    if data is None:
        raise NasError(f"{path}: the file is empty: a space names at least layers, blocks and channels")
    return parse_space(data, str(path))


# -- size ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Combo:
    """Candidates sharing N, pool and the network-wide options: per layer, the valid channel choices
    and the skip kernels that matter (one placeholder where no projection reads them)."""

    n: int
    pool: int | None
    options: Options
    chans: tuple[tuple[int, ...], ...]
    skips: tuple[tuple[int, ...], ...]


def valid_channels(space: Space, o: Options, layer: int) -> tuple[int, ...]:
    """Channel choices of one layer that make a valid block with these options (Arch's rule)."""
    return tuple(c for c in space.channels[layer] if channel_problem(c, o, layer) is None)


def valid_pools(space: Space, n: int, o: Options) -> tuple[int | None, ...]:
    """Pools that fit the last feature map; P equal to the map is global pooling, counted once. No pool fits
    where the network is too deep for the input (every side must stay >= 1)."""
    final = layer_sizes(n, space.input_size, o)[1][-1]
    if final < 1:
        return ()
    return tuple(p for p in space.pool if p is None or p < final or (p == final and None not in space.pool))


def space_options(space: Space) -> list[Options]:
    """Every distinct set of network-wide options: a family's own knobs only for the blocks that read them."""
    out = []
    extras = [getattr(space, g) for g in ("activation", "stem", "pooling", "head_bias", "head_scale")]
    for block, se, groups, dropout, stem in itertools.product(space.block, space.se_ratio, space.groups,
                                                              space.dropout, space.stem_channels):
        unused = unused_fields(block, se)
        own = [(unused[g],) if g in unused else getattr(space, g) for g in ("width_per_group", "scale", "se_placement")]
        for chosen in itertools.product(*own, *extras):
            o = Options(block, se, groups, dropout, stem, *chosen)
            if stem_problem(o) is None:
                out.append(o)
    return out


def _first_layer(space: Space, o: Options, chans: tuple[int, ...]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Layer 1's (channels, skip kernels) groups: its skip kernel matters only where the stem's width differs
    from C_1; a stem as wide as C_1 is the stem=null candidate when the space lists null."""
    s = o.stem_channels
    if s is None:
        return [(chans, (1,))]
    same = () if None in space.stem_channels else tuple(c for c in chans if c == s)
    other = tuple(c for c in chans if c != s)
    skips = space.skip_kernels[0] if FAMILIES[o.block].residual else (1,)
    return [(c, k) for c, k in ((same, (1,)), (other, skips)) if c]


def _channel_sets(space: Space, o: Options, n: int) -> list[list[tuple[int, ...]]]:
    """Per-layer valid channel choices: one set for free channels; one per tied width whose every layer is valid
    (a tied width is one choice for all layers, so its product over layers must not cross widths)."""
    valid = [valid_channels(space, o, i) for i in range(n)]
    if not space.width:
        return [valid]
    tied = [[(c,) for c in space.tied(w, n)] for w in space.width]
    return [t for t in tied if all(c[0] in v for c, v in zip(t, valid))]


def static_combos(space: Space):
    """Every Combo of the space: N, pool and options, with their valid per-layer channel lists."""
    options = space_options(space)
    for n in space.layers:
        pools = [valid_pools(space, n, o) for o in options]  # once per option, not once per (pool, option)
        for pool in space.pool:  # in the file's order, then the options': the order a sampled survey draws in
            for o in (o for o, fits in zip(options, pools) if pool in fits):
                later = [space.skip_kernels[i] if FAMILIES[o.block].residual else (1,) for i in range(1, n)]
                for chans in _channel_sets(space, o, n):
                    for first, skips in _first_layer(space, o, chans[0]):
                        yield Combo(n, pool, o, (first, *chans[1:]), (skips, *later))


def combo_size(space: Space, combo: Combo) -> int:
    size = 1
    for i in range(combo.n):
        size *= len(space.blocks[i]) * len(combo.chans[i]) * len(space.kernels[i]) * len(combo.skips[i])
    return size


def space_size(space: Space) -> int:
    """Number of distinct valid architectures the space can produce."""
    return sum(combo_size(space, c) for c in static_combos(space))
