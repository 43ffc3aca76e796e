"""Checkpoints: written atomically, read with weights_only=True, keys matched with clear errors;
the architecture a state_dict needs (model type, depth, classes, LoRM) read from its keys."""
from __future__ import annotations

import os
import pickle
import re
import warnings

import numpy as np
import torch

from utils.io import atomic_path

# What the authors' released last_checkpoint.pth needs beyond tensors: `best_pred` holds numpy
# scalars. Only these globals are allowed when unpickling with weights_only=True.
_NUMPY_SAFE = [np.dtype, np.ndarray, np.float64, np.float32, np.int64, np.int32]
try:  # numpy >= 2 pickles scalars through numpy._core.multiarray.scalar
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar
_NUMPY_SAFE += [scalar, _reconstruct]
_NUMPY_SAFE += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
# A file written under numpy 1.x (the authors' release) names these `numpy.core.multiarray.*`,
# a module numpy 2 renamed to numpy._core: allow the old names for the same two functions.
_NUMPY_SAFE += [(scalar, "numpy.core.multiarray.scalar"),
                (_reconstruct, "numpy.core.multiarray._reconstruct")]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what to try."""


def save_checkpoint(state: dict, path: str) -> None:
    """torch.save to a temporary file, then rename: a kill never corrupts the previous file."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str, map_location="cpu", trust: bool = False,
                    trust_flag: str | None = None) -> dict:
    """Load a checkpoint dict safely (weights_only=True, numpy scalars allowed).

    `trust=True` unpickles arbitrary objects (only for files you made yourself). `trust_flag`
    names the caller's flag for that (eval.py's --trust_checkpoint); only a file that a safe
    load refuses gets that advice, and only from a caller that has the flag. A truncated or
    foreign file is said to be one. A bare state_dict is returned as {"state_dict": ...}.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        if trust:
            warnings.warn(f"{path}: loading with weights_only=False (--trust_checkpoint): "
                          "this runs arbitrary code stored in the file", stacklevel=2)
            ckpt = torch.load(path, map_location=map_location, weights_only=False)
        else:
            with torch.serialization.safe_globals(_NUMPY_SAFE):
                ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        if isinstance(e, pickle.UnpicklingError) and "weights only load failed" in str(e).lower():
            advice = (f" If you trust the file, {trust_flag} loads it without the safety restriction."
                      if trust_flag else "")
            raise CheckpointError(f"{path}: holds objects a safe load (weights_only) refuses "
                                  f"({first}).{advice}") from None
        raise CheckpointError(f"{path}: cannot load checkpoint: the file is truncated, corrupt or "
                              f"not a torch checkpoint ({e.__class__.__name__}: {first})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(ckpt).__name__}")
    if "state_dict" not in ckpt:
        if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            ckpt = {"state_dict": ckpt}
        else:
            raise CheckpointError(f"{path}: no 'state_dict' in checkpoint (keys: {sorted(ckpt)[:10]})")
    return ckpt


def strip_prefix(state_dict: dict, prefix: str = "module.") -> dict:
    """Drop the `module.` prefix DistributedDataParallel puts on keys (other keys unchanged)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def load_model_weights(model: torch.nn.Module, state_dict: dict, path: str, hint: str = "") -> None:
    """Strict load; on mismatch list missing/unexpected keys (first few) and shape clashes."""
    state_dict = strip_prefix(state_dict)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        def few(xs):
            return ", ".join(xs[:6]) + (f" ... (+{len(xs) - 6} more)" if len(xs) > 6 else "")
        lines = [f"{path}: checkpoint does not match the model."]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {few(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {few(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): {few(shapes)}")
        if hint:
            lines.append(f"  {hint}")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state_dict, strict=True)


# ----------------------------------------------------------------------------- architecture
DEFAULT_ARCHITECTURE = {"model_type": "deeplabv2", "layers": 50, "numclasses": 21}


def infer_architecture(state_dict: dict) -> dict:
    """What a state_dict's keys say about the network that wrote it (None: cannot tell).

    model_type from the head's keys (DeepLabV3+ has `layer_pred0.classifier`, the authors'
    DeepLabV2 head `layer_pred0.conv1`), numclasses from that last conv's output channels,
    layers from the number of blocks per ResNet stage, lorm from `layer_camatt.*`.
    """
    sd = strip_prefix(state_dict)
    model_type = numclasses = layers = None
    for name, key in (("deeplabv3p", "layer_pred0.classifier.weight"),
                      ("deeplabv2", "layer_pred0.conv1.weight")):
        if key in sd and getattr(sd[key], "ndim", 0) == 4:
            model_type, numclasses = name, int(sd[key].shape[0])
            break
    from models.resnet import guess_depth  # lazy: models is a sibling, not a dependency

    match = re.fullmatch(r"ResNet-(\d+)", guess_depth(sd.keys()))
    if match:
        layers = int(match.group(1))
    return {"model_type": model_type, "layers": layers, "numclasses": numclasses,
            "lorm": any(k.startswith("layer_camatt.") for k in sd)}


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
