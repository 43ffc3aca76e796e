"""utils/io.py's writes: atomic, with the umask's permissions, their leftovers cleared, and a full
disk or a folder that is a file reported as one line naming the path."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from utils.checkpoint import save_checkpoint
from utils.io import (OutputError, atomic_path, check_output_dir, prepare_output_dir,
                      remove_stale_temps, save_png)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_get_the_umask_permissions(tmp_path, umask, mask, mode):
    umask(mask)
    save_checkpoint({"state_dict": {}}, str(tmp_path / "c.pth"))
    save_png(np.zeros((4, 4), np.uint8), str(tmp_path / "m.png"))
    with atomic_path(str(tmp_path / "r.txt")) as tmp, open(tmp, "w") as f:
        f.write("x")
    for name in ("c.pth", "m.png", "r.txt"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode, name


def test_remove_stale_temps_takes_only_our_names(tmp_path):
    ours = [".a.k2x_9qaz.tmp.png", ".last_checkpoint.00ff00ff.tmp.pth", ".val.abcdefgh.tmp.txt",
            ".noext.12345678.tmp"]
    foreign = [".a.tmp.png", "a.k2x_9qaz.tmp.png", ".a.k2x-9qaz.tmp.png", ".a.short.tmp.png",
               ".a.ABCDEFGH.tmp.png", "a.png", ".hidden"]
    for n in ours + foreign:
        (tmp_path / n).write_text("x")
    (tmp_path / ".d.12345678.tmp.png").mkdir()  # a folder is never ours
    assert remove_stale_temps(str(tmp_path), name="val.txt") == 1  # only that file's temps
    assert remove_stale_temps(str(tmp_path)) == len(ours) - 1
    assert sorted(os.listdir(tmp_path)) == sorted(foreign + [".d.12345678.tmp.png"])
    assert remove_stale_temps(str(tmp_path / "missing")) == 0


def test_prepare_output_dir_reports_what_it_removed(tmp_path, capsys):
    (tmp_path / ".x.abcd1234.tmp.png").write_text("x")
    prepare_output_dir(str(tmp_path), "--out")
    assert "removed 1 temporary file(s)" in capsys.readouterr().out
    assert os.listdir(tmp_path) == []


def test_output_dir_that_is_or_lies_under_a_file(tmp_path):
    (tmp_path / "f").write_text("mine")
    with pytest.raises(OutputError, match=r"--out .*f: is a file, not a folder"):
        check_output_dir(str(tmp_path / "f"), "--out")
    with pytest.raises(OutputError, match=r"--out .*f/a/b: lies under the file .*f, not a folder"):
        check_output_dir(str(tmp_path / "f" / "a" / "b"), "--out")
    check_output_dir(str(tmp_path / "new" / "deep"), "--out", create=False)
    assert not (tmp_path / "new").exists()
    check_output_dir(str(tmp_path / "new" / "deep"), "--out")
    assert (tmp_path / "new" / "deep").is_dir() and (tmp_path / "f").read_text() == "mine"


def test_full_disk_is_an_output_error_naming_the_file(tmp_path):
    """RLIMIT_FSIZE makes a write past 64 KiB fail as on a full disk (EFBIG, not ENOSPC)."""
    target = tmp_path / "big.png"
    code = ("import resource, signal, sys\n"
            "import numpy as np\n"
            "from utils.io import OutputError, save_png\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))\n"
            "try:\n"
            f"    save_png(np.random.default_rng(0).integers(0, 255, (512, 512), np.uint8), {str(target)!r})\n"
            "except OutputError as e:\n"
            "    print(e); sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith(f"{target}: cannot write it: the disk is full")
    assert os.listdir(tmp_path) == []  # neither the file nor its temp


def test_other_failures_pass_through_unchanged(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with atomic_path(str(tmp_path / "x.txt")) as tmp, open(tmp, "w") as f:
            f.write("partial")
            1 / 0
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- reading images
def _jpegs(folder) -> dict:
    """The JPEG kinds a dataset may hold, written by Pillow."""
    from PIL import Image
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90": ignored by the decode (the masks are stored unrotated)
    kinds = {"rgb": lambda p: Image.fromarray(rgb).save(p, quality=90),
             "grey": lambda p: Image.fromarray(rgb[..., 0], "L").save(p),
             "cmyk": lambda p: Image.fromarray(rgb).convert("CMYK").save(p),
             "exif": lambda p: Image.fromarray(rgb).save(p, exif=exif),
             "progressive": lambda p: Image.fromarray(rgb).save(p, progressive=True, subsampling=2)}
    paths = {}
    for name, write in kinds.items():
        paths[name] = str(folder / f"{name}.jpeg" if name == "grey" else folder / f"{name}.jpg")
        write(paths[name])
    return paths


def test_jpeg_decode_gives_pillows_pixels(tmp_path):
    from utils.io import read_image, read_image_pillow
    for name, path in _jpegs(tmp_path).items():
        fast, reference = read_image(path), read_image_pillow(path)
        assert fast.shape == (40, 56, 3) and fast.dtype == np.uint8, name
        assert np.array_equal(fast, reference), name


def test_a_truncated_jpeg_is_one_error_naming_the_file(tmp_path):
    from conftest import corrupt_file
    from utils.io import read_image
    path = _jpegs(tmp_path)["rgb"]
    with open(path, "rb") as f:
        data = f.read()
    half = str(tmp_path / "half.jpg")
    with open(half, "wb") as f:
        f.write(data[: len(data) // 2])
    corrupt_file(path)
    for bad in (path, half):
        with pytest.raises(OSError, match=f"^{bad}: cannot decode"):
            read_image(bad)
    with pytest.raises(FileNotFoundError, match="missing.jpg: file not found"):
        read_image(str(tmp_path / "missing.jpg"))
