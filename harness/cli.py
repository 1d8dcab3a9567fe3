"""The command line of every entry script: its settings in, and how it ends, out.

In: a dataclass config per script (defaults = the paper's values) built from `--key=value` strings
(`parse_config`: unknown keys and badly typed values refused in one line, like nanoGPT's configurator
but without exec); `check_ranges` refuses a numeric setting outside its range (each script declares a
RANGES dict); `--help` (or `-h`) anywhere on a command line that `parse_config` reads prints `help_text`
(every key with its default, type and the comment after its field, the usage line and the docstring's
examples) and exits 0; `explicit_keys`, `differing` and `resumed_config` decide what a resume may change.

Out: `run(main)` runs a script's main and ends the user's faults as one line on stderr: bad input
(spaces.InputError and its subclasses, e.g. ConfigError) exits 2, a failed read or write (disk full, no
permission; `write_error` makes the WriteError that names the path and the OS reason) or running out of
GPU memory 1, a stop signal 128 + its number (Preempted). Any other exception is a bug and keeps its
traceback. Nothing here knows about architectures or devices (harness/runs.py picks the device).
"""
import dataclasses
import difflib
import inspect
import io
import os
import signal
import sys
import textwrap
import threading
import tokenize
import typing

import torch

from spaces import InputError


class ConfigError(InputError):
    """A bad command-line flag or a setting that contradicts another."""


class WriteError(OSError):
    """A write that failed (disk full, no permission, a file where a folder should be)."""


class Preempted(Exception):
    """A stop signal ended the run cleanly (after its checkpoint, if one was due); `run` exits 128 + signum."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.signum = signum


def _convert(name, text, typ):
    """Convert the string `text` to the annotated type `typ` of config field `name`."""
    args = typing.get_args(typ)
    if type(None) in args:  # "int | None" and friends: "none" means None
        if text.lower() == "none":
            return None
        typ = next(a for a in args if a is not type(None))
    try:
        if typ is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return typ(text)
    except ValueError:
        tname = getattr(typ, "__name__", str(typ))
        raise ConfigError(f"--{name}={text}: expected a value of type {tname}") from None


HELP_FLAGS = ("--help", "-h")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: scripts are named from it


def wants_help(argv=None):
    """Whether the command line (default: sys.argv[1:]) asks for --help or -h."""
    return any(a in HELP_FLAGS for a in (sys.argv[1:] if argv is None else argv))


def parse_config(cls, argv=None, **defaults):
    """Build dataclass `cls` from `--key=value` strings (default: sys.argv[1:]).

    `defaults` are applied before argv (scripts use them for per-setting defaults). `--help` or `-h`
    among them prints `help_text(cls)` and exits 0 (SystemExit, which `run` lets through).
    """
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        show_help(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = dict(defaults)
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            how = f"{arg}=VALUE, with '='" if arg.startswith("--") and arg[2:].replace("-", "_") in fields else \
                "--key=value"
            raise ConfigError(f"bad argument {arg!r}: use {how} (--help lists every key)")
        key, text = arg[2:].split("=", 1)
        key = key.replace("-", "_")
        if key not in fields:
            near = difflib.get_close_matches(key, fields, n=1, cutoff=0.75)
            raise ConfigError(f"unknown config key {key!r}; " + (f"did you mean --{near[0]}?" if near else
                              f"known keys: {', '.join(fields)}") + " (--help says what each means)")
        values[key] = _convert(key, text, hints[key])
    return cls(**values)


def show_help(cls, doc=None, usage=None, more=()):
    """Print `help_text` on stdout and exit 0: what `parse_config` does on --help (a script that reads
    its command line otherwise, as sweep.py and plot.py do, calls this itself)."""
    print(help_text(cls, doc, usage, more))
    sys.exit(0)


def help_text(cls, doc=None, usage=None, more=()):
    """The --help of a script whose settings are dataclass `cls`: the first paragraph of its docstring `doc`
    (default: the docstring of the module that defines `cls`, `__main__` for a script run as one), the
    usage line (`usage`, default "python SCRIPT [--key=value ...]"), the docstring's example commands,
    then every key as --key=default, its type and its meaning (`field_notes`). `more`: further sections,
    each (title, dataclass, keys left out), e.g. the search keys sweep.py passes on to every search."""
    module = sys.modules.get(cls.__module__)
    doc = inspect.cleandoc(doc if doc is not None else getattr(module, "__doc__", None) or "")
    path = os.path.abspath(getattr(module, "__file__", None) or f"{cls.__module__}.py")
    script = os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else os.path.basename(path)
    summary = doc.split("\n\n", 1)[0].splitlines()  # the docstring's first paragraph
    lines = summary + ["", f"usage: {usage or f'python {script} [--key=value ...]'}"]
    examples = _examples(doc)
    if examples:
        lines += ["", "examples:", *examples]
    optional = any(type(None) in typing.get_args(t) for c in [cls] + [m[1] for m in more]
                   for t in typing.get_type_hints(c).values())
    lines += ["", "keys (--key=value, shown with the default; booleans take 1 or 0"
              + ("; none leaves an optional one unset):" if optional else "):"), *_key_lines(cls)]
    for title, other, left_out in more:
        lines += ["", f"{title}:", *_key_lines(other, left_out)]
    return "\n".join(lines)


def _examples(doc):
    """The docstring's indented command lines (python / torchrun, with their backslash continuations)."""
    out, going_on = [], False
    for line in doc.splitlines():
        text = line.strip()
        if going_on or (line.startswith("    ") and text.split(" ", 1)[0] in ("python", "python3", "torchrun")):
            out.append("  " + line[4:] if line.startswith("    ") else "  " + text)
            going_on = text.endswith("\\")
    return out


