"""Who may write where: the one ownership rule of every tool that writes (docs/outputs.md).

    out = claim_output_dir(args.out, tool="distance_map", what="--dst", inputs=[args.src])
    out.claim(names)               # refused, naming the file, if one exists that this tool did not write
    save_png(array, out.path(name))

1. A tool writes into a folder it created, or into one it marked as its own output earlier (the
   mark, `.cdsp_output`, names the tool). An existing folder that holds anything else (not
   empty, no mark, or another tool's mark) is refused before any work starts.
2. Inside its folder it replaces only files it wrote: every name it will write is claimed
   first; a claimed name that exists but is not in the mark's list is refused, naming it.
3. It never writes into, or over, a folder it reads as input (images, masks, scribbles,
   pseudo-labels, maps), compared by real path, so a symlink or `..` cannot hide one.
4. Names are names: no separators other than '/' between plain parts, no '..', not absolute
   (an id never leads a write outside the folder).

A tool's single output file (a JSON report) follows the same rule through claim_output_file:
never a folder, never an input, an existing file only if the tool recognises it as its own.
Run folders (train.py's --logdir) also take a `RunLock` while a run lives.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterable

from utils.io import OutputError, check_output_dir, is_temp_name, remove_stale_temps

MARK = ".cdsp_output"   # first line: JSON header {"tool": ...}; then one written name per line
LOCK = ".cdsp_lock"     # a live run's pid, host and process start time (RunLock)
_OURS = (MARK, LOCK)


def check_name(name: str, what: str = "name") -> str:
    """`name` if it is a relative path of plain parts ('a.png', 'overlay/a.png'); OutputError
    otherwise (absolute, '..', '.', empty parts, a backslash, a control character)."""
    bad = None
    if not isinstance(name, str) or not name:
        bad = "is empty"
    elif name.startswith("/") or (os.altsep and name.startswith(os.altsep)):
        bad = "is an absolute path"
    elif "\\" in name:
        bad = "contains a backslash"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        bad = "contains a control character"
    elif any(part in ("", ".", "..") for part in name.split("/")):
        bad = "has an empty, '.' or '..' part"
    if bad:
        raise OutputError(f"{what} {name!r} {bad}: names must stay inside the output folder")
    return name


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def refuse_inputs(path: str, what: str, inputs: Iterable[str | None]) -> None:
    """OutputError if `path` is, lies inside, or holds one of the `inputs` (folders or files),
    compared by real path."""
    target = _real(path)
    for src in inputs:
        if not src:
            continue
        real = _real(src)
        kind = "file" if os.path.isfile(real) else "folder"
        if target == real or _inside(target, real):
            raise OutputError(f"{what} {path}: is {'' if target == real else 'inside '}the input {kind} "
                              f"{src}; a tool never writes into what it reads (choose another {what})")
        if _inside(real, target) and os.path.exists(real):
            raise OutputError(f"{what} {path}: holds the input {kind} {src}; choose a folder of its own")


def _entries(path: str) -> list[str]:
    """What a folder holds besides our mark, our lock and our temp files, sorted."""
    return sorted(e for e in os.listdir(path) if e not in _OURS and not is_temp_name(e))


def read_mark(path: str) -> tuple[dict | None, set[str]]:
    """(header, names written) of a folder's mark; (None, empty) if it has none or it is unreadable."""
    try:
        with open(os.path.join(path, MARK), encoding="utf-8") as f:
            header = json.loads(f.readline())
            names = {line.rstrip("\n") for line in f if line.strip()}
    except (OSError, ValueError):
        return None, set()
    return (header if isinstance(header, dict) else None), names


