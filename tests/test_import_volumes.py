"""datasets/import_volumes.py: WSL4MIS h5 and NIfTI volumes -> the dataset layout, folds, index."""
from __future__ import annotations

import os

import h5py
import nibabel as nib
import numpy as np
import pytest

from datasets import import_volumes as iv
from datasets.layout import read_ids
from datasets.meta import load_meta
from datasets.volumes import read_index
from utils.io import read_image, read_label


def _volume(rng, z=3, h=20, w=24):
    label = np.zeros((z, h, w), np.uint8)
    label[:, 5:15, 6:18] = 2
    label[:, 8:12, 9:15] = 3
    label[:, 5:15, 3:6] = 1
    image = np.clip(0.2 + 0.2 * label + 0.05 * rng.standard_normal(label.shape), 0, 1).astype(np.float32)
    scribble = np.full(label.shape, 4, np.uint16)
    scribble[:, 1, 2:20] = 0
    scribble[:, 10, 4] = 1
    scribble[:, 6, 8:16] = 2
    scribble[:, 10, 10:14] = 3
    return image, label, scribble


def make_wsl4mis(folder, patients=(1, 2, 3, 4, 5), frames=(1, 12), slices=True, seed=0):
    """WSL4MIS's data/ACDC layout: ACDC_training_volumes/<case>.h5 and the per-slice files."""
    rng = np.random.default_rng(seed)
    root = folder / "ACDC"
    (root / "ACDC_training_volumes").mkdir(parents=True)
    (root / "ACDC_training_slices").mkdir()
    for p in patients:
        for f in frames:
            case = f"patient{p:03d}_frame{f:02d}"
            image, label, scribble = _volume(rng)
            with h5py.File(root / "ACDC_training_volumes" / f"{case}.h5", "w") as h:
                h["image"], h["label"], h["scribble"] = image, label, scribble
            if slices:
                for z in range(len(image)):
                    with h5py.File(root / "ACDC_training_slices" / f"{case}_slice_{z}.h5", "w") as h:
                        h["image"], h["label"], h["scribble"] = image[z], label[z], scribble[z]
    return root


def test_wsl4mis_import_slices_index_folds_and_description(tmp_path):
    src = make_wsl4mis(tmp_path)
    out = tmp_path / "ds"
    assert iv.main(["--wsl4mis", str(src), "--out", str(out), "--folds", "5", "--fold", "2"]) == 0
    meta = load_meta(str(out))
    assert meta.classes == iv.ACDC_CLASSES and meta.image_suffix == ".png" and meta.volumes == "volumes.csv"
    assert meta.metrics == ("dice", "hd95", "assd") and meta.mean[0] == meta.mean[1] == meta.mean[2]
    # pixels: round(255 x), labels as is, scribble 4 -> 255
    with h5py.File(src / "ACDC_training_volumes" / "patient002_frame12.h5") as h:
        image, label, scribble = h["image"][()], h["label"][()], h["scribble"][()]
    got = read_image(str(out / "JPEGImages" / "patient002_frame12_slice_1.png"))
    assert got.shape == (20, 24, 3)
    np.testing.assert_array_equal(got[..., 0], np.floor(image[1].astype(np.float64) * 255 + 0.5).astype(np.uint8))
    np.testing.assert_array_equal(read_label(str(out / "SegmentationClassAug" / "patient002_frame12_slice_1.png")),
                                  label[1])
    np.testing.assert_array_equal(read_label(str(out / "pascal_2012_scribble" / "patient002_frame12_slice_1.png")),
                                  np.where(scribble[1] == 4, 255, scribble[1]))
    # folds by patient: 5 patients in 5 folds, fold 2 validates patient002 (both frames, every slice)
    splits = out / "ImageSets" / "SegmentationAug"
    val = read_ids(str(splits / "val.txt"))
    assert val == read_ids(str(splits / "val_fold2.txt"))
    assert val == [f"patient002_frame{f:02d}_slice_{z}" for f in (1, 12) for z in range(3)]
    for k in range(1, 6):
        tr, va = read_ids(str(splits / f"train_fold{k}.txt")), read_ids(str(splits / f"val_fold{k}.txt"))
        assert not set(tr) & set(va) and len(tr) + len(va) == 30
        assert {i[:10] for i in va} == {f"patient{k:03d}"}
    index = read_index(str(out / "volumes.csv"))
    assert index["patient002_frame12"].ids == tuple(f"patient002_frame12_slice_{z}" for z in range(3))
    assert index["patient002_frame12"].spacing is None  # h5 files carry none


