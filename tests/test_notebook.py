"""demo.ipynb runs top to bottom (CPU, synthetic data, a tiny random R18 checkpoint), so it cannot rot."""
import os

import nbformat
import torch
from nbclient import NotebookClient

from datasets.meta import load_meta
from models import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_notebook_executes(tmp_path, synthetic_root, monkeypatch):
    torch.manual_seed(0)
    ckpt = tmp_path / "last_checkpoint.pth"
    meta = load_meta(str(synthetic_root))  # as train.py stores it: the set's own classes
    torch.save({"state_dict": build_model("deeplabv2", 18, meta.num_classes, lorm=True).state_dict(),
                "epoch": 1, "dataset_meta": meta.to_dict(),
                "args": {"model_type": "deeplabv2", "layers": 18, "numclasses": meta.num_classes,
                         "crop_size": 48}},
               ckpt)
    # The kernel inherits this environment: the notebook's documented overrides.
    for k, v in {"CDSP_DATA": str(synthetic_root), "CDSP_CHECKPOINT": str(ckpt), "CDSP_SCALES": "0.5,1.0",
                 "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend shows the figures
    nb = nbformat.read(os.path.join(REPO, "demo.ipynb"), as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit it without outputs"
    # kernel "python3" starts this interpreter (jupyter_client substitutes sys.executable)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": REPO}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "scales (0.5, 1.0), base size 80, crop 48" in text  # crop from the checkpoint's args
    assert "this image: mIoU" in text
    assert f"6 classes: {', '.join(meta.classes)}\n" in text  # the set's, not VOC's 21
    predicted = next(l for l in text.splitlines() if l.startswith("predicted classes: "))
    assert set(predicted.split(": ", 1)[1].split(", ")) <= set(meta.classes)
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 2
    assert not [o for o in outputs if o.output_type == "error"]