class OutputDir:
    """A folder this tool owns (claim_output_dir made sure): where it may write which names."""

    def __init__(self, path: str, tool: str, what: str, written: set[str]):
        self.root, self.tool, self.what = path, tool, what
        self._written = set(written)

    def path(self, name: str) -> str:
        """<folder>/<name> for a checked name (it need not be claimed: `claim` does the refusing)."""
        return os.path.join(self.root, *check_name(name, "output name").split("/"))

    def foreign(self, names: Iterable[str]) -> list[str]:
        """The names that exist in the folder but were not written by this tool."""
        return [n for n in names if n not in self._written and os.path.lexists(self.path(n))]

    def check(self, names: Iterable[str]) -> list[str]:
        """`names`, checked: OutputError naming the first that exists and is not ours (claim's
        refusal, recording nothing: for a check before the work, when the folder may not exist)."""
        names = [check_name(n, "output name") for n in names]
        foreign = self.foreign(names)
        if foreign:
            more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
            raise OutputError(f"{self.path(foreign[0])}: exists and was not written by {self.tool}{more}; "
                              f"it would be replaced: move it, or choose another {self.what}")
        return names

    def claim(self, names: Iterable[str]) -> None:
        """Record `names` as this tool's before writing them; OutputError naming the first that
        exists and is not ours (nothing is recorded then). Safe to call again with the same names."""
        names = self.check(names)
        new = [n for n in dict.fromkeys(names) if n not in self._written]
        if not new:
            return
        try:
            with open(os.path.join(self.root, MARK), "a", encoding="utf-8") as f:
                f.write("".join(n + "\n" for n in new))
        except OSError as e:
            raise OutputError(f"{self.what} {self.root}: cannot record its outputs ({e.strerror or e})") from None
        self._written.update(new)

    def owns(self, name: str) -> bool:
        return name in self._written

    def discard_if_unused(self) -> bool:
        """Remove the folder if it holds nothing but our mark, so that a run that failed before
        writing anything leaves no folder behind; True if removed."""
        if not os.path.isdir(self.root) or set(os.listdir(self.root)) - {MARK}:
            return False
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.root, MARK))
            os.rmdir(self.root)
            return True
        return False

    def remove(self, name: str) -> bool:
        """Delete <folder>/<name> if this tool wrote it (never anything else); True if deleted."""
        path = self.path(name)
        if not self.owns(name) or not os.path.isfile(path):
            return False
        try:
            os.unlink(path)
        except OSError as e:
            raise OutputError(f"{path}: cannot remove it ({e.strerror or e})") from None
        return True


