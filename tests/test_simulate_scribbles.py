"""Scribbles simulated from full masks (SPEC §1 layout), datasets/simulate_scribbles.py."""
import os

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from datasets.simulate_scribbles import _LUTS, image_rng, main, simulate, skeletonize
from utils.io import read_label, save_png
from utils.outputs import MARK


def simulate_scribble(mask, rng, **kw):
    """The scribble alone (simulate() also returns the stroke and tiny-object counts)."""
    return simulate(mask, rng, **kw)[0]


def components(binary, connectivity=8):
    return cv2.connectedComponents(np.asarray(binary, np.uint8), connectivity=connectivity)[0] - 1


def has_2x2_block(s):
    return bool((s[:-1, :-1] & s[1:, :-1] & s[:-1, 1:] & s[1:, 1:]).any())


def plain_thinning(binary):
    """The textbook whole-image parallel iteration with the same tables: the reference."""
    img = np.pad(binary, 1).astype(np.uint8)
    code = np.array([[8, 4, 2], [16, 0, 1], [32, 64, 128]])
    while True:
        before = img.sum()
        for lut in _LUTS:
            img[lut[ndimage.correlate(img, code, mode="constant")] & (img == 1)] = 0
        if img.sum() == before:
            return img[1:-1, 1:-1].astype(bool)


# --------------------------------------------------------------------------------- skeletonize

@pytest.mark.parametrize("shape", ["rectangle", "bar", "diagonal", "square"])
def test_skeleton_is_thin_connected_and_inside(shape):
    b = np.zeros((40, 60), np.uint8)
    if shape == "rectangle":
        b[5:30, 8:50] = 1
    elif shape == "bar":
        b[12:21, 4:56] = 1
    elif shape == "diagonal":
        cv2.line(b, (6, 5), (52, 34), 1, 7)
    else:
        b[10:12, 10:12] = 1          # plain Zhang-Suen erases a 2x2 square completely
    b = b.astype(bool)
    s = skeletonize(b)
    assert s.dtype == bool and s.shape == b.shape
    assert s.any() and not (s & ~b).any()
    assert components(s) == 1
    assert not has_2x2_block(s)
    assert s.sum() < b.sum() / 2 or shape == "square"
    if shape == "bar":               # one pixel per column along the bar, on its middle row
        cols = s[:, 12:48]
        assert (cols.sum(0) == 1).all() and (cols[16] == 1).all()
    if shape == "square":
        assert s.sum() == 1


def test_skeleton_keeps_holes_and_pieces():
    ring = np.zeros((50, 50), np.uint8)
    cv2.circle(ring, (25, 25), 18, 1, 6)
    two = np.zeros((30, 60), bool)
    two[5:25, 3:20] = two[5:25, 30:57] = True
    s = skeletonize(ring > 0)
    assert components(s) == 1
    assert components(~s, connectivity=4) == 2        # the loop around the hole survives
    assert components(skeletonize(two)) == 2


def test_incremental_thinning_equals_whole_image_iteration():
    rng = np.random.default_rng(0)
    for _ in range(20):
        f = ndimage.gaussian_filter(rng.random((32, 40)), rng.uniform(1.5, 3.5))
        b = f > np.quantile(f, rng.uniform(0.3, 0.7))
        np.testing.assert_array_equal(skeletonize(b), plain_thinning(b))


# -------------------------------------------------------------------------------- one scribble

def scene():
    """64x96 mask: background, objects of classes 1-4 (one class in two pieces, a 5-px and a
    6-px object), a big disc, a void band around each object; also the objects' masks."""
    m = np.zeros((64, 96), np.uint8)
    cv2.rectangle(m, (4, 4), (40, 14), 1, -1)          # wide bar
    cv2.ellipse(m, (20, 40), (14, 9), 30, 0, 360, 2, -1)
    cv2.circle(m, (70, 34), 20, 3, -1)                  # blob: the rim-arc rule
    m[(m > 0) & (cv2.erode(m, np.ones((3, 3), np.uint8)) == 0)] = 255   # VOC's void band
    m[30:33, 62:80] = 255                               # a void cut into the disc
    m[55:58, 4:6] = 2                                   # class 2 again, 6 px
    m[58, 40:45] = 4                                    # 5 px: too small
    return m


