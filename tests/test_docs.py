"""The README's facts checked against the tree: the file map's line counts and completeness, links that
resolve, the keys of every documented command, and the headline table's numbers, each found in a table
the plotting code wrote (`plot.py`'s ladder.md under results/). A number typed by hand into the front
door can drift from the run that made it; these tests make the drift a failure instead of a quiet error."""
import dataclasses
import functools
import glob
import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
MAP_ROW = re.compile(r"^\| `([^`]+)` \| (\d+) \|")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def n_lines(path):
    with open(path, "rb") as f:
        return f.read().count(b"\n")


def file_map():
    """{path: lines} from the README's Files table."""
    return {m.group(1): int(m.group(2)) for m in map(MAP_ROW.match, read(README).splitlines()) if m}


def table_rows(text):
    """Every markdown table row of `text` as a list of stripped cells (header and rule rows included)."""
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]


def test_readme_fits_its_budget():
    assert len(read(README).splitlines()) <= 300, "README.md is the front door: 300 lines at most"


def test_file_map_line_counts_are_true():
    rows = file_map()
    assert len(rows) > 30, "the Files table was not found (its row format changed?)"
    wrong = {}
    for path, stated in rows.items():
        full = os.path.join(ROOT, path)
        if path.rstrip("/") == "tests":
            actual = sum(n_lines(p) for p in glob.glob(os.path.join(full, "*.py")))
        else:
            assert os.path.isfile(full), f"README's Files table names {path}, which does not exist"
            actual = n_lines(full)
        if actual != stated:
            wrong[path] = (stated, actual)
    assert not wrong, f"README's Files table: (stated, actual) lines differ: {wrong}"


def suite_ids(session):
    """Every test id of the suite: this session's own collection where it is the whole suite (every test
    file collected, nothing deselected: the README's test command; under xdist each worker collects it
    all), else what `pytest --collect-only` collects in a subprocess (collecting runs no test: ~3 s)."""
    files = {os.path.basename(str(item.path)) for item in session.items}
    opt = session.config.option
    narrowed = any(getattr(opt, name, None) for name in ("keyword", "markexpr", "deselect", "lf", "last_failed"))
    if not narrowed and files == {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "tests", "test_*.py"))}:
        return [f"tests/{os.path.basename(str(item.path))}::{item.name}" for item in session.items]
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    assert out.returncode == 0 and ids, out.stdout[-2000:] + out.stderr[-2000:]
    return ids


def test_test_counts_are_true(request):
    """The README's "N tests (K of them the CUDA set ...)" and the file map's "F test files", against what
    pytest collects."""
    text = read(README)
    stated = re.search(r"(\d+) tests \((\d+) of them the CUDA set", text)
    files = re.search(r"\| `tests/` \| \d+ \| (\d+) test files", text)
    assert stated and files, "the README's test counts were not found (their wording changed?)"
    ids = suite_ids(request.session)
    cuda = [i for i in ids if i.startswith("tests/test_cuda.py::")]
    assert (int(stated.group(1)), int(stated.group(2))) == (len(ids), len(cuda)), "README: tests, CUDA set"
    assert int(files.group(1)) == len(glob.glob(os.path.join(ROOT, "tests", "test_*.py")))


def test_file_map_lists_every_module():
    listed = set(file_map())
    modules = [os.path.relpath(p, ROOT) for pattern in ("*.py", "harness/*.py", "scripts/*.py")
               for p in glob.glob(os.path.join(ROOT, pattern))]
    missing = sorted(m for m in modules if m not in listed and not m.endswith("__init__.py"))
    assert not missing, f"modules missing from README's Files table: {missing}"


@pytest.mark.parametrize("doc", ["README.md", "results/README.md"])
def test_relative_links_resolve(doc):
    base = os.path.dirname(os.path.join(ROOT, doc))
    broken = []
    for target in LINK.findall(read(os.path.join(ROOT, doc))):
        path = target.split("#")[0]
        if path and "://" not in path and not os.path.exists(os.path.join(base, path)):
            broken.append(target)
    assert not broken, f"{doc} links to missing files: {broken}"


