"""The test suite against deliberate faults: each entry of tests/mutants.json is one small wrong change to the
code (a reference hyperparameter, a sign or index in an equation, a split or derivation rule, a resume key)
and the tests that must catch it. Run it from the repository root; it never touches the tree.

    python scripts/mutants.py                    # every entry (13 min on 2 cores beside a search)
    python scripts/mutants.py --only=resume      # the entries whose name contains "resume"

The code (top-level *.py, harness/, scripts/, tests/: no results or data) is copied once into a temporary
folder; there each entry's `old` text, which must occur exactly once in its `file`, becomes `new`, the named
tests run (`pytest -x`), and the file is restored. A line per entry: `caught` (a test failed), `MISSED` (all
passed: the suite has a gap, or the change computes the same thing), or `stale` (`old` no longer occurs once:
the code moved on, mend the entry). tests/test_layout.py checks that every shipped entry still applies.
Exit status: 0 every entry caught; 1 one missed or stale; 2 bad flags or a bad list.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from harness import cli  # noqa: E402

KEYS = ("name", "why", "file", "old", "new", "tests")  # one entry of the list
CODE_DIRS = ("harness", "scripts", "tests")             # copied with the top-level *.py


@dataclass
class MutantsConfig:
    only: str = ""                       # only entries whose name contains this text ("": all)
    mutants: str = "tests/mutants.json"  # the list of entries (relative to the repository root)
    timeout: int = 900                   # seconds for one entry's tests


RANGES = dict(timeout="[1, inf)")


def load(path, only=""):
    """The entries of `path` whose name contains `only`; a malformed list is one ConfigError line."""
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, ValueError) as e:
        raise cli.ConfigError(f"--mutants={path}: cannot read it ({cli.one_line(e)[:80]})") from None
    for i, e in enumerate(entries if isinstance(entries, list) else [None]):
        if not isinstance(e, dict) or set(e) != set(KEYS):
            raise cli.ConfigError(f"--mutants={path}: entry {i} must have exactly the keys {', '.join(KEYS)}")
    chosen = [e for e in entries if only in e["name"]]
    if not chosen:
        raise cli.ConfigError(f"--only={only}: no entry of {path} has that in its name")
    return chosen


def applies(root, entry):
    """Whether the entry's `old` occurs exactly once in its file under `root`."""
    path = os.path.join(root, entry["file"])
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as f:
        return f.read().count(entry["old"]) == 1


def copy_code(dst):
    """The code of the repository into `dst`: what the tests import and run, nothing a run wrote."""
    for name in os.listdir(ROOT):
        if name.endswith(".py"):
            shutil.copy2(os.path.join(ROOT, name), dst)
    for d in CODE_DIRS:
        shutil.copytree(os.path.join(ROOT, d), os.path.join(dst, d),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def run_entry(root, entry, timeout):
    """Apply the entry in `root`, run its tests, restore the file -> (verdict, pytest's last line)."""
    if not applies(root, entry):
        return "stale", f"`old` does not occur exactly once in {entry['file']}"
    path = os.path.join(root, entry["file"])
    with open(path, encoding="utf-8") as f:
        source = f.read()
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(source.replace(entry["old"], entry["new"]))
        r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *entry["tests"]],
                           cwd=root, capture_output=True, text=True, timeout=timeout)
        lines = r.stdout.strip().splitlines()
        return ("caught" if r.returncode else "MISSED"), (lines[-1] if lines else r.stderr.strip()[-120:])
    except subprocess.TimeoutExpired:
        return "caught", f"its tests ran past --timeout={timeout} s (a hang counts as caught)"
    finally:
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)


def main(argv=None):
    cfg = cli.parse_config(MutantsConfig, argv)
    cli.check_ranges(cfg, RANGES)
    entries = load(os.path.join(ROOT, cfg.mutants), cfg.only)
    counts, t0 = {"caught": 0, "MISSED": 0, "stale": 0}, time.time()
    with tempfile.TemporaryDirectory(prefix="mutants-") as root:
        copy_code(root)
        for e in entries:
            verdict, detail = run_entry(root, e, cfg.timeout)
            counts[verdict] += 1
            print(f"{verdict:7s} {e['name']}: {e['why']} ({e['file']}; {detail})", flush=True)
    print(f"{len(entries)} entries in {time.time() - t0:.0f} s: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    return 1 if counts["MISSED"] or counts["stale"] else 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