def objects(mask):
    for c in range(1, 21):
        n, lab = cv2.connectedComponents((mask == c).astype(np.uint8), connectivity=8)
        for k in range(1, n):
            yield c, lab == k


def test_strokes_lie_in_their_objects_with_their_class():
    m = scene()
    for seed in range(4):
        out = simulate_scribble(m, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == m.shape
        labelled = out != 255
        np.testing.assert_array_equal(out[labelled], m[labelled])   # right class, never void
        assert (out[m == 255] == 255).all()
        assert 0.02 < labelled.mean() < 0.4


def test_every_object_above_5px_gets_one_stroke_and_tiny_ones_none():
    m = scene()
    sizes = []
    for seed in range(4):
        out = simulate_scribble(m, np.random.default_rng(seed))
        for c, obj in objects(m):
            stroke = obj & (out == c)
            sizes.append(obj.sum())
            if obj.sum() <= 5:
                assert not stroke.any()
            else:
                assert components(stroke) == 1
    assert 5 in sizes and 6 in sizes


def test_exactly_one_background_stroke_on_background_only():
    m = scene()
    for seed in range(4):
        out = simulate_scribble(m, np.random.default_rng(seed))
        assert components(out == 0) == 1
        assert (m[out == 0] == 0).all()
    no_bg = np.where(m == 0, 1, m).astype(np.uint8)
    assert not (simulate_scribble(no_bg, np.random.default_rng(0)) == 0).any()


def test_strokes_are_3px_wide_and_thickness_is_opencvs():
    m = np.zeros((40, 90), np.uint8)
    m[10:30, 5:85] = 1
    thin = simulate_scribble(m, np.random.default_rng(0)) == 1
    wide = simulate_scribble(m, np.random.default_rng(0), thickness=4) == 1
    assert (thin[:, 20:70].sum(0) == 3).all()    # a straight horizontal skeleton path
    assert (wide[:, 20:70].sum(0) == 5).all()


def test_a_blob_gets_an_arc_inside_its_rim_not_a_dot():
    m = np.zeros((80, 80), np.uint8)
    cv2.circle(m, (40, 40), 30, 5, -1)
    dist = ndimage.distance_transform_edt(m > 0)
    for seed in range(3):
        stroke = simulate_scribble(m, np.random.default_rng(seed)) == 5
        assert stroke.sum() > 60                               # a dot would be ~9 px
        assert dist[stroke].max() < 10 and dist[stroke].min() >= 1


def test_same_seed_same_scribble_other_seed_differs():
    m = scene()
    a = simulate_scribble(m, image_rng(1, "2007_000032"))
    b = simulate_scribble(m, image_rng(1, "2007_000032"))
    c = simulate_scribble(m, image_rng(2, "2007_000032"))
    d = simulate_scribble(m, image_rng(1, "2007_000033"))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any() and (a != d).any()


def test_value_outside_classes_is_an_error():
    m = scene()
    m[0, 0] = 37
    with pytest.raises(ValueError, match="37"):
        simulate_scribble(m, np.random.default_rng(0))


# ------------------------------------------------------------------------------------------ CLI

def write_masks(folder, n=3):
    os.makedirs(folder, exist_ok=True)
    base = scene()
    for i in range(n):
        variant = base[:, ::-1] if i % 2 else base        # same objects, other places
        variant = variant[::-1] if i % 4 >= 2 else variant
        save_png(variant, os.path.join(folder, f"img_{i}.png"), palette=i == 0)
    return [f"img_{i}" for i in range(n)]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_skips_existing_and_overwrites(tmp_path, capsys):
    masks, out = tmp_path / "masks", tmp_path / "out"
    ids = write_masks(masks)
    code, stdout, _ = run(capsys, "--masks", masks, "--out", out, "--seed", 3, "--workers", 1)
    assert code == 0 and "images written: 3" in stdout and "strokes drawn: 15" in stdout
    for id_ in ids:
        with Image.open(out / f"{id_}.png") as img:
            assert img.mode == "L"
        lab = read_label(out / f"{id_}.png")
        mask = read_label(masks / f"{id_}.png")
        assert ((lab == 255) | (lab == mask)).all() and (lab == 0).any()
    assert "objects skipped as tiny (<= 5 px): 3" in stdout
    first = read_label(out / "img_1.png")

    save_png(np.full((64, 96), 7, np.uint8), str(out / "img_1.png"))   # marks "kept"
    code, stdout, _ = run(capsys, "--masks", masks, "--out", out, "--seed", 3, "--workers", 1)
    assert code == 0 and "images written: 0 (existing, skipped: 3)" in stdout
    assert (read_label(out / "img_1.png") == 7).all()

    code, _, _ = run(capsys, "--masks", masks, "--out", out, "--seed", 3, "--workers", 1, "--overwrite")
    assert code == 0
    np.testing.assert_array_equal(read_label(out / "img_1.png"), first)


def test_cli_output_does_not_depend_on_workers_and_ids_select(tmp_path, capsys):
    masks = tmp_path / "masks"
    write_masks(masks, n=4)
    assert run(capsys, "--masks", masks, "--out", tmp_path / "a", "--seed", 5, "--workers", 1)[0] == 0
    assert run(capsys, "--masks", masks, "--out", tmp_path / "b", "--seed", 5, "--workers", 2)[0] == 0
    for i in range(4):
        np.testing.assert_array_equal(read_label(tmp_path / "a" / f"img_{i}.png"),
                                      read_label(tmp_path / "b" / f"img_{i}.png"))
    (tmp_path / "ids.txt").write_text("img_2\nimg_0")
    code, _, _ = run(capsys, "--masks", masks, "--out", tmp_path / "c", "--seed", 5, "--workers", 1,
                     "--ids", tmp_path / "ids.txt")
    assert code == 0 and sorted(os.listdir(tmp_path / "c")) == [MARK, "img_0.png", "img_2.png"]


def test_cli_bad_files_exit_1_naming_the_file(tmp_path, capsys):
    masks, out = tmp_path / "masks", tmp_path / "out"
    write_masks(masks, n=2)
    bad = scene()
    bad[3, 3] = 37
    save_png(bad, str(masks / "bad_value.png"))
    (masks / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    code, _, err = run(capsys, "--masks", masks, "--out", out, "--seed", 0, "--workers", 1)
    assert code == 1
    assert "bad_value.png" in err and "37" in err and "corrupt.png" in err
    assert sorted(p for p in os.listdir(out)) == [MARK, "img_0.png", "img_1.png"]   # no partial file

    code, _, err = run(capsys, "--masks", tmp_path / "nowhere", "--out", out, "--seed", 0)
    assert code == 1 and "nowhere" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "--masks", tmp_path / "empty", "--out", out, "--seed", 0)
    assert code == 1 and "no .png" in err


def test_out_is_never_the_masks_folder_and_ids_are_names(tmp_path, capsys):
    """The audit's data loss (--out == --masks --overwrite replaced the masks with scribbles)
    and writes outside --out through an id with '..' or an absolute path."""
    masks = tmp_path / "masks"
    write_masks(masks, n=2)
    before = {n: (masks / n).read_bytes() for n in os.listdir(masks)}
    for out in (masks, masks / "scribbles"):
        code, _, err = run(capsys, "--masks", masks, "--out", out, "--seed", 0, "--overwrite")
        assert code == 1 and err.count("error:") == 1 and "input folder" in err
    for line in ("../img_0", str(masks / "img_0"), "img_0\x00"):
        (tmp_path / "ids.txt").write_text(f"img_1\n{line}\n")
        code, _, err = run(capsys, "--masks", masks, "--out", tmp_path / "out", "--seed", 0, "--ids",
                           tmp_path / "ids.txt")
        assert code == 1 and err.count("error:") == 1 and "ids.txt: line 2" in err
        assert not (tmp_path / "out").exists()
    assert {n: (masks / n).read_bytes() for n in os.listdir(masks)} == before


@pytest.mark.parametrize("width", ["99999", "4", "0"])
def test_a_width_that_cannot_be_drawn_blames_the_flag(tmp_path, capsys, width):
    with pytest.raises(SystemExit) as e:
        main(["--masks", str(tmp_path), "--out", str(tmp_path / "o"), "--seed", "0", "--width", width])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("error:") == 1 and "--width" in err and "1..255" in err
