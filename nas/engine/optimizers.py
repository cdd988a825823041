"""Optimisers: a registry of records, each a torch.optim class and which recipe fields it reads.

An optimiser is one `register_optimizer(Optimizer(...))` entry; the recipe validates its name and its
cross-field rules (nesterov, what momentum means) against the record, and tests/test_train.py trains and
resumes every entry. torch loads only when one is built: a recipe is checked where torch is not imported.

On CUDA each optimiser steps every parameter in one fused kernel (`fused`) or a few multi-tensor ones
(foreach): the per-parameter loop launches several kernels per tensor, and a small network at 32x32 is
launch-bound. On CPU there is no launch to save, so the plain loop stays: the results the tests pin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nas.errors import NasError
from nas.registry import Registry

if TYPE_CHECKING:
    import torch

MOMENTUM_MEANINGS = ("momentum", "beta1", None)  # SGD's momentum, the Adam family's first beta, unread


@dataclass(frozen=True)
class Optimizer:
    name: str
    torch_class: str  # torch.optim.<this>
    momentum: str | None = None  # what the recipe's `momentum` is to it: one of MOMENTUM_MEANINGS
    nesterov: bool = False  # takes the recipe's nesterov=True
    always_nesterov: bool = False  # Nesterov momentum whatever the recipe says: plain and Nesterov SGD on one axis
    fused: bool = False  # torch has a fused CUDA kernel for it in every version nas supports (>= 2.5)

    def implementation(self, device_type: str) -> dict[str, bool]:
        """The torch class's implementation flags on this device type: fused, else foreach on CUDA; torch's
        default elsewhere."""
        if device_type != "cuda":
            return {}
        return {"fused": True} if self.fused else {"foreach": True}

    def build(self, params: Any, lr: float, momentum: float, nesterov: bool, weight_decay: float,
              device_type: str = "cpu") -> torch.optim.Optimizer:
        import torch

        kwargs: dict[str, Any] = {"weight_decay": weight_decay, **self.implementation(device_type)}
        if self.momentum == "momentum":
            kwargs["momentum"] = momentum
        elif self.momentum == "beta1":
            kwargs["betas"] = (momentum, 0.999)
        if self.nesterov or self.always_nesterov:
            kwargs["nesterov"] = nesterov or self.always_nesterov
        return getattr(torch.optim, self.torch_class)(params, lr, **kwargs)


OPTIMIZERS: Registry[Optimizer] = Registry("optimizer", "optimizer")


def register_optimizer(o: Optimizer) -> Optimizer:
    if o.momentum not in MOMENTUM_MEANINGS:
        raise NasError(f"optimizer {o.name!r}: momentum={o.momentum!r} is not one of {MOMENTUM_MEANINGS}")
    return OPTIMIZERS.add(o.name, o)


# Adagrad's fused CUDA kernel is newer than torch 2.5: it takes foreach. "sgd-nesterov" is SGD with Nesterov momentum
# as an optimizer of its own, so a space's `optimizer: [sgd, sgd-nesterov, adam]` compares all three on one axis.
for _o in (Optimizer("sgd", "SGD", "momentum", nesterov=True, fused=True),
           Optimizer("sgd-nesterov", "SGD", "momentum", always_nesterov=True, fused=True),
           Optimizer("adam", "Adam", "beta1", fused=True),
           Optimizer("adamw", "AdamW", "beta1", fused=True), Optimizer("adagrad", "Adagrad"),
           Optimizer("adamax", "Adamax", "beta1"), Optimizer("adadelta", "Adadelta"),
           Optimizer("rmsprop", "RMSprop")):
    register_optimizer(_o)
