"""Distance maps D_s / D_c (SPEC §2) and the folder tool datasets/distance_map.py."""
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from datasets.distance_map import (DEFAULT_LAMBDA, boundary_pixels, brute_force_squared_distance, convert_folder,
                                   main, pseudo_distance_map, scribble_distance_map, squared_distance_to)
from utils.io import read_label, save_png
from utils.outputs import MARK
from utils.palette import voc_palette

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SQRT_E = math.sqrt(math.e)  # 1.6487...
E3 = math.e ** 3            # sqrt(e^6) = 20.0855...


# ----------------------------------------------------------------------------- helpers
def random_scribble(rng, h, w, strokes=4):
    """255 canvas with 2-px-thick polylines of random classes, background strokes included."""
    s = np.full((h, w), 255, np.uint8)
    for _ in range(strokes):
        pts = np.stack([rng.integers(0, w, 4), rng.integers(0, h, 4)], 1).astype(np.int32)
        cv2.polylines(s, [pts.reshape(-1, 1, 2)], False, int(rng.integers(0, 21)), 2)
    return s


def random_blobs(rng, h, w):
    """Pseudo-label of discs (some past the image border), some with holes, some 255 regions."""
    p = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(1, 5)):
        c = (int(rng.integers(-5, w + 5)), int(rng.integers(-5, h + 5)))
        r = int(rng.integers(2, max(3, min(h, w) // 2)))
        cv2.circle(p, c, r, int(rng.integers(1, 21)), -1)
        if rng.random() < 0.5:
            cv2.circle(p, c, r // 2, 0, -1)  # a hole
    if rng.random() < 0.3:
        p[rng.random((h, w)) < 0.05] = 255
    return p


def oracle_scribble(label, lam):
    """The SPEC formula, pixel by pixel in plain Python (independent of the implementation)."""
    seeds = [(y, x) for y in range(label.shape[0]) for x in range(label.shape[1]) if label[y, x] not in (0, 255)]
    out = np.zeros(label.shape, np.uint8)
    if not seeds:
        return out
    for y in range(label.shape[0]):
        for x in range(label.shape[1]):
            d = min(math.sqrt((y - sy) ** 2 + (x - sx) ** 2) for sy, sx in seeds)
            out[y, x] = 255 - int(min(255.0, max(0.0, math.sqrt(lam) * d)))  # truncate, then invert
    return out


def oracle_pseudo(label, lam):
    """D_c pixel by pixel in plain Python, seeds from the authors' OpenCV contour construction."""
    ys, xs = np.nonzero(opencv_contour_pixels((label != 0) & (label != 255)))
    out = np.full(label.shape, 255, np.uint8)
    for y in range(label.shape[0]):
        for x in range(label.shape[1]):
            if len(ys):
                d = min(math.sqrt((y - sy) ** 2 + (x - sx) ** 2) for sy, sx in zip(ys.tolist(), xs.tolist()))
                out[y, x] = int(min(255.0, max(0.0, math.sqrt(lam) * d)))
    return out


def opencv_contour_pixels(fg):
    """The authors' boundary set: findContours(RETR_TREE, CHAIN_APPROX_NONE) drawn 1 px."""
    contours, _ = cv2.findContours(fg.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    canvas = np.zeros(fg.shape, np.uint8)
    cv2.drawContours(canvas, contours, -1, 1, thickness=1)
    return canvas > 0


# ----------------------------------------------------------------------------- the EDT
def test_edt_is_exact_against_brute_force_and_scipy():
    rng = np.random.default_rng(0)
    cases = [np.zeros((1, 9), bool), np.zeros((7, 1), bool)]
    cases[0][0, 4] = True
    cases[1][0, 0] = True
    for i in range(40):
        h, w = rng.integers(2, 70, 2)
        density = [0.001, 0.01, 0.1, 0.6][i % 4]
        m = rng.random((h, w)) < density
        m[rng.integers(0, h), rng.integers(0, w)] = True
        cases.append(m)
    for m in cases:
        ours, brute = squared_distance_to(m), brute_force_squared_distance(m)
        assert ours.dtype == np.int32
        np.testing.assert_array_equal(ours, brute)
        np.testing.assert_array_equal(np.sqrt(ours), ndimage.distance_transform_edt(~m))


def test_edt_with_limit_is_exact_below_it():
    """Only blocks near seeds are transformed; below the limit nothing may change."""
    rng = np.random.default_rng(5)
    for i in range(60):
        h, w = rng.integers(5, 120, 2)
        m = np.zeros((h, w), bool)
        n = rng.integers(1, 6)
        m[rng.integers(0, h, n), rng.integers(0, w, n)] = True       # isolated seeds -> many blocks
        if i % 2:
            m |= rng.random((h, w)) < 0.002
        limit = int(rng.choice([1, 2, 5, 26, 164, 400]))
        np.testing.assert_array_equal(squared_distance_to(m, limit),
                                      np.minimum(brute_force_squared_distance(m), limit))


def test_edt_of_empty_set_is_none():
    assert squared_distance_to(np.zeros((4, 5), bool)) is None
    assert brute_force_squared_distance(np.zeros((4, 5), bool)) is None


# ----------------------------------------------------------------------------- D_s
def test_scribble_single_point_exact_values():
    s = np.full((200, 200), 255, np.uint8)
    s[10, 10] = 7
    d = scribble_distance_map(s)
    assert d.dtype == np.uint8 and d.shape == s.shape
    assert d[10, 10] == 255                  # on the scribble
    # D_s = 255 - floor(sqrt(e) * d): truncate first, invert second (SPEC §2, the authors' bytes)
    assert d[10, 11] == 254                  # 1.6487 -> 1 -> 254 (inverting first would give 253)
    assert d[10, 13] == 251                  # 3 * 1.6487 = 4.946 -> 4 -> 251 (not 250)
    assert d[13, 14] == 247                  # d = 5: 8.24 -> 8 -> 247 (not 246)
    assert d[11, 11] == 253                  # d = sqrt 2: sqrt(2e) = 2.3316 -> 2 -> 253 (not 252)
    assert d[110, 10] == 91                  # d = 100: 164.87 -> 164 -> 91 (not 90)
    assert d[10, 164] == 2                   # d = 154: 253.90 -> 253 -> 2 (not 1)
    assert d[10, 165] == 0                   # d = 155: 255.55 -> clipped to 255 -> 0
    assert d[199, 199] == 0


def test_scribble_empty_and_background_only_give_zero():
    assert not scribble_distance_map(np.full((6, 8), 255, np.uint8)).any()
    bg_only = np.full((6, 8), 255, np.uint8)
    bg_only[2, 1:7] = 0
    assert not scribble_distance_map(bg_only).any()


def test_background_strokes_are_not_seeds():
    s = np.full((30, 40), 255, np.uint8)
    s[5, 5:20] = 3
    with_bg = s.copy()
    with_bg[25, 10:35] = 0
    np.testing.assert_array_equal(scribble_distance_map(with_bg), scribble_distance_map(s))
    assert scribble_distance_map(with_bg)[25, 20] < 255  # the background stroke is not "on the scribble"


def test_lambda_scales_the_distance():
    s = np.full((20, 20), 255, np.uint8)
    s[0, 0] = 1
    assert scribble_distance_map(s, lam=4.0)[0, 3] == 255 - 2 * 3     # sqrt(4) * 3
    assert scribble_distance_map(s, lam=1.0)[0, 7] == 255 - 7
    assert scribble_distance_map(s, lam=1.0)[3, 4] == 250             # d = 5
    assert scribble_distance_map(s, lam=9.0)[1, 1] == 251             # 3 * sqrt 2 = 4.24 -> 4 (not 250)
    assert scribble_distance_map(s, lam=math.e ** 2)[0, 1] == 253     # e = 2.718 -> 2 (not 252)
    assert pseudo_distance_map(s, lam=100.0)[0, 3] == 30              # sqrt(100) * 3
    assert not scribble_distance_map(s, lam=1e6)[0, 1]                # clipped, not wrapped


def test_scribble_map_is_inverted_and_monotone():
    s = np.full((1, 60), 255, np.uint8)
    s[0, 0] = 2
    row = scribble_distance_map(s)[0].astype(int)
    assert row[0] == 255 and (np.diff(row) <= 0).all() and row[-1] < row[1]


def test_matches_plain_python_oracle():
    rng = np.random.default_rng(1)
    for lam in (math.e, 9.0, 0.5):
        s = random_scribble(rng, 18, 23, strokes=2)
        np.testing.assert_array_equal(scribble_distance_map(s, lam), oracle_scribble(s, lam))
    for lam in (math.e ** 6, math.e ** 7, 2.0):
        p = random_blobs(rng, 17, 21)
        np.testing.assert_array_equal(pseudo_distance_map(p, lam), oracle_pseudo(p, lam))


def test_long_distances_and_small_lambda():
    s = np.full((1, 2000), 255, np.uint8)
    s[0, 0] = 9
    d = scribble_distance_map(s, lam=0.01)                 # sqrt = 0.1: nothing clips in 2000 px
    assert d[0, 1999] == 56 and d[0, 1000] == 155 and d[0, 1] == 255  # 199.9 -> 199; 0.1 -> 0
    assert pseudo_distance_map(s, lam=0.0001)[0, 1999] == 19   # 0.01 * 1999 = 19.99
    with pytest.raises(ValueError, match="lambda"):
        scribble_distance_map(s, lam=0.0)


def test_bytes_equal_brute_force_on_random_cases():
    rng = np.random.default_rng(2)
    for _ in range(6):
        h, w = rng.integers(20, 120, 2)
        s = random_scribble(rng, h, w)
        np.testing.assert_array_equal(scribble_distance_map(s),
                                      scribble_distance_map(s, squared_distance=brute_force_squared_distance))
        p = random_blobs(rng, h, w)
        np.testing.assert_array_equal(pseudo_distance_map(p),
                                      pseudo_distance_map(p, squared_distance=brute_force_squared_distance))


# ----------------------------------------------------------------------------- D_c
def test_pseudo_single_point_exact_values():
    p = np.zeros((40, 40), np.uint8)
    p[20, 20] = 5
    d = pseudo_distance_map(p)
    assert d[20, 20] == 0                    # on the boundary
    assert d[20, 21] == 20                   # e^3 = 20.09
    assert d[21, 21] == 28                   # sqrt 2 e^3 = 28.41
    assert d[20, 32] == 241                  # 12 e^3 = 241.03
    assert d[20, 33] == 255                  # 13 e^3 = 261 -> clipped


def test_filled_square_contour_and_profile():
    p = np.zeros((30, 30), np.uint8)
    p[5:25, 5:25] = 4
    border = np.zeros((30, 30), bool)
    border[5:25, 5:25] = True
    border[6:24, 6:24] = False
    np.testing.assert_array_equal(boundary_pixels(p > 0), border)
    d = pseudo_distance_map(p)
    assert not d[border].any() and d[~border].all()
    # row 15 crosses the left border at x = 5: increasing outward (x < 5) and inward (x > 5)
    assert d[15, 0:8].tolist() == [100, 80, 60, 40, 20, 0, 20, 40]
    assert d[15, 15] == 180                  # 9 px from the right border: 180.8


def test_pseudo_empty_foreground_gives_255():
    assert (pseudo_distance_map(np.zeros((5, 7), np.uint8)) == 255).all()
    assert (pseudo_distance_map(np.full((5, 7), 255, np.uint8)) == 255).all()   # ignore = background


def test_ignore_counts_as_background_and_image_edge_is_a_border():
    p = np.full((10, 10), 3, np.uint8)
    p[:, 6:] = 255
    b = boundary_pixels((p > 0) & (p != 255))
    assert b[:, 5].all()                     # next to the ignore region
    assert b[0, :6].all() and b[-1, :6].all() and b[:, 0].all()   # image edge
    assert not b[1:-1, 1:5].any()


def test_boundary_equals_opencv_contours_on_random_blobs():
    rng = np.random.default_rng(3)
    for i in range(150):
        h, w = rng.integers(3, 50, 2)
        if i % 3 == 0:   # noise: many diagonal-only contacts, one-pixel blobs and holes
            fg = rng.random((h, w)) < rng.uniform(0.2, 0.8)
        else:
            p = random_blobs(rng, h, w)
            fg = (p > 0) & (p != 255)
        np.testing.assert_array_equal(boundary_pixels(fg), opencv_contour_pixels(fg))


# ----------------------------------------------------------------------------- storage
def test_rgb_stored_map_reads_as_channel_0(tmp_path):
    s = np.full((12, 15), 255, np.uint8)
    s[4, 3:9] = 6
    d = scribble_distance_map(s)
    rgb = np.stack([d, 255 - d, np.zeros_like(d)], axis=-1)    # other channels differ on purpose
    Image.fromarray(rgb, "RGB").save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_label(str(tmp_path / "m.png")), d)


# ----------------------------------------------------------------------------- folder tool / CLI
def make_folder(tmp_path, n=4, bad=("broken.png",)):
    rng = np.random.default_rng(4)
    src = tmp_path / "src"
    labels = {}
    for i in range(n):
        labels[f"{i:03d}.png"] = random_scribble(rng, 30 + i, 40)
        save_png(labels[f"{i:03d}.png"], str(src / f"{i:03d}.png"))
    for name in bad:
        (src / name).write_bytes(b"\x89PNG not really")
    (src / "notes.txt").write_text("not an image")
    return src, labels


def leftovers(folder):
    """What a run left besides its outputs and its folder's mark (utils.outputs)."""
    return [n for n in os.listdir(folder) if n != MARK and (n.startswith(".") or ".tmp" in n)]


def outputs(folder):
    return sorted(n for n in os.listdir(folder) if n != MARK)


def test_cli_unreadable_input_is_reported_and_the_rest_written(tmp_path, capsys):
    src, labels = make_folder(tmp_path)
    dst = tmp_path / "dst"
    assert main(["--kind", "scribble", "--src", str(src), "--dst", str(dst), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "1 file(s)" in err
    assert outputs(dst) == sorted(labels)
    for name, lab in labels.items():
        with Image.open(dst / name) as im:
            assert im.mode == "L"
        np.testing.assert_array_equal(read_label(str(dst / name)), scribble_distance_map(lab))
    assert leftovers(dst) == []


def test_cli_resumes_and_overwrite_rewrites(tmp_path):
    src, labels = make_folder(tmp_path, n=3, bad=())
    dst = tmp_path / "dst"
    assert main(["--kind", "pseudo", "--src", str(src), "--dst", str(dst), "--workers", "1"]) == 0
    target = dst / "001.png"
    save_png(np.full((2, 2), 7, np.uint8), str(target))   # a stand-in for an earlier run's output
    before = target.read_bytes()
    assert main(["--kind", "pseudo", "--src", str(src), "--dst", str(dst), "--workers", "1"]) == 0
    assert target.read_bytes() == before                    # skipped
    assert main(["--kind", "pseudo", "--src", str(src), "--dst", str(dst), "--workers", "1",
                 "--overwrite", "--lam", str(math.e ** 7)]) == 0
    np.testing.assert_array_equal(read_label(str(target)),
                                  pseudo_distance_map(labels["001.png"], math.e ** 7))
    assert leftovers(dst) == []


def test_convert_folder_with_a_process_pool(tmp_path):
    src, labels = make_folder(tmp_path, n=5)
    dst = tmp_path / "dst"
    scribble_distance_map(labels["000.png"])  # OpenCV used in this process before the pool starts
    failures = convert_folder("scribble", str(src), str(dst), workers=2)
    assert len(failures) == 1 and "broken.png" in failures[0]
    for name, lab in labels.items():
        np.testing.assert_array_equal(read_label(str(dst / name)), scribble_distance_map(lab))
    assert leftovers(dst) == []


def test_cli_missing_source_is_a_clear_error(tmp_path, capsys):
    assert main(["--kind", "scribble", "--src", str(tmp_path / "nope"), "--dst", str(tmp_path / "d")]) == 1
    assert "nope: source folder not found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="kind"):
        convert_folder("mask", str(tmp_path), str(tmp_path / "d"))


def test_module_entry_point_exit_code(tmp_path):
    src, _ = make_folder(tmp_path, n=1)
    r = subprocess.run([sys.executable, "-m", "datasets.distance_map", "--kind", "scribble",
                        "--src", str(src), "--dst", str(tmp_path / "dst")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "broken.png" in r.stderr
    assert outputs(tmp_path / "dst") == ["000.png"]


def test_dst_through_a_symlink_to_src_is_refused_and_the_labels_kept(tmp_path, capsys):
    """The audit's data loss: --dst a symlink to --src, --overwrite, replaced the scribbles."""
    src, _ = make_folder(tmp_path, n=2, bad=())
    (tmp_path / "link").symlink_to(src)
    before = {n: (src / n).read_bytes() for n in os.listdir(src)}
    for dst in (tmp_path / "link", src, src / "maps", tmp_path / "link" / ".." / "src"):
        assert main(["--kind", "scribble", "--src", str(src), "--dst", str(dst), "--overwrite"]) == 1
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and "input folder" in err and "Traceback" not in err
    assert {n: (src / n).read_bytes() for n in os.listdir(src)} == before


def test_a_foreign_dst_folder_is_refused(tmp_path, capsys):
    """An existing folder this tool did not make (the authors' maps, a user's files) is never
    written into, not even with --overwrite."""
    src, _ = make_folder(tmp_path, n=2, bad=())
    dst = tmp_path / "distance_map"
    dst.mkdir()
    (dst / "000.png").write_bytes(b"the authors' map")
    assert main(["--kind", "scribble", "--src", str(src), "--dst", str(dst), "--overwrite"]) == 1
    assert "was not made by datasets.distance_map" in capsys.readouterr().err
    assert os.listdir(dst) == ["000.png"] and (dst / "000.png").read_bytes() == b"the authors' map"


def test_colour_rendered_scribbles_are_refused_per_file(tmp_path, capsys):
    src, labels = make_folder(tmp_path, n=2, bad=())
    Image.fromarray(voc_palette()[labels["001.png"]], "RGB").save(src / "001.png")  # VOC colours
    assert main(["--kind", "scribble", "--src", str(src), "--dst", str(tmp_path / "dst")]) == 1
    err = capsys.readouterr().err
    assert "001.png: a colour picture (mode RGB), not a label map" in err and "Traceback" not in err
    assert outputs(tmp_path / "dst") == ["000.png"]


@pytest.mark.parametrize("lam", ["nan", "-1", "inf", "0"])
def test_a_bad_lambda_blames_the_flag_once_before_any_work(tmp_path, capsys, lam):
    src, _ = make_folder(tmp_path, n=3, bad=())
    assert main(["--kind", "scribble", "--src", str(src), "--dst", str(tmp_path / "dst"), "--lam", lam]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --lam ") and "positive finite" in err
    assert not (tmp_path / "dst").exists()


def test_default_lambdas():
    assert DEFAULT_LAMBDA == {"scribble": math.e, "pseudo": math.e ** 6}
