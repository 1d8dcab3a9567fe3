"""The layout a reader relies on: the paper's modules stand alone (each can be copied, with only the
paper modules it imports, into another codebase), and the top level holds only them and the entry points."""
import ast
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = ("ops", "spaces", "supernet", "genotypes", "architect", "networks", "bnnas")
ENTRY_POINTS = ("search", "train", "analysis", "bench201", "plot", "bench", "sweep", "bnnas_search")
# What each module builds in an empty folder: a small, real use of what it defines.
USE = {
    "ops": "import torch, ops; assert ops.make_op('sep_conv_3x3', 4)(torch.randn(1, 4, 8, 8)).shape == (1, 4, 8, 8)",
    "spaces": "import spaces; assert len(spaces.get_space('nb201').edges) == 6",
    "supernet": "import torch, supernet; m = supernet.build_supernet('nb201', 10, C=4, layers=1); "
                "assert m(torch.randn(2, 3, 16, 16)).shape == (2, 10)",
    "genotypes": "import genotypes as G; assert G.nb201_index(G.nb201_arch(77)) == 77",
    "architect": "import architect; assert callable(architect.unrolled_arch_step)",
    "networks": "import torch, networks, genotypes as G; "
                "n = networks.NetworkCIFAR(G.DARTS_V2, 10, C=4, layers=3, auxiliary=False).eval(); "
                "assert n(torch.randn(1, 3, 32, 32)).shape == (1, 10)",
    "bnnas": "import torch, bnnas; m = bnnas.build_bnnas_supernet(10, C=4, N=1); "
             "assert m(torch.randn(2, 3, 16, 16), (0, 1, 2, 3, 4, 0)).shape == (2, 10)",
}


def local_imports(name):
    """The repository modules `name`.py imports (top-level names that are files or folders here)."""
    tree = ast.parse(open(os.path.join(ROOT, f"{name}.py")).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return {m for m in found if os.path.exists(os.path.join(ROOT, f"{m}.py")) or
            os.path.isdir(os.path.join(ROOT, m))}


def closure(name):
    todo, seen = [name], set()
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += sorted(local_imports(m))
    return seen


# One Python process tries every module in turn (each from its own folder, the paper modules forgotten
# between two), since a process that imports torch costs seconds: six of them were 30 s of the suite.
ALONE = """
import importlib, json, sys, traceback
paper, jobs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
base, results = [p for p in sys.path if p not in ("", ".")], {}
for name, folder, code in jobs:
    for m in paper:
        sys.modules.pop(m, None)
    sys.path[:] = [folder] + base
    importlib.invalidate_caches()
    try:
        exec(code, {})
        results[name] = ""
    except BaseException:
        results[name] = traceback.format_exc()[-1500:]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """{paper module: '' or the traceback of its USE}, run in a folder holding only its closure."""
    jobs = []
    for name in PAPER:
        needed = closure(name)
        if not needed <= set(PAPER):
            continue  # the test below names what is missing
        folder = tmp_path_factory.mktemp(f"alone_{name}")
        for m in needed | (closure("genotypes") if name == "networks" else set()):  # its use builds a genotype
            (folder / f"{m}.py").write_text(open(os.path.join(ROOT, f"{m}.py")).read())
        jobs.append((name, str(folder), USE[name]))
    env = {**os.environ, "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", ALONE, json.dumps(PAPER), json.dumps(jobs)],
                       cwd=tmp_path_factory.mktemp("empty"), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-1500:]
    return json.loads(r.stdout.splitlines()[-1])


@pytest.mark.parametrize("name", PAPER)
def test_paper_module_stands_alone(name, alone):
    needed = closure(name)
    assert needed <= set(PAPER), f"{name}.py needs {sorted(needed - set(PAPER))}, which is not a paper module"
    assert alone[name] == "", alone[name]


def test_top_level_holds_paper_modules_and_entry_points_only():
    top = {f[:-3] for f in os.listdir(ROOT) if f.endswith(".py")}
    assert top == set(PAPER) | set(ENTRY_POINTS), sorted(top ^ (set(PAPER) | set(ENTRY_POINTS)))


# ---------------------------------------------------------------------------------------------- mutants

def mutants_module():
    spec = importlib.util.spec_from_file_location("mutants_script", os.path.join(ROOT, "scripts", "mutants.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_listed_fault_still_applies_and_names_existing_tests():
    """tests/mutants.json (scripts/mutants.py): each entry's text occurs exactly once in its file, so the
    fault it describes can still be made; a code change that moves it must mend the entry."""
    mutants = mutants_module()
    entries = mutants.load(os.path.join(ROOT, "tests", "mutants.json"))
    assert len(entries) >= 70 and len({e["name"] for e in entries}) == len(entries)
    for e in entries:
        assert mutants.applies(ROOT, e), e["name"]
        assert e["old"] != e["new"] and e["why"], e["name"]
        assert all(os.path.isfile(os.path.join(ROOT, t.split("::")[0])) for t in e["tests"]), e["name"]


def test_mutants_script_says_caught_missed_or_stale(tmp_path, monkeypatch, capsys):
    entry = dict(why="a fact", file="genotypes.py", tests=["tests/test_genotypes.py::test_all_skip_is_the_collapsed_cell_only"])
    listed = [dict(entry, name="rule", old='return set(op_counts(genotype)) == {"skip_connect"}',
                   new='return "skip_connect" in op_counts(genotype)'),  # a wrong all-skip rule
              dict(entry, name="docstring", old="Ties go to the lower op / edge index",
                   new="Ties go to the lower op or edge index"),  # computes the same: no test can see it
              dict(entry, name="gone", old="a text that is nowhere", new="x")]
    path = tmp_path / "mutants.json"
    path.write_text(json.dumps(listed))
    before = open(os.path.join(ROOT, "genotypes.py")).read()
    r = subprocess.run([sys.executable, "scripts/mutants.py", f"--mutants={path}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:3]] == [["caught", "rule:"], ["MISSED", "docstring:"], ["stale", "gone:"]]
    assert lines[3].startswith("3 entries in ") and lines[3].endswith("1 caught, 1 MISSED, 1 stale"), lines
    assert open(os.path.join(ROOT, "genotypes.py")).read() == before  # the tree itself is never touched
    # --only and exit 0 when every entry is caught: in this process, the entry's tests not run again
    mutants, ran = mutants_module(), []
    monkeypatch.setattr(mutants, "run_entry", lambda root, e, timeout: ran.append(e["name"]) or ("caught", "1 failed"))
    assert mutants.main([f"--mutants={path}", "--only=rule"]) == 0 and ran == ["rule"]
    assert capsys.readouterr().out.splitlines()[-1].endswith("1 caught, 0 MISSED, 0 stale")
    path.write_text(json.dumps([{"name": "x"}]))
    r = subprocess.run([sys.executable, "scripts/mutants.py", f"--mutants={path}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "must have exactly the keys" in r.stderr, r.stderr
