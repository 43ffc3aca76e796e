"""Fetching and unpacking archives for the data tools: resumable downloads, checks, safe unpacking.

    fetch_http(url, dest, md5=...)          HTTP(S), resumed with a Range request on dest.part
    fetch_gdrive(file_id, dest)             a Google Drive file, through gdown (resume=True)
    list_gdrive_folder(folder_id)           [(file id, path in the folder)] of a Drive folder
    unpack(archive, into, want=...)         zip or (compressed) tar, member names checked

A finished download is renamed onto `dest` only once it is whole (and, where a checksum is
published, matches it), so `dest` existing means "downloaded and verified"; an interrupted
one leaves `dest.part` (gdown: `dest<8 chars>.part`), which the next call resumes. Every
failure is one line naming the address or the file: HostRefused (the host said no or could
not be reached: 403/404/429/5xx, a web page instead of the file, a Drive quota),
DownloadError (the transfer broke), ChecksumError, ArchiveError (corrupt, truncated, not an
archive, or a member that would land outside the folder).
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import lzma
import os
import re
import shutil
import socket
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from typing import Callable

from tqdm import tqdm

from utils.io import atomic_path

CHUNK = 1 << 20
RETRIES = 3          # reconnections within one call, each resuming where the last one stopped
RETRY_WAIT_S = 2.0   # before the first reconnection; doubles each time
TIMEOUT_S = 60.0     # seconds without a byte before a connection counts as lost
USER_AGENT = "cdsp-data-tools (python urllib)"


class FetchError(Exception):
    """A download or an archive that cannot be used; the message is one line naming it."""


class HostRefused(FetchError):
    """The host said no, or could not be reached."""


class DownloadError(FetchError):
    """The transfer broke off (the partial file is kept for the next try)."""


class ChecksumError(FetchError):
    """The file is whole but is not the published one."""


class ArchiveError(FetchError):
    """Corrupt, truncated, not an archive, or unsafe."""


class UnsupportedArchive(ArchiveError):
    """A whole archive of a kind this module cannot unpack (RAR, 7z)."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0].strip() if text else e.__class__.__name__


def md5sum(path: str, desc: str | None = None) -> str:
    """The MD5 of a file, read in chunks (a progress bar for big files)."""
    h = hashlib.md5()
    size = os.path.getsize(path)
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=desc or "md5",
                                      disable=size < (64 << 20), leave=False) as bar:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def verify_md5(path: str, md5: str, what: str) -> None:
    """ChecksumError naming `what` (the address or the file) unless the file's MD5 is `md5`."""
    got = md5sum(path, desc=f"verifying {os.path.basename(path)}")
    if got != md5.lower():
        raise ChecksumError(f"{what}: MD5 {got} is not the published {md5}: not the expected file")


