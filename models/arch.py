"""Which network a state_dict belongs to: model type, ResNet depth, classes, LoRM, read from its keys.

The models know their own key names, so recognising them lives here, beside the models:
`infer_architecture` (what the keys say), `resolve_architecture` (flags > saved args > keys >
DEFAULT_ARCHITECTURE, for building the model a checkpoint needs) and `architecture_hint` (the
flags to suggest when a file does not fit). Reading and writing the files is utils.checkpoint's.
"""
from __future__ import annotations

import re

from models.deeplabv2 import DeepLabV2Head
from models.deeplabv3p import DeepLabV3pHead
from models.resnet import guess_depth
from utils.checkpoint import strip_prefix

DEFAULT_ARCHITECTURE = {"model_type": "deeplabv2", "layers": 50, "numclasses": 21}

# The DeepLab model's attribute names (models/__init__.py): the head and LoRM.
HEAD_PREFIX = "layer_pred0."
LORM_PREFIX = "layer_camatt."
# model_type -> its head, in the order they are tried; each head names its last conv (`logits_conv`).
_HEADS = (("deeplabv3p", DeepLabV3pHead), ("deeplabv2", DeepLabV2Head))


def infer_architecture(state_dict: dict) -> dict:
    """What a state_dict's keys say about the network that wrote it (None: cannot tell).

    model_type from the head's keys (DeepLabV3+ has `layer_pred0.classifier`, the authors'
    DeepLabV2 head `layer_pred0.conv1`), numclasses from that last conv's output channels,
    layers from the number of blocks per ResNet stage, lorm from `layer_camatt.*`.
    A `module.` prefix (DistributedDataParallel) is ignored.
    """
    sd = strip_prefix(state_dict)
    model_type = numclasses = layers = None
    for name, head in _HEADS:
        key = f"{HEAD_PREFIX}{head.logits_conv}.weight"
        if key in sd and getattr(sd[key], "ndim", 0) == 4:
            model_type, numclasses = name, int(sd[key].shape[0])
            break
    match = re.fullmatch(r"ResNet-(\d+)", guess_depth(sd.keys()))
    if match:
        layers = int(match.group(1))
    return {"model_type": model_type, "layers": layers, "numclasses": numclasses,
            "lorm": any(k.startswith(LORM_PREFIX) for k in sd)}


def resolve_architecture(ckpt: dict, model_type: str | None = None, layers: int | None = None,
                         numclasses: int | None = None) -> tuple[dict, dict]:
    """(architecture, where each value came from) for building the model a checkpoint needs.

    Precedence: the arguments (command-line flags) > the checkpoint's saved `args` (our
    train.py stores them) > what the keys say (infer_architecture; the authors' files have no
    args) > DEFAULT_ARCHITECTURE. `lorm` always follows the keys: LoRM is training-only, so
    the model is built with it exactly when the file holds its weights.
    """
    saved = ckpt.get("args") if isinstance(ckpt.get("args"), dict) else {}
    inferred = infer_architecture(ckpt["state_dict"])
    given = {"model_type": model_type, "layers": layers, "numclasses": numclasses}
    arch, source = {}, {}
    for name in ("model_type", "layers", "numclasses"):
        for origin, value in (("flag", given[name]), ("checkpoint args", saved.get(name)),
                              ("checkpoint keys", inferred[name]),
                              ("default", DEFAULT_ARCHITECTURE[name])):
            if value is not None:
                arch[name], source[name] = value, origin
                break
    arch["lorm"], source["lorm"] = inferred["lorm"], "checkpoint keys"
    return arch, source


def architecture_hint(state_dict: dict, arch: dict) -> str:
    """Which flags to try when `state_dict` does not fit the model built from `arch`."""
    found = infer_architecture(state_dict)
    want = " ".join(f"--{k} {v}" for k, v in found.items() if k != "lorm" and v is not None)
    built = " ".join(f"--{k} {arch[k]}" for k in ("model_type", "layers", "numclasses"))
    if not want:
        return (f"the model was built with {built}; the file's keys match no known CDSP network "
                "(is it a CDSP segmentation checkpoint?)")
    return f"the model was built with {built}; the file's keys look like {want}: try those flags"