def _key_lines(cls, left_out=()):
    """One entry per field of `cls` (wrapped at 110 columns): --name=default, type, meaning."""
    hints, notes = typing.get_type_hints(cls), field_notes(cls)
    rows = [(f"--{f.name}={_shown(f)}", _type_name(hints[f.name]), notes.get(f.name, ""))
            for f in dataclasses.fields(cls) if f.name not in left_out]
    width = min(max((len(flag) for flag, *_ in rows), default=0), 28)  # a longer one: its note below it
    types = max((len(t) for _, t, _ in rows), default=0)
    lines = []
    indent = " " * (width + types + 6)
    for flag, typ, note in rows:
        head = f"  {flag:<{width}}  {typ:<{types}}  "
        if len(flag) > width:  # a long default: the meaning goes under it, in the column of the others
            lines.append(f"  {flag}  {typ}")
            head = indent
        lines += [t.rstrip() for t in textwrap.wrap(note, 110, initial_indent=head, subsequent_indent=indent)
                  or [head]]
    return lines


def _shown(field):
    return flag_value(field.default_factory() if field.default is dataclasses.MISSING else field.default)


def same_flags(saved, keys):
    """The flags that give `keys` a saved run's values: "--lr=0.025 --drop_last=1"."""
    return " ".join(f"--{k}={flag_value(saved[k])}" for k in keys)


def flag_value(value):
    """A setting as it is typed on the command line: 1 / 0 for booleans, none for None."""
    if isinstance(value, bool) or value is None:
        return {True: "1", False: "0", None: "none"}[value]
    return str(value)


def _type_name(typ):
    args = typing.get_args(typ)
    if type(None) in args:
        return "|".join("none" if a is type(None) else _type_name(a) for a in args)
    return getattr(typ, "__name__", str(typ))


