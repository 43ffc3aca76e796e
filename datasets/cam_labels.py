"""CAMs -> pseudo-label PNG values (stage 1): thresholds against background, the scribbles'
classes kept where they are known. Pure numpy; make_pseudo_labels.py calls it per image.

Given the image's foreground classes c_1..c_n (from its scribble, datasets.class_labels) and
their normalised CAMs M_1..M_n in [0, 1] (models.cam.multi_scale_cam), a pixel p gets

    score(p) = max_i M_i(p),   k(p) = argmax_i M_i(p)
    label(p) = c_k(p)   if score(p) >= fg_thresh          (a class claims it)
               0        if score(p) <  bg_thresh          (no class does: background)
               255      otherwise                         (unsure: ignored by the losses)
    label(p) = scribble(p)  wherever the scribble is not 255

Why each rule:
- Only the image's classes compete (the scribbles tell us which are present), so a CAM can
  never introduce a class the annotator did not mark. An image with no foreground class is
  all background.
- Background has no CAM. It is the constant plane `fg_thresh` in IRN's "argmax over
  [threshold, CAMs]" rule (0.30, IRN's confident-foreground threshold). By default the labels
  are dense (bg_thresh == fg_thresh). A lower bg_thresh (IRN's 0.05) turns the band
  [bg_thresh, fg_thresh), where CAMs are neither confident nor absent, into 255, which the
  losses ignore. CDSP does not need that band: DEL already discounts the pixels near a
  pseudo-label boundary (D_c), where CAMs are unsure, and the band removes exactly the
  supervision DEL would weight. On the synthetic set the band cost 4.4 val mIoU points
  (README, Stage 1).
- The scribble wins wherever it exists, background strokes included: those pixels are
  known, which no CAM is. (A 3-px stroke barely changes the label's extent, but it fixes the
  class of objects where two CAMs overlap and it puts a definite background stroke in the
  unsure band.)
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from datasets.layout import IGNORE_INDEX

FG_THRESH = 0.30
BG_THRESH = FG_THRESH  # dense labels; IRN's 0.05 gives a 255 band (see above)


def cam_pseudo_label(cams: np.ndarray, classes: Sequence[int], scribble: np.ndarray | None = None,
                     fg_thresh: float = FG_THRESH, bg_thresh: float = BG_THRESH) -> np.ndarray:
    """(H, W) uint8 pseudo-label from CAMs (n, H, W) of the image's n foreground `classes`."""
    cams = np.asarray(cams, dtype=np.float32)
    if cams.ndim != 3 or cams.shape[0] != len(classes):
        raise ValueError(f"expected CAMs of shape ({len(classes)}, H, W) for classes {list(classes)}, "
                         f"got {cams.shape}")
    if not 0.0 <= bg_thresh <= fg_thresh:
        raise ValueError(f"need 0 <= bg_thresh <= fg_thresh, got bg {bg_thresh}, fg {fg_thresh}")
    h, w = cams.shape[1:]
    if len(classes) == 0:
        label = np.zeros((h, w), np.uint8)
    else:
        score = cams.max(0)
        winner = np.asarray(classes, np.uint8)[cams.argmax(0)]
        label = np.where(score >= fg_thresh, winner,
                         np.where(score < bg_thresh, 0, IGNORE_INDEX)).astype(np.uint8)
    if scribble is not None:
        scribble = np.asarray(scribble)
        if scribble.shape != (h, w):
            raise ValueError(f"scribble {scribble.shape} and CAMs {(h, w)} differ in size")
        known = scribble != IGNORE_INDEX
        label[known] = scribble[known]
    return label
