"""Dilated ResNet-18/34/50/101 backbone at output stride 8 (SPEC §3).

torchvision's block definitions and key names (conv1, bn1, layer1..layer4, `.downsample.0/1`),
`fc` dropped, so torchvision ImageNet state dicts load unchanged. Two departures from torchvision,
both the authors' (Caffe-style) choices:
- a bottleneck puts its stride on the first 1x1 conv, not on the 3x3;
- the stem max-pool uses ceil mode (a 465 crop gives 59x59 features).
Output stride 8: layer3 has stride 1 and dilation 2 in every block; layer4 has stride 1 and
multi-grid dilations 4, 8, 16 across its blocks (ResNet-18's layer4 has two blocks: 4, 8).
The forward returns (layer1, layer4): DeepLabV3+ needs the stride-4 layer1 features.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn as nn

# layer4's multi-grid: unit rates (1, 2, 4) times the layer's dilation 4.
MULTI_GRID = (4, 8, 16)
LAYER3_DILATION = 2
# The modules whose state_dict entries form the backbone (everything else is a head or LoRM).
BACKBONE_MODULES = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")


def kaiming_init(module: nn.Module) -> None:
    """Random init used everywhere but LoRM: Kaiming-normal convs, BN weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def sequential_conv_bn_pairs(name: str, seq: nn.Sequential) -> Iterator[tuple[str, str]]:
    """The `conv_bn_pairs` (see DilatedResNet.conv_bn_pairs) of a plain nn.Sequential held as
    attribute `name`: its adjacent Conv2d -> BatchNorm2d entries (in a Sequential each entry's
    output is the next one's only input)."""
    if type(seq) is not nn.Sequential:  # a subclass may have its own forward
        raise TypeError(f"{name}: expected a plain nn.Sequential, got {type(seq).__name__}")
    names = list(seq._modules)
    for a, b in zip(names, names[1:]):
        if isinstance(seq._modules[a], nn.Conv2d) and isinstance(seq._modules[b], nn.BatchNorm2d):
            yield f"{name}.{a}", f"{name}.{b}"


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class _BasicBlock(nn.Module):
    """torchvision's BasicBlock, with both 3x3 convs dilated (torchvision refuses dilation > 1)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)

    def conv_bn_pairs(self) -> Iterator[tuple[str, str]]:
        """conv1 -> bn1, conv2 -> bn2 and the shortcut's conv -> BN (DilatedResNet.conv_bn_pairs)."""
        yield from (("conv1", "bn1"), ("conv2", "bn2"))
        if self.downsample is not None:
            yield from sequential_conv_bn_pairs("downsample", self.downsample)


class _Bottleneck(nn.Module):
    """torchvision's Bottleneck with the stride on the first 1x1 conv (the authors' choice)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)

    def conv_bn_pairs(self) -> Iterator[tuple[str, str]]:
        """conv1..3 -> bn1..3 and the shortcut's conv -> BN (DilatedResNet.conv_bn_pairs)."""
        yield from (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))
        if self.downsample is not None:
            yield from sequential_conv_bn_pairs("downsample", self.downsample)


# depth -> (block, number of blocks in layer1..layer4), as torchvision.
DEPTHS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (_BasicBlock, (2, 2, 2, 2)),
    34: (_BasicBlock, (3, 4, 6, 3)),
    50: (_Bottleneck, (3, 4, 6, 3)),
    101: (_Bottleneck, (3, 4, 23, 3)),
}


def _layer(block: type[nn.Module], inplanes: int, planes: int, stride: int,
           dilations: Sequence[int]) -> nn.Sequential:
    """One ResNet stage; block i gets dilations[i], the first block carries the stride."""
    cout = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != cout:
        downsample = nn.Sequential(_conv1x1(inplanes, cout, stride), nn.BatchNorm2d(cout))
    blocks = [block(inplanes, planes, stride, dilations[0], downsample)]
    blocks += [block(cout, planes, 1, d) for d in dilations[1:]]
    return nn.Sequential(*blocks)


