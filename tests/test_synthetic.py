"""The synthetic dataset (datasets/synthetic.py): SPEC §1 layout, SPEC §2 distance maps, label
quality, determinism, refusal to overwrite, the CLI, the presets (voc, gray4) and dataset.yaml."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from datasets import synthetic
from datasets.distance_map import pseudo_distance_map, scribble_distance_map
from datasets.layout import CLASSES, PSEUDO_SYNTHETIC, DatasetError, Layout, read_ids, split_path
from datasets.meta import META_FILE, VOC_META, load_meta
from datasets.synthetic import GRAY4_CLASSES, GRAY4_PALETTE, MARKER, PRESETS, generate, sample
from utils.io import read_image, read_label
from utils.palette import voc_palette

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = {"pseudo": PSEUDO_SYNTHETIC}


def _ids(root, splits=("train", "val")):
    return [i for s in splits for i in read_ids(split_path(root, s))]


def _labels(root, splits=("train", "val")):
    """(mask, scribble, pseudo, dist_s, dist_c) of every id of `splits`."""
    lay = Layout(root, FOLDERS)
    for id_ in _ids(root, splits):
        yield tuple(read_label(lay.path(f, id_)) for f in ("mask", "scribble", "pseudo", "dist_s", "dist_c"))


def _tree(root) -> dict:
    """Relative path -> bytes of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


def test_layout_files_sizes_modes_values(synthetic_root, synthetic_summary):
    assert read_ids(split_path(synthetic_root, "train")) == [f"train_{i:05d}" for i in range(6)]
    assert read_ids(split_path(synthetic_root, "val")) == [f"val_{i:05d}" for i in range(3)]
    assert synthetic_summary["classes"] == list(CLASSES[:6])
    assert json.loads((synthetic_root / MARKER).read_text())["complete"] is True
    lay = Layout(synthetic_root, FOLDERS)
    modes = {"image": "RGB", "mask": "P", "scribble": "L", "pseudo": "L", "dist_s": "L", "dist_c": "L"}
    for id_ in _ids(synthetic_root):
        for field, mode in modes.items():
            with Image.open(lay.path(field, id_)) as img:
                assert (img.mode, img.size) == (mode, (80, 64)), (field, id_)
                assert img.format == ("JPEG" if field == "image" else "PNG")
                if field == "mask":
                    pal = np.asarray(img.getpalette(), np.uint8).reshape(-1, 3)
                    assert np.array_equal(pal[:21], voc_palette()[:21])
        for field in ("mask", "scribble", "pseudo"):
            values = set(np.unique(read_label(lay.path(field, id_))).tolist())
            assert values <= set(range(6)) | {255}, (field, id_, values)
        image = read_image(lay.path("image", id_))
        assert image.std() > 10  # a textured picture, not a flat fill
    assert not [p for p in _tree(synthetic_root) if ".tmp" in p]  # no leftovers of atomic writes


def test_masks_have_objects_and_a_void_band(synthetic_root):
    for mask, *_ in _labels(synthetic_root):
        assert ((mask > 0) & (mask < 255)).any() and (mask == 0).any()
        void = mask == 255
        assert void.any() and void.mean() < 0.2
        # a thin band along label boundaries, not void regions
        assert not (void & ndimage.binary_erosion(void, np.ones((5, 5)), border_value=1)).any()


def test_scribbles_cover_a_few_percent_and_agree_with_the_mask(synthetic_root):
    labelled = total = 0
    for mask, scr, *_ in _labels(synthetic_root):
        lab = scr != 255
        labelled, total = labelled + lab.sum(), total + scr.size
        on = lab & (mask != 255)
        assert np.array_equal(scr[on], mask[on])
        assert (scr == 0).any()  # background strokes
        # every object class of the image is scribbled (the scribbles carry the class labels)
        assert set(np.unique(scr[lab]).tolist()) - {0} == set(np.unique(mask).tolist()) - {0, 255}
    assert 0.01 <= labelled / total <= 0.06