def ladder_tables():
    """Every table of every committed ladder.md, as lists of rows of cells."""
    tables = []
    for path in sorted(glob.glob(os.path.join(ROOT, "results", "*", "figures", "ladder.md"))):
        current = []
        for line in read(path).splitlines() + [""]:
            if line.startswith("|"):
                current.append(line)
            elif current:
                tables.append(table_rows("\n".join(current)))
                current = []
    return tables


def ladder_rows():
    """(option, acc, per seed, all-skip, >= 4 skip, pool-free percentile) of every row of every committed
    ladder.md: its first table gives the accuracies and rates, its NB201 table (same images and option)
    the pool-free percentile."""
    found, tables = set(), ladder_tables()
    for i in range(len(tables)):
        # a ladder.md's first table, and the NB201 table that follows it before the next first table
        if "benchmark test acc. (%)" not in tables[i][0] or "per seed" not in tables[i][0]:
            continue
        head = [tables[i]]
        bench = [t for t in tables[i + 1:i + 3] if "percentile, pool-free cells" in t[0]][:1]
        h = head[0][0]
        pct = {}
        if bench:
            b = bench[0][0]
            pct = {(r[b.index("search images (weight / α)")], r[b.index("option")]):
                   r[b.index("percentile, pool-free cells")] for r in bench[0][2:]}
        for r in head[0][2:]:
            images, option = r[h.index("search images (weight / α)")], r[h.index("option")]
            found.add((option, r[h.index("benchmark test acc. (%)")], r[h.index("per seed")],
                       r[h.index("all-skip cells")], r[h.index(">= 4 skip edges")], pct.get((images, option))))
    return found


def test_headline_table_comes_from_the_ladders():
    rows = table_rows(read(README))
    header = next(r for r in rows if r[:2] == ["weight steps (images)", "option"])
    start = rows.index(header)
    ours = [r for r in rows[start + 2:] if "paper" not in r[0]]
    ours = ours[:next((i for i, r in enumerate(ours) if len(r) != len(header)), len(ours))]
    assert ours, "README's headline table has no rows"
    known = ladder_rows()
    col = header.index
    for r in ours:
        key = (r[col("option")][0], r[col("benchmark test acc. (%)")], r[col("per seed")],
               r[col("all-skip cells")], r[col(">= 4 skip edges")], r[col("percentile, pool-free")])
        assert key in known, f"README headline row {r[0]!r} ({key}) is in no results/*/figures/ladder.md"


def test_results_chapter_ladder_tables_come_from_the_ladders():
    """results/README.md's ladder tables (section 1's and section 2's): each row's mean ± std cells are all in
    one row of a ladder.md table for the same option."""
    known = [(r[t[0].index("option")], set(r)) for t in ladder_tables() if "option" in t[0] for r in t[2:]]
    checked = 0
    for r in table_rows(read(os.path.join(ROOT, "results", "README.md"))):
        # a ladder row: "2,000 / 2,000 ..." images first, the option in the second or third column
        option = next((c for c in r[1:3] if c in ("B", "C")), None)
        if option is None or not re.match(r"[\d,]+ / [\d,]+", r[0]) or not any("±" in c for c in r):
            continue
        cells = {c for c in r if "±" in c}
        assert any(o == option and cells <= have for o, have in known), \
            f"results/README.md row {r[:3]} has numbers no ladder.md row of option {option} has: {sorted(cells)}"
        checked += 1
    assert checked >= 10, f"only {checked} ladder rows found in results/README.md (its tables changed?)"


