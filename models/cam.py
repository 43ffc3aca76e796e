"""The CAM classifier of stage 1 (pseudo-labels from the classes the scribbles reveal).

CDSP's premise is that a scribble reveals which classes an image contains; an image-level WSSS
method turns those classes into dense pseudo-labels. This is the classic one, CAM (Zhou et al.
2016) in the form IRN / SEAM / AFA start from (Ahn et al. 2019):

- backbone: a torchvision ResNet (50 by default; 18/34/101 too), ImageNet-initialised on
  users' machines, `fc` dropped, layer4's stride set to 1 so the maps are at stride 16 (IRN's
  `strides=(2, 2, 2, 1)`; no dilation, which torchvision's BasicBlock would refuse anyway);
- head: a bias-free 1x1 conv to the K = 20 foreground classes; background has no channel
  (it is whatever no class claims, decided by thresholds in datasets.cam_labels);
- image logits = head(global average pool(features)) -- equal to GAP(head(features)) since the
  head is linear -- trained with the multi-label soft-margin loss;
- CAM of class k = ReLU(head_k(features)) at every position.

With ImageNet weights the BatchNorm layers are frozen (running statistics and affine
parameters, as IRN does: batches of 16 crops are too small to re-estimate them, and
fine-tuning them hurts the maps); from random init (tests, the synthetic chain) they train.

`multi_scale_cam` is the inference of the label stage: CAMs of an image at several scales and
its mirror, summed at full resolution, each class normalised to max 1.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.resnet import pretrained_backbone_state

CAM_DEPTHS = (18, 34, 50, 101)
CAM_SCALES = (1.0, 0.5, 1.5, 2.0)  # IRN's
OUTPUT_STRIDE = 16


def _torchvision_resnet(depth: int, output_stride: int) -> nn.Module:
    import torchvision.models as tvm

    if depth not in CAM_DEPTHS:
        raise ValueError(f"CAM backbone depth must be one of {CAM_DEPTHS}, got {depth!r}")
    if output_stride not in (8, 16):
        raise ValueError(f"CAM output stride must be 8 or 16, got {output_stride!r}")
    net = getattr(tvm, f"resnet{depth}")(weights=None)
    net.channels = net.fc.in_features  # layer4's width (512 or 2048), kept for the CAM head
    net.fc = nn.Identity()
    # Stride 16: the first block of layer4 stops downsampling (its strided 3x3 or 1x1 convs
    # and the shortcut's 1x1 conv), as IRN does; more positions per object in the CAM.
    # Stride 8 (small images, e.g. the synthetic set's 128x160) does the same to layer3.
    for layer in (net.layer4, net.layer3)[:1 if output_stride == 16 else 2]:
        for m in layer[0].modules():
            if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
                m.stride = (1, 1)
    return net


class CAMNet(nn.Module):
    """Multi-label classifier: `forward(x) -> (B, K) logits`, `cam(x) -> (B, K, h, w)` CAMs."""

    def __init__(self, depth: int = 50, num_classes: int = 20, pretrained: str | os.PathLike | None = None,
                 output_stride: int = OUTPUT_STRIDE):
        super().__init__()
        net = _torchvision_resnet(depth, output_stride)
        state = pretrained_backbone_state(depth, pretrained, {k: v.shape for k, v in net.state_dict().items()})
        if state is not None:
            net.load_state_dict(state)
        self.depth, self.num_classes, self.output_stride = depth, num_classes, output_stride
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.classifier = nn.Conv2d(net.channels, num_classes, 1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)
        self.frozen_bn = state is not None
        if self.frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.requires_grad_(False)

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """The backbone under torchvision's ResNet key names (conv1, bn1, layer1..4; no head), the
        form build_model(pretrained=FILE) loads: a segmentation net can start from stage 1."""
        names = {"stem.0.": "conv1.", "stem.1.": "bn1."}
        out = {}
        for k, v in self.state_dict().items():
            if k.startswith("classifier."):
                continue
            prefix = next((p for p in names if k.startswith(p)), None)
            out[names[prefix] + k[len(prefix):] if prefix else k] = v.detach().clone()
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1)).flatten(1)

    def cam(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.classifier(self.features(x)))

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.frozen_bn:  # running statistics stay ImageNet's
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def param_groups(self) -> list[dict]:
        """IRN's two groups: the pretrained backbone at lr/10, the new head at lr. Frozen BN
        affine parameters are left out (they never change)."""
        head = set(self.classifier.parameters())
        backbone = [p for p in self.parameters() if p.requires_grad and p not in head]
        scale = 0.1 if self.frozen_bn else 1.0  # from scratch the backbone learns at full rate
        return [{"params": backbone, "lr_scale": scale},
                {"params": list(self.classifier.parameters()), "lr_scale": 1.0}]


def build_cam_net(layers: int = 50, num_classes: int = 20, pretrained: str | os.PathLike | None = None,
                  output_stride: int = OUTPUT_STRIDE) -> CAMNet:
    """The stage-1 classifier on torchvision ResNet-`layers`; pretrained as models.build_model."""
    return CAMNet(layers, num_classes, None if pretrained == "none" else pretrained, output_stride)


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


@torch.inference_mode()
def multi_scale_cam(model: CAMNet, image: torch.Tensor, classes: Sequence[int],
                    scales: Sequence[float] = CAM_SCALES, flip: bool = True) -> torch.Tensor:
    """CAMs (len(classes), H, W) in [0, 1] of one normalised image (1, 3, H, W).

    `classes` are the image's foreground classes as label values 1..K (channel c-1); no
    other class's map is ever computed into the result. For each scale the image is resized
    (bilinear), its CAM and its mirror's (flipped back) are upsampled to H x W and summed over
    scales and mirrors; each class's map is then divided by its maximum, so 1 marks the most
    class-like position and thresholds mean the same in every image.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image (1, 3, H, W), got {tuple(image.shape)}")
    if model.training:
        raise ValueError("model is in training mode; call model.eval() first")
    h, w = image.shape[-2:]
    channels = [int(c) - 1 for c in classes]
    if any(not 0 <= c < model.num_classes for c in channels):
        raise ValueError(f"classes {list(classes)} outside 1..{model.num_classes}")
    if not channels:
        return image.new_zeros((0, h, w))
    total = image.new_zeros((len(channels), h, w))
    for s in scales:
        size = (max(1, round(h * s)), max(1, round(w * s)))
        x = _resize(image, size) if size != (h, w) else image
        if flip:
            x = torch.cat([x, x.flip(-1)])
        cam = model.cam(x)[:, channels]
        if flip:
            cam = cam[:1] + cam[1:].flip(-1)
        total += _resize(cam, (h, w))[0]
    total = F.relu(total)
    return total / (total.flatten(1).amax(1)[:, None, None] + 1e-5)
