"""The README's facts checked against the tree: the file map's line counts and completeness, links that
resolve, and the headline table's numbers, each found in a table the plotting code wrote (`plot.py`'s
ladder.md under results/). A number typed by hand into the front door can drift from the run that made
it; these tests make the drift a failure instead of a quiet error."""
import glob
import os
import re
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
