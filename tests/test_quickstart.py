"""The quickstart's own path, end to end on a tiny budget: synthetic data -> train.py (R18
DeepLabV2 + LoRM, every CDSP loss) -> eval.py, through scripts/quickstart.sh itself."""
import json
import os
import subprocess

import numpy as np
from PIL import Image

from conftest import require_installed_venv
from datasets.layout import CLASSES
from utils.checkpoint import load_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_script_end_to_end(tmp_path):
    require_installed_venv()
    out = tmp_path / "qs"
    env = dict(os.environ, OUT=str(out), EPOCHS="1", OMP_NUM_THREADS="1")
    p = subprocess.run(["sh", os.path.join(REPO, "scripts", "quickstart.sh"), "--crop_size", "65",
                        "--val_interval", "1"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "quickstart done" in p.stdout and "val mIoU" in p.stdout

    ckpt = load_checkpoint(str(out / "train" / "best_checkpoint.pth"))
    args = ckpt["args"]
    assert (args["layers"], args["model_type"]) == (18, "deeplabv2")
    assert all(args[k] > 0 for k in ("l_seg", "l_pseudo", "l_ds", "l_dc", "l_lorm"))
    assert any(k.startswith("layer_camatt.") for k in ckpt["state_dict"])   # LoRM trained
    # the set describes its classes (dataset.yaml): one output per class it has, not VOC's 21
    present = list(CLASSES[:6])  # background + the generator's K=5
    assert args["numclasses"] == 6 and ckpt["dataset_meta"]["classes"] == present
    assert os.path.getsize(out / "train" / "curves.png") > 0

    report = open(out / "eval.txt").read()
    metrics = json.load(open(out / "eval" / "metrics.json"))
    assert f"{100 * metrics['miou']:.2f}" in report
    assert list(metrics["iou"]) == present and len(metrics["confusion_matrix"]) == 6
    assert all(v is not None for v in metrics["iou"].values())  # each is in the val masks
    assert not [c for c in CLASSES[6:] if c in report]  # no row for a class the set never has
    val_ids = [l.strip() for l in open(out / "data" / "ImageSets" / "SegmentationAug" / "val.txt")
               if l.strip()]
    for id_ in val_ids:
        pred = Image.open(out / "eval" / f"{id_}.png")
        mask = Image.open(out / "data" / "SegmentationClassAug" / f"{id_}.png")
        assert pred.mode == "P" and pred.size == mask.size
        assert np.asarray(pred).max() < 6


def test_quickstart_stage1_chain_end_to_end(tmp_path):
    """PSEUDO=cam: class labels -> CAM classifier -> CAM pseudo-labels (scored) -> D_c -> train
    on them -> eval, in one script."""
    require_installed_venv()
    out = tmp_path / "chain"
    env = dict(os.environ, OUT=str(out), PSEUDO="cam", EPOCHS="1", CAM_EPOCHS="1", OMP_NUM_THREADS="1")
    p = subprocess.run(["sh", os.path.join(REPO, "scripts", "quickstart.sh"), "--crop_size", "65"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "CAM pseudo-labels" in p.stdout and "generator's pseudo-labels" in p.stdout
    data = out / "data"
    ids = [l.strip() for l in open(data / "ImageSets" / "SegmentationAug" / "train.txt") if l.strip()]
    classes = json.load(open(data / "class_labels_train.json"))
    for id_ in ids[:10]:
        lab = np.asarray(Image.open(data / "cam_pseudo" / f"{id_}.png"))
        assert set(np.unique(lab).tolist()) <= {0, 255, *classes[id_]}
        assert (data / "distance_cam_pseudo" / f"{id_}.png").is_file()
    args = load_checkpoint(str(out / "train" / "best_checkpoint.pth"))["args"]
    assert (args["pseudo_path"], args["distancemap_c"]) == ("cam_pseudo", "distance_cam_pseudo")
    scores = json.load(open(out / "cam" / "pseudo_scores_cam_pseudo.json"))
    assert scores["images"] == len(ids)
    assert os.path.isfile(out / "eval.txt")