def test_acdc_folds_are_wsl4mis_folds():
    """100 patients, 5 folds: fold k validates patients 20(k-1)+1 .. 20k (WSL4MIS's get_fold_ids)."""
    groups = [f"patient{i:03d}" for i in range(1, 101)]
    blocks = iv.fold_groups(groups * 2, 5)
    for k, block in enumerate(blocks, start=1):
        assert block == [f"patient{i:03d}" for i in range(20 * (k - 1) + 1, 20 * k + 1)]
    assert iv.group_of("patient042_frame01", iv.WSL4MIS_GROUP) == "patient042"
    assert [len(b) for b in iv.fold_groups([str(i) for i in range(7)], 3)] == [3, 2, 2]  # array_split


def test_bad_cases_are_named_the_rest_imported_and_a_rerun_resumes(tmp_path, capsys):
    src = make_wsl4mis(tmp_path, patients=(1, 2, 3), slices=False)
    with h5py.File(src / "ACDC_training_volumes" / "patient002_frame01.h5", "r+") as h:  # label of another shape
        del h["label"]
        h["label"] = np.zeros((3, 20, 23), np.uint8)
    (src / "ACDC_training_volumes" / "patient003_frame12.h5").write_bytes(b"not an h5 file")
    out = tmp_path / "ds"
    assert iv.main(["--wsl4mis", str(src), "--out", str(out), "--folds", "3", "--fold", "1"]) == 1
    err = capsys.readouterr().err
    assert "patient002_frame01: the label has shape (3, 20, 23), the image (3, 20, 24)" in err
    assert "patient003_frame12.h5: cannot read" in err
    index = read_index(str(out / "volumes.csv"))
    assert sorted(index) == ["patient001_frame01", "patient001_frame12", "patient002_frame12", "patient003_frame01"]
    # the folds did not move: fold 1 still validates patient001 only
    assert {i[:10] for i in read_ids(str(out / "ImageSets/SegmentationAug/val.txt"))} == {"patient001"}
    # fix one file and rerun: only the failed cases are read again, the others kept
    kept = out / "JPEGImages" / "patient001_frame01_slice_0.png"
    stamp = kept.stat().st_mtime_ns
    with h5py.File(src / "ACDC_training_volumes" / "patient002_frame01.h5", "r+") as h:
        del h["label"]
        h["label"] = np.zeros((3, 20, 24), np.uint8)
    assert iv.main(["--wsl4mis", str(src), "--out", str(out), "--folds", "3", "--fold", "1"]) == 1  # one still bad
    assert kept.stat().st_mtime_ns == stamp
    assert "patient002_frame01" in read_index(str(out / "volumes.csv"))
    # another setting into the same folder is refused, not mixed
    assert iv.main(["--wsl4mis", str(src), "--out", str(out), "--folds", "3", "--classes", "bg", "a", "b", "c"]) == 1
    assert "other settings" in capsys.readouterr().err


def test_output_must_be_ours_and_not_the_input(tmp_path, capsys):
    src = make_wsl4mis(tmp_path, patients=(1,), frames=(1,), slices=False)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    assert iv.main(["--wsl4mis", str(src), "--out", str(theirs), "--folds", "1"]) == 1
    assert "was not made by import_volumes" in capsys.readouterr().err
    assert iv.main(["--wsl4mis", str(src), "--out", str(src / "out"), "--folds", "1"]) == 1
    assert "input folder" in capsys.readouterr().err
    assert (theirs / "notes.txt").read_text() == "mine" and not (src / "out").exists()


def test_a_slice_file_that_disagrees_with_its_volume_is_named(tmp_path, capsys):
    src = make_wsl4mis(tmp_path, patients=(1, 2), frames=(1,))
    with h5py.File(src / "ACDC_training_slices" / "patient002_frame01_slice_1.h5", "r+") as h:
        h["scribble"][0, 0] = 3
    assert iv.main(["--wsl4mis", str(src), "--out", str(tmp_path / "ds"), "--folds", "2"]) == 1
    assert "patient002_frame01_slice_1.h5: scribble differs from slice 1" in capsys.readouterr().err


