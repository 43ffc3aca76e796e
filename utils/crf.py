"""DenseCRF refinement of class probabilities: `eval.py --crf` (optional; the paper's protocol,
SPEC §7, has no CRF).

Fully connected CRF of Krähenbühl & Koltun through pydensecrf2 (`pip install pydensecrf2==1.1`;
it builds from source, so a C++ compiler is needed). Unary = -log(probability); a Gaussian
(position) and a bilateral (position + RGB) kernel, with kazuto1011/deeplab-pytorch's VOC
parameters: 10 iterations, POS_W 3, POS_XY_STD 1, BI_W 4, BI_XY_STD 67, BI_RGB_STD 3.

`ParallelCRF` runs images in worker processes while the network works on the next image.
Imports only numpy at module level (pydensecrf is imported when used), so the package stays
optional.
"""
from __future__ import annotations

import collections

import numpy as np

from utils.parallel import process_pool

CRF_PARAMS = {"iter_max": 10, "pos_w": 3, "pos_xy_std": 1, "bi_w": 4, "bi_xy_std": 67, "bi_rgb_std": 3}
INSTALL_HINT = ("--crf needs pydensecrf2: pip install pydensecrf2==1.1 "
                "(it builds from source and needs a C++ compiler)")


def _densecrf():
    try:
        import pydensecrf.densecrf as dcrf
        import pydensecrf.utils as dcrf_utils
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return dcrf, dcrf_utils


def dense_crf(image: np.ndarray, probs: np.ndarray, iter_max: int = 10, pos_w: float = 3,
              pos_xy_std: float = 1, bi_w: float = 4, bi_xy_std: float = 67,
              bi_rgb_std: float = 3) -> np.ndarray:
    """Refined probabilities (C, H, W) float32 of `probs` (C, H, W) given the HxWx3 uint8 RGB image."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise ValueError(f"probabilities {probs.shape} do not match the image {image.shape[:2]}")
    dcrf, dcrf_utils = _densecrf()
    c, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(np.ascontiguousarray(dcrf_utils.unary_from_softmax(probs.astype(np.float32))))
    crf.addPairwiseGaussian(sxy=pos_xy_std, compat=pos_w)
    crf.addPairwiseBilateral(sxy=bi_xy_std, srgb=bi_rgb_std, rgbim=np.ascontiguousarray(image),
                             compat=bi_w)
    return np.asarray(crf.inference(iter_max), dtype=np.float32).reshape(c, h, w)


def crf_label(image: np.ndarray, probs: np.ndarray, params: dict | None = None) -> np.ndarray:
    """argmax of the refined probabilities, (H, W) uint8."""
    return dense_crf(image, probs, **(params or CRF_PARAMS)).argmax(0).astype(np.uint8)


class ParallelCRF:
    """CRF over images in `processes` worker processes, results in submission order.

        crf = ParallelCRF(2)
        crf.submit(key, image, probs)     # returns at once
        for key, label in crf.ready(): ...  # finished ones (blocks only when too many wait)
        for key, label in crf.close(): ...  # the rest; the pool is shut down

    At most `max_pending` (default 2 x processes) images wait, so memory stays bounded.
    `key` stays in this process (it may hold tensors); only image and probs are sent.
    """

    def __init__(self, processes: int = 2, max_pending: int | None = None, params: dict | None = None):
        _densecrf()  # fail here, with the install hint, not in a worker
        self.params = dict(CRF_PARAMS, **(params or {}))
        self.max_pending = max_pending or 2 * processes
        # spawn: forking a process that runs torch's thread pools can deadlock the children
        self._pool = process_pool(processes, method="spawn")
        self._pending: collections.deque = collections.deque()

    def submit(self, key, image: np.ndarray, probs: np.ndarray) -> None:
        self._pending.append((key, self._pool.apply_async(crf_label, (image, probs, self.params))))

    def ready(self) -> list:
        out = []
        while self._pending and (self._pending[0][1].ready() or len(self._pending) > self.max_pending):
            key, result = self._pending.popleft()
            out.append((key, result.get()))
        return out

    def close(self) -> list:
        out = [(key, result.get()) for key, result in self._pending]
        self._pending.clear()
        self._pool.close()
        self._pool.join()
        return out

    def terminate(self) -> None:
        self._pending.clear()
        self._pool.terminate()
