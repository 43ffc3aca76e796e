"""Every scripts/*.sh passes flags that train.py, eval.py and make_pseudo_labels.py accept (the
authors' scripts failed on unknown flags): each invocation is parsed by the real parser, with
the script's environment defaults substituted."""
import glob
import os
import re
import shlex

import pytest

import eval as evaluation
import make_pseudo_labels
import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARSERS = {"train.py": train.parse_args, "eval.py": evaluation.parse_args,
           "make_pseudo_labels.py": make_pseudo_labels.parse_args}


def invocations(path: str) -> list[tuple[str, list[str]]]:
    """(script name, argv) of every train/eval/make_pseudo_labels call in a shell script."""
    text = open(path).read().replace("\\\n", " ")
    defaults = dict(re.findall(r'^\s*(?:export\s+)?(\w+)="\$\{\w+:-([^}]*)\}"', text, re.M))
    defaults |= dict(re.findall(r'\$\{(\w+):-([^}]*)\}', text))

    def resolve(m):
        value = defaults.get(m.group(1) or m.group(2), "1")
        return re.sub(r"\$\((.*)\)", "1", value)  # a command substitution: some number

    # `set -- FLAGS "$@"` (emlc_r50_deeplabv2.sh): later "$@" stands for those flags
    set_args = re.search(r'^\s*set -- (.*)$', text, re.M)
    positional = set_args.group(1).replace('"$@"', "") if set_args else ""
    calls = []
    for line in text.splitlines():
        m = re.search(r"\b(train\.py|eval\.py|make_pseudo_labels\.py)\b(.*)$", line)
        if not m or line.lstrip().startswith("#") or "echo" in line.split(m.group(1))[0]:
            continue
        rest = m.group(2).replace('"$@"', positional)
        rest = re.sub(r"\$\{(\w+):-[^}]*\}|\$(\w+)", resolve, rest)
        calls.append((m.group(1), shlex.split(rest)))
    return calls


SCRIPTS = sorted(glob.glob(os.path.join(REPO, "scripts", "*.sh")))


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_script_flags_parse(script):
    for name, argv in invocations(script):
        PARSERS[name](argv)  # argparse exits 2 on an unknown or malformed flag


def test_scripts_are_found_and_parsed():
    found = {os.path.basename(s): [n for n, _ in invocations(s)] for s in SCRIPTS}
    assert found["train_r50_deeplabv2.sh"] == ["train.py"]
    assert found["emlc_r50_deeplabv2.sh"] == ["eval.py"] * 2   # torchrun or not
    assert "--checkpoint_path" in invocations(os.path.join(REPO, "scripts", "emlc_r50_deeplabv2.sh"))[1][1]
    assert found["make_pseudo_labels.sh"] == ["make_pseudo_labels.py"] * 2
    assert found["quickstart.sh"] == ["make_pseudo_labels.py"] * 2 + ["train.py", "eval.py"]
    assert found["train_slurm.sh"] == ["train.py"]  # run for real in tests/test_multinode.py
    slurm = invocations(os.path.join(REPO, "scripts", "train_slurm.sh"))[0][1]
    assert train.parse_args(slurm).resume == "auto"  # a requeued job continues
    # a flag the parser does not know is caught (the test can fail)
    with pytest.raises(SystemExit):
        train.parse_args(["--pseudo_path", "x", "--no_such_flag", "1"])
