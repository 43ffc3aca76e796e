"""Checkpoint files: written atomically, read with weights_only=True, keys matched with clear errors.

Only files and key matching: which network a state_dict belongs to is the models' business
(models/arch.py: infer_architecture, resolve_architecture, architecture_hint)."""
from __future__ import annotations

import os
import pickle
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


# What a checkpoint holds (its "kind" entry; the authors' files and ours from before the entry
# are segmentation networks), who writes it, and where it goes.
KINDS = {
    "segmentation": ("a segmentation network", "train.py",
                     "eval.py, predict.py or train.py --resume"),
    "cam_classifier": ("a CAM classifier", "make_pseudo_labels.py train",
                       "make_pseudo_labels.py label or make_pseudo_labels.py train --resume"),
}


def checkpoint_kind(ckpt: dict) -> str:
    return ckpt.get("kind") or "segmentation"


def require_kind(ckpt: dict, path: str, kind: str, user: str) -> None:
    """CheckpointError saying what the file is and where it goes unless it is of `kind`
    (`user`: the tool that needs it, for the message)."""
    have = checkpoint_kind(ckpt)
    if have == kind:
        return
    want, writer, _ = KINDS[kind]
    if have not in KINDS:
        raise CheckpointError(f"{path}: a checkpoint of unknown kind {have!r}; {user} needs {want} "
                              f"from {writer}")
    what, made_by, goes_to = KINDS[have]
    raise CheckpointError(f"{path}: is {what} checkpoint ({made_by}), not {want}: {user} needs one "
                          f"from {writer}; this file goes to {goes_to}")


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
