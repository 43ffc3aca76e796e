"""The authors' "DeepLabV2" head (SPEC §3) and the ASPP block it shares with DeepLabV3+.

What the authors call DeepLabV2 (and their released R50 checkpoint uses) is a DeepLabV3-style ASPP
whose branches already have `num_classes` channels: five parallel branches with BN+ReLU — a 1x1
conv, 3x3 convs at dilations 12, 18, 24, and image pooling (global average pool, 1x1 conv, BN, ReLU,
upsample) — concatenated, then a 1x1 conv (5C -> C, no bias) and BN, whose output is the logits.
Key names follow the ASPP of jfzhang95/pytorch-deeplab-xception, as in the checkpoint:
`aspp1..aspp4.{atrous_conv,bn}`, `global_avg_pool.{1,2}`, `conv1`, `bn1`; convs have no bias.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn

from models.resnet import kaiming_init, sequential_conv_bn_pairs


class _ASPPBranch(nn.Module):
    """Conv (1x1 when `dilation` is None, else 3x3 at that dilation; no bias) + BN + ReLU."""

    def __init__(self, cin: int, cout: int, dilation: int | None):
        super().__init__()
        if dilation is None:
            self.atrous_conv = nn.Conv2d(cin, cout, 1, bias=False)
        else:
            self.atrous_conv = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation,
                                         bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.atrous_conv(x)))

    def conv_bn_pairs(self) -> Iterator[tuple[str, str]]:
        """atrous_conv -> bn (the folding protocol: models.resnet.DilatedResNet.conv_bn_pairs)."""
        yield "atrous_conv", "bn"


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3, image pooling; fused by 1x1 + BN.

    Returns the fused BN output without a ReLU (the DeepLabV2 head uses it as logits; DeepLabV3+
    adds ReLU and dropout). Note: image pooling has a BN on a 1x1 map, so training needs batch > 1.
    """

    def __init__(self, cin: int, cout: int, rates: Sequence[int]):
        super().__init__()
        if len(rates) != 3:
            raise ValueError(f"ASPP takes three dilation rates, got {tuple(rates)}")
        self.aspp1 = _ASPPBranch(cin, cout, None)
        self.aspp2 = _ASPPBranch(cin, cout, rates[0])
        self.aspp3 = _ASPPBranch(cin, cout, rates[1])
        self.aspp4 = _ASPPBranch(cin, cout, rates[2])
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.conv1 = nn.Conv2d(5 * cout, cout, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.global_avg_pool(x).expand(-1, -1, *x.shape[-2:])  # upsampling a 1x1 map
        branches = [self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled]
        return self.bn1(self.conv1(torch.cat(branches, dim=1)))

    def conv_bn_pairs(self) -> Iterator[tuple[str, str]]:
        """Image pooling's conv -> BN and the fusing conv1 -> bn1 (the branches declare theirs)."""
        yield from sequential_conv_bn_pairs("global_avg_pool", self.global_avg_pool)
        yield "conv1", "bn1"


class DeepLabV2Head(ASPP):
    """The authors' DeepLabV2 head: ASPP with `num_classes` channels, rates 12/18/24; stride 8."""

    output_stride = 8
    RATES = (12, 18, 24)
    logits_conv = "conv1"  # the conv whose output channels are the classes (models/arch.py)

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__(in_channels, num_classes, self.RATES)

    def forward(self, x: torch.Tensor, low_level: torch.Tensor | None = None) -> torch.Tensor:
        """Logits at the resolution of `x` (layer4); `low_level` is unused by this head."""
        return super().forward(x)

