"""labelme JSON -> scribble PNG conversion, datasets/labelme.py via datasets.convert_scribbles."""
import base64
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from datasets.convert_scribbles import main
from datasets.labelme import convert_labelme, rasterize_labelme, rasterize_labelme_json
from datasets.layout import DatasetError
from utils.io import read_label
from utils.outputs import MARK

H, W = 16, 24


def shape(label, points, kind="linestrip"):
    return {"label": label, "points": [list(p) for p in points], "group_id": None,
            "description": "", "shape_type": kind, "flags": {}}


def doc(*shapes, image="img.jpg", h=H, w=W, data=None):
    """A labelme file as labelme 5 writes it."""
    return {"version": "5.4.1", "flags": {}, "shapes": list(shapes), "imagePath": image,
            "imageData": data, "imageHeight": h, "imageWidth": w}


def write_json(path, d):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d))
    return str(path)


def write_image(path, h=H, w=W):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path)
    return str(path)


def draw(*shapes, **kw):
    return rasterize_labelme(doc(*shapes), "t.json", **kw)


# ----------------------------------------------------------------------------- one file
def test_linestrip_and_line_are_open_3px_strokes_labels_mapped_to_classes():
    lab = draw(shape("aeroplane", [(3, 5), (11, 5)], "line"),          # = the XML test's (4,6)-(12,6)
               shape("Background", [(19, 1), (19, 8), (19, 13)]))      # case-insensitive; linestrip
    plane = np.zeros((H, W), bool)
    plane[4:7, 3:12] = True
    plane[5, 2] = plane[5, 12] = True   # round caps, as on the XML path
    np.testing.assert_array_equal(lab == 1, plane)
    bg = np.zeros((H, W), bool)
    bg[1:14, 18:21] = True
    bg[0, 19] = bg[14, 19] = True
    np.testing.assert_array_equal(lab == 0, bg)
    assert (lab[~(plane | bg)] == 255).all()


def test_polygon_is_its_closed_outline_not_filled():
    square = [(3, 3), (15, 3), (15, 11), (3, 11)]
    poly = draw(shape("cat", square, "polygon"))
    strip = draw(shape("cat", square, "linestrip"))
    assert poly[7, 3] == 8 and strip[7, 3] == 255     # the closing edge x = 3 only on the polygon
    assert poly[7, 9] == 255                          # the interior stays unlabelled
    assert ((poly == 8) | (strip == 8) == (poly == 8)).all()  # the polygon = the strip + one edge


def test_point_is_a_dot_and_coordinates_round_half_up():
    lab = draw(shape("dog", [(4.5, 5.49)], "point"), shape("tvmonitor", [(2.5, 12.5)], "point"))
    dot = np.zeros((H, W), bool)
    dot[4:7, 5] = dot[5, 4:7] = True     # (5, 5): the 3x3 dot, less its corners (OpenCV's 3-px pen)
    np.testing.assert_array_equal(lab == 12, dot)
    assert lab[13, 3] == 20 and (lab == 20).sum() == 5   # (2.5, 12.5) -> (3, 13): half up, not to even


def test_later_shapes_overwrite_earlier_ones_and_scribble_tags_are_accepted():
    h_line = shape("plane", [(2, 7), (19, 7)])          # ScribbleSup tag for aeroplane
    v_line = shape("person", [(9, 1), (9, 13)])
    a, b = draw(h_line, v_line), draw(v_line, h_line)
    assert (a[6:9, 8:11] == 15).all() and (b[6:9, 8:11] == 1).all()


def test_clamped_points_and_empty_files_are_noted():
    notes = []
    lab = rasterize_labelme(doc(shape("bike", [(-40, 0), (4, 0), (499.6, -3)])), "t.json", notes=notes)
    assert (lab[0:2] == 2).all() and (lab[2:] == 255).all()
    assert notes == ["t.json: point(s) outside the 24x16 image clamped to its border (2 in stroke 1)"]
    notes = []
    assert (rasterize_labelme(doc(), "e.json", notes=notes) == 255).all()
    assert notes == ["e.json: no shape with points: the scribble marks no pixel (all 255)"]