def test_scribbles_are_thin_strokes(synthetic_root):
    """ScribbleSup strokes are 3 px wide: eroding the labelled pixels by a 5x5 square leaves nothing
    much (a wide blob would survive), and each stroke is a few connected components."""
    for _, scr, *_ in _labels(synthetic_root):
        lab = scr != 255
        assert ndimage.binary_erosion(lab, np.ones((5, 5))).sum() <= 0.05 * lab.sum()
        assert 2 <= ndimage.label(lab, np.ones((3, 3)))[1] <= 30


def _miou(conf):
    """Mean IoU over the classes in the ground truth or the prediction (utils.metrics' rule)."""
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.diag(conf) / (conf.sum(0) + conf.sum(1) - np.diag(conf)))


def test_pseudo_labels_are_cam_like(synthetic_root, synthetic_summary):
    near_err = near = far_err = far = 0
    for mask, scr, pseudo, _, dist_c in _labels(synthetic_root):
        image_classes = set(np.unique(mask).tolist()) - {255}
        assert set(np.unique(pseudo).tolist()) - {255} <= image_classes  # no class from nowhere
        assert (pseudo == 255).any() and (pseudo != 255).mean() > 0.8  # an unsure band, not more
        both = (mask != 255) & (pseudo != 255)
        err = both & (pseudo != mask)
        near_err, near = near_err + (err & (dist_c < 255)).sum(), near + (both & (dist_c < 255)).sum()
        far_err, far = far_err + (err & (dist_c == 255)).sum(), far + (both & (dist_c == 255)).sum()
    # errors concentrate near the pseudo-label boundaries, where D_c is low
    assert near_err / near > 2 * far_err / far
    # the summary's mIoUs, by hand, on the train split: pseudo 255 as background / left out
    conf_bg = np.zeros((6, 6), np.int64)
    conf_both = np.zeros((6, 6), np.int64)
    hole = scored = 0
    for mask, _, pseudo, *_ in _labels(synthetic_root, ("train",)):
        keep = mask != 255
        bg = np.where(pseudo == 255, 0, pseudo)
        conf_bg += np.bincount(6 * mask[keep].astype(int) + bg[keep], minlength=36).reshape(6, 6)
        both = keep & (pseudo != 255)
        conf_both += np.bincount(6 * mask[both].astype(int) + pseudo[both], minlength=36).reshape(6, 6)
        hole, scored = hole + (keep & (pseudo == 255)).sum(), scored + keep.sum()
    st = synthetic_summary["stats"]
    assert 0.5 < _miou(conf_bg) < _miou(conf_both) < 0.95  # useful but far from perfect
    assert _miou(conf_bg) == pytest.approx(st["pseudo_miou"], abs=1e-4)
    assert _miou(conf_both) == pytest.approx(st["pseudo_miou_labelled"], abs=1e-4)
    assert hole / scored == pytest.approx(st["pseudo_unlabelled_fraction"], abs=1e-4)


def test_summary_pseudo_miou_is_what_score_labels_prints(synthetic_root, synthetic_summary, capsys):
    """One pseudo-label mIoU: the synthetic summary's is datasets.score_labels' (utils.metrics)."""
    from datasets.score_labels import main as score_main
    assert score_main(["--root", str(synthetic_root), "--labels", PSEUDO_SYNTHETIC]) == 0
    out = capsys.readouterr().out
    st = synthetic_summary["stats"]
    assert f"mIoU: {100 * st['pseudo_miou']:.2f}\n" in out
    assert f"unlabelled (255) in labels: {100 * st['pseudo_unlabelled_fraction']:.2f} %" in out


def test_pseudo_labels_are_imperfect_on_a_larger_set(make_synthetic):
    """On a default-size set the statistics settle: mIoU vs mask ~65-80 %, ~3 % scribbles, some
    objects missed."""
    root = make_synthetic(train=16, val=4, size=(128, 160), seed=1)
    st = json.loads((root / MARKER).read_text())["stats"]
    assert 0.62 <= st["pseudo_miou"] < st["pseudo_miou_labelled"] <= 0.85
    assert 0.02 <= st["scribble_coverage"] <= 0.04
    assert st["scribble_agreement"] == 1.0
    assert 0 < st["missed_objects"] < 0.3 * st["objects"]
    assert st["pseudo_error_near_boundary"] > 2 * st["pseudo_error_interior"]


