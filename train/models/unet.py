"""The U-Net of Sadre et al. (2021), after Ronneberger et al. (2015).

Padded 3x3 convolutions with ReLU (optionally batch-normalised), 2x2 max-pooling down, 2x2
transposed convolutions ("up-convolutions") up, skip connections by concatenation and a 1x1 head
giving 2 class logits (0 = not contamination, 1 = contamination). `depth` counts the down blocks
including the bottom one: the paper's best "7 blocks" net is depth 4 with 32 features in the first
block; each block below doubles the width.

Input: (N, 1, H, W) preprocessed micrographs, H and W divisible by 2**(depth-1).
Output: (N, 2, H, W) logits.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

ARCHITECTURE_KEYS = ("depth", "features", "batch_norm", "in_channels", "classes")
DEFAULTS = {"depth": 4, "features": 32, "batch_norm": False, "in_channels": 1, "classes": 2}


def conv_block(in_ch: int, out_ch: int, batch_norm: bool) -> nn.Sequential:
    """Two padded 3x3 convolutions, each followed by (batch norm and) ReLU."""
    layers: list[nn.Module] = []
    for c_in in (in_ch, out_ch):
        layers.append(nn.Conv2d(c_in, out_ch, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    def __init__(self, depth: int = 4, features: int = 32, batch_norm: bool = False,
                 in_channels: int = 1, classes: int = 2):
        super().__init__()
        if depth < 1 or features < 1:
            raise ValueError(f"U-Net needs depth >= 1 and features >= 1, got {depth}, {features}")
        self.depth = depth
        widths = [features * 2**i for i in range(depth)]
        self.down = nn.ModuleList()
        c_in = in_channels
        for w in widths:
            self.down.append(conv_block(c_in, w, batch_norm))
            c_in = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(2 * w, w, 2, stride=2))
            self.merge.append(conv_block(2 * w, w, batch_norm))
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)


def architecture(config: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture keys of a model config, defaults filled in (stored in checkpoints)."""
    unknown = set(config) - set(ARCHITECTURE_KEYS)
    if unknown:
        raise ValueError(f"unknown model config keys {sorted(unknown)}; allowed: {ARCHITECTURE_KEYS}")
    return {key: config.get(key, DEFAULTS[key]) for key in ARCHITECTURE_KEYS}


def build_model(config: Mapping[str, Any]) -> UNet:
    """A U-Net from a plain-dict config such as {"depth": 4, "features": 32, "batch_norm": False}."""
    arch = architecture(config)
    return UNet(int(arch["depth"]), int(arch["features"]), bool(arch["batch_norm"]),
                int(arch["in_channels"]), int(arch["classes"]))