class DilatedResNet(nn.Module):
    """ResNet-`depth` at output stride 8; `forward(x) -> (layer1 features, layer4 features)`.

    Attributes: `depth`, `channels` (layer4: 512 or 2048), `low_level_channels` (layer1: 64 or 256).
    """

    def __init__(self, depth: int):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth!r}")
        block, counts = DEPTHS[depth]
        if counts[3] > len(MULTI_GRID):
            raise ValueError(f"layer4 has {counts[3]} blocks, multi-grid defines {len(MULTI_GRID)}")
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        e = block.expansion
        self.layer1 = _layer(block, 64, 64, 1, [1] * counts[0])
        self.layer2 = _layer(block, 64 * e, 128, 2, [1] * counts[1])
        self.layer3 = _layer(block, 128 * e, 256, 1, [LAYER3_DILATION] * counts[2])
        self.layer4 = _layer(block, 256 * e, 512, 1, MULTI_GRID[:counts[3]])
        self.channels = 512 * e
        self.low_level_channels = 64 * e
        kaiming_init(self)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(layer1 features at stride 4, layer4 features at stride 8)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        return low, self.layer4(self.layer3(self.layer2(low)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features(x)

    def conv_bn_pairs(self) -> Iterator[tuple[str, str]]:
        """The stem's conv1 -> bn1 (the blocks declare their own).

        The BatchNorm-folding protocol (utils.inference.prepare_for_inference): a module with a
        `conv_bn_pairs()` method yields (conv, bn) paths of its own submodules (as
        `get_submodule` takes them) such that its forward feeds that conv's output into that
        BatchNorm and nowhere else; exactly those pairs are folded. A subclass that changes
        forward must say its own pairs.
        """
        yield "conv1", "bn1"

    def backbone_state_shapes(self) -> dict[str, torch.Size]:
        """Key -> shape of the backbone's own state_dict entries (heads excluded)."""
        return {k: v.shape for k, v in self.state_dict().items()
                if k.split(".", 1)[0] in BACKBONE_MODULES}

    def load_backbone(self, pretrained: str | os.PathLike | None) -> None:
        """Initialise the backbone: None/"none" keeps the random init, "imagenet" loads
        torchvision's IMAGENET1K_V1 weights (downloaded), anything else is a local file holding a
        torchvision-style ResNet state_dict (or a dict with "state_dict"). `fc.*` is ignored.
        """
        state = pretrained_backbone_state(self.depth, pretrained, self.backbone_state_shapes())
        if state is not None:
            self.load_state_dict(state, strict=False)


def pretrained_backbone_state(depth: int, pretrained: str | os.PathLike | None,
                            expected: Mapping[str, torch.Size]) -> dict | None:
    """A checked torchvision-style ResNet-`depth` state_dict (`fc.*` dropped) for `pretrained`:
    None/"none" -> None (keep the random init); "imagenet" -> torchvision's IMAGENET1K_V1
    (downloaded); anything else -> a local file. Raises ValueError naming the source unless its
    keys and shapes are exactly `expected`. Shared by the segmentation backbone and the CAM
    classifier (models/cam.py): both use torchvision's key names.
    """
    if pretrained is None or pretrained == "none":
        return None
    if pretrained == "imagenet":
        source = f"torchvision ResNet{depth}_Weights.IMAGENET1K_V1"
        state = _imagenet_state_dict(depth)
    else:
        source = os.fspath(pretrained)
        state = _read_state_dict(source)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    _check_backbone_state(state, expected, depth, source)
    return state


def _imagenet_state_dict(depth: int) -> Mapping[str, torch.Tensor]:
    import torchvision.models as tvm

    weights = getattr(tvm, f"ResNet{depth}_Weights").IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=True)
    except OSError as e:  # no network, proxy, full disk ...
        reason = getattr(e, "reason", None) or e.strerror or e
        cache = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise OSError(f"the ImageNet weights could not be downloaded from {weights.url} ({reason}); "
                      f"fetch that file where there is network and pass its path, or put it in "
                      f"{cache} (torchvision's cache)") from None


def _read_state_dict(path: str) -> Mapping[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: pretrained backbone file not found "
                                f"(pretrained must be None, 'none', 'imagenet' or a file path)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise ValueError(f"{path}: cannot read as a torch state_dict ({e})") from e
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state_dict (expected a dict of tensors, "
                         f"or a dict with a 'state_dict' entry)")
    return obj


def guess_depth(keys) -> str:
    """Name the ResNet a set of state_dict keys looks like, for error messages."""
    keys = list(keys)
    counts = []
    for i in range(1, 5):
        ids = [int(k.split(".")[1]) for k in keys
               if k.startswith(f"layer{i}.") and k.split(".")[1].isdigit()]
        counts.append(max(ids) + 1 if ids else 0)
    bottleneck = any(".conv3." in k for k in keys)
    known = {(b, tuple(c)): d for d, (b, c) in DEPTHS.items()}
    known[(_Bottleneck, (3, 8, 36, 3))] = 152
    depth = known.get((_Bottleneck if bottleneck else _BasicBlock, tuple(counts)))
    if depth is not None:
        return f"ResNet-{depth}"
    return (f"not a known ResNet ({'bottleneck' if bottleneck else 'basic'} blocks per layer "
            f"{counts})")


def _check_backbone_state(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size],
                          depth: int, source: str, show: int = 5) -> None:
    """Raise a ValueError naming `source` unless `state` is exactly a ResNet-`depth` backbone."""
    # BN num_batches_tracked is absent from older torchvision files; load_state_dict fills it in.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k])})"
              for k in expected if k in state and state[k].shape != expected[k]]
    if not (missing or unexpected or shapes):
        return
    parts = []
    for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                        ("shape mismatches", shapes)):
        if items:
            more = f" ... (+{len(items) - show} more)" if len(items) > show else ""
            parts.append(f"{len(items)} {what}: {', '.join(items[:show])}{more}")
    raise ValueError(f"{source}: not a ResNet-{depth} backbone state_dict; it looks like "
                     f"{guess_depth(state)}. " + "; ".join(parts))