# ----------------------------------------------------------------------------- HTTP
def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range header (None where absent or '*')."""
    m = re.match(r"bytes\s+(\d+|\*)(?:-\d+)?/(\d+|\*)", value or "")
    if not m:
        return None, None
    first, total = m.groups()
    return (None if first == "*" else int(first)), (None if total == "*" else int(total))


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _refused(url: str, e: urllib.error.HTTPError) -> HostRefused:
    return HostRefused(f"{url}: the host refused the download (HTTP {e.code} {e.reason})")


def fetch_http(url: str, dest: str, md5: str | None = None, desc: str | None = None,
               retries: int = RETRIES, timeout: float = TIMEOUT_S) -> str:
    """Download `url` to `dest` through `dest.part`, resuming a partial file with an HTTP Range
    request (a server that ignores Range starts over); a connection lost mid-file is resumed up
    to `retries` times. The size must match what the server announced, and the MD5 `md5` when
    given (a mismatch deletes the partial file: it is not the published one). Returns dest."""
    if os.path.isfile(dest):
        return dest
    part = dest + ".part"
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    wait, lost = RETRY_WAIT_S, None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(wait)
            wait *= 2
        have = os.path.getsize(part) if os.path.isfile(part) else 0
        try:
            resp = _open(url, have, timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # Range not satisfiable: the partial file may be whole
                total = _content_range(e.headers.get("Content-Range"))[1]
                if total == have:
                    break
                os.remove(part)  # longer than the file: start over
                continue
            if e.code in (408, 500, 502, 503, 504) and attempt < retries:
                lost = _refused(url, e)
                continue
            raise _refused(url, e) from None
        except (urllib.error.URLError, OSError) as e:  # DNS, refused connection, timeout
            reason = getattr(e, "reason", None) or e
            lost = HostRefused(f"{url}: the host cannot be reached ({_first_line(reason)})")
            if attempt < retries:
                continue
            raise lost from None
        with resp:
            if resp.headers.get("Content-Type", "").split(";")[0].strip() == "text/html":
                raise HostRefused(f"{url}: the host answered with a web page, not the file "
                                  f"(a quota, a login or a moved file)")
            length = resp.headers.get("Content-Length")
            if resp.status == 206:
                first, total = _content_range(resp.headers.get("Content-Range"))
                if first != have:
                    raise DownloadError(f"{url}: the host resumed at byte {first}, not {have}")
            else:  # 200: the whole file from byte 0
                have, total = 0, (int(length) if length is not None else None)
            try:
                with open(part, "ab" if have else "wb") as f, \
                        tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                             desc=desc or os.path.basename(dest)) as bar:
                    for block in iter(lambda: resp.read(CHUNK), b""):
                        f.write(block)
                        bar.update(len(block))
            except (http.client.HTTPException, socket.timeout, ConnectionError) as e:
                lost = DownloadError(f"{url}: connection lost ({_first_line(e)})")
                continue
        size = os.path.getsize(part)
        if total is None or size == total:
            lost = None
            break
        if size > total:
            os.remove(part)
            raise DownloadError(f"{url}: received {size} bytes, more than the {total} announced; "
                                f"the partial file was deleted, run again")
        lost = DownloadError(f"{url}: connection lost after {size} of {total} bytes")
    if lost is not None:
        if isinstance(lost, HostRefused):
            raise lost
        kept = os.path.getsize(part) if os.path.isfile(part) else 0
        raise DownloadError(f"{lost}; tried {retries + 1} times, the {kept} bytes received are kept in "
                            f"{part}: run again to resume")
    if md5 is not None:
        try:
            verify_md5(part, md5, url)
        except ChecksumError:
            os.remove(part)
            raise
    os.replace(part, dest)
    return dest


# ----------------------------------------------------------------------------- Google Drive
def gdrive_file_url(file_id: str) -> str:
    return f"https://drive.google.com/uc?id={file_id}"


def gdrive_folder_url(folder_id: str) -> str:
    return f"https://drive.google.com/drive/folders/{folder_id}"


def _gdrive_refused(address: str, e: BaseException) -> FetchError:
    import gdown
    # gdown's messages span lines; the first meaningful one says what happened
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().endswith(":")]
    reason = lines[0] if lines else e.__class__.__name__
    if isinstance(e, gdown.exceptions.FileURLRetrievalError) or "quota" in str(e).lower():
        return HostRefused(f"{address}: Google Drive refused the download ({reason})")
    if isinstance(e, gdown.exceptions.DownloadError):
        return DownloadError(f"{address}: the download broke off ({reason}); run again to resume")
    return HostRefused(f"{address}: Google Drive cannot be reached ({reason})")


def _gdrive_errors():
    import gdown
    import requests
    return (gdown.exceptions.DownloadError, requests.exceptions.RequestException, OSError)


def fetch_gdrive(file_id: str, dest: str, retries: int = RETRIES, timeout: float = TIMEOUT_S) -> str:
    """Download a Google Drive file to `dest` with gdown (its resume=True continues a partial
    file; it renames onto dest only once the announced size has arrived). Returns dest."""
    if os.path.isfile(dest):
        return dest
    import gdown
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    try:
        gdown.download(id=file_id, output=dest, quiet=False, resume=True, retries=retries,
                       timeout=timeout)
    except _gdrive_errors() as e:
        raise _gdrive_refused(gdrive_file_url(file_id), e) from None
    if not os.path.isfile(dest):
        raise DownloadError(f"{gdrive_file_url(file_id)}: gdown finished without writing {dest}")
    return dest


def list_gdrive_folder(folder_id: str) -> list[tuple[str, str]]:
    """[(file id, path inside the folder)] of a public Drive folder (nothing is downloaded)."""
    import gdown
    try:
        entries = gdown.download_folder(id=folder_id, skip_download=True, quiet=True)
    except _gdrive_errors() as e:
        raise _gdrive_refused(gdrive_folder_url(folder_id), e) from None
    return [(e.id, e.path) for e in entries or []]


# ----------------------------------------------------------------------------- archives
# tarfile's "data" filter (Python >= 3.10.12 / 3.11.4) also refuses what _safe_name checks
_DATA_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
_FILTER_ERROR = getattr(tarfile, "FilterError", ())
_CORRUPT = (tarfile.ReadError, tarfile.CompressionError, zipfile.BadZipFile, gzip.BadGzipFile,
            EOFError, zlib.error, lzma.LZMAError)


def archive_format(path: str) -> str:
    """'zip' or 'tar' (plain, gzip, bzip2 or xz), from the file's first bytes; ArchiveError
    otherwise (a web page saved in place of the file, say)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except FileNotFoundError:
        raise ArchiveError(f"{path}: file not found") from None
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00" or head[257:262] == b"ustar":
        return "tar"
    for magic, kind in ((b"Rar!", "RAR"), (b"7z\xbc\xaf\x27\x1c", "7z")):
        if head.startswith(magic):
            raise UnsupportedArchive(f"{path}: a {kind} archive, which this tool cannot unpack: unpack it by "
                                     f"hand, zip the folder it holds and pass the zip with --from")
    kind = "a web page" if head.lstrip()[:1] == b"<" else "not a zip or tar archive"
    raise ArchiveError(f"{path}: {kind}, not the expected archive ({len(head)} first bytes read)")