def _nifti(path, array_zyx, spacing_zyx=(8.0, 1.5, 1.25), dtype=None):
    data = np.transpose(array_zyx, (2, 1, 0))  # (x, y, z) as NIfTI stores it
    img = nib.Nifti1Image(data.astype(dtype or data.dtype), np.diag([spacing_zyx[2], spacing_zyx[1], spacing_zyx[0], 1]))
    nib.save(img, str(path))


def test_nifti_import_naming_rule_scaling_spacing_and_unlabelled_value(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "nifti"
    for p in ("p01", "p02", "p03"):
        (src / p).mkdir(parents=True)
        _, label, scribble = _volume(rng)
        raw = (rng.integers(0, 1000, label.shape) + 300 * label.astype(np.int64)).astype(np.int16)
        raw[0, 0, 0] = 30000  # an outlier the 99th-percentile clip removes
        _nifti(src / p / f"{p}_t1.nii.gz", raw)
        _nifti(src / p / f"{p}_t1_gt.nii.gz", label)
        _nifti(src / p / f"{p}_t1_scr.nii.gz", np.where(scribble == 4, 9, scribble).astype(np.uint8))
    (src / "p03" / "p03_4d.nii.gz").write_bytes(b"")  # not matched by --case_regex
    out = tmp_path / "ds"
    assert iv.main(["--nifti", str(src), "--images", "*/{case}.nii.gz", "--labels", "*/{case}_gt.nii.gz",
                    "--scribbles", "*/{case}_scr.nii.gz", "--unlabelled", "9", "--case_regex", r"p\d+_t1",
                    "--classes", "bg", "a", "b", "c", "--folds", "3", "--fold", "3", "--out", str(out)]) == 0
    index = read_index(str(out / "volumes.csv"))
    assert sorted(index) == ["p01_t1", "p02_t1", "p03_t1"]
    assert index["p02_t1"].spacing == (8.0, 1.5, 1.25)  # (z, y, x) from the header
    assert load_meta(str(out)).classes == ("bg", "a", "b", "c")
    assert read_ids(str(out / "ImageSets/SegmentationAug/val.txt")) == [f"p03_t1_slice_{z}" for z in range(3)]
    # the slice is arr[:, :, z].T of the NIfTI array: the (z, y, x) volume's slice z
    raw = np.transpose(np.asanyarray(nib.load(str(src / "p01" / "p01_t1.nii.gz")).dataobj), (2, 1, 0))
    want = iv.to_uint8(iv.scale_intensity(raw, 99))
    np.testing.assert_array_equal(read_image(str(out / "JPEGImages" / "p01_t1_slice_2.png"))[..., 0], want[2])
    assert want.max() == 255 and (want == 255).mean() > 0.005  # clipped at the percentile: many at the top
    scr = read_label(str(out / "pascal_2012_scribble" / "p01_t1_slice_0.png"))
    assert set(np.unique(scr)) == {0, 1, 2, 3, 255}


def test_percentile_is_wsl4mis_cumulative_distribution_on_integer_volumes():
    from skimage import exposure
    rng = np.random.default_rng(2)
    vol = rng.integers(0, 700, (4, 30, 30)).astype(np.int16)
    cdf = exposure.cumulative_distribution(vol)
    assert iv.clip_percentile(vol, 99) == cdf[1][cdf[0] >= 0.99][0]  # WSL4MIS's MedicalImageDeal


def test_nifti_problems_are_named_per_case(tmp_path, capsys):
    rng = np.random.default_rng(3)
    src = tmp_path / "n"
    src.mkdir()
    for case in ("a", "b", "c"):
        image, label, _ = _volume(rng)
        _nifti(src / f"{case}.nii.gz", image)
        if case != "b":
            _nifti(src / f"{case}_gt.nii.gz", label if case == "a" else label + 5)
    args = ["--nifti", str(src), "--images", "{case}.nii.gz", "--labels", "{case}_gt.nii.gz",
            "--classes", "bg", "x", "y", "z", "--folds", "1", "--out", str(tmp_path / "ds")]
    assert iv.main(args) == 1
    err = capsys.readouterr().err
    assert "no label file for case b" in err and "c: the label holds value(s) [5, 6, 7, 8]" in err
    assert sorted(read_index(str(tmp_path / "ds" / "volumes.csv"))) == ["a"]
    with pytest.raises(SystemExit):
        iv.main(["--nifti", str(src), "--out", str(tmp_path / "x"), "--classes", "a", "b"])  # no --images
    assert not os.path.exists(tmp_path / "x")
