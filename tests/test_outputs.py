"""utils/outputs.py: the ownership rule every writing tool applies, and the run lock."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from utils.io import OutputError
from utils.outputs import LOCK, MARK, RunLock, check_name, claim_output_dir


def test_a_new_folder_is_created_marked_and_its_names_claimed(tmp_path):
    out = claim_output_dir(str(tmp_path / "new"), "tool_a")
    assert json.loads(open(tmp_path / "new" / MARK).readline())["tool"] == "tool_a"
    out.claim(["a.png", "overlay/a.png"])
    (tmp_path / "new" / "a.png").write_bytes(b"x")
    # the same tool again: the folder and its own files are accepted
    again = claim_output_dir(str(tmp_path / "new"), "tool_a")
    again.claim(["a.png", "b.png"])
    assert again.owns("a.png") and again.owns("b.png")


def test_an_empty_existing_folder_is_taken(tmp_path):
    (tmp_path / "empty").mkdir()
    claim_output_dir(str(tmp_path / "empty"), "tool_a").claim(["x.png"])
    assert (tmp_path / "empty" / MARK).is_file()


def test_a_folder_with_foreign_files_or_another_tools_mark_is_refused(tmp_path):
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "metrics.json").write_text("{}")
    with pytest.raises(OutputError, match="metrics.json"):
        claim_output_dir(str(tmp_path / "user"), "tool_a")
    claim_output_dir(str(tmp_path / "b"), "tool_b")
    with pytest.raises(OutputError, match="tool_b"):
        claim_output_dir(str(tmp_path / "b"), "tool_a")
    with pytest.raises(OutputError, match="empty path"):
        claim_output_dir("", "tool_a")


def test_a_file_put_into_the_tools_folder_by_someone_else_is_never_replaced(tmp_path):
    out = claim_output_dir(str(tmp_path / "o"), "tool_a")
    out.claim(["mine.png"])
    (tmp_path / "o" / "theirs.png").write_bytes(b"keep")
    again = claim_output_dir(str(tmp_path / "o"), "tool_a")
    with pytest.raises(OutputError, match="theirs.png"):
        again.claim(["mine.png", "theirs.png"])
    assert again.owns("mine.png") and not again.owns("theirs.png")  # nothing recorded on refusal
    assert "theirs.png\n" not in open(tmp_path / "o" / MARK).read()


def test_an_input_folder_is_refused_through_symlinks_and_dotdot(tmp_path):
    src = tmp_path / "data" / "scribbles"
    src.mkdir(parents=True)
    (tmp_path / "link").symlink_to(src)
    for out in (src, tmp_path / "link", tmp_path / "data" / "x" / ".." / "scribbles", src / "sub"):
        with pytest.raises(OutputError, match="input folder"):
            claim_output_dir(str(out), "tool_a", inputs=[str(src)])
    with pytest.raises(OutputError, match="holds the input folder"):
        claim_output_dir(str(tmp_path / "data"), "tool_a", inputs=[str(src)])
    assert not (tmp_path / "data" / MARK).exists()


@pytest.mark.parametrize("name", ["../x.png", "/etc/x", "a/../b", "", "a\\b", "a\x00b", "./a", "a//b"])
def test_names_that_leave_the_folder_are_refused(name):
    with pytest.raises(OutputError):
        check_name(name)


def test_run_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    with RunLock(str(tmp_path), "train.py"):
        with pytest.raises(OutputError, match=r"in use by train.py \(pid %d" % os.getpid()):
            RunLock(str(tmp_path), "train.py").acquire()
    assert not (tmp_path / LOCK).exists()
    # a holder that died without releasing (SIGKILL): its pid no longer runs
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / LOCK).write_text(json.dumps({"tool": "train.py", "pid": int(dead),
                                             "host": os.uname().nodename, "start": "1"}))
    with RunLock(str(tmp_path), "train.py") as lock:
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid() and lock.held
