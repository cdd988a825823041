"""The training recipe: every knob the reference reports turned, validated once, here.

Defaults are the reference reports' full recipe: SGD 0.1 momentum 0.9, weight decay
5e-4, batch 128, cosine over 200 epochs, crop 32 with 4-pixel padding, horizontal flip.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from nas.engine.optimizers import OPTIMIZERS
from nas.engine.schedules import SCHEDULES
from nas.errors import NasError, shown

INITS = ("kaiming", "xavier", "dirac")  # the schemes nas.arch.model.init_weights implements
LOOKAHEAD_SCHEDULES = ("constant", "airbench")  # alpha 0.5 on the weights; airbench's rising EMA, BN statistics too
PAD_MODES = ("zeros", "reflect")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Fields whose valid values depend on each other (the cross-field rules of Recipe.__post_init__):
# a space file's `train:` knobs on these are checked in every combination, the others one by one.
COUPLED = ("optimizer", "momentum", "nesterov", "epochs", "warmup_epochs")


@dataclass(frozen=True)
class Recipe:
    """How to train one candidate; frozen so a search trial cannot drift from what it logged."""

    epochs: int = 200
    batch_size: int = 128  # images per optimiser step
    optimizer: str = "sgd"  # a name in nas.engine.optimizers (sgd sgd-nesterov adam adamw adagrad adamax adadelta rmsprop)
    lr: float = 0.1  # peak learning rate (after warm-up)
    momentum: float = 0.9  # SGD (and sgd-nesterov) momentum; beta1 for adam, adamw, adamax; unused by adagrad, adadelta, rmsprop
    nesterov: bool = False  # SGD only
    weight_decay: float = 5e-4  # L2 on every parameter, as the reports did
    schedule: str = "cosine"  # a name in nas.engine.schedules (cosine onecycle step plateau exponential cyclic ...)
    warmup_epochs: float = 0.0  # linear warm-up from 0 to lr, then the schedule
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    lookahead: bool = False  # Lookahead(k=5, alpha=0.5) around the optimiser
    init: str = "kaiming"  # kaiming xavier; applied by nas.arch.model.build_model
    crop_padding: int = 4  # pixels padded on each side before the random crop; 0 = no crop
    pad_mode: str = "zeros"  # zeros reflect
    flip: bool = True  # random horizontal flip, p = 0.5
    rotation: float = 0.0  # max degrees of random rotation; 0 = off
    cutout: int = 0  # side of the square erased per image, pixels; 0 = off
    precision: str = "auto"  # auto fp32 bf16 fp16; auto = bf16 (or fp16) on CUDA, bf16 on CPUs with AMX or AVX512_BF16, else fp32
    channels_last: bool = True
    compile: bool = False  # torch.compile the model
    keep_best: bool = False  # end with the weights of the best validation point, not the last (needs a validation split)
    tta: bool = False  # score every evaluation on the image and its mirror, averaged (flip test-time augmentation)
    whiten: bool = False  # stem conv set from the training images' patch whitening and frozen (airbench)
    tta_translate: bool = False  # with tta: also average the mirror pair shifted 1 pixel up-left and down-right (airbench)
    alternate_flip: bool = False  # flip a random half in epoch 1, then mirror every image every other epoch (airbench)
    bn_weight_frozen: bool = False  # BatchNorm scales stay 1 (still parameters: the count is unchanged) (airbench)
    bias_lr_scale: float = 1.0  # BatchNorm biases train at lr x this, weight decay / this (airbench: 64)
    bn_momentum: float = 0.1  # BatchNorm running-statistics momentum, PyTorch's convention (airbench: 0.4)
    lookahead_schedule: str = "constant"  # constant airbench; with lookahead
    seed: int = 0
    train_subset: int = 0  # train on a stratified subset of this many images; 0 = all
    evals_per_epoch: int = 1  # >1 gives sub-epoch validation points for pruning on CPU

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        _require(self.epochs >= 1, "epochs", self.epochs, "must be >= 1")
        _require(self.batch_size >= 2, "batch_size", self.batch_size, "must be >= 2 (BatchNorm needs 2 images)")
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _require(math.isfinite(self.lr) and self.lr > 0, "lr", self.lr, "must be finite and > 0")
        _require(0 <= self.momentum < 1, "momentum", self.momentum, "must be in [0, 1)")
        if self.nesterov:
            takers = [o.name for o in OPTIMIZERS.values() if o.nesterov]
            _require(OPTIMIZERS[self.optimizer].nesterov, "nesterov", self.nesterov,
                     f"applies only to optimizer {' or '.join(map(repr, takers))} (got optimizer={self.optimizer!r}); "
                     "set nesterov false")
            _require(self.momentum > 0, "nesterov", self.nesterov, "needs momentum > 0; set momentum, e.g. 0.9")
        if OPTIMIZERS[self.optimizer].always_nesterov:
            _require(self.momentum > 0, "momentum", self.momentum, f"must be > 0 for optimizer {self.optimizer!r} "
                     "(Nesterov momentum); set momentum, e.g. 0.9, or optimizer 'sgd'")
        _require(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", self.weight_decay,
                 "must be finite and >= 0")
        _choice("schedule", self.schedule, SCHEDULES)
        _require(0 <= self.warmup_epochs < self.epochs, "warmup_epochs", self.warmup_epochs,
                 f"must be >= 0 and < epochs ({self.epochs})")
        _require(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "must be in [0, 1)")
        _require(math.isfinite(self.grad_clip) and self.grad_clip >= 0, "grad_clip", self.grad_clip,
                 "must be >= 0 (0 turns clipping off)")
        _choice("init", self.init, INITS)
        _require(0 <= self.crop_padding <= 16, "crop_padding", self.crop_padding, "must be in [0, 16] pixels")
        _choice("pad_mode", self.pad_mode, PAD_MODES)
        _require(0 <= self.rotation <= 180, "rotation", self.rotation, "must be in [0, 180] degrees")
        _require(self.cutout >= 0, "cutout", self.cutout, "must be >= 0 pixels (0 turns cutout off)")
        _choice("precision", self.precision, PRECISIONS)
        _require(self.seed >= 0, "seed", self.seed, "must be >= 0")
        _require(self.train_subset >= 0, "train_subset", self.train_subset, "must be >= 0 (0 = whole split)")
        _require(self.evals_per_epoch >= 1, "evals_per_epoch", self.evals_per_epoch, "must be >= 1")
        _require(not self.tta_translate or self.tta, "tta_translate", self.tta_translate,
                 "adds views to flip TTA: set tta true as well")
        _require(not self.alternate_flip or self.flip, "alternate_flip", self.alternate_flip,
                 "changes how images are flipped: set flip true as well")
        _require(math.isfinite(self.bias_lr_scale) and self.bias_lr_scale > 0, "bias_lr_scale", self.bias_lr_scale,
                 "must be > 0 (1 = the same lr as every other parameter)")
        _require(0 < self.bn_momentum <= 1, "bn_momentum", self.bn_momentum, "must be in (0, 1] (PyTorch's convention)")
        _choice("lookahead_schedule", self.lookahead_schedule, LOOKAHEAD_SCHEDULES)

    def updated(self, overrides: Mapping[str, Any]) -> Recipe:
        """This recipe with `overrides` applied (keys and values checked as in from_dict).

        nesterov=True is a refinement of SGD with momentum: where the overrides move to another
        optimizer or to momentum 0 without naming nesterov, it is dropped, so a base recipe's SGD
        setting does not abort an adam trial; overrides that ask for nesterov there still raise.
        """
        recipe = Recipe.from_dict({**self.to_dict(), **overrides, "nesterov": False})
        nesterov = overrides.get("nesterov", self.nesterov and OPTIMIZERS[recipe.optimizer].nesterov and recipe.momentum > 0)
        return dataclasses.replace(recipe, nesterov=nesterov)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field, for YAML/JSON next to results."""
        return dataclasses.asdict(self)

    @property
    def tta_level(self) -> int:
        """Test-time augmentation as nas.engine.train.evaluate takes it: 0 none, 1 flip, 2 flip and translate."""
        return int(self.tta) + int(self.tta and self.tta_translate)

    def identity(self) -> dict[str, Any]:
        """What a recipe's hash is taken of: every field, less those added after studies stored hashes, while
        at their defaults, so a recipe stored before them keeps its hash (its runs, its duplicates)."""
        return {k: v for k, v in self.to_dict().items() if k not in NEW_DEFAULTS or v != NEW_DEFAULTS[k]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """Inverse of to_dict; rejects unknown keys so a typo never silently uses a default."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise NasError(f"unknown recipe key(s) {shown(unknown)}; valid keys: {', '.join(valid)}")
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        return cls(**{k: _coerce(k, v, types[k]) for k, v in data.items()})


def _coerce(name: str, value: Any, annotation: str) -> Any:
    """Accept what YAML/JSON produce for a float field: ints, and strings such as '5e-4' (YAML 1.1)."""
    if annotation == "float" and not isinstance(value, bool):
        if isinstance(value, int):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise NasError(f"recipe field {name}={shown(value)} must be a number, e.g. {name}: 0.1") from None
    return value


def _check_type(name: str, value: Any, annotation: str) -> None:
    expected = {"int": int, "float": (int, float), "bool": bool, "str": str}[annotation]
    if isinstance(value, bool) and annotation != "bool" or not isinstance(value, expected):
        raise NasError(f"recipe field {name}={shown(value)} must be of type {annotation}")


def _require(ok: bool, name: str, value: Any, rule: str) -> None:
    if not ok:
        raise NasError(f"recipe field {name}={shown(value)} {rule}")


def _choice(name: str, value: str, choices: Iterable[str]) -> None:
    _require(value in choices, name, value, f"must be one of: {', '.join(choices)}")


NEW_DEFAULTS = {"tta_translate": False, "alternate_flip": False, "bn_weight_frozen": False, "bias_lr_scale": 1.0,
                "bn_momentum": 0.1, "lookahead_schedule": "constant"}  # left out of identity() at these values

# airbench94's recipe (its source's hyperparameters, for a mean loss): Nesterov SGD at batch 1024 with lr 11.5 and
# weight decay 0.0153 per 1024 examples at momentum 0.85 (= lr 1.5, decay 0.00133 here), a triangular schedule,
# label smoothing 0.2, BatchNorm scales frozen and biases at 64x the lr, BN momentum 0.4, dirac init, a whitened
# patch stem, airbench's lookahead EMA, translate-by-2 with reflection, alternating flip, flip and translate TTA;
# 10 epochs (airbench: 9.9).
AIRBENCH = Recipe(epochs=10, batch_size=1024, lr=1.5, momentum=0.85, nesterov=True, weight_decay=0.0153 / 11.5,
                  schedule="triangular", label_smoothing=0.2, lookahead=True, lookahead_schedule="airbench",
                  init="dirac", crop_padding=2, pad_mode="reflect", alternate_flip=True, tta=True, tta_translate=True,
                  whiten=True, bn_weight_frozen=True, bias_lr_scale=64.0, bn_momentum=0.4)

# Named starting points for full training; flags and --set override any field.
PROTOCOLS: dict[str, Recipe] = {
    # the seed reports' recipe: SGD 0.1 momentum 0.9, wd 5e-4, cosine, batch 128, 200 epochs
    "reference": Recipe(),
    # few epochs, chosen by measurement (README, Training protocols): airbench's recipe whole. At 10 epochs it
    # beat the earlier fast recipe (one-cycle Nesterov at batch 256, lr 0.4, Lookahead, flip TTA, whitening) on a
    # ResNet too, 90.25% against 89.22% test for [1,1,1,1] x [32..256]; each of its tricks is ablated on
    # airbench94 in benchmarks/ablation.py
    "fast": AIRBENCH,
    # the same recipe under the anchor's name, for its networks (examples/airbench94.json, airbench95.json)
    "airbench": AIRBENCH,
}


def protocol(name: str) -> Recipe:
    """The recipe a protocol name stands for; an unknown name is one line naming the choices."""
    if name not in PROTOCOLS:
        raise NasError(f"--protocol={name!r} is unknown: choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key=value` strings (the CLI's --set) -> dict; values read as YAML scalars (0.1, true, onecycle), by the
    same bounded reader as space files, so a value such as `[*a, *a]` can neither blow up nor fill a message."""
    from nas.yamlfile import load_yaml

    valid = [f.name for f in dataclasses.fields(Recipe)]
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in valid:
            raise NasError(f"--set {shown(item)} must be key=value with a recipe field as key (e.g. --set cutout=8); "
                           f"valid keys: {', '.join(valid)}")
        out[key] = load_yaml(text, f"--set {shown(item)}")
        if isinstance(out[key], (list, dict)):
            raise NasError(f"--set {shown(item)}: the value must be a plain number, word or true/false")
    return out