def test_distance_maps_are_those_of_the_written_labels(synthetic_root):
    for _, scr, pseudo, dist_s, dist_c in _labels(synthetic_root):
        assert np.array_equal(dist_s, scribble_distance_map(scr))
        assert np.array_equal(dist_c, pseudo_distance_map(pseudo))


def test_deterministic_for_a_seed_and_independent_of_the_set_size(make_synthetic, synthetic_root):
    a = _tree(make_synthetic(train=2, val=1))
    b = _tree(make_synthetic(train=2, val=1))
    assert a == b
    assert len(a) == 3 * 6 + 2 + 2  # 3 ids x 6 fields, 2 id lists, the marker, dataset.yaml
    assert META_FILE in a
    c = _tree(make_synthetic(train=2, val=1, seed=1))
    assert a.keys() == c.keys()
    for p in a:
        if p.endswith((".jpg", ".png")):
            assert a[p] != c[p], p
    # a sample depends on (seed, split, index) only: the small set is a prefix of the session set
    full = _tree(synthetic_root)
    for p in a:
        if p.endswith((".jpg", ".png")):
            assert a[p] == full[p], p


def test_refuses_a_foreign_folder_unless_overwrite(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match=r"not empty.*--overwrite"):
        generate(str(out), train=1, val=1, size=(48, 64), progress=False)
    assert os.listdir(out) == ["notes.txt"]  # nothing written
    generate(str(out), train=1, val=1, size=(48, 64), progress=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"
    assert read_ids(split_path(str(out), "train")) == ["train_00000"]
    other = tmp_path / "other"
    other.mkdir()
    (other / MARKER).write_text("{}")  # a marker that is not ours
    with pytest.raises(DatasetError, match="not a synthetic set"):
        generate(str(other), train=1, val=1, size=(48, 64), progress=False)
    with pytest.raises(DatasetError, match="not a directory"):
        generate(str(out / "notes.txt"), train=1, val=1, progress=False)


def test_regenerates_a_previous_set_in_place(make_synthetic):
    root = make_synthetic(train=3, val=2)
    generate(str(root), train=2, val=1, size=(64, 80), progress=False)  # no overwrite needed
    assert _tree(root) == _tree(make_synthetic(train=2, val=1))  # stale ids removed, same bytes


def test_a_failed_run_leaves_no_id_lists_and_can_be_rerun(tmp_path, monkeypatch):
    calls = []

    def failing(label, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return pseudo_distance_map(label, *a, **k)

    out = str(tmp_path / "set")
    monkeypatch.setattr(synthetic, "pseudo_distance_map", failing)
    with pytest.raises(OSError, match="disk full"):
        generate(out, train=2, val=1, size=(48, 64), progress=False)
    assert not os.path.exists(split_path(out, "train"))  # visibly unfinished
    assert json.loads(open(os.path.join(out, MARKER)).read())["complete"] is False
    assert not [p for p in _tree(out) if ".tmp" in p]
    monkeypatch.undo()
    generate(out, train=2, val=1, size=(48, 64), progress=False)  # ours: no --overwrite needed
    assert len(read_ids(split_path(out, "train"))) == 2


@pytest.mark.parametrize("kw, match", [
    (dict(num_classes=21), "num_classes"), (dict(num_classes=0), "num_classes"),
    (dict(size=(16, 64)), "too small"), (dict(val=0), "at least one"), (dict(seed=-1), "seed"),
    (dict(preset="gray5"), "unknown preset 'gray5'; known: voc, gray4"),
    (dict(preset="gray4", num_classes=5), r"num_classes.*is 3 \(body, organ, lesion\), got 5"),
])
def test_bad_arguments(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        generate(str(tmp_path / "x"), **{"train": 1, "val": 1, "progress": False, **kw})
    assert not (tmp_path / "x").exists()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "datasets.synthetic", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli(tmp_path):
    out = str(tmp_path / "cli")
    r = _cli("--out", out, "--train", "2", "--val", "1", "--size", "48", "64", "--seed", "3",
             "--classes", "2")
    assert r.returncode == 0, r.stderr
    assert "scribbles label" in r.stdout and "pseudo-label mIoU" in r.stdout
    summary = json.loads(open(os.path.join(out, MARKER)).read())
    assert summary["params"] == dict(train=2, val=1, size=[48, 64], seed=3, num_classes=2)
    assert summary["classes"] == ["background", "aeroplane", "bicycle"]
    for mask, scr, pseudo, *_ in _labels(out):
        assert mask.shape == (48, 64)
        for lab in (mask, scr, pseudo):
            assert set(np.unique(lab).tolist()) <= {0, 1, 2, 255}
    # the same through the Python API: same bytes
    api = str(tmp_path / "api")
    generate(api, train=2, val=1, size=(48, 64), seed=3, num_classes=2, progress=False)
    assert _tree(api) == _tree(out)


def test_cli_errors_are_one_line_and_exit_1(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    r = _cli("--out", str(tmp_path), "--train", "1", "--val", "1")
    assert r.returncode == 1
    assert "not empty" in r.stderr and "--overwrite" in r.stderr and "Traceback" not in r.stderr
    r = _cli("--out", str(tmp_path / "new"), "--size", "8", "8")
    assert r.returncode == 1 and "too small" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- presets, dataset.yaml
def test_the_default_set_describes_its_own_classes(synthetic_root, make_synthetic):
    """dataset.yaml lists background + the K classes the set draws (VOC's first K+1 names and
    colours, .jpg), not VOC's 21: a network gets K+1 outputs, a report K+1 rows. A gray4 set
    regenerated as the default gets the default's description instead of its own."""
    meta = load_meta(str(synthetic_root))
    assert meta.source == str(synthetic_root / META_FILE)  # read from the set, not VOC's defaults
    assert meta.classes == CLASSES[:6] and meta.num_classes == 6 and meta.background == 0
    assert meta.image_suffix == ".jpg" and meta.ignore_index == 255
    assert meta.palette == VOC_META.palette[:6]
    assert np.array_equal(meta.palette_array(), voc_palette())  # the masks' palette, unchanged
    assert load_meta(str(make_synthetic(train=1, val=1, num_classes=2))).classes == CLASSES[:3]
    root = make_synthetic(train=2, val=1, size=(48, 48), preset="gray4", num_classes=None)
    assert load_meta(str(root)).classes == GRAY4_CLASSES
    synthetic.generate(str(root), train=2, val=1, size=(48, 48), progress=False)
    assert not list((root / "JPEGImages").glob("*.png"))
    assert load_meta(str(root)).classes == CLASSES[:6] and load_meta(str(root)).image_suffix == ".jpg"


def test_the_default_preset_is_voc(make_synthetic):
    """`preset="voc"` is what every call without a preset writes, byte for byte (the bytes of the
    default set are those before presets existed, plus dataset.yaml)."""
    assert synthetic.DEFAULT_PRESET == "voc" and PRESETS["voc"].size == (128, 160)
    plain, named = make_synthetic(train=2, val=1), make_synthetic(train=2, val=1, preset="voc")
    assert _tree(plain) == _tree(named)
    assert "preset" not in json.loads((plain / MARKER).read_text())["params"]
    assert np.array_equal(sample("train", 1, (64, 80))["image"],
                          sample("train", 1, (64, 80), preset="voc", num_classes=5)["image"])


def _touching(mask: np.ndarray) -> set:
    """Unordered pairs of values that are 4-neighbours somewhere in the mask."""
    pairs = set()
    for a, b in ((mask[:, :-1], mask[:, 1:]), (mask[:-1], mask[1:])):
        diff = a != b
        pairs |= {frozenset(p) for p in zip(a[diff].tolist(), b[diff].tolist())}
    return pairs


NOT_NESTED = {frozenset({3, 0}), frozenset({3, 1}), frozenset({2, 0})}


def test_gray4_set(make_synthetic):
    root = make_synthetic(train=4, val=2, size=(64, 64), preset="gray4", num_classes=None)  # K: 3
    meta = load_meta(str(root))
    assert meta.classes == GRAY4_CLASSES == ("background", "body", "organ", "lesion")
    assert meta.num_classes == 4 and meta.image_suffix == ".png" and meta.background == 0
    assert meta.palette == GRAY4_PALETTE and len(set(meta.palette)) == 4
    assert meta.splits_dir == os.path.join("ImageSets", "SegmentationAug")
    summary = json.loads((root / MARKER).read_text())
    assert summary["params"] == dict(train=4, val=2, size=[64, 64], seed=0, num_classes=3, preset="gray4")
    assert summary["classes"] == list(GRAY4_CLASSES) and summary["stats"]["scribble_agreement"] == 1.0
    assert not list((root / "JPEGImages").glob("*.jpg"))
    lay = Layout(root, FOLDERS)
    for id_ in _ids(root):
        with Image.open(root / "JPEGImages" / f"{id_}.png") as img:
            assert (img.format, img.mode, img.size) == ("PNG", "L", (64, 64))
            image = np.asarray(img)
        assert image.std() > 10
        with Image.open(lay.path("mask", id_)) as img:
            assert img.mode == "P"
            pal = np.asarray(img.getpalette(), np.uint8).reshape(-1, 3)
            assert np.array_equal(pal[:4], np.asarray(GRAY4_PALETTE))
        mask, scr, pseudo, dist_s, dist_c = (read_label(lay.path(f, id_))
                                             for f in ("mask", "scribble", "pseudo", "dist_s", "dist_c"))
        assert set(np.unique(mask).tolist()) == {0, 1, 2, 3}  # dense: every structure, no void band
        assert not _touching(mask) & NOT_NESTED, id_
        assert set(np.unique(scr).tolist()) <= {0, 1, 2, 3, 255} and (scr == 0).any()
        assert set(np.unique(pseudo).tolist()) <= {0, 1, 2, 3, 255}
        lab = scr != 255
        assert np.array_equal(scr[lab], mask[lab])
        assert np.array_equal(dist_s, scribble_distance_map(scr))
        assert np.array_equal(dist_c, pseudo_distance_map(pseudo))
    assert _tree(root) == _tree(make_synthetic(train=4, val=2, size=(64, 64), preset="gray4", num_classes=3))


@pytest.mark.parametrize("size", [(48, 48), (192, 192), (96, 160)])
def test_gray4_structures_are_nested_at_any_size(size):
    for i in range(6):
        smp = sample("train", i, size, seed=3, preset="gray4")
        assert smp["image"].shape == size and smp["image"].dtype == np.uint8
        assert set(np.unique(smp["mask"]).tolist()) == {0, 1, 2, 3}
        assert not _touching(smp["mask"]) & NOT_NESTED, (size, i)
        fg = smp["mask"] > 0   # the body stays inside the image
        assert not (fg[0].any() or fg[-1].any() or fg[:, 0].any() or fg[:, -1].any())
    assert sample("val", 0, preset="gray4")["mask"].shape == (192, 192)  # the preset's size


def test_regenerating_as_another_preset_leaves_no_old_images(make_synthetic):
    root = make_synthetic(train=2, val=1, size=(48, 64))
    generate(str(root), train=2, val=1, size=(48, 64), preset="gray4", progress=False)
    assert not list((root / "JPEGImages").glob("*.jpg"))
    assert _tree(root) == _tree(make_synthetic(train=2, val=1, size=(48, 64), preset="gray4", num_classes=3))
    assert load_meta(str(root)).image_suffix == ".png"


def test_cli_gray4(tmp_path):
    out = str(tmp_path / "cli")
    r = _cli("--out", out, "--preset", "gray4", "--train", "1", "--val", "1", "--size", "48", "48")
    assert r.returncode == 0, r.stderr
    assert "(48x48, classes background, body, organ, lesion)" in r.stdout
    api = str(tmp_path / "api")
    generate(api, train=1, val=1, size=(48, 48), preset="gray4", progress=False)
    assert _tree(api) == _tree(out)
    r = _cli("--out", str(tmp_path / "x"), "--preset", "gray4", "--classes", "2")
    assert r.returncode == 1 and "num_classes" in r.stderr and "Traceback" not in r.stderr