def test_unknown_label_names_file_shape_and_label(tmp_path):
    path = write_json(tmp_path / "2008_000123.json", doc(shape("cat", [(1, 1), (5, 5)]), shape("unicorn", [(3, 3)])))
    with pytest.raises(DatasetError, match=r"2008_000123\.json: shape 2: unknown label 'unicorn' "
                                           r"\(classes of VOC defaults: background, aeroplane"):
        rasterize_labelme_json(path)


@pytest.mark.parametrize("kind", ["rectangle", "circle", "mask"])
def test_area_shapes_are_errors_naming_file_shape_and_type(tmp_path, kind):
    path = write_json(tmp_path / "a.json", doc(shape("cat", [(1, 1), (5, 5)]), shape("dog", [(2, 2), (9, 9)], kind)))
    with pytest.raises(DatasetError, match=rf"a\.json: shape 2 \('dog'\): shape_type '{kind}' is not a scribble"):
        rasterize_labelme_json(path)


def test_shape_without_type_is_a_polygon():
    old = {"label": "cat", "points": [[3, 3], [15, 3], [15, 11], [3, 11]]}   # labelme < 4 files
    assert draw(old)[7, 3] == 8


def test_size_mismatch_is_an_error():
    d = doc(shape("cat", [(1, 1)]), w=30)
    assert rasterize_labelme(d, "a.json").shape == (16, 30)     # no image: the JSON's size
    with pytest.raises(DatasetError, match=r"a\.json: imageWidth x imageHeight is 30x16 but the image is 24x16"):
        rasterize_labelme(d, "a.json", image_size=(16, 24))


@pytest.mark.parametrize("text, message", [
    ("{\"shapes\": [", "not valid JSON"),
    ("[1, 2]", "not a labelme file (no 'shapes' list)"),
    (json.dumps(doc(shape("cat", [("a", 2)]))), "shape 1 point 1 x is not a number: 'a'"),
    (json.dumps(doc(shape("cat", [(1, 2, 3)]))), "shape 1 point 1 is not [x, y]"),
    (json.dumps(doc(shape("cat", [(1, 2), (3, 4)], "point"))), "shape 1: a point shape has 2 points"),
    (json.dumps(doc(shape("", [(1, 2)]))), "shape 1 has no label"),
    (json.dumps({**doc(), "imageWidth": None}), "has imageHeight but no imageWidth"),
    (json.dumps(doc(h=0)), "imageHeight is not a positive integer: 0"),
])
def test_malformed_files_are_errors_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DatasetError) as e:
        rasterize_labelme_json(str(path))
    assert str(e.value).startswith(str(path)) and message in str(e.value)


# ----------------------------------------------------------------------------- folder / CLI
def xml_stroke(tag, *points):
    pts = "".join(f"<point><X>{x}</X><Y>{y}</Y></point>" for x, y in points)
    return f"<polygon><tag>{tag}</tag>{pts}</polygon>"


