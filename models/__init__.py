"""Segmentation networks of CDSP (SPEC §3-§4): dilated ResNet + DeepLab head (+ LoRM), a factory.

    model = build_model("deeplabv2", 50, num_classes=21, lorm=True, pretrained="imagenet")
    out = model(image, fg_mask)   # {"out": logits at stride model.output_stride,
                                  #  "feat": layer4, "feat_rect": LoRM(layer4)}  (training)
    out = model(image)            # {"out": logits}                              (inference)

State dict keys are the authors' (their released R50 DeepLabV2 checkpoint loads with strict=True):
conv1.*, bn1.*, layer1..layer4.* (backbone), layer_pred0.* (head), layer_camatt.* (LoRM).
"""
from __future__ import annotations

import os

import torch

from models.deeplabv2 import DeepLabV2Head
from models.deeplabv3p import DeepLabV3pHead
from models.lorm import LoRM, foreground_mask, lorm_reference, resize_mask
from models.resnet import DEPTHS, DilatedResNet, dilated_resnet

MODEL_TYPES = ("deeplabv2", "deeplabv3p")
LAYERS = tuple(sorted(DEPTHS))

__all__ = ["MODEL_TYPES", "LAYERS", "DeepLab", "build_model", "LoRM",
           "foreground_mask", "lorm_reference", "DilatedResNet", "dilated_resnet"]


class DeepLab(DilatedResNet):
    """A dilated ResNet whose top level also holds the head (`layer_pred0`) and, optionally, LoRM
    (`layer_camatt`); a subclass, not a wrapper, so the backbone keys stay conv1, bn1, layer1..
    """

    def __init__(self, model_type: str, layers: int, num_classes: int, lorm: bool,
                 lorm_temperature: float = 1.0):
        super().__init__(layers)
        if model_type == "deeplabv2":
            self.layer_pred0 = DeepLabV2Head(self.channels, num_classes)
        else:
            self.layer_pred0 = DeepLabV3pHead(self.channels, self.low_level_channels, num_classes)
        self.layer_camatt = LoRM(self.channels, temperature=lorm_temperature) if lorm else None
        self.model_type = model_type
        self.num_classes = num_classes
        self.output_stride = self.layer_pred0.output_stride

    def forward(self, image: torch.Tensor, fg_mask: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """image (B, 3, H, W) -> {"out": logits (B, C, ~H/s, ~W/s)}, s = output_stride (not
        upsampled: the loss and the evaluation upsample).

        With LoRM and a foreground mask (training) also "feat" (layer4) and "feat_rect" (LoRM's x').
        fg_mask: bool (B, h, w) at layer4 size, or at any size (e.g. the crop's), then resized
        by SPEC §4's rule (models.lorm.resize_mask), which equals foreground_mask(pseudo, (h, w)).
        """
        low, feat = self.features(image)
        out = {"out": self.layer_pred0(feat, low)}
        if self.layer_camatt is not None and fg_mask is not None:
            fg_mask = resize_mask(fg_mask, feat.shape[-2:])
            out["feat"] = feat
            out["feat_rect"] = self.layer_camatt(feat, fg_mask)
        return out


def build_model(model_type: str, layers: int, num_classes: int = 21, lorm: bool = True,
                pretrained: str | os.PathLike | None = None, lorm_temperature: float = 1.0) -> DeepLab:
    """DeepLab `model_type` ("deeplabv2" | "deeplabv3p") on ResNet-`layers` (18/34/50/101).

    pretrained (backbone only): None/"none" random init, "imagenet" torchvision IMAGENET1K_V1,
    or a local torchvision-style ResNet state_dict file. Heads and LoRM are always random.
    lorm_temperature divides LoRM's cosine logits (1: the paper's formula).
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {', '.join(MODEL_TYPES)}; got {model_type!r}")
    if layers not in LAYERS:
        raise ValueError(f"layers must be one of {', '.join(map(str, LAYERS))}; got {layers!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    model = DeepLab(model_type, layers, num_classes, lorm, lorm_temperature)
    model.load_backbone(pretrained)
    return model
