"""Segmentation networks of CDSP (SPEC §3-§4): dilated ResNet + DeepLab head (+ LoRM), a factory.

    model = build_model("deeplabv2", 50, num_classes=21, lorm=True, pretrained="imagenet")
    out = model(image, pseudo)    # {"out": logits at stride model.output_stride,
                                  #  "feat": layer4, "feat_rect": LoRM(layer4)}  (training)
    out = model(image)            # {"out": logits}                              (inference)
    model.drop_lorm()             # after loading a checkpoint, for inference only

The model owns LoRM (SPEC §4) end to end: `training_inputs` names the batch fields its
forward takes in training (the pseudo-label, with LoRM), it builds the foreground mask from
them, and `drop_lorm` removes the module when only predictions are wanted.

State dict keys are the authors' (their released R50 DeepLabV2 checkpoint loads with strict=True):
conv1.*, bn1.*, layer1..layer4.* (backbone), layer_pred0.* (head), layer_camatt.* (LoRM).
"""
from __future__ import annotations

import os

import torch

from models.deeplabv2 import DeepLabV2Head
from models.deeplabv3p import DeepLabV3pHead
from models.lorm import LoRM, foreground_mask, lorm_reference, resize_mask
from models.resnet import DEPTHS, DilatedResNet

MODEL_TYPES = ("deeplabv2", "deeplabv3p")
LAYERS = tuple(sorted(DEPTHS))
LORM_INPUTS = ("pseudo",)  # what LoRM reads in training besides the image (its foreground mask, SPEC §4)

__all__ = ["MODEL_TYPES", "LAYERS", "DeepLab", "build_model", "LoRM",
           "foreground_mask", "lorm_reference", "DilatedResNet"]


class DeepLab(DilatedResNet):
    """A dilated ResNet whose top level also holds the head (`layer_pred0`) and, optionally, LoRM
    (`layer_camatt`); a subclass, not a wrapper, so the backbone keys stay conv1, bn1, layer1..
    """

    def __init__(self, model_type: str, layers: int, num_classes: int, lorm: bool,
                 lorm_temperature: float = 1.0, lorm_explicit: bool = False):
        super().__init__(layers)
        if model_type == "deeplabv2":
            self.layer_pred0 = DeepLabV2Head(self.channels, num_classes)
        else:
            self.layer_pred0 = DeepLabV3pHead(self.channels, self.low_level_channels, num_classes)
        self.layer_camatt = LoRM(self.channels, temperature=lorm_temperature,
                                 explicit=lorm_explicit) if lorm else None
        self.model_type = model_type
        self.num_classes = num_classes
        self.output_stride = self.layer_pred0.output_stride

    @property
    def training_inputs(self) -> tuple[str, ...]:
        """Batch fields forward() takes besides the image in training: the pseudo-label for LoRM."""
        return LORM_INPUTS if self.layer_camatt is not None else ()

    def drop_lorm(self) -> None:
        """Remove LoRM (call after loading a checkpoint that has it): it only adds a training
        loss (SPEC §4), so predictions are the same without it, and cheaper."""
        self.layer_camatt = None

    def forward(self, image: torch.Tensor, pseudo: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """image (B, 3, H, W) -> {"out": logits (B, C, ~H/s, ~W/s)}, s = output_stride (not
        upsampled: the loss and the evaluation upsample).

        With LoRM and `pseudo` (training) also "feat" (layer4) and "feat_rect" (LoRM's x').
        pseudo: the pseudo-label (B, H, W) at any size (e.g. the crop's), from which SPEC §4's
        foreground mask at layer4 size is made (models.lorm.foreground_mask); or that mask
        itself as bool (B, h, w) at any size, resized by the same rule (models.lorm.resize_mask).
        """
        low, feat = self.features(image)
        out = {"out": self.layer_pred0(feat, low)}
        if self.layer_camatt is not None and pseudo is not None:
            size = feat.shape[-2:]
            fg = resize_mask(pseudo, size) if pseudo.dtype == torch.bool else foreground_mask(pseudo, size)
            out["feat"] = feat
            out["feat_rect"] = self.layer_camatt(feat, fg)
        return out


def build_model(model_type: str, layers: int, num_classes: int = 21, lorm: bool = True,
                pretrained: str | os.PathLike | None = None, lorm_temperature: float = 1.0,
                lorm_explicit: bool = False) -> DeepLab:
    """DeepLab `model_type` ("deeplabv2" | "deeplabv3p") on ResNet-`layers` (18/34/50/101).

    pretrained (backbone only): None/"none" random init, "imagenet" torchvision IMAGENET1K_V1,
    or a local torchvision-style ResNet state_dict file. Heads and LoRM are always random.
    lorm_temperature divides LoRM's cosine logits (1: the paper's formula); lorm_explicit
    computes LoRM with the explicit (B, hw, hw) matrix (the authors' cost, same values: benchmarks).
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {', '.join(MODEL_TYPES)}; got {model_type!r}")
    if layers not in LAYERS:
        raise ValueError(f"layers must be one of {', '.join(map(str, LAYERS))}; got {layers!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    model = DeepLab(model_type, layers, num_classes, lorm, lorm_temperature, lorm_explicit)
    model.load_backbone(pretrained)
    return model