def claim_output_dir(path: str, tool: str, what: str = "--out", inputs: Iterable[str | None] = (),
                     clear_temps: bool = True, create: bool = True,
                     earlier: Callable[[str, list[str]], bool] | None = None) -> OutputDir:
    """The ownership rule (module docstring), checked before any work: create `path` and mark it
    as `tool`'s, or accept it if it is empty or already marked by `tool`; OutputError naming the
    folder (or the file in the way) otherwise. `inputs`: the folders (or files) this run reads.

    `create=False` checks everything and changes nothing (call it again with create=True when
    the work is ready to write: a run that fails before has left no folder behind).
    `earlier(path, entries)`: True if an
    unmarked folder holding `entries` is this tool's output from a version that did not mark its
    folders (train.py's old log folders); it is then marked, those entries recorded as written."""
    if not path or not str(path).strip():
        raise OutputError(f"{what}: empty path; name an output folder")
    check_output_dir(path, what, create=False)
    refuse_inputs(path, what, inputs)
    adopted: list[str] = []
    if os.path.isdir(path):
        header, written = read_mark(path)
        entries = _entries(path)
        if header is None and entries:
            if earlier is None or not earlier(path, entries):
                raise OutputError(f"{what} {path}: exists and was not made by {tool} (it holds "
                                  f"{_show(entries)}); choose a new or empty folder")
            adopted = entries
        if header is not None and header.get("tool") != tool:
            raise OutputError(f"{what} {path}: is the output of {header.get('tool')!r}, not of {tool}; "
                              f"choose another folder")
        _require_writable(path, path, what)
        if not create:
            return OutputDir(path, tool, what, written | set(adopted))
        if clear_temps:
            n = remove_stale_temps(path)
            if n:
                print(f"{path}: removed {n} temporary file(s) left by an interrupted run")
        if header is not None:
            return OutputDir(path, tool, what, written)
    else:
        _require_writable(os.path.dirname(os.path.abspath(path)), path, what)  # where it will be made
    if not create:
        return OutputDir(path, tool, what, set())
    check_output_dir(path, what, create=True)
    try:
        with open(os.path.join(path, MARK), "w", encoding="utf-8") as f:
            f.write(json.dumps({"tool": tool, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
            f.write("".join(n + "\n" for n in adopted))
    except OSError as e:
        raise OutputError(f"{what} {path}: cannot write into the folder ({e.strerror or e})") from None
    if adopted:
        print(f"{what} {path}: an earlier {tool} run's folder (written before folders were marked); "
              f"marked as {tool}'s")
    return OutputDir(path, tool, what, set(adopted))


def claim_output_file(path: str, tool: str, what: str, is_ours: Callable[[str], bool] | None = None,
                      inputs: Iterable[str | None] = ()) -> str:
    """The rule for a tool's single output file (a JSON report): OutputError naming `path`
    unless it can be written and replacing it loses nothing: not a folder, not under a file,
    its folder writable, neither one of `inputs` nor inside one (real paths); an existing file
    only if `is_ours(path)` says this tool wrote it. Checked before any work; returns `path`."""
    if not path or not str(path).strip():
        raise OutputError(f"{what}: empty path; name an output file")
    if os.path.isdir(path):
        raise OutputError(f"{what} {path}: is a folder; name a file")
    parent = os.path.dirname(os.path.abspath(path))
    check_output_dir(parent, what, create=False)
    refuse_inputs(path, what, inputs)  # an input file itself, or a file inside an input folder
    if os.path.lexists(path) and not (is_ours is not None and is_ours(path)):
        raise OutputError(f"{what} {path}: exists and was not written by {tool}; it would be "
                          f"replaced: move it, or choose another file")
    _require_writable(parent, path, what)
    return path


def _require_writable(folder: str, path: str, what: str) -> None:
    """OutputError unless the nearest existing folder of `folder` (itself or an ancestor: what
    will be made there) can be written into."""
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: cannot write into {folder} (read-only, or permission denied)")


def json_of(path: str):
    """The parsed JSON of an existing file, None if it cannot be read as JSON (for a tool's
    `is_ours` test of its own output file)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _show(entries: list[str], n: int = 3) -> str:
    return ", ".join(entries[:n]) + (f" and {len(entries) - n} more" if len(entries) > n else "")


# ----------------------------------------------------------------------------- run lock
def _start_ticks(pid: int) -> str | None:
    """A process's start time (field 22 of /proc/<pid>/stat), or None if it is not alive:
    with the pid it tells a live holder from a new process that reused a dead one's pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, ticks: str | None) -> bool:
    if os.path.isdir("/proc"):
        now = _start_ticks(pid)
        return now is not None and (ticks is None or now == ticks)
    try:  # no /proc (macOS): the pid alone
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """`<folder>/.cdsp_lock` while a run lives: a second run into the folder is refused naming the
    holder; the lock of a dead holder on this host (or of an earlier attempt of the same torchrun
    job, TORCHELASTIC_RUN_ID) is taken over. Use as a context manager, or acquire()/release()."""

    def __init__(self, folder: str, tool: str, what: str = "--logdir"):
        self.path, self.tool, self.what, self.held = os.path.join(folder, LOCK), tool, what, False

    def _me(self) -> dict:
        pid = os.getpid()
        return {"tool": self.tool, "pid": pid, "host": socket.gethostname(), "start": _start_ticks(pid),
                "job": os.environ.get("TORCHELASTIC_RUN_ID"), "since": time.strftime("%Y-%m-%d %H:%M:%S")}

    def _stale(self, holder: dict) -> bool:
        if holder.get("job") and holder.get("job") == os.environ.get("TORCHELASTIC_RUN_ID"):
            return True  # an earlier attempt of this very job (torchrun restarted it)
        if holder.get("host") != socket.gethostname():
            return False  # cannot tell from here
        try:
            return not _alive(int(holder["pid"]), holder.get("start"))
        except (KeyError, TypeError, ValueError):
            return False

    def acquire(self) -> "RunLock":
        me = json.dumps(self._me())
        for _ in range(3):
            tmp = f"{self.path}.{os.getpid()}"
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(me + "\n")
                os.link(tmp, self.path)  # atomic: exists whole, or not at all
                self.held = True
                return self
            except FileExistsError:
                pass
            except OSError as e:
                raise OutputError(f"{self.what} {os.path.dirname(self.path)}: cannot lock the folder "
                                  f"({e.strerror or e})") from None
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            try:
                with open(self.path, encoding="utf-8") as f:
                    holder = json.loads(f.read() or "{}")
            except FileNotFoundError:
                continue  # released meanwhile: try again
            except (OSError, ValueError):
                holder = {}
            if not self._stale(holder):
                raise OutputError(
                    f"{self.what} {os.path.dirname(self.path)}: in use by {holder.get('tool', 'another run')} "
                    f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('since', '?')}); "
                    f"wait for it or choose another folder (if that run is dead, delete {self.path})")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        raise OutputError(f"{self.what} {os.path.dirname(self.path)}: cannot take the run lock {self.path}")

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
