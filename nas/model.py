"""Build a torch ResNet from an `Arch`; every field read here is counted in nas/counting.py."""

from __future__ import annotations

import torch
from torch import nn

from nas.arch import BOTTLENECK_DIVISOR, Arch
from nas.errors import NasError

INITS = ("kaiming", "xavier")  # the schemes init_weights implements; Recipe.init is checked against these


def conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """conv(k, 'same' padding, no bias) + BN: the unit every block is made of."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, ratio: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(c, c // ratio), nn.ReLU(inplace=True), nn.Linear(c // ratio, c), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return x * self.fc(x.mean((2, 3)))[:, :, None, None]


class Block(nn.Module):
    """Residual block: basic (KxK, KxK) or bottleneck (1x1, KxK, 1x1), optional SE, then add + ReLU."""

    def __init__(self, arch: Arch, c_in: int, c_out: int, kernel: int, skip: int, stride: int) -> None:
        super().__init__()
        g, drop = arch.groups, nn.Dropout(arch.dropout) if arch.dropout else nn.Identity()
        if arch.block == "basic":
            self.body = nn.Sequential(conv_bn(c_in, c_out, kernel, stride, g), nn.ReLU(inplace=True), drop,
                                      conv_bn(c_out, c_out, kernel, 1, g))
        else:
            mid = c_out // BOTTLENECK_DIVISOR
            self.body = nn.Sequential(conv_bn(c_in, mid, 1), nn.ReLU(inplace=True),
                                      conv_bn(mid, mid, kernel, stride, g), nn.ReLU(inplace=True), drop,
                                      conv_bn(mid, c_out, 1))
        if arch.se_ratio:
            self.body.append(SqueezeExcite(c_out, arch.se_ratio))
        projection = stride != 1 or c_in != c_out
        self.shortcut = conv_bn(c_in, c_out, skip, stride) if projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.arch = arch
        c = arch.channels
        self.stem = nn.Sequential(conv_bn(arch.in_channels, c[0], 3), nn.ReLU(inplace=True))
        layers = []
        for i, (b, c_out, k, sk) in enumerate(zip(arch.blocks, c, arch.kernels, arch.skip_kernels)):
            c_in = c[i - 1] if i else c[0]
            stride = 2 if i else 1
            layers.append(nn.Sequential(*(Block(arch, c_in if j == 0 else c_out, c_out, k, sk, stride if j == 0 else 1)
                                          for j in range(b))))
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d(arch.pool_size)
        side = arch.feature_sizes[-1] // arch.pool_size
        self.head = nn.Linear(c[-1] * side * side, arch.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_channels, S, S) -> (B, classes)
        return self.head(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def init_weights(model: nn.Module, scheme: str = "kaiming") -> None:
    """Kaiming (fan_out, ReLU) or Xavier for convs; Xavier for the linear head; BN at (1, 0)."""
    if scheme not in INITS:
        raise NasError(f"init={scheme!r} is unknown: choose one of {', '.join(INITS)}")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(m.weight)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_model(arch: Arch, init: str = "kaiming", seed: int | None = None) -> ResNet:
    """`seed` fixes the initial weights, so a score depends on the candidate and recipe alone,
    not on whatever the global RNG went through before."""
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
