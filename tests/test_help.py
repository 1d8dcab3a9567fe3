"""--help (or -h) on every entry point that reads --key=value flags (cli.help_text): exit 0, the usage line,
the docstring's examples, every key with its default and the comment its field carries; sweep.py lists its
own keys before the search keys it passes on."""
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from harness import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# script -> the config dataclass its --help lists (module, class name)
COVERED = {"search.py": ("search", "SearchConfig"), "train.py": ("train", "Config"),
           "sweep.py": ("sweep", "SweepConfig"), "analysis.py": ("analysis", "AnalysisConfig"),
           "bench.py": ("bench", "BenchConfig"), "scripts/gpu_check.py": ("scripts/gpu_check.py", "CheckConfig"),
           "scripts/gpu_window.py": ("scripts/gpu_window.py", "WindowConfig"),
           "scripts/retrain_sweep.py": ("scripts/retrain_sweep.py", "RetrainConfig"),
           "scripts/mutants.py": ("scripts/mutants.py", "MutantsConfig")}
# One Python process runs each script as `python SCRIPT --help` would (runpy, as __main__), since a process
# that imports torch costs seconds: -> {script: [exit status, stdout]}.
RUN_ALL = """
import contextlib, io, json, runpy, sys
out = {}
for script, flag in json.loads(sys.argv[1]):
    sys.argv, text = [script, flag], io.StringIO()
    code = None
    with contextlib.redirect_stdout(text):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as e:
            code = e.code
    out[f"{script} {flag}"] = [code, text.getvalue()]
print(json.dumps(out))
"""


def config_class(module, cls):
    if module.endswith(".py"):  # a script in scripts/: loaded from its file (it is no package)
        name = f"help_{os.path.basename(module)[:-3]}"
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, module))
        mod = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # inspect finds its source there
        spec.loader.exec_module(mod)
        return getattr(mod, cls)
    return getattr(__import__(module), cls)


def flags(cls, left_out=()):
    """Every `--key=default` of dataclass `cls`, as the help shows them."""
    return [f"--{f.name}={cli.flag_value(f.default)}" for f in dataclasses.fields(cls) if f.name not in left_out]


@pytest.fixture(scope="module")
def helps():
    jobs = [(s, "--help") for s in COVERED] + [("search.py", "-h")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", RUN_ALL, json.dumps(jobs)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.splitlines()[-1])


@pytest.mark.parametrize("script", COVERED)
def test_help_exits_0_with_usage_examples_and_every_key(script, helps):
    code, text = helps[f"{script} --help"]
    assert code == 0, text
    lines = text.splitlines()
    assert f"usage: python {script} [--key=value ...]" in lines
    examples = lines[lines.index("examples:") + 1:]
    assert examples[0].startswith(f"  python {script}"), examples[:2]
    cls = config_class(*COVERED[script])
    notes = cli.field_notes(cls)
    for flag in flags(cls):  # each key at the start of its own line, with its default
        assert any(line.startswith(f"  {flag} ") for line in lines), flag
    for name, note in notes.items():  # and the comment its field carries (the first words: wrapped after)
        assert " ".join(note.split()[:3]) in text, (name, note)
    assert len(notes) >= len(dataclasses.fields(cls)) - 2  # (almost) every field says what it is
    if script == "sweep.py":  # the sweep's own keys first, then the search keys it passes on
        import search
        import sweep
        keys = [line.split("=")[0].strip() for line in lines if line.startswith("  --")]
        own = [f"--{f.name}" for f in dataclasses.fields(cls)]
        assert keys[:len(own)] == own and "--threads" in own
        assert keys[len(own):] == [f"--{f.name}" for f in dataclasses.fields(search.SearchConfig)
                                   if f.name not in sweep.SET_PER_RUN]
        for flag in flags(search.SearchConfig, sweep.SET_PER_RUN):
            assert any(line.startswith(f"  {flag} ") for line in lines), flag


def test_h_is_help_too(helps):
    assert helps["search.py -h"] == helps["search.py --help"]


@dataclass
class Toy:
    """A dataclass of every kind of field a config has."""
    name: str = "x"        # a name
    on: bool = True        # a switch that
                           # goes on here
    # a comment above the next field belongs to none
    off: bool = False
    size: int | None = None  # optional
    rate: float = 0.5      # a rate


def test_help_text_shows_defaults_types_and_notes_as_typed():
    """Booleans as 1 / 0 and None as none (as they are typed), the type, the field's comment with its
    continuation lines; the docstring's first paragraph, its example commands with their backslash
    continuations; `more` sections without the keys left out."""
    assert cli.field_notes(Toy) == {"name": "a name", "on": "a switch that goes on here", "size": "optional",
                                     "rate": "a rate"}
    doc = """Toy: a first paragraph
    over two lines.

        python toy.py --name=y      # an example
        python toy.py --on=0 \\
            --rate=2
    Not an example: python toy.py.
    """
    text = cli.help_text(Toy, doc, more=[("passed on", Toy, ("name", "on"))])
    lines = text.splitlines()
    assert lines[:4] == ["Toy: a first paragraph", "over two lines.", "",
                         "usage: python tests/test_help.py [--key=value ...]"]
    assert lines[5:9] == ["examples:", "  python toy.py --name=y      # an example", "  python toy.py --on=0 \\",
                          "      --rate=2"]
    assert lines[10].endswith("none leaves an optional one unset):")
    assert lines[11:16] == ["  --name=x     str       a name", "  --on=1       bool      a switch that goes on here",
                            "  --off=0      bool", "  --size=none  int|none  optional",
                            "  --rate=0.5   float     a rate"]
    assert lines[16:] == ["", "passed on:", "  --off=0      bool", "  --size=none  int|none  optional",
                          "  --rate=0.5   float     a rate"]
    assert "usage: python toy.py RUN_DIR ... [--key=value ...]" in cli.help_text(
        Toy, doc, usage="python toy.py RUN_DIR ... [--key=value ...]")


def test_parse_config_answers_help_and_nothing_else(capsys):
    for argv in (["--help"], ["--name=y", "-h"]):
        with pytest.raises(SystemExit) as e:
            cli.parse_config(Toy, argv)
        assert e.value.code == 0 and capsys.readouterr().out.startswith(__doc__.split("\n")[0])  # this module's
    assert cli.parse_config(Toy, ["--name=help"]).name == "help"
    with pytest.raises(cli.ConfigError, match="unknown config key 'help'"):
        cli.parse_config(Toy, ["--help=1"])  # a key, not the flag


def test_help_into_a_closed_pipe_ends_quietly():
    # `python search.py --help | head -0`: the reader is gone before the help is written (torch's import
    # takes seconds); the write fails with EPIPE, which ends the script with 128 + SIGPIPE, no error line
    proc = subprocess.Popen([sys.executable, "search.py", "--help"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and "error" not in err and "Traceback" not in err, err
