"""ScribbleSup XML -> PNG conversion (SPEC §1), datasets/convert_scribbles.py."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from datasets.convert_scribbles import convert, main, rasterize_scribble_xml
from datasets.layout import DatasetError
from utils.io import read_label
from utils.outputs import MARK

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The real files look like this (scribble_annotation/pascal_2012/<id>.xml): integer,
# 1-based <X>/<Y>, short tag names, one <polygon> per stroke.
REAL_LOOKING_XML = """<?xml version="1.0" encoding="utf-8"?>
<annotation>
  <folder>VOC2012</folder>
  <filename>2007_000032.jpg</filename>
  <size>
    <width>24</width>
    <height>16</height>
  </size>
  <polygon>
    <tag>plane</tag>
    <point><X>4</X><Y>6</Y></point>
    <point><X>12</X><Y>6</Y></point>
  </polygon>
  <polygon>
    <tag>background</tag>
    <point><X>20</X><Y>2</Y></point>
    <point><X>20</X><Y>14</Y></point>
  </polygon>
</annotation>
"""


def stroke(tag, *points):
    pts = "".join(f"<point><X>{x}</X><Y>{y}</Y></point>" for x, y in points)
    return f"<polygon><tag>{tag}</tag>{pts}</polygon>"


def xml(*strokes, w=24, h=16):
    return (f"<annotation><filename>x.jpg</filename><size><width>{w}</width><height>{h}</height></size>"
            + "".join(strokes) + "</annotation>")


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_horizontal_stroke_exact_pixels_and_background_stroke(tmp_path):
    lab = rasterize_scribble_xml(write(tmp_path / "a.xml", REAL_LOOKING_XML))
    assert lab.shape == (16, 24) and lab.dtype == np.uint8
    plane = np.zeros((16, 24), bool)
    plane[4:7, 3:12] = True          # (4,6)-(12,6) 1-based -> x 3..11, y 5 0-based; 3 px wide
    plane[5, 2] = plane[5, 12] = True  # the round caps reach one pixel past each end
    np.testing.assert_array_equal(lab == 1, plane)
    bg = np.zeros((16, 24), bool)
    bg[1:14, 18:21] = True           # vertical background stroke x = 19, y 1..13
    bg[0, 19] = bg[14, 19] = True
    np.testing.assert_array_equal(lab == 0, bg)   # background strokes are drawn, with 0
    assert (lab[~(plane | bg)] == 255).all()


def test_later_strokes_overwrite_earlier_ones(tmp_path):
    h_line = stroke("plane", (3, 8), (20, 8))
    v_line = stroke("person", (10, 2), (10, 14))
    a = rasterize_scribble_xml(write(tmp_path / "a.xml", xml(h_line, v_line)))
    b = rasterize_scribble_xml(write(tmp_path / "b.xml", xml(v_line, h_line)))
    assert (a[6:9, 8:11] == 15).all()      # the crossing belongs to the last stroke
    assert (b[6:9, 8:11] == 1).all()
    assert ((a == 1) | (b == 1)).sum() > (a == 1).sum()


def test_out_of_range_points_are_clamped_and_noted(tmp_path):
    notes = []
    path = write(tmp_path / "a.xml", xml(stroke("cat", (3, 3)), stroke("bike", (-40, 0), (5, 1), (500, -3))))
    lab = rasterize_scribble_xml(path, notes=notes)
    expected = np.zeros((16, 24), bool)
    expected[0:2, :] = True            # clamped to row 0, x 0..23; the band's upper half falls outside
    np.testing.assert_array_equal(lab == 2, expected)
    # (5, 1) is inside (1-based); the other two points of stroke 2 are not; stroke 1 is fine
    assert notes == [f"{path}: point(s) outside the 24x16 image clamped to its border (2 in stroke 2)"]


@pytest.mark.parametrize("strokes", [(), (stroke("cat"),)], ids=["no_polygon", "no_points"])
def test_file_that_marks_nothing_is_noted(tmp_path, strokes):
    notes = []
    path = write(tmp_path / "a.xml", xml(*strokes))
    assert (rasterize_scribble_xml(path, notes=notes) == 255).all()
    assert len(notes) == 1 and notes[0].startswith(f"{path}: no <polygon>") and "all 255" in notes[0]


def test_summary_lists_notes_per_file(tmp_path, capsys):
    xml_dir, img_dir = make_dataset(tmp_path)
    write(xml_dir / "d.xml", xml())
    write(xml_dir / "e.xml", xml(stroke("cat", (2, 2), (30, 2))))
    for i in "de":
        Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(img_dir / f"{i}.jpg")
    assert main(["--xml", str(xml_dir), "--images", str(img_dir), "--out", str(tmp_path / "out"),
                 "--workers", "2"]) == 0  # converted: notes do not fail the run
    out = capsys.readouterr().out
    assert "converted 5 file(s)" in out and "2 note(s) on converted files:" in out
    lines = [l.strip() for l in out.splitlines()]
    assert f"{xml_dir / 'd.xml'}: no <polygon> with points: the scribble marks no pixel (all 255)" in lines
    assert f"{xml_dir / 'e.xml'}: point(s) outside the 24x16 image clamped to its border (1 in stroke 1)" in lines
    assert not any(str(xml_dir / n) in out for n in ("a.xml", "b.xml", "c.xml"))


def test_single_point_stroke_marks_pixels_and_long_names_are_accepted(tmp_path):
    lab = rasterize_scribble_xml(write(tmp_path / "a.xml", xml(stroke("aeroplane", (6, 6)),
                                                                  stroke("tvmonitor", (15.0, 10)))))
    assert (lab == 1).sum() == 5 and lab[5, 5] == 1 and lab[4, 5] == 1 and lab[5, 6] == 1
    assert (lab == 20).sum() == 5 and lab[9, 14] == 20


def test_unknown_tag_names_file_and_tag(tmp_path):
    path = write(tmp_path / "2008_000123.xml", xml(stroke("plane", (2, 2), (5, 5)), stroke("unicorn", (3, 3))))
    with pytest.raises(DatasetError, match=r"2008_000123\.xml: stroke 2: unknown tag 'unicorn'"):
        rasterize_scribble_xml(path)


def test_size_mismatch_is_an_error(tmp_path):
    path = write(tmp_path / "a.xml", xml(stroke("cat", (2, 2))))
    assert rasterize_scribble_xml(path, image_size=(16, 24)).shape == (16, 24)
    with pytest.raises(DatasetError, match=r"a\.xml: <size> is 24x16 \(WxH\) but the image is 30x16"):
        rasterize_scribble_xml(path, image_size=(16, 30))


@pytest.mark.parametrize("text, message", [
    ("<annotation><size><width>4</width>", "malformed XML"),
    (xml(stroke("cat", ("a", 2))), "stroke 1 point 1: <X> is not a number"),
    ("<annotation><polygon><tag>cat</tag></polygon></annotation>", "no <size>"),
    (xml("<polygon><point><X>1</X><Y>1</Y></point></polygon>"), "stroke 1 has no <tag>"),
])
def test_malformed_files_are_errors_naming_the_file(tmp_path, text, message):
    path = write(tmp_path / "bad.xml", text)
    with pytest.raises(DatasetError) as e:
        rasterize_scribble_xml(path)
    assert str(e.value).startswith(path) and message in str(e.value)


# ----------------------------------------------------------------------------- folder / CLI
def make_dataset(tmp_path, ids=("a", "b", "c")):
    xml_dir, img_dir = tmp_path / "xml", tmp_path / "JPEGImages"
    img_dir.mkdir()
    for k, id_ in enumerate(ids):
        write(xml_dir / f"{id_}.xml", xml(stroke("dog", (2, 2 + k), (20, 2 + k)), stroke("background", (3, 14), (9, 14))))
        Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(img_dir / f"{id_}.jpg")
    return xml_dir, img_dir


def test_convert_writes_every_file_and_reports_labelled_share(tmp_path, capsys):
    xml_dir, img_dir = make_dataset(tmp_path)
    out = tmp_path / "out"
    assert main(["--xml", str(xml_dir), "--images", str(img_dir), "--out", str(out), "--workers", "1"]) == 0
    assert sorted(os.listdir(out)) == [MARK, "a.png", "b.png", "c.png"]
    lab = read_label(str(out / "b.png"))
    np.testing.assert_array_equal(lab, rasterize_scribble_xml(str(xml_dir / "b.xml")))
    share = 100 * (lab != 255).sum() / lab.size
    assert f"labelled pixels {share:.2f} %" in capsys.readouterr().out


def test_convert_collects_bad_files_writes_the_good_ones(tmp_path, capsys):
    xml_dir, img_dir = make_dataset(tmp_path)
    write(xml_dir / "d.xml", xml(stroke("dragon", (2, 2))))
    write(xml_dir / "e.xml", xml(stroke("cat", (2, 2)), w=30))          # JPEG is 24 wide
    write(xml_dir / "f.xml", xml(stroke("cat", (2, 2))))                # no f.jpg
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(img_dir / "d.jpg")
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(img_dir / "e.jpg")
    out = tmp_path / "out"
    stats = convert(str(xml_dir), str(img_dir), str(out), workers=2)
    assert stats.converted == 3 and len(stats.problems) == 3
    joined = "\n".join(stats.problems)
    assert "d.xml: stroke 1: unknown tag 'dragon'" in joined
    assert "e.xml: <size> is 30x16" in joined
    assert "f.xml: image" in joined and "f.jpg not found" in joined
    assert sorted(os.listdir(out)) == [MARK, "a.png", "b.png", "c.png"]   # nothing for the bad files, no temp files

    assert main(["--xml", str(xml_dir), "--images", str(img_dir), "--out", str(out), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "3 file(s) not converted" in err and "dragon" in err


def test_non_finite_and_huge_coordinates_are_listed_per_file_and_the_rest_converted(tmp_path):
    """XML coordinates inf / nan stopped the whole conversion with a traceback, 1e30 too."""
    xml_dir, img_dir = make_dataset(tmp_path, ids=("a", "inf", "nan", "far", "huge"))
    write(xml_dir / "inf.xml", xml(stroke("cat", (2, 2), ("inf", 3))))
    write(xml_dir / "nan.xml", xml(stroke("cat", ("nan", 2))))
    write(xml_dir / "far.xml", xml(stroke("cat", (2, 2), ("1e30", 3))))
    write(xml_dir / "huge.xml", xml(stroke("cat", (2, 2)), w=20000, h=20000))  # a 16x24 JPEG, a bomb-sized <size>
    stats = convert(str(xml_dir), str(img_dir), str(tmp_path / "out"), workers=1)
    joined = "\n".join(stats.problems)
    assert stats.converted == 2 and len(stats.problems) == 3, joined
    assert "inf.xml: stroke 1 point 2: <X> is not a finite number: 'inf'" in joined
    assert "nan.xml: stroke 1 point 1: <X> is not a finite number: 'nan'" in joined
    assert "huge.xml: <size> is 20000x20000 (WxH) but the image is 24x16" in joined
    assert any("far.xml: point(s) outside the 24x16 image clamped" in n for n in stats.notes)
    assert read_label(str(tmp_path / "out" / "far.png"))[2, 23] == 8  # clamped to the right border


def test_a_bomb_sized_canvas_is_refused():
    from datasets.convert_scribbles import check_canvas
    check_canvas(375, 500)
    with pytest.raises(ValueError, match="20000x20000 .* decompression-bomb limit"):
        check_canvas(20000, 20000)


def test_cli_missing_folder_exit_code(tmp_path, capsys):
    assert main(["--xml", str(tmp_path / "nope"), "--images", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "nope: XML folder not found" in capsys.readouterr().err


def test_module_entry_point(tmp_path):
    xml_dir, img_dir = make_dataset(tmp_path, ids=("a",))
    r = subprocess.run([sys.executable, "-m", "datasets.convert_scribbles", "--xml", str(xml_dir),
                        "--images", str(img_dir), "--out", str(tmp_path / "out")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "out")) == [MARK, "a.png"]