def test_same_strokes_give_the_same_png_as_the_xml_path(tmp_path, capsys):
    strokes = [("dog", [(2, 3), (20, 3), (21, 9)]), ("background", [(3, 14), (9, 14)]),
               ("cat", [(12, 8)]), ("bike", [(30, 2), (5, 12)])]      # the last one is clamped
    xml = ("<annotation><size><width>24</width><height>16</height></size>"
           + "".join(xml_stroke(t, *p) for t, p in strokes) + "</annotation>")
    (tmp_path / "xml").mkdir()
    (tmp_path / "xml" / "a.xml").write_text(xml)
    write_image(tmp_path / "JPEGImages" / "a.jpg")
    # XML (X, Y) is 1-based; labelme is 0-based
    write_json(tmp_path / "lm" / "a.json",
               doc(*(shape(t, [(x - 1, y - 1) for x, y in p]) for t, p in strokes), image="../JPEGImages/a.jpg"))
    assert main(["--xml", str(tmp_path / "xml"), "--images", str(tmp_path / "JPEGImages"),
                 "--out", str(tmp_path / "from_xml"), "--workers", "1"]) == 0
    assert main(["--labelme", str(tmp_path / "lm"), "--out", str(tmp_path / "from_lm"), "--workers", "1"]) == 0
    a, b = read_label(str(tmp_path / "from_xml" / "a.png")), read_label(str(tmp_path / "from_lm" / "a.png"))
    assert (a != 255).sum() > 60
    np.testing.assert_array_equal(a, b)
    out = capsys.readouterr().out
    assert "clamped to its border (1 in stroke 4)" in out and str(tmp_path / "lm" / "a.json") in out


