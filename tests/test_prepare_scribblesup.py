"""datasets/prepare_scribblesup.py and utils/download.py, offline: a local HTTP server on
127.0.0.1 serves miniature archives with the real internal layouts (a few images), and gdown's
calls are stubbed to fetch from it. Covered: the authors' route and the official route ending
with datasets.check OK, a second run that finds everything done, --from, an interrupted
download that resumes, a corrupt archive, a wrong checksum and hosts that refuse (one
`error:` line each, nothing half-written)."""
import hashlib
import io
import os
import re
import tarfile
import threading
import urllib.error
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

import datasets.prepare_scribblesup as prep
from datasets.check import check_dataset
from datasets.convert_scribbles import rasterize_scribble_xml
from datasets.distance_map import pseudo_distance_map, scribble_distance_map
from utils import download
from utils.io import read_label

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------------------- miniature data
# VOC's segmentation lists and SBD's: train_aug = (SBD train | SBD val | VOC train) - VOC val
VOC_TRAIN, VOC_VAL = ["2007_000001", "2007_000002"], ["2007_000101", "2007_000102"]
SBD_TRAIN, SBD_VAL = ["2008_000003", "2008_000004", "2007_000101"], ["2007_000001", "2008_000005"]
TRAIN = sorted({"2007_000001", "2007_000002", "2008_000003", "2008_000004", "2008_000005"})
VAL = sorted(VOC_VAL)
EXTRA = "2009_000999"   # in VOC's JPEGImages, in no list (VOC holds 17,125 images)
IDS = TRAIN + VAL
PUBLISHED = {"train": len(TRAIN), "val": len(VAL)}


def size_of(i: int) -> tuple[int, int]:
    return 18 + i, 26 + 2 * i


