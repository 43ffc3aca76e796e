"""ScribbleDataset (SPEC §1): layout edge cases, only the requested fields read, clear errors."""
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from datasets.layout import DatasetError
from datasets.scribble import ScribbleDataset
from datasets.transforms import TrainTransform, ValTransform
from utils.io import save_png

H, W = 24, 32
FOLDER = {"image": "JPEGImages", "scribble": "pascal_2012_scribble", "pseudo": "my_pseudo",
          "dist_s": "distance_map", "dist_c": "distance_pseudo", "mask": "SegmentationClassAug"}
PSEUDO = {"pseudo": "my_pseudo"}


def field_arrays(k: int, h=H, w=W):
    """Distinct, recognisable content per id and field."""
    y, x = np.mgrid[:h, :w]
    return {"image": np.stack([(x * 7 + k) % 256, (y * 9) % 256, np.full_like(x, 128)], 2),
            "scribble": np.where(x < 5, k % 21, 255), "pseudo": (x // 8 + k) % 21,
            "dist_s": (x * 8) % 256, "dist_c": (y * 10 + k) % 256, "mask": (y // 6) % 21}


def write_root(root, ids=("a", "b", "c"), fields=tuple(FOLDER), rgb_maps=False,
               split_text=None):
    """A tiny ScribbleSup-layout root; returns {id: {field: array}} as written."""
    written = {}
    for k, id_ in enumerate(ids):
        arrays = {f: a.astype(np.uint8) for f, a in field_arrays(k).items() if f in fields}
        for f, a in arrays.items():
            path = os.path.join(root, FOLDER[f], id_ + (".jpg" if f == "image" else ".png"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if f == "image":
                Image.fromarray(a).save(path, quality=100)
            elif f.startswith("dist") and rgb_maps:   # channel 0 is the map, 1/2 are noise
                rgb = np.stack([a, 255 - a, np.full_like(a, 77)], 2)
                Image.fromarray(rgb, "RGB").save(path)
            else:
                save_png(a, path, palette=(f == "mask"))
        written[id_] = arrays
    split_dir = os.path.join(root, "ImageSets", "SegmentationAug")
    os.makedirs(split_dir, exist_ok=True)
    with open(os.path.join(split_dir, "train.txt"), "w") as f:
        f.write(split_text if split_text is not None else "\n".join(ids) + "\n")
    return written


def test_id_list_without_trailing_newline_and_with_blank_lines(tmp_path):
    write_root(tmp_path, split_text="a\n\n  \nb\r\n\nc")
    ds = ScribbleDataset(tmp_path, fields=("scribble",))
    assert ds.ids == ["a", "b", "c"]
    assert [ds[i]["id"] for i in range(len(ds))] == ["a", "b", "c"]


def test_split_given_as_a_path(tmp_path):
    write_root(tmp_path)
    ids_file = tmp_path / "mine.txt"
    ids_file.write_text("c\nb")
    ds = ScribbleDataset(tmp_path, split=str(ids_file), fields=("mask",))
    assert ds.ids == ["c", "b"]


def test_fields_returned_as_numpy_without_transform(tmp_path):
    written = write_root(tmp_path)
    ds = ScribbleDataset(tmp_path, fields=tuple(FOLDER), folders=PSEUDO)
    s = ds[1]
    assert set(s) == set(FOLDER) | {"id", "orig_size"}
    assert s["id"] == "b" and s["orig_size"] == (H, W)
    assert s["image"].shape == (H, W, 3) and s["image"].dtype == np.uint8
    assert np.abs(s["image"].astype(int) - written["b"]["image"]).max() <= 8   # JPEG
    for f in ("scribble", "pseudo", "dist_s", "dist_c", "mask"):
        assert s[f].dtype == np.uint8 and s[f].shape == (H, W), f
        assert np.array_equal(s[f], written["b"][f]), f


def test_rgb_distance_maps_load_channel_0(tmp_path):
    written = write_root(tmp_path, rgb_maps=True)
    s = ScribbleDataset(tmp_path, fields=("dist_s", "dist_c"))[2]
    assert np.array_equal(s["dist_s"], written["c"]["dist_s"])
    assert np.array_equal(s["dist_c"], written["c"]["dist_c"])


def test_unrequested_fields_are_never_read(tmp_path):
    # Only image + scribble exist: no pseudo, map or mask folder at all.
    write_root(tmp_path, fields=("image", "scribble"))
    ds = ScribbleDataset(tmp_path, fields=("image", "scribble"), transform=TrainTransform(16))
    s = ds[0]
    assert set(s) == {"id", "orig_size", "image", "scribble"}
    with pytest.raises(DatasetError, match="distance_map"):
        ScribbleDataset(tmp_path, fields=("image", "scribble", "dist_s"))


def test_pseudo_without_a_folder_is_a_clear_error(tmp_path):
    write_root(tmp_path)
    with pytest.raises(DatasetError, match="pseudo"):
        ScribbleDataset(tmp_path, fields=("image", "pseudo"))
    ds = ScribbleDataset(tmp_path, fields=("pseudo",), folders=PSEUDO)
    assert ds[0]["pseudo"].shape == (H, W)


def test_unknown_field_is_rejected(tmp_path):
    write_root(tmp_path)
    with pytest.raises(ValueError, match="dist_x"):
        ScribbleDataset(tmp_path, fields=("image", "dist_x"))


def test_missing_file_names_the_file(tmp_path):
    write_root(tmp_path)
    missing = tmp_path / "distance_pseudo" / "b.png"
    missing.unlink()
    ds = ScribbleDataset(tmp_path, fields=("image", "dist_c"))
    ds[0]
    with pytest.raises(DatasetError, match=r"distance_pseudo.b\.png.*not found"):
        ds[1]


def test_unreadable_file_names_the_file(tmp_path):
    write_root(tmp_path)
    (tmp_path / "JPEGImages" / "c.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetError, match=r"JPEGImages.c\.jpg.*cannot decode"):
        ScribbleDataset(tmp_path, fields=("image",))[2]


def test_size_mismatch_names_the_file(tmp_path):
    write_root(tmp_path)
    save_png(np.zeros((H, W + 1), np.uint8), str(tmp_path / "pascal_2012_scribble" / "a.png"))
    with pytest.raises(DatasetError, match=r"pascal_2012_scribble.a\.png: size 24x33 differs"):
        ScribbleDataset(tmp_path, fields=("image", "scribble"))[0]


def test_label_value_out_of_range_is_an_error(tmp_path):
    write_root(tmp_path)
    bad = np.zeros((H, W), np.uint8)
    bad[3, 4] = 40
    save_png(bad, str(tmp_path / "SegmentationClassAug" / "b.png"))
    with pytest.raises(DatasetError, match=r"SegmentationClassAug.b\.png: label values \[40\] "
                                           r"\(1 pixel\) outside 0\.\.20 \(21 classes\) and 255"):
        ScribbleDataset(tmp_path, fields=("mask",))[1]


def test_label_values_checked_against_the_runs_num_classes(tmp_path):
    write_root(tmp_path, fields=("mask",))   # masks hold 0..3
    assert ScribbleDataset(tmp_path, fields=("mask",), num_classes=4)[0]["mask"].max() == 3
    with pytest.raises(DatasetError, match=r"a\.png: label values \[3\] .*outside 0\.\.2 \(3 classes\)"):
        ScribbleDataset(tmp_path, fields=("mask",), num_classes=3)[0]
    ok = np.full((H, W), 255, np.uint8)      # 255 is the ignore value at any class count
    ok[0, 0] = 1
    save_png(ok, str(tmp_path / "SegmentationClassAug" / "a.png"))
    assert ScribbleDataset(tmp_path, fields=("mask",), num_classes=2)[0]["mask"][0, 0] == 1


def test_missing_id_list_is_an_error(tmp_path):
    write_root(tmp_path)
    with pytest.raises(DatasetError, match="val.txt"):
        ScribbleDataset(tmp_path, split="val", fields=("image",))


def test_training_batch_types(tmp_path):
    write_root(tmp_path, ids=("a", "b", "c", "d"))
    fields = ("image", "scribble", "pseudo", "dist_s", "dist_c")
    ds = ScribbleDataset(tmp_path, fields=fields, folders=PSEUDO, transform=TrainTransform(20))
    batch = next(iter(DataLoader(ds, batch_size=2, shuffle=False)))
    assert batch["id"] == ["a", "b"]
    assert batch["image"].shape == (2, 3, 20, 20) and batch["image"].dtype == torch.float32
    for f in ("scribble", "pseudo"):
        assert batch[f].shape == (2, 20, 20) and batch[f].dtype == torch.int64
    for f in ("dist_s", "dist_c"):
        assert batch[f].shape == (2, 20, 20) and batch[f].dtype == torch.float32
    assert [v.tolist() for v in batch["orig_size"]] == [[H, H], [W, W]]


def test_val_sample_keeps_orig_size_and_full_resolution(tmp_path):
    written = write_root(tmp_path)
    ds = ScribbleDataset(tmp_path, fields=("image", "mask"), transform=ValTransform(None))
    s = ds[0]
    assert s["orig_size"] == (H, W) and s["image"].shape == (3, H, W)
    assert torch.equal(s["mask"], torch.from_numpy(written["a"]["mask"]).long())
