"""DeepLabV3+ head (SPEC §3), the paper's best segmentor.

ASPP with 256 channels (1x1; 3x3 at dilations 6/12/18; image pooling) -> ReLU + dropout 0.5 ->
bilinear upsample to stride 4 -> concatenate with layer1 reduced to 48 channels -> two 3x3
256-channel convs (BN + ReLU, dropout 0.5 then 0.1, as the jfzhang95 reference decoder) -> 1x1
classifier.
Our backbone is OS 8, so the ASPP runs on stride-8 features and layer1 is stride 4: the logits are
at stride 4. The ASPP block is the one of the DeepLabV2 head (models/deeplabv2.py).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.deeplabv2 import ASPP
from models.resnet import kaiming_init, sequential_conv_bn_pairs

ASPP_CHANNELS = 256
LOW_LEVEL_CHANNELS = 48


def _conv_bn_relu(cin: int, cout: int, kernel_size: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class DeepLabV3pHead(nn.Module):
    """ASPP + decoder; `forward(x, low_level) -> logits` at the resolution of `low_level`."""

    output_stride = 4
    RATES = (6, 12, 18)
    logits_conv = "classifier"  # the conv whose output channels are the classes (models/arch.py)

    def __init__(self, in_channels: int, low_level_channels: int, num_classes: int):
        super().__init__()
        self.aspp = ASPP(in_channels, ASPP_CHANNELS, self.RATES)
        self.aspp_dropout = nn.Dropout(0.5)
        self.reduce = nn.Sequential(*_conv_bn_relu(low_level_channels, LOW_LEVEL_CHANNELS, 1))
        self.fuse = nn.Sequential(
            *_conv_bn_relu(ASPP_CHANNELS + LOW_LEVEL_CHANNELS, 256, 3), nn.Dropout(0.5),
            *_conv_bn_relu(256, 256, 3), nn.Dropout(0.1))
        self.classifier = nn.Conv2d(256, num_classes, 1)
        kaiming_init(self)

    def forward(self, x: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        x = self.aspp_dropout(F.relu(self.aspp(x)))
        low = self.reduce(low_level)
        # Bilinear with aligned corners, as the reference decoder.
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=True)
        return self.classifier(self.fuse(torch.cat([x, low], dim=1)))

    def conv_bn_pairs(self) -> Iterator[tuple[str, str]]:
        """The decoder's conv -> BN pairs (the ASPP declares its own; the folding protocol:
        models.resnet.DilatedResNet.conv_bn_pairs)."""
        yield from sequential_conv_bn_pairs("reduce", self.reduce)
        yield from sequential_conv_bn_pairs("fuse", self.fuse)
