"""Build a torch network from an `Arch`: nas/arch/layout.py says which operations, in which order; this
module only knows how to make each operation a module, as nas/arch/counting.py only knows what it costs.

The module tree of basic and bottleneck networks is the one they always had (conv and BN paired as
`conv_bn`, a Dropout placeholder at p=0), so weights saved before the other families still load."""

from __future__ import annotations

import torch
from torch import nn

from nas.arch import Arch
from nas.arch.bounds import check_buildable
from nas.arch.layout import arch_stages
from nas.arch.ops import (
    SE,
    Act,
    Block,
    Conv,
    Drop,
    Linear,
    MaxPool,
    Norm,
    Op,
    Pool,
    Res2,
)
from nas.engine.recipe import INITS
from nas.errors import NasError


def conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """conv(k, 'same' padding, no bias) + BN: the unit most blocks are made of."""
    return nn.Sequential(_conv(Conv(c_in, c_out, k, 0, stride, groups)), nn.BatchNorm2d(c_out))


def _conv(op: Conv) -> nn.Conv2d:
    return nn.Conv2d(op.c_in, op.c_out, op.k, op.stride, 0 if op.valid else op.k // 2, groups=op.groups, bias=op.bias)


class Scaled(nn.Linear):
    """The head with its output multiplied by a constant (airbench's 1/9: small initial logits)."""

    def __init__(self, op: Linear) -> None:
        super().__init__(op.c_in, op.c_out, bias=op.bias)
        self.scale = op.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.scale


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, ratio: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(c, c // ratio), nn.ReLU(inplace=True), nn.Linear(c // ratio, c), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return x * self.fc(x.mean((2, 3)))[:, :, None, None]


class Res2Split(nn.Module):
    """Res2Net's hierarchical split (nas.arch.layout.Res2), as the official code's Bottle2neck runs it."""

    def __init__(self, op: Res2) -> None:
        super().__init__()
        self.width, self.stage = op.width, op.stage
        self.act = torch.relu if op.act == "relu" else nn.functional.gelu
        self.convs = nn.ModuleList(conv_bn(op.width, op.width, op.k, op.stride, op.groups) for _ in range(op.scale - 1))
        self.pool = nn.AvgPool2d(3, op.stride, 1) if op.stage else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, scale * width, H, W) -> (B, scale * width, H', W')
        splits = torch.split(x, self.width, 1)
        outs: list[torch.Tensor] = []
        for i, conv in enumerate(self.convs):
            y = splits[i] if i == 0 or self.stage else outs[-1] + splits[i]
            outs.append(self.act(conv(y)))
        return torch.cat([*outs, self.pool(splits[-1])], 1)


def _module(op: Op) -> nn.Module:
    if isinstance(op, Conv):
        return _conv(op)
    if isinstance(op, Norm):
        return nn.BatchNorm2d(op.c)
    makers = {Act: lambda: nn.ReLU(inplace=True) if op.kind == "relu" else nn.GELU(),
              Drop: lambda: nn.Dropout(op.p) if op.p else nn.Identity(),
              SE: lambda: SqueezeExcite(op.c, op.ratio), MaxPool: lambda: nn.MaxPool2d(2, 2, ceil_mode=op.ceil),
              Res2: lambda: Res2Split(op), Pool: lambda: (nn.AvgPool2d if op.kind == "avg" else nn.MaxPool2d)(op.k),
              Linear: lambda: nn.Linear(op.c_in, op.c_out, op.bias) if op.scale == 1 else Scaled(op)}
    return makers[type(op)]()


def _modules(ops: tuple[Op, ...]) -> list[nn.Module]:
    """One module per operation, a conv followed by its BN paired as `conv_bn` (the module tree's layout)."""
    out: list[nn.Module] = []
    for op in ops:
        if isinstance(op, Norm) and out and isinstance(out[-1], nn.Conv2d):
            out[-1] = nn.Sequential(out[-1], _module(op))
        else:
            out.append(_module(op))
    return out


def _unit(ops: tuple[Op, ...]) -> nn.Module:
    """The shortcut: its conv_bn (or bare conv) itself, as the module tree always had it."""
    modules = _modules(ops)
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)


class ResBlock(nn.Module):
    """One block of any family (nas.arch.layout.Block): pre, body, shortcut, add, post."""

    def __init__(self, spec: Block) -> None:
        super().__init__()
        self.residual, self.project = spec.residual, bool(spec.project)
        self.pre = nn.Sequential(*_modules(spec.pre)) if spec.pre else nn.Identity()
        self.body = nn.Sequential(*_modules(spec.body))
        self.shortcut = _unit(spec.shortcut) if self.residual and self.project else nn.Identity()
        self.post = nn.Sequential(*_modules(spec.post)) if spec.post else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pre(x)
        y = self.body(a)
        if not self.residual:
            return y
        return self.post(y + (self.shortcut(a) if self.project else x))


class ResNet(nn.Module):
    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.arch = arch
        stem, *layers, head = arch_stages(arch)
        self.stem = nn.Sequential(*_modules(stem.first.body))
        self.layers = nn.Sequential(*(nn.Sequential(ResBlock(s.first), *(ResBlock(s.rest) for _ in range(s.count - 1)))
                                      for s in layers))
        *final, pool, linear = head.first.body
        self.final = nn.Sequential(*_modules(tuple(final))) if final else nn.Identity()  # pre-activation's BN-ReLU
        self.pool = _module(pool)
        self.head = _module(linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_channels, S, S) -> (B, classes)
        return self.head(torch.flatten(self.pool(self.final(self.layers(self.stem(x)))), 1))


def init_weights(model: nn.Module, scheme: str = "kaiming") -> None:
    """Convs: Kaiming (fan_out, ReLU), Xavier, or dirac: PyTorch's default with each conv's first C_in filters
    set to the identity (airbench: a deep plain net starts close to a shallow one, 21 -> 18 epochs to 94%).
    Xavier for the linear head; biases 0; BN at (1, 0)."""
    if scheme not in INITS:
        raise NasError(f"init={scheme!r} is unknown: choose one of {', '.join(INITS)}")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif scheme == "xavier":
                nn.init.xavier_uniform_(m.weight)
            else:
                with torch.no_grad():
                    nn.init.dirac_(m.weight[:m.weight.shape[1]])
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_model(arch: Arch, init: str = "kaiming", seed: int | None = None) -> ResNet:
    """`seed` fixes the initial weights, so a score depends on the candidate and recipe alone,
    not on whatever the global RNG went through before."""
    check_buildable(arch)
    if seed is not None:
        torch.manual_seed(seed)
    model = ResNet(arch)
    init_weights(model, init)
    return model


def build_for_data(arch: Arch, classes: int, init: str = "kaiming", seed: int | None = None) -> ResNet:
    """build_model for data with `classes` classes: a mismatch is the user's one-line error, not a
    traceback inside the loss."""
    if arch.num_classes != classes:
        raise NasError(f"the architecture has {arch.num_classes} classes but the data has {classes}; "
                       f"pass --classes {classes} (or set num_classes in the architecture file)")
    return build_model(arch, init, seed)