def field_notes(cls):
    """{field name: its meaning} of dataclass `cls`: the `# comment` at the end of the field's line in
    the source, joined with the comment-only lines under it that are indented past the field (its
    continuation). {} where the source cannot be read (a frozen executable, a class made at run time)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    names, notes = {f.name for f in dataclasses.fields(cls)}, {}
    current, row, col, first = None, 0, 0, True  # the field being read, its line and column; a line start?
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            own_line = tok.line[:tok.start[1]].strip() == ""
            if current and (tok.start[0] == row or (own_line and tok.start[1] > col)):
                notes.setdefault(current, []).append(tok.string.lstrip("#").strip())
            elif own_line:
                current = None  # a comment above what follows, not a continuation
        elif tok.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            first = True
        elif tok.type != tokenize.NL:
            if first:
                current = tok.string if tok.type == tokenize.NAME and tok.string in names else None
                row, col = tok.start
            first = False
    return {k: " ".join(v) for k, v in notes.items()}


def explicit_keys(argv=None):
    """The keys given on the command line (so per-setting defaults never override a user's value)."""
    argv = sys.argv[1:] if argv is None else argv
    return {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--") and "=" in a}


def split_config(cls, argv, per_run, why):
    """A script that runs another per job (sweep.py runs search.py): argv -> (its own config `cls` from
    the keys `cls` has, the rest of argv, passed on to every job). A passed-on key in `per_run`, which
    the script sets per job itself, is refused: ConfigError "--KEY: `why`"."""
    own = {f.name for f in dataclasses.fields(cls)}
    mine = [a for a in argv if a[2:].split("=", 1)[0].replace("-", "_") in own]
    rest = [a for a in argv if a not in mine]
    taken = explicit_keys(rest) & set(per_run)
    if taken:
        raise ConfigError(f"--{', --'.join(sorted(taken))}: {why}")
    return parse_config(cls, mine), rest


def differing(settings, saved, allowed=()):
    """The keys of `settings` outside `allowed` whose value differs from `saved` (sorted); a key `saved`
    lacks is not compared (callers fill a saved run's missing keys with `saved_settings` first)."""
    return sorted(k for k in settings if k not in allowed and k in saved and saved[k] != settings[k])


def saved_settings(cls, saved):
    """A saved run's settings (config dict) with every key it lacks at config dataclass `cls`'s default: a
    run from before a setting existed ran its old behaviour, which settings are added with as default,
    or else name in `cls.ADDED_LATER` (key -> the value such runs ran with)."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    return {**defaults, **getattr(cls, "ADDED_LATER", {}), **saved}


def resumed_config(cls, saved, argv, allowed):
    """A resumed run's config: the saved one, with the command line's values for the `allowed` keys
    (epochs, out, device, ...). Changing any other key would silently mix two experiments: an error."""
    cfg, given = parse_config(cls, argv), explicit_keys(argv)
    changed = differing({k: getattr(cfg, k) for k in given}, saved_settings(cls, saved), allowed)
    if changed:
        raise ConfigError(f"--resume=1 continues a run with its saved settings, but you changed "
                          f"{', '.join(changed)} (only {', '.join(sorted(allowed))} may change)")
    names = {f.name for f in dataclasses.fields(cls)}
    full = saved_settings(cls, saved)
    return cls(**{**{k: v for k, v in full.items() if k in names}, **{k: getattr(cfg, k) for k in given}})


SEED_RANGE = "[0, 4294967296)"  # what every RNG here takes (numpy's too); seeds + rank stay inside


def check_ranges(cfg, ranges):
    """Refuse a setting outside its range, in one ConfigError line naming the flag and the range.

    `ranges`: key -> the interval as a string, in the usual notation: "(0, inf)" (a learning rate),
    "[0, 1)" (momentum), "[1, inf)" (epochs). A value of None (an optional setting left unset) passes.
    NaN lies in no interval."""
    for key, interval in ranges.items():
        value = getattr(cfg, key)
        if value is None:
            continue
        low, high = (float(v) for v in interval[1:-1].split(","))
        above = value > low if interval[0] == "(" else value >= low
        below = value < high if interval[-1] == ")" else value <= high
        if not (above and below):
            raise ConfigError(f"--{key}={value}: out of range, must lie in {interval}")


def one_line(e):
    return " ".join(str(e).split())  # one line, whatever the message held


def stop_now(signum, frame):
    """SIGTERM outside a training loop (set-up, final evaluation): nothing is half done, stop at once."""
    raise Preempted(f"stopped by {signal.Signals(signum).name} outside the training steps: nothing was lost; "
                    f"rerun (with --resume=1 where OUT/checkpoint.pt exists)", signum)


def user_errors():
    """The exceptions that are the user's mistake, not a bug: bad flags, names, files or data (InputError
    and bench201's file/query errors), a failed read or write (OSError: disk full, no permission,
    missing file) and a loss gone non-finite (FloatingPointError: lower the learning rate)."""
    import bench201  # dependency-free, so it keeps its own error types
    return (InputError, bench201.BenchmarkFileError, bench201.QueryError, OSError, FloatingPointError)


def run(main, argv=None):
    """Run `main(argv)`; the user's faults end as one line on stderr: bad input (flags, data, arch, a
    damaged checkpoint, a busy output folder) exits 2, a failed read/write (disk full, permission) 1, a
    stop signal 128 + signum. Any other exception is a bug and keeps its traceback (exit 1)."""
    for stream in (sys.stdout, sys.stderr):  # α, ±, ✓ on a console or pipe that cannot encode them: escaped
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, stop_now) if main_thread else None  # loops: checkpoints.StopSignals
    try:
        try:
            return main(argv)
        except Exception as e:
            # A stop that lands inside a lazy import (torch's first optimizer pulls in torch._dynamo and
            # sympy) can leave that module half made, and clean-up code that needs it then fails too:
            # the user stopped the run, so report the stop, not what it broke on the way out. Not where
            # the code raised on purpose (a Preempted of its own, `raise ... from None`: a sweep's summary).
            stop, link = None, e
            while not isinstance(link, Preempted) and not link.__suppress_context__ and link.__context__:
                link = link.__context__
                if isinstance(link, (Preempted, KeyboardInterrupt)):
                    stop = link
                    break
            if stop is None or os.environ.get("RFDARTS_DEBUG"):
                raise
            raise stop from None
    except Preempted as e:
        print(one_line(e), file=sys.stderr)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:  # outside the loops (they checkpoint on a first Ctrl-C), or a second Ctrl-C
        print("interrupted: the last checkpoint, if one was written, is intact (what ran after it is not); "
              "rerun (with --resume=1 where OUT/checkpoint.pt exists)", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # whoever read stdout stopped (`--help | head`): no error of ours to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor at the exit's flush
        sys.exit(128 + signal.SIGPIPE)
    except getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError) as e:  # not a bug: what to lower
        print(f"error: out of memory ({one_line(e).split(' Tried')[0][:120]}): lower --batch_size (the global "
              "batch; under torchrun each process takes batch/N), --C or --layers, or run on more GPUs",
              file=sys.stderr)
        sys.exit(1)
    except MemoryError:  # host RAM: not a bug either (a whole NB201 .pth, or sizes too large)
        sys.exit(out_of_ram())
    except RuntimeError as e:  # torch's CPU allocator reports host RAM running out as a plain RuntimeError
        if "can't allocate memory" not in str(e):
            raise
        sys.exit(out_of_ram())
    except user_errors() as e:
        if os.environ.get("RFDARTS_DEBUG"):
            raise
        print(f"error: {one_line(e)} (RFDARTS_DEBUG=1 shows the traceback)", file=sys.stderr)
        usage = (ValueError, FloatingPointError, FileNotFoundError, FileExistsError, NotADirectoryError)
        sys.exit(2 if isinstance(e, usage) else 1)  # 1: the system refused a read or write
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old)


def out_of_ram():
    """Host RAM ran out: one line on what to lower -> the exit status, 1."""
    import bench201
    print("error: out of memory (RAM): lower what sizes the run (--batch_size, --C, --layers, --subset; plot.py: "
          f"--dpi); a benchmark .pth: {bench201.TOO_BIG}, and pass the CSV", file=sys.stderr)
    return 1


def write_error(path, e, hint="", what="could not write"):
    """OSError `e` on `path` as one WriteError line (what, path, the OS reason, `hint`), errno kept."""
    err = WriteError(f"{what} {path}: {e.strerror or one_line(e)}{hint}")
    err.errno = e.errno
    return err