def test_convert_collects_bad_files_writes_the_good_ones(tmp_path, capsys):
    lm, img = tmp_path / "lm", tmp_path / "JPEGImages"
    good = doc(shape("dog", [(1, 1), (20, 1)]), shape("person", [(5, 5)], "point"))
    for i in "abc":
        write_json(lm / f"{i}.json", {**good, "imagePath": f"..\\JPEGImages\\{i}.jpg"})  # Windows-written
        write_image(img / f"{i}.jpg")
    write_json(lm / "d.json", doc(shape("dragon", [(2, 2)]), image="../JPEGImages/d.jpg"))
    write_json(lm / "e.json", doc(shape("cat", [(2, 2)]), image="../JPEGImages/e.jpg", w=30))
    write_json(lm / "f.json", doc(shape("cat", [(2, 2)]), image="../JPEGImages/f.jpg"))     # no f.jpg
    write_image(img / "d.jpg")
    write_image(img / "e.jpg")
    out = tmp_path / "out"
    stats = convert_labelme(str(lm), str(out), workers=2)
    assert stats.converted == 3 and len(stats.problems) == 3
    joined = "\n".join(stats.problems)
    assert f"{lm / 'd.json'}: shape 1: unknown label 'dragon'" in joined
    assert f"{lm / 'e.json'}: imageWidth x imageHeight is 30x16 but the image is 24x16" in joined
    assert f"{lm / 'f.json'}: image {img / 'f.jpg'} not found (and no imageData)" in joined
    assert sorted(os.listdir(out)) == [MARK, "a.png", "b.png", "c.png"]
    assert read_label(str(out / "b.png"))[5, 5] == 15

    assert main(["--labelme", str(lm), "--out", str(out), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "3 file(s) not converted" in err and "'dragon'" in err


def test_shape_types_of_other_types_and_bomb_sized_image_data_are_listed_per_file(tmp_path):
    """A shape_type that is a list or a dict, and imageData whose header declares 20000x20000
    (a decompression bomb: only the header is read), were tracebacks that stopped the run."""
    lm, img = tmp_path / "lm", tmp_path / "JPEGImages"
    write_json(lm / "a.json", doc(shape("cat", [(2, 2)]), image="../JPEGImages/a.jpg"))
    write_image(img / "a.jpg")
    write_json(lm / "b.json", doc(shape("cat", [(2, 2)], ["line"]), image="../JPEGImages/a.jpg"))
    write_json(lm / "c.json", doc(shape("cat", [(2, 2)], {"type": "line"}), image="../JPEGImages/a.jpg"))
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")  # a few kB that decode to 400 M pixels
    write_json(lm / "d.json", doc(shape("cat", [(2, 2)]), image=None, h=20000, w=20000,
                                  data=base64.b64encode(buf.getvalue()).decode()))
    stats = convert_labelme(str(lm), str(tmp_path / "out"), workers=1)
    joined = "\n".join(stats.problems)
    assert stats.converted == 1 and len(stats.problems) == 3, joined
    assert "b.json: shape 1 ('cat'): shape_type [\"line\"] is not a name" in joined
    assert "c.json: shape 1 ('cat'): shape_type {\"type\": \"line\"} is not a name" in joined
    assert "d.json: imageData:" in joined and "decompression" in joined
    assert sorted(os.listdir(tmp_path / "out")) == [MARK, "a.png"]


def test_images_folder_and_embedded_image_data(tmp_path):
    lm, img = tmp_path / "lm", tmp_path / "images"
    write_json(lm / "a.json", doc(shape("cat", [(2, 2)]), image="elsewhere/a.png"))
    write_image(img / "a.png")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((H, 30, 3), np.uint8)).save(buf, format="PNG")
    embedded = base64.b64encode(buf.getvalue()).decode()
    write_json(lm / "b.json", doc(shape("cat", [(2, 2)]), image=None, data=embedded))        # 30 wide: mismatch
    write_json(lm / "c.json", doc(shape("cat", [(2, 2)]), image=None, w=30, data=embedded))  # agrees
    write_json(lm / "d.json", doc(shape("cat", [(2, 2)]), image=None))
    stats = convert_labelme(str(lm), str(tmp_path / "out"), images_dir=str(img), workers=1)
    assert stats.converted == 2 and sorted(os.listdir(tmp_path / "out")) == [MARK, "a.png", "c.png"]
    joined = "\n".join(stats.problems)
    assert "b.json: imageWidth x imageHeight is 24x16 but the image is 30x16" in joined
    assert f"d.json: no image d.* in {img} (and no imageData)" in joined
    # without --images: imagePath is used, and "elsewhere/a.png" does not exist
    stats = convert_labelme(str(lm), str(tmp_path / "out2"), workers=1)
    assert any("a.json: image" in p and "not found" in p for p in stats.problems)
    assert any("d.json: no imagePath and no imageData; give --images" in p for p in stats.problems)


def test_dataset_yaml_names_the_classes(tmp_path, capsys):
    root = tmp_path / "heart"
    root.mkdir()
    (root / "dataset.yaml").write_text("classes: [background, left_ventricle, Myocardium]\nimage_suffix: .png\n")
    lm = tmp_path / "lm"
    write_json(lm / "a.json", doc(shape("myocardium", [(1, 1), (20, 1)]), shape("left_ventricle", [(4, 8)], "point"),
                                  data=None, image="../img/a.png"))
    write_json(lm / "b.json", doc(shape("cat", [(1, 1)]), image="../img/b.png"))   # a VOC name: not this set's
    write_image(tmp_path / "img" / "a.png")
    write_image(tmp_path / "img" / "b.png")
    assert main(["--labelme", str(lm), "--root", str(root), "--out", str(tmp_path / "out"), "--workers", "1"]) == 1
    lab = read_label(str(tmp_path / "out" / "a.png"))
    assert lab[1, 10] == 2 and lab[8, 4] == 1 and set(np.unique(lab)) == {1, 2, 255}
    err = capsys.readouterr().err
    assert f"b.json: shape 1: unknown label 'cat' (classes of {root / 'dataset.yaml'}: " \
           f"background, left_ventricle, Myocardium)" in err


def test_cli_source_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--xml", "x", "--labelme", "y", "--out", "o"])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", "o"])
    assert "one of the arguments --xml --labelme is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--xml", "x", "--out", "o"])
    assert "--images is required with --xml" in capsys.readouterr().err
    assert main(["--labelme", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "nope: labelme folder not found" in capsys.readouterr().err
    write_json(tmp_path / "lm" / "a.json", doc())
    assert main(["--labelme", str(tmp_path / "lm"), "--out", str(tmp_path / "lm")]) == 1
    assert "is the input folder" in capsys.readouterr().err
    assert os.listdir(tmp_path / "lm") == ["a.json"]