def jpeg(h, w, seed) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def png(arr, palette=False) -> bytes:
    img = Image.fromarray(arr.astype(np.uint8), mode="L")
    if palette:
        img = img.convert("P")
        img.putpalette([v for c in range(256) for v in (c, 255 - c, c // 2)])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def label(h, w, seed, ignore=True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), np.uint8)
    lab[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = rng.integers(1, 21)
    if ignore:
        lab[h // 4, :] = 255
    return lab


def scribble_xml(h, w, cls_tag) -> str:
    pts = "".join(f"<point><X>{x}</X><Y>{h // 2}</Y></point>" for x in (3, w - 4))
    bg = f"<point><X>2</X><Y>2</Y></point><point><X>{w - 1}</X><Y>2</Y></point>"
    return (f"<annotation><filename>x.jpg</filename><size><width>{w}</width><height>{h}</height></size>"
            f"<polygon><tag>{cls_tag}</tag>{pts}</polygon><polygon><tag>background</tag>{bg}</polygon></annotation>")


def zip_bytes(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def tar_bytes(files: dict, mode="w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def lines(ids) -> bytes:
    return "".join(i + "\n" for i in ids).encode()


class Mini:
    """The miniature packages, built once per test."""

    def __init__(self):
        self.images = {i: jpeg(*size_of(k), k) for k, i in enumerate(IDS + [EXTRA])}
        self.hw = {i: size_of(k) for k, i in enumerate(IDS + [EXTRA])}
        self.masks = {i: label(*self.hw[i], k) for k, i in enumerate(IDS)}
        self.tags = {i: ("plane", "cat", "dog", "person", "bike", "sofa", "train")[k] for k, i in enumerate(IDS)}
        self.xml = {i: scribble_xml(*self.hw[i], self.tags[i]) for i in IDS}
        self.scribbles = {i: rasterize_scribble_xml_text(self.xml[i]) for i in IDS}
        self.pseudo = {m: {i: label(*self.hw[i], 100 + k + 7 * j, ignore=False) for k, i in enumerate(TRAIN)}
                       for j, m in enumerate(prep.PSEUDO_METHODS)}

    # the authors' packages (Drive): layouts as their README describes them
    def scribblesup(self) -> bytes:
        top = "VOCdevkit/VOC2012/"
        files = {f"{top}JPEGImages/{i}.jpg": self.images[i] for i in IDS + [EXTRA]}
        files |= {f"{top}SegmentationClassAug/{i}.png": png(self.masks[i], palette=True) for i in IDS}
        files |= {f"{top}pascal_2012_scribble/{i}.png": png(self.scribbles[i]) for i in IDS}
        files |= {f"{top}ImageSets/SegmentationAug/train.txt": lines(TRAIN),
                  f"{top}ImageSets/SegmentationAug/val.txt": lines(VAL).rstrip()}   # no final newline
        return zip_bytes(files)

    def distances(self) -> bytes:
        files = {f"distancemaps/distance_map/{i}.png": png(scribble_distance_map(self.scribbles[i])) for i in IDS}
        files |= {f"distancemaps/distance_pseudo/{i}.png": png(pseudo_distance_map(self.pseudo["BMP"][i]))
                  for i in TRAIN}
        return zip_bytes(files)

    def pseudo_zip(self, method) -> bytes:
        return zip_bytes({f"{method.lower()}_pseudolabel/{i}.png": png(v) for i, v in self.pseudo[method].items()})

    def checkpoint(self) -> bytes:
        buf = io.BytesIO()
        torch.save({"state_dict": {"layer_pred0.conv1.weight": torch.ones(2, 2)}, "epoch": 50}, buf)
        return zip_bytes({"train_deeplabv2_r50/last_checkpoint.pth": buf.getvalue(),
                          "train_deeplabv2_r50/log.txt": b"epoch 50\n"})

    # the official sources
    def voc_tar(self) -> bytes:
        top = "VOCdevkit/VOC2012/"
        files = {f"{top}JPEGImages/{i}.jpg": self.images[i] for i in IDS + [EXTRA]}
        files |= {f"{top}SegmentationClass/{i}.png": png(self.masks[i], palette=True) for i in VOC_TRAIN + VOC_VAL}
        files |= {f"{top}SegmentationObject/{i}.png": b"not needed" for i in VOC_TRAIN}
        files |= {f"{top}ImageSets/Segmentation/train.txt": lines(VOC_TRAIN),
                  f"{top}ImageSets/Segmentation/val.txt": lines(VOC_VAL),
                  f"{top}Annotations/{EXTRA}.xml": b"<annotation/>"}
        return tar_bytes(files)

    def sbd_tgz(self, tmp_path) -> bytes:
        files = {"benchmark_RELEASE/dataset/train.txt": lines(SBD_TRAIN),
                 "benchmark_RELEASE/dataset/val.txt": lines(SBD_VAL)}
        for i in sorted(set(SBD_TRAIN) | set(SBD_VAL)):
            path = tmp_path / f"{i}.mat"
            seg = np.where(self.masks[i] == 255, 0, self.masks[i])   # SBD masks have no 255
            savemat(str(path), {"GTcls": {"Segmentation": seg, "CategoriesPresent": np.unique(seg)}})
            files[f"benchmark_RELEASE/dataset/cls/{i}.mat"] = path.read_bytes()
            files[f"benchmark_RELEASE/dataset/img/{i}.jpg"] = self.images[i]
        return tar_bytes(files, "w:gz")

    def xml_zip(self) -> bytes:
        files = {f"scribble_annotation/pascal_2012/{i}.xml": x for i, x in self.xml.items()}
        files["scribble_annotation/pascal_2012/2010_000000.xml"] = "<annotation>not one of ours"
        files["scribble_annotation/pascal_context/2007_000001.xml"] = "<annotation/>"
        return zip_bytes(files)


def rasterize_scribble_xml_text(text: str) -> np.ndarray:
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "a.xml")
        with open(path, "w") as f:
            f.write(text)
        return rasterize_scribble_xml(path)


# ----------------------------------------------------------------------------- the server
class Server:
    """Files over HTTP on 127.0.0.1 (an ephemeral port), with Range requests; `refuse[path] =
    status` answers that status, `drop_once` sends half of a file once and closes the
    connection. Every request is logged as (path, Range header). Stops itself after a while."""

    def __init__(self, files: dict, lifetime_s: float = 120):
        self.files, self.refuse, self.drop_once, self.log = dict(files), {}, set(), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.log.append((path, rng))
                if path in server.refuse:
                    self.send_error(server.refuse[path])
                    return
                data = server.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng else 0
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if path in server.drop_once:
                    server.drop_once.discard(path)
                    body = body[:len(body) // 2]   # then the connection closes
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.timer = threading.Timer(lifetime_s, self.httpd.shutdown)
        self.timer.daemon = True
        self.thread.start()
        self.timer.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path}"

    def requests(self, prefix: str = "") -> list:
        return [r for r in self.log if r[0].startswith(prefix)]

    def stop(self):
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()


QUOTA = ("Failed to retrieve file url:\n\n\tToo many users have viewed or downloaded this file recently. "
         "Please try accessing the file again later.\n\nYou may still be able to access the file from the browser:")
PSEUDO_FILES = {f"pseudo-{m}": f"{m}.zip" for m in prep.PSEUDO_METHODS}


@pytest.fixture
def mini(tmp_path):
    return Mini()


@pytest.fixture
def server(mini, tmp_path, monkeypatch):
    mats = tmp_path / "mats"
    mats.mkdir()
    voc, sbd = mini.voc_tar(), mini.sbd_tgz(mats)
    files = {f"drive/{prep.DRIVE_SCRIBBLESUP}": mini.scribblesup(),
             f"drive/{prep.DRIVE_DISTANCES}": mini.distances(),
             f"drive/{prep.DRIVE_CHECKPOINT}": mini.checkpoint(),
             "dropbox/train_deeplabv2_r50.zip": mini.checkpoint(),
             "voc/VOCtrainval_11-May-2012.tar": voc, "sbd/benchmark.tgz": sbd,
             "dropbox/scribble_annotation.zip": mini.xml_zip()}
    files |= {f"drive/{fid}": mini.pseudo_zip(name[:-4]) for fid, name in PSEUDO_FILES.items()}
    srv = Server(files)
    md5 = {k: hashlib.md5(v).hexdigest() for k, v in (("voc", voc), ("sbd", sbd))}
    monkeypatch.setattr(prep, "official_sources", lambda: {
        "voc": (srv.url("voc/VOCtrainval_11-May-2012.tar"), "VOCtrainval_11-May-2012.tar", md5["voc"]),
        "sbd": (srv.url("sbd/benchmark.tgz"), "benchmark.tgz", md5["sbd"])})
    monkeypatch.setattr(prep, "SCRIBBLE_XML_URL", srv.url("dropbox/scribble_annotation.zip"))
    monkeypatch.setattr(prep, "DROPBOX_CHECKPOINT", srv.url("dropbox/train_deeplabv2_r50.zip"))
    monkeypatch.setattr(prep, "PUBLISHED", PUBLISHED)
    monkeypatch.setattr(download, "RETRY_WAIT_S", 0.0)
    monkeypatch.setattr(download, "TIMEOUT_S", 10.0)
    yield srv
    srv.stop()


@pytest.fixture
def drive(server, monkeypatch):
    """gdown.download / download_folder stubbed: Drive ids are fetched from the local server
    (like gdown: written whole, then renamed onto the output); a refused id raises gdown's
    FileURLRetrievalError with its quota message. `calls` logs the ids asked for."""
    import sys

    import gdown
    to_download = sys.modules["gdown.download"].GoogleDriveFileToDownload

    class Drive:
        calls, refused = [], set()
        folders = {prep.DRIVE_PSEUDO_FOLDER: list(PSEUDO_FILES.items())}

    def fake_download(url=None, output=None, quiet=False, id=None, resume=False, **kw):
        Drive.calls.append(id)
        if id in Drive.refused:
            raise gdown.exceptions.FileURLRetrievalError(QUOTA)
        with urllib.request.urlopen(server.url(f"drive/{id}"), timeout=10) as r:
            data = r.read()
        with open(output + "abcdefgh.part", "wb") as f:
            f.write(data)
        os.replace(output + "abcdefgh.part", output)
        return output

    def fake_download_folder(url=None, id=None, output=None, quiet=False, skip_download=False, **kw):
        Drive.calls.append(id)
        if id in Drive.refused:
            raise gdown.exceptions.FileURLRetrievalError(QUOTA)
        assert skip_download
        return [to_download(fid, path, path) for fid, path in Drive.folders[id]]

    monkeypatch.setattr(gdown, "download", fake_download)
    monkeypatch.setattr(gdown, "download_folder", fake_download_folder)
    return Drive


def run(tmp_path, capsys, *flags):
    root = tmp_path / "ScribbleSup"
    code = prep.main(["--root", str(root), "--checkpoint-dir", str(tmp_path / "log" / "train_deeplabv2_r50"),
                      "--workers", "1", *flags])
    out, err = capsys.readouterr()
    return code, out, err, root / "VOC2012"


def one_error_line(err: str) -> str:
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def listing(folder) -> list:
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


# ----------------------------------------------------------------------------- the authors' route
def test_authors_route_then_nothing_to_do(tmp_path, capsys, mini, server, drive):
    code, out, err, voc = run(tmp_path, capsys, "--pseudo", "bmp", "--checkpoint")
    assert code == 0, err
    assert "OK: no problems" in out and "score the released checkpoint" in out
    for folder in ("JPEGImages", "SegmentationClassAug", "pascal_2012_scribble", "distance_map",
                   "distance_pseudo", "BMP", "ImageSets/SegmentationAug"):
        assert os.path.isdir(voc / folder), folder
    assert sorted(os.listdir(voc / "BMP")) == [i + ".png" for i in TRAIN]
    np.testing.assert_array_equal(read_label(str(voc / "BMP" / f"{TRAIN[0]}.png")), mini.pseudo["BMP"][TRAIN[0]])
    np.testing.assert_array_equal(read_label(str(voc / "pascal_2012_scribble" / f"{VAL[0]}.png")),
                                  mini.scribbles[VAL[0]])
    report = check_dataset(str(voc), pseudo="BMP")
    assert report.ok and report.ids_checked == PUBLISHED, report.summary()
    ckpt = tmp_path / "log" / "train_deeplabv2_r50" / "last_checkpoint.pth"
    assert torch.load(ckpt, weights_only=True)["epoch"] == 50
    # downloads deleted once unpacked, no staging left
    assert not os.listdir(voc.parent / "downloads") and not os.path.exists(voc.parent / ".staging")
    assert sorted(drive.calls) == sorted([prep.DRIVE_SCRIBBLESUP, prep.DRIVE_DISTANCES, prep.DRIVE_PSEUDO_FOLDER,
                                          "pseudo-BMP", prep.DRIVE_CHECKPOINT])

    # a second run: everything is in place, nothing is fetched
    before, calls = listing(voc), list(drive.calls)
    code, out, err, _ = run(tmp_path, capsys, "--pseudo", "BMP", "--checkpoint")
    assert code == 0, err
    assert "nothing to do, everything was already in place" in out and "already in place" in out
    assert drive.calls == calls and listing(voc) == before

    # another pseudo-label set adds only its labels and their D_c
    code, out, err, _ = run(tmp_path, capsys, "--pseudo", "AFA")
    assert code == 0, err
    assert drive.calls[len(calls):] == [prep.DRIVE_PSEUDO_FOLDER, "pseudo-AFA"]
    new = {f for f in set(listing(voc)) - set(before) if f.endswith(".png")}
    assert new == {f"{d}/{i}.png" for d in ("AFA", "distance_AFA") for i in TRAIN}
    np.testing.assert_array_equal(read_label(str(voc / "distance_AFA" / f"{TRAIN[1]}.png")),
                                  pseudo_distance_map(mini.pseudo["AFA"][TRAIN[1]]))
    assert "PSEUDO=AFA DIST_C=distance_AFA sh scripts/train_r50_deeplabv2.sh" in out


def test_from_dir_needs_no_network_and_is_left_alone(tmp_path, capsys, mini, server, drive):
    hand = tmp_path / "hand"
    hand.mkdir()
    (hand / "ScribbleSup-20230901T1200Z-001.zip").write_bytes(mini.scribblesup())   # browser names
    (hand / "distancemap.zip").write_bytes(mini.distances())
    (hand / "bmp_pseudolabel.zip").write_bytes(mini.pseudo_zip("BMP"))
    (hand / "last_checkpoint.pth").write_bytes(zipfile.ZipFile(io.BytesIO(mini.checkpoint())).read(
        "train_deeplabv2_r50/last_checkpoint.pth"))
    (hand / "notes.txt").write_text("my own file")
    before = {p: (hand / p).stat().st_mtime_ns for p in os.listdir(hand)}
    code, out, err, voc = run(tmp_path, capsys, "--from", str(hand), "--pseudo", "BMP", "--checkpoint")
    assert code == 0, err
    assert drive.calls == [] and server.log == []
    assert {p: (hand / p).stat().st_mtime_ns for p in os.listdir(hand)} == before
    assert check_dataset(str(voc), pseudo="BMP").ok


def test_corrupt_archive_is_one_error_and_is_fetched_anew(tmp_path, capsys, mini, server, drive):
    good = server.files[f"drive/{prep.DRIVE_SCRIBBLESUP}"]
    server.files[f"drive/{prep.DRIVE_SCRIBBLESUP}"] = good[:len(good) // 3]   # truncated zip
    code, out, err, voc = run(tmp_path, capsys)
    line = one_error_line(err)
    assert code == 1 and "corrupt or truncated archive" in line and "run again to fetch it anew" in line
    assert not os.path.exists(voc) and not os.path.exists(voc.parent / ".staging")
    assert not os.listdir(voc.parent / "downloads" / "scribblesup")   # the bad download is gone
    server.files[f"drive/{prep.DRIVE_SCRIBBLESUP}"] = good
    code, out, err, voc = run(tmp_path, capsys)
    assert code == 0, err


def test_drive_quota_is_one_line_naming_the_address_and_the_alternatives(tmp_path, capsys, server, drive):
    drive.refused.add(prep.DRIVE_SCRIBBLESUP)
    code, out, err, voc = run(tmp_path, capsys)
    line = one_error_line(err)
    assert code == 1
    assert f"https://drive.google.com/uc?id={prep.DRIVE_SCRIBBLESUP}: Google Drive refused the download " \
           "(Too many users have viewed or downloaded this file recently" in line
    assert "--from FOLDER" in line and "--source official" in line
    assert not os.path.exists(voc)


def test_checkpoint_falls_back_to_dropbox_then_both_refuse(tmp_path, capsys, server, drive):
    drive.refused.add(prep.DRIVE_CHECKPOINT)
    code, out, err, voc = run(tmp_path, capsys, "--checkpoint")
    assert code == 0, err
    assert "warning:" in err and "trying the next address" in err
    assert server.requests("dropbox/train_deeplabv2_r50.zip")
    ckpt = tmp_path / "log" / "train_deeplabv2_r50" / "last_checkpoint.pth"
    assert ckpt.is_file()
    ckpt.unlink()
    server.refuse["dropbox/train_deeplabv2_r50.zip"] = 503
    code, out, err, voc = run(tmp_path, capsys, "--checkpoint")
    line = one_error_line(err)
    assert code == 1 and "Google Drive refused" in line and "(HTTP 503" in line and "--from FOLDER" in line
    assert not ckpt.exists() and [f for f in os.listdir(ckpt.parent) if not f.startswith(".cdsp")] == []


def test_pseudo_labels_not_in_the_drive_folder_or_folder_refused(tmp_path, capsys, server, drive):
    drive.folders[prep.DRIVE_PSEUDO_FOLDER] = [("x1", "readme.txt"), ("x2", "AFA.zip")]
    code, out, err, voc = run(tmp_path, capsys, "--pseudo", "SEAM")
    line = one_error_line(err)
    assert code == 1 and "nothing named like SEAM" in line and "readme.txt, AFA.zip" in line
    assert os.path.isdir(voc / "JPEGImages") and not os.path.exists(voc / "SEAM")  # earlier steps stay
    drive.refused.add(prep.DRIVE_PSEUDO_FOLDER)
    code, out, err, voc = run(tmp_path, capsys, "--pseudo", "SEAM")
    line = one_error_line(err)
    assert code == 1 and f"drive/folders/{prep.DRIVE_PSEUDO_FOLDER}: Google Drive refused" in line
    assert "download the SEAM files of" in line and "--from FOLDER" in line


def test_a_rar_package_is_refused_and_kept(tmp_path, capsys, server, drive):
    server.files[f"drive/{prep.DRIVE_SCRIBBLESUP}"] = b"Rar!\x1a\x07\x01\x00" + b"x" * 100
    code, out, err, voc = run(tmp_path, capsys)
    line = one_error_line(err)
    assert code == 1 and "a RAR archive, which this tool cannot unpack" in line
    assert os.listdir(voc.parent / "downloads" / "scribblesup") == ["scribblesup_authors"]   # not fetched again


def test_a_failed_deep_check_is_not_forgotten_by_the_next_run(tmp_path, capsys, mini, server, drive):
    mini.scribbles[TRAIN[2]][0, 0] = 30     # not a class: only decoding the file shows it
    server.files[f"drive/{prep.DRIVE_SCRIBBLESUP}"] = mini.scribblesup()
    for attempt in range(2):
        code, out, err, voc = run(tmp_path, capsys)
        line = one_error_line(err)
        assert code == 1 and "datasets.check found 1 problem(s)" in line, attempt
        assert f"{TRAIN[2]}.png" in err and "label_value" in err
    assert "nothing to do" not in out
    (voc / "pascal_2012_scribble" / f"{TRAIN[2]}.png").write_bytes(png(np.full(mini.hw[TRAIN[2]], 255)))
    code, out, err, voc = run(tmp_path, capsys)
    assert code == 0 and "(deep check)" in out, err
    code, out, err, voc = run(tmp_path, capsys)
    assert code == 0 and "(quick check)" in out and "nothing to do" in out, err


def test_pseudo_label_folder_prefers_the_labels_to_their_pictures(tmp_path):
    for d, n in (("bmp/labels_BMP", 3), ("bmp/colour", 3), ("bmp/few", 1)):
        os.makedirs(tmp_path / d)
        for k in range(n):
            (tmp_path / d / f"{k}.png").write_bytes(b"")
    assert prep.pseudo_label_folder(str(tmp_path), "BMP", "x.zip") == str(tmp_path / "bmp/labels_BMP")
    with pytest.raises(prep.DatasetError, match=r"x\.zip: several folders of 3 PNGs"):
        prep.pseudo_label_folder(str(tmp_path), "AFA", "x.zip")


# ----------------------------------------------------------------------------- the official route
def test_official_route_builds_segmentation_aug_scribbles_and_d_s(tmp_path, capsys, mini, server, drive):
    code, out, err, voc = run(tmp_path, capsys, "--source", "official")
    assert code == 0, err
    assert drive.calls == []
    assert (voc / "ImageSets/SegmentationAug/train.txt").read_text().split() == TRAIN
    assert (voc / "ImageSets/SegmentationAug/val.txt").read_text().split() == VAL
    assert sorted(os.listdir(voc / "SegmentationClassAug")) == sorted(i + ".png" for i in IDS)
    assert os.path.isfile(voc / "JPEGImages" / f"{EXTRA}.jpg")
    for i in IDS:
        mask = read_label(str(voc / "SegmentationClassAug" / f"{i}.png"))
        if i in VOC_TRAIN + VOC_VAL:   # VOC's own mask, as it is (with its 255 borders)
            assert (voc / "SegmentationClassAug" / f"{i}.png").read_bytes() == png(mini.masks[i], palette=True)
        else:                          # SBD's, from the .mat
            np.testing.assert_array_equal(mask, np.where(mini.masks[i] == 255, 0, mini.masks[i]))
            assert Image.open(voc / "SegmentationClassAug" / f"{i}.png").mode == "P"
        scribble = read_label(str(voc / "pascal_2012_scribble" / f"{i}.png"))
        np.testing.assert_array_equal(scribble, mini.scribbles[i])
        np.testing.assert_array_equal(read_label(str(voc / "distance_map" / f"{i}.png")),
                                      scribble_distance_map(scribble))
    assert not os.path.exists(voc / "distance_pseudo")   # no pseudo-labels in the official sources
    assert "OK: no problems" in out and "add --pseudo BMP" in out
    # the VOC tar's other folders were not unpacked
    assert not os.path.exists(voc / "SegmentationObject") and not os.path.exists(voc.parent / ".staging")

    code, out, err, _ = run(tmp_path, capsys, "--source", "official")
    assert code == 0 and "nothing to do" in out, err


def test_interrupted_download_resumes_with_a_range_request(tmp_path, capsys, mini, server, drive):
    path = "voc/VOCtrainval_11-May-2012.tar"
    server.drop_once.add(path)
    code, out, err, voc = run(tmp_path, capsys, "--source", "official")
    assert code == 0, err
    size = len(server.files[path])
    assert server.requests(path) == [(path, None), (path, f"bytes={size // 2}-")]


def test_wrong_checksum_is_one_error_and_nothing_is_kept(tmp_path, capsys, mini, server, drive, monkeypatch):
    url = server.url("voc/VOCtrainval_11-May-2012.tar")
    monkeypatch.setattr(prep, "official_sources", lambda: {
        "voc": (url, "VOCtrainval_11-May-2012.tar", "0" * 32), "sbd": ("unused", "benchmark.tgz", "1" * 32)})
    code, out, err, voc = run(tmp_path, capsys, "--source", "official")
    line = one_error_line(err)
    assert code == 1 and line.startswith(f"error: {url}: MD5 ") and "is not the published 000" in line
    assert not os.path.exists(voc) and listing(voc.parent / "downloads") == []


def test_host_that_refuses_is_one_line_naming_it_and_the_alternatives(tmp_path, capsys, server, drive):
    server.refuse["sbd/benchmark.tgz"] = 403
    code, out, err, voc = run(tmp_path, capsys, "--source", "official")
    line = one_error_line(err)
    assert code == 1
    assert f"{server.url('sbd/benchmark.tgz')}: the host refused the download (HTTP 403" in line
    assert "benchmark.tgz by hand" in line and "--from FOLDER" in line and "--source authors" in line
    assert not os.path.exists(voc)


def test_bad_from_folder_and_foreign_root_are_refused(tmp_path, capsys, server, drive):
    code, out, err, voc = run(tmp_path, capsys, "--from", str(tmp_path / "nope"))
    assert code == 1 and "--from" in one_error_line(err) and "folder not found" in err
    root = tmp_path / "ScribbleSup"
    root.mkdir(exist_ok=True)
    (root / "mine.txt").write_text("the user's")
    code, out, err, voc = run(tmp_path, capsys)
    assert code == 1 and "was not made by prepare_scribblesup" in one_error_line(err)
    assert os.listdir(root) == ["mine.txt"] and drive.calls == []


# ----------------------------------------------------------------------------- pieces
def test_segmentation_aug_ids_is_the_standard_construction():
    train, val = prep.segmentation_aug_ids(VOC_TRAIN, VOC_VAL, SBD_TRAIN, SBD_VAL)
    assert train == TRAIN and val == VAL
    assert "2007_000101" not in train   # SBD train holds a VOC val image: it stays out


def test_fetch_http_keeps_the_partial_file_and_resumes_it_on_the_next_call(tmp_path, server):
    path = "voc/VOCtrainval_11-May-2012.tar"
    data = server.files[path]
    server.drop_once.add(path)
    dest = str(tmp_path / "dl" / "voc.tar")
    with pytest.raises(download.DownloadError, match=r"connection lost after \d+ of \d+ bytes.*run again to resume"):
        download.fetch_http(server.url(path), dest, retries=0)
    assert os.path.getsize(dest + ".part") == len(data) // 2 and not os.path.exists(dest)
    download.fetch_http(server.url(path), dest, md5=hashlib.md5(data).hexdigest(), retries=0)
    assert open(dest, "rb").read() == data and not os.path.exists(dest + ".part")
    assert server.requests(path)[-1] == (path, f"bytes={len(data) // 2}-")


def test_a_web_page_is_a_refusal_not_a_file(tmp_path):
    page = tmp_path / "x.zip"
    page.write_text("<!DOCTYPE html><html>quota exceeded</html>")
    with pytest.raises(download.ArchiveError, match="a web page"):
        download.archive_format(str(page))


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil", "a/../../evil"])
def test_unsafe_members_are_refused(tmp_path, name):
    for data, ext in ((zip_bytes({name: b"x"}), "zip"), (tar_bytes({name: b"x"}), "tar")):
        archive = tmp_path / f"a.{ext}"
        archive.write_bytes(data)
        with pytest.raises(download.ArchiveError, match="outside the folder|unsafe"):
            download.unpack(str(archive), str(tmp_path / f"out_{ext}"))
    assert not os.path.exists(tmp_path / "evil.txt")


def test_defaults_are_where_the_evaluation_script_looks():
    """After `--checkpoint` with the defaults, scripts/emlc_r50_deeplabv2.sh needs no setting."""
    text = open(os.path.join(REPO, "scripts", "emlc_r50_deeplabv2.sh")).read()
    default = lambda var: re.search(rf"{var}=\$\{{{var}:-([^}}]*)\}}", text).group(1)
    assert default("CHECKPOINT") == f"{prep.CHECKPOINT_DIR}/{prep.CHECKPOINT_NAME}"
    assert default("DATA") == f"{prep.DEFAULT_ROOT}/{prep.VOC}"
    script = open(os.path.join(REPO, "scripts", "prepare_scribblesup.sh")).read()
    assert f'--root "${{ROOT:-{prep.DEFAULT_ROOT}}}"' in script


def test_the_script_runs_the_tool(tmp_path):
    import subprocess

    from conftest import require_installed_venv
    require_installed_venv()
    proc = subprocess.run(["sh", os.path.join(REPO, "scripts", "prepare_scribblesup.sh"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: python -m datasets.prepare_scribblesup" in proc.stdout and "--pseudo" in proc.stdout