# script -> (its config dataclass, the script whose keys it passes on to each run it starts)
COMMAND_CONFIGS = {
    "search.py": ("SearchConfig", None), "train.py": ("Config", None), "plot.py": ("PlotConfig", None),
    "sweep.py": ("SweepConfig", "search.py"), "analysis.py": ("AnalysisConfig", None),
    "bnnas_search.py": ("BNNASConfig", None), "bench.py": ("BenchConfig", None),
    "scripts/table3.py": ("Table3Config", "bnnas_search.py"),
    "scripts/retrain_sweep.py": ("RetrainConfig", "train.py"),
    "scripts/gpu_window.py": ("WindowConfig", None), "scripts/gpu_check.py": ("CheckConfig", None),
    "scripts/mutants.py": ("MutantsConfig", None),
}
FENCE = re.compile(r"^ *```[^\n]*\n(.*?)^ *```", re.S | re.M)


def documented_commands(text):
    """(script, its --key=value flags, the command) of every `python SCRIPT ...` / `torchrun ... SCRIPT ...`
    in `text`: in fenced blocks (lines joined at a trailing backslash) and in inline code spans."""
    spans = [line for block in FENCE.findall(text) for line in block.replace("\\\n", " ").splitlines()]
    spans += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", FENCE.sub("", text))]
    found = []
    for span in spans:
        try:
            tokens = shlex.split(span, comments=True)
        except ValueError:  # an unbalanced quote: prose, not a command
            continue
        while tokens and re.match(r"[A-Z_]+=", tokens[0]):  # OMP_NUM_THREADS=1 python ...
            tokens = tokens[1:]
        if tokens[:1] == ["nohup"]:
            tokens = tokens[1:]
        if not tokens or tokens[0] not in ("python", "python3", "torchrun") or "-m" in tokens[1:2]:
            continue
        script = next((t for t in tokens if t.endswith(".py")), None)
        if script:
            found.append((script, [t for t in tokens[tokens.index(script) + 1:] if t.startswith("--")], span))
    return found


@functools.lru_cache(maxsize=None)
def accepted_keys(script):
    """The keys `script` accepts on its command line: its config's, and for a script that starts runs of
    another, that one's too, less those it sets per run itself (SET_PER_RUN). Each script loaded once."""
    assert script in COMMAND_CONFIGS, f"{script}: a documented script this test does not know; add it above"
    own_cls, passed_to = COMMAND_CONFIGS[script]
    spec = importlib.util.spec_from_file_location("doc_" + script.replace("/", "_")[:-3], os.path.join(ROOT, script))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    own = {f.name for f in dataclasses.fields(getattr(mod, own_cls))}
    if not passed_to:
        return frozenset(own)
    return frozenset(own | (accepted_keys(passed_to) - set(mod.SET_PER_RUN)))


def unknown_keys(script, flags):
    """The keys of `flags` that `script` would refuse (unknown, or set per run by the script itself)."""
    keys = [f[2:].split("=", 1)[0].replace("-", "_") for f in flags]
    if script == "bench201.py":  # argparse, not a config dataclass
        return [k for k in keys if f'"--{k}"' not in read(os.path.join(ROOT, script))]
    return [k for k in keys if k not in accepted_keys(script)]


@pytest.mark.parametrize("doc", ["README.md", "results/README.md"])
def test_documented_commands_use_real_keys(doc):
    """Every command a reader may copy from the docs names only keys its script accepts (a renamed key
    would stop it in one line: better here than in a user's shell)."""
    commands = documented_commands(read(os.path.join(ROOT, doc)))
    assert len(commands) >= 20, f"only {len(commands)} commands found in {doc} (the parser or the doc changed?)"
    bad = [f"{script}: --{', --'.join(keys)} in `{text[:100]}`" for script, flags, text in commands
           for keys in [unknown_keys(script, flags)] if keys]
    assert not bad, f"{doc}: keys the scripts refuse:\n" + "\n".join(bad)


def test_the_command_check_finds_a_bad_key():
    text = ("```\npython search.py --optoin=B \\\n    --C=8\n```\n"
            "and `OMP_NUM_THREADS=1 python sweep.py --out=x --seed=2 --C=8` or `python -m pytest -q tests`")
    found = documented_commands(text)
    assert [(s, unknown_keys(s, f)) for s, f, _ in found] == [("search.py", ["optoin"]), ("sweep.py", ["seed"])]
