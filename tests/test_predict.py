"""predict.py: a folder of the images people have (grey, RGBA, palette, a phone JPEG with an EXIF
rotation, a broken file) predicts with eval.py's inference in the checkpoint's own palette, with
no dataset present; the broken file is named once and makes the exit 1 after the others.

Small settings: ResNet-18 DeepLabV2 with 4 classes, images up to 60 px, one scale, crop 48.
"""
import contextlib
import io
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import eval as evaluation
import predict
from conftest import corrupt_file
from models import build_model
from utils.outputs import MARK
from utils.palette import voc_palette

SMALL = ["--scales", "1", "--base_size", "64", "--crop_size", "48"]
META = {"classes": ["background", "cell", "nucleus", "membrane"],
        "palette": [[10, 20, 30], [200, 40, 40], [40, 200, 40], [250, 250, 0]],
        "background": 0, "ignore_index": 255}
# displayed (H, W) of each readable input
SIZES = {"grey": (40, 56), "rgba": (50, 30), "pal": (32, 32), "rotated": (60, 36)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _checkpoint(path, meta=META, seed=0):
    """What train.py saves, for a random 4-class network (with its dataset_meta if `meta`)."""
    torch.manual_seed(seed)
    model = build_model("deeplabv2", 18, 4, lorm=True)
    ckpt = {"state_dict": model.state_dict(), "epoch": 3,
            "args": {"model_type": "deeplabv2", "layers": 18, "numclasses": 4}}
    if meta is not None:
        ckpt["dataset_meta"] = meta
    torch.save(ckpt, path)
    return str(path)


def _images(folder):
    rng = np.random.default_rng(0)
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, SIZES["grey"], dtype=np.uint8), "L").save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 256, (*SIZES["rgba"], 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).quantize(16).save(folder / "pal.png")
    # stored 60 wide x 36 high; Orientation 6 (rotate 90 degrees clockwise): displayed 36 x 60
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 256, (36, 60, 3), dtype=np.uint8)).save(folder / "rotated.jpg", exif=exif)
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / "broken.jpg")
    corrupt_file(folder / "broken.jpg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = predict.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One predict.py run over the folder, with overlays, and what it printed."""
    tmp = tmp_path_factory.mktemp("predict")
    ckpt = _checkpoint(tmp / "model.pth")
    folder = _images(tmp / "photos")
    out = tmp / "out"
    rc, stdout, stderr = _main(["--checkpoint_path", ckpt, "--images", folder, "--out", out,
                                "--overlay", *SMALL])
    return dict(rc=rc, stdout=stdout, stderr=stderr, ckpt=ckpt, folder=folder, out=out)


def test_unreadable_file_is_named_once_and_the_rest_are_predicted(run):
    broken = str(run["folder"] / "broken.jpg")
    assert run["rc"] == 1 and "Traceback" not in run["stderr"]
    assert run["stderr"].count(broken) == 1
    assert f"error: {broken}: cannot read (" in run["stderr"]
    assert run["stderr"].rstrip().endswith(f"error: 1 of 5 image(s) could not be read (named above); "
                                           f"4 prediction(s) in {run['out']}/")
    assert sorted(os.listdir(run["out"])) == [MARK, "grey.png", "overlay", "pal.png", "rgba.png", "rotated.png"]


def test_predictions_are_palette_pngs_of_the_displayed_size_in_the_checkpoint_colours(run):
    assert "classes (checkpoint dataset_meta): background, cell, nucleus, membrane" in run["stdout"]
    # the stored JPEG is landscape; the prediction has the size of the rotated (displayed) image
    assert Image.open(run["folder"] / "rotated.jpg").size == (60, 36)
    for stem, (h, w) in SIZES.items():
        with Image.open(run["out"] / f"{stem}.png") as img:
            assert img.mode == "P" and img.size == (w, h), stem
            assert img.getpalette()[:12] == sum(META["palette"], []), stem
            assert np.asarray(img).max() < 4
        with Image.open(run["out"] / "overlay" / f"{stem}.png") as pic:  # image | blend, legend below
            assert pic.mode == "RGB" and pic.size[0] == 2 * w + 4 and pic.size[1] > h, stem


def test_same_inference_as_eval(run):
    """The rotated JPEG's prediction is eval.predict's argmax of the displayed image, exactly;
    the overlay starts with that image."""
    model, _ = evaluation.load_model_from_checkpoint(run["ckpt"])
    with Image.open(run["folder"] / "rotated.jpg") as img:
        image = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    want = evaluation.predict(model, image, scales=(1.0,), base_size=64, crop_size=48).argmax(0).numpy()
    got = np.asarray(Image.open(run["out"] / "rotated.png"))
    np.testing.assert_array_equal(got, want)
    overlay = np.asarray(Image.open(run["out"] / "overlay" / "rotated.png"))
    np.testing.assert_array_equal(overlay[:60, :36], image)


def test_checkpoint_without_dataset_meta_uses_the_voc_palette(tmp_path):
    ckpt = _checkpoint(tmp_path / "old.pth", meta=None)
    Image.fromarray(np.full((20, 24), 128, np.uint8), "L").save(tmp_path / "one.png")
    rc, stdout, _ = _main(["--checkpoint_path", ckpt, "--images", tmp_path / "one.png",
                           "--out", tmp_path / "out", *SMALL])
    assert rc == 0 and "VOC palette" in stdout
    with Image.open(tmp_path / "out" / "one.png") as img:
        assert img.mode == "P" and img.size == (24, 20)
        assert img.getpalette()[:12] == voc_palette(4).reshape(-1).tolist()


def test_dataset_meta_with_another_class_count_is_refused(tmp_path):
    three = dict(META, classes=META["classes"][:3], palette=META["palette"][:3])
    ckpt = _checkpoint(tmp_path / "odd.pth", meta=three)
    Image.fromarray(np.zeros((20, 20), np.uint8), "L").save(tmp_path / "one.png")
    rc, _, err = _main(["--checkpoint_path", ckpt, "--images", tmp_path / "one.png",
                        "--out", tmp_path / "out", *SMALL])
    assert rc == 1 and "predicts 4 classes" in err and "names 3" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_duplicate_stems_and_overwriting_inputs_are_refused_before_any_work(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b" / "x.jpg")
    missing = tmp_path / "no_checkpoint.pth"  # never opened: the inputs are checked first
    rc, _, err = _main(["--checkpoint_path", missing, "--images", tmp_path / "a", tmp_path / "b",
                        "--out", tmp_path / "out"])
    assert rc == 1 and "x.png and" in err and "would both be written as x.png" in err
    assert not (tmp_path / "out").exists()

    before = (tmp_path / "a" / "x.png").read_bytes()
    for out in (tmp_path / "a", tmp_path / "a" / "pred", tmp_path):  # the input folder, inside it, holding it
        rc, _, err = _main(["--checkpoint_path", missing, "--images", tmp_path / "a", "--out", out])
        assert rc == 1 and "input folder" in err and err.count("\n") == 1, err
    assert (tmp_path / "a" / "x.png").read_bytes() == before and os.listdir(tmp_path / "a") == ["x.png"]


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    path = str(tmp_path / "deep.png")
    Image.fromarray(np.array([[0, 32896, 65535]], np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = predict.read_rgb(path)
    assert rgb.shape == (1, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, :, 0].tolist() == [0, 128, 255] and (rgb == rgb[..., :1]).all()


def test_out_of_memory_names_the_image_and_the_settings(tmp_path, monkeypatch):
    from test_cli import real_allocation_failures
    ckpt = _checkpoint(tmp_path / "m.pth")
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(tmp_path / "big.png")
    for e in real_allocation_failures():  # torch's CPU allocator, numpy, OpenCV
        def fail(*a, **k):
            raise e
        monkeypatch.setattr(evaluation, "predict_label", fail)
        rc, _, err = _main(["--checkpoint_path", ckpt, "--images", tmp_path / "big.png", "--out", tmp_path / "out",
                            *SMALL])
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert rc == 1 and "Traceback" not in err and len(lines) == 1, err
        assert lines[0].startswith(f"error: out of memory on {tmp_path / 'big.png'} (could not allocate ")
        assert lines[0].endswith("); lower --base_size, --scales or --crop_batch")


def test_a_real_allocation_failure_is_one_line(tmp_path):
    """predict.py in a process whose address space ends 300 MB above what it has mapped: a
    3000 px working size needs more (torch's CPU allocator fails for real)."""
    import subprocess
    import sys
    ckpt = _checkpoint(tmp_path / "m.pth")
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "a.png")
    limited = """
import resource, sys
import predict
size = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (size + 300 * 2**20,) * 2)
sys.exit(predict.main(sys.argv[1:]))
"""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = ["--checkpoint_path", ckpt, "--images", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
            "--scales", "1", "--base_size", "3000", "--crop_size", "3000", "--device", "cpu"]
    proc = subprocess.run([sys.executable, "-c", limited, *argv], cwd=repo, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=repo), timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: out of memory on {tmp_path / 'a.png'} (could not allocate ")
    assert not os.path.exists(tmp_path / "out" / "a.png")