def is_archive(path: str) -> bool:
    try:
        archive_format(path)
    except ArchiveError:
        return False
    return True


def _safe_name(name: str, archive: str) -> str:
    """The member name as a relative path; ArchiveError if it would leave the folder."""
    clean = name.replace("\\", "/")
    parts = [p for p in clean.split("/") if p not in ("", ".")]
    if clean.startswith("/") or re.match(r"^[A-Za-z]:", clean) or ".." in parts:
        raise ArchiveError(f"{archive}: member {name!r} would be written outside the folder; "
                           f"the archive is not safe to unpack")
    return "/".join(parts)


def list_members(path: str) -> list[str]:
    """The member names of an archive (a tar is read through once)."""
    try:
        if archive_format(path) == "zip":
            with zipfile.ZipFile(path) as z:
                return z.namelist()
        with tarfile.open(path, mode="r|*") as t:
            return [m.name for m in t]
    except _CORRUPT as e:
        raise ArchiveError(f"{path}: corrupt or truncated archive ({_first_line(e)})") from None


class _ProgressReader:
    """A file object that advances a tqdm bar by the bytes read (a tar's progress)."""

    def __init__(self, f, bar):
        self.f, self.bar = f, bar

    def read(self, n=-1):
        data = self.f.read(n)
        self.bar.update(len(data))
        return data


def unpack(archive: str, into: str, want: Callable[[str], bool] | None = None,
           desc: str | None = None) -> int:
    """Extract the members of `archive` whose (cleaned) name `want` accepts (all by default)
    into the folder `into`; the number of files extracted. ArchiveError, naming the archive,
    on a corrupt or truncated file or an unsafe member; what was extracted so far stays in
    `into` (a temporary folder: the caller deletes it)."""
    fmt = archive_format(archive)
    desc = desc or f"unpacking {os.path.basename(archive)}"
    count = 0
    try:
        if fmt == "zip":
            with zipfile.ZipFile(archive) as z:
                members = [(i, _safe_name(i.filename, archive)) for i in z.infolist()]
                members = [(i, n) for i, n in members if n and (want is None or want(n))]
                with tqdm(total=sum(i.file_size for i, _ in members), unit="B", unit_scale=True,
                          unit_divisor=1024, desc=desc) as bar:
                    for info, name in members:
                        target = os.path.join(into, *name.split("/"))
                        if info.is_dir():
                            os.makedirs(target, exist_ok=True)
                            continue
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        with z.open(info) as src, open(target, "wb") as dst:  # CRC checked at the end
                            shutil.copyfileobj(src, dst, CHUNK)
                        bar.update(info.file_size)
                        count += 1
            return count
        with open(archive, "rb") as raw, \
                tqdm(total=os.path.getsize(archive), unit="B", unit_scale=True, unit_divisor=1024,
                     desc=desc) as bar, \
                tarfile.open(fileobj=_ProgressReader(raw, bar), mode="r|*") as t:
            for member in t:
                name = _safe_name(member.name, archive)
                if not name or (want is not None and not want(name)):
                    continue
                if not (member.isfile() or member.isdir()):
                    continue  # links and devices: nothing a dataset needs
                member.name = name
                t.extract(member, into, **_DATA_FILTER)
                count += member.isfile()
        return count
    except _FILTER_ERROR as e:
        raise ArchiveError(f"{archive}: unsafe member ({_first_line(e)}); not unpacked") from None
    except _CORRUPT as e:
        raise ArchiveError(f"{archive}: corrupt or truncated archive ({_first_line(e)})") from None


def copy_atomic(src, dst: str) -> None:
    """Copy a file (a path or an open binary file) to dst through a temporary file."""
    with atomic_path(dst) as tmp, open(tmp, "wb") as out:
        if isinstance(src, (str, os.PathLike)):
            with open(src, "rb") as f:
                shutil.copyfileobj(f, out, CHUNK)
        else:
            shutil.copyfileobj(src, out, CHUNK)


@contextlib.contextmanager
def scratch_dir(path: str):
    """A fresh folder at `path` (an old one is removed first), removed again on exit."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
