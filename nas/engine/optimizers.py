"""Optimisers: a registry of records, each a torch.optim class and which recipe fields it reads.

An optimiser is one `register_optimizer(Optimizer(...))` entry; the recipe validates its name and its
cross-field rules (nesterov, what momentum means) against the record, and tests/test_train.py trains and
resumes every entry. torch loads only when one is built: a recipe is checked where torch is not imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MOMENTUM_MEANINGS = ("momentum", "beta1", None)  # SGD's momentum, the Adam family's first beta, unread


@dataclass(frozen=True)
class Optimizer:
    name: str
    torch_class: str  # torch.optim.<this>
    momentum: str | None = None  # what the recipe's `momentum` is to it: one of MOMENTUM_MEANINGS
    nesterov: bool = False  # takes nesterov=True

    def build(self, params: Any, lr: float, momentum: float, nesterov: bool, weight_decay: float) -> torch.optim.Optimizer:
        import torch

        kwargs: dict[str, Any] = {"weight_decay": weight_decay}
        if self.momentum == "momentum":
            kwargs["momentum"] = momentum
        elif self.momentum == "beta1":
            kwargs["betas"] = (momentum, 0.999)
        if self.nesterov:
            kwargs["nesterov"] = nesterov
        return getattr(torch.optim, self.torch_class)(params, lr, **kwargs)


OPTIMIZERS: dict[str, Optimizer] = {}


def register_optimizer(o: Optimizer) -> Optimizer:
    if o.name in OPTIMIZERS or o.momentum not in MOMENTUM_MEANINGS:
        raise ValueError(f"optimizer {o.name!r}: registered already, or momentum={o.momentum!r} is not one of "
                         f"{MOMENTUM_MEANINGS}")
    OPTIMIZERS[o.name] = o
    return o


for _o in (Optimizer("sgd", "SGD", "momentum", nesterov=True), Optimizer("adam", "Adam", "beta1"),
           Optimizer("adamw", "AdamW", "beta1"), Optimizer("adagrad", "Adagrad"),
           Optimizer("adamax", "Adamax", "beta1"), Optimizer("adadelta", "Adadelta"),
           Optimizer("rmsprop", "RMSprop")):
    register_optimizer(_o)
