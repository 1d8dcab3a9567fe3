"""What every run script shares: config from `--key=value`, device, seeding, RNG state, the run log,
the lr schedule, evaluation and torch.compile (the torchrun/DDP plumbing is ddp.py's).

The user's faults end as one line (`cli`): bad input (spaces.InputError and its subclasses here and
in harness/) exits 2, a failed read or write (disk full, no permission) or running out of GPU memory 1,
naming the path and the OS reason (WriteError), a stop signal 128 + its number (Preempted). Any other
exception is a bug and keeps its traceback. Atomic, rotated checkpoints and the stop signals of the training loops are checkpoints.py's,
built on these error types.

search.py, train.py, analysis.py, bench.py, plot.py and checkpoints.py import these; nothing here knows
about architectures. The config is a dataclass per script (defaults = the paper's values); `parse_config`
applies overrides and rejects unknown keys and badly typed values in one line, like nanoGPT's
configurator but without exec; `check_ranges` refuses a numeric setting outside its range (each script
declares a RANGES dict), `pick_device` a device this machine does not have. `--help` (or `-h`) anywhere
on a command line that `parse_config` reads prints `help_text` (every key with its default, type and the
comment after its field, the usage line and the docstring's examples) and exits 0.
"""
import contextlib
import dataclasses
import inspect
import io
import math
import os
import platform
import random
import signal
import sys
import textwrap
import threading
import time
import tokenize
import types
import typing

import torch
import torch.nn.functional as F

from spaces import InputError


class ConfigError(InputError):
    """A bad command-line flag or a setting that contradicts another."""


class WriteError(OSError):
    """A write that failed (disk full, no permission, a file where a folder should be)."""


class Preempted(Exception):
    """A stop signal ended the run cleanly (after its checkpoint, if one was due); `cli` exits 128 + signum."""

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
    among them prints `help_text(cls)` and exits 0 (SystemExit, which `cli` lets through).
    """
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        show_help(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = dict(defaults)
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"bad argument {arg!r}: use --key=value (keys: {', '.join(fields)})")
        key, text = arg[2:].split("=", 1)
        key = key.replace("-", "_")
        if key not in fields:
            raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(fields)} "
                              "(--help says what each means)")
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


def differing(settings, saved, allowed=()):
    """The keys of `settings` outside `allowed` whose value differs from `saved` (sorted); a key `saved`
    lacks (a run from before that setting existed) is not compared."""
    return sorted(k for k in settings if k not in allowed and k in saved and saved[k] != settings[k])


def resumed_config(cls, saved, argv, allowed):
    """A resumed run's config: the saved one, with the command line's values for the `allowed` keys
    (epochs, out, device, ...). Changing any other key would silently mix two experiments: an error."""
    cfg, given = parse_config(cls, argv), explicit_keys(argv)
    changed = differing({k: getattr(cfg, k) for k in given}, saved, allowed)
    if changed:
        raise ConfigError(f"--resume=1 continues a run with its saved settings, but you changed "
                          f"{', '.join(changed)} (only {', '.join(sorted(allowed))} may change)")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{**{k: v for k, v in saved.items() if k in names}, **{k: getattr(cfg, k) for k in given}})


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


def cli(main, argv=None):
    """Run `main(argv)`; the user's faults end as one line on stderr: bad input (flags, data, arch, a
    damaged checkpoint, a busy output folder) exits 2, a failed read/write (disk full, permission) 1, a
    stop signal 128 + signum. Any other exception is a bug and keeps its traceback (exit 1)."""
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, stop_now) if main_thread else None  # loops: checkpoints.StopSignals
    try:
        return main(argv)
    except Preempted as e:
        print(one_line(e), file=sys.stderr)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is intact; rerun with --resume=1", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # whoever read stdout stopped (`--help | head`): no error of ours to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor at the exit's flush
        sys.exit(128 + signal.SIGPIPE)
    except getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError) as e:  # not a bug: what to lower
        print(f"error: out of memory ({one_line(e).split(' Tried')[0][:120]}): lower --batch_size (the global "
              "batch; under torchrun each process takes batch/N), --C or --layers, or run on more GPUs",
              file=sys.stderr)
        sys.exit(1)
    except user_errors() as e:
        if os.environ.get("RFDARTS_DEBUG"):
            raise
        print(f"error: {one_line(e)} (RFDARTS_DEBUG=1 shows the traceback)", file=sys.stderr)
        usage = (ValueError, FloatingPointError, FileNotFoundError, FileExistsError, NotADirectoryError)
        sys.exit(2 if isinstance(e, usage) else 1)  # 1: the system refused a read or write
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old)


def pick_device(name="auto"):
    """--device: auto (CUDA, else MPS, else the CPU) or a torch device name. When auto falls back to the
    CPU although this torch was built for CUDA (no usable driver or GPU, or CUDA_VISIBLE_DEVICES hides
    them), one line on stderr says why, once per process (rank 0's under torchrun)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        why = cpu_fallback_reason()
        if why and not _SAID_CPU and os.environ.get("RANK", "0") == "0":
            _SAID_CPU.append(why)
            print(f"note: running on the CPU: {why} (--device=cpu silences this)", file=sys.stderr, flush=True)
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"--device={name}: {e}") from None
    # refused here, in one line, rather than as torch's traceback at the first .to(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device={name}: this machine has no CUDA device (or this torch has no CUDA "
                          "support); use --device=auto or --device=cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"--device={name}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"--device={name}: MPS is not available here; use --device=auto or --device=cpu")
    return device


_SAID_CPU = []  # the reason, once pick_device has said it


def check_device(name):
    """A config check: refuse a --device this machine does not have (one line). 'auto' always has one;
    it is picked, and a CPU fallback announced, when the run starts, not while flags are checked."""
    if name != "auto":
        pick_device(name)


def cpu_name():
    """The CPU a run's seconds were measured on, e.g. "Intel(R) Xeon(R) Processor, AVX512": the model
    (/proc/cpuinfo on Linux, else platform.processor()) and the widest vector ISA torch dispatches to.
    The machine behind a long study can change between sessions, and step times with it."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    model = model or platform.processor() or "unknown CPU"
    return f"{model}, {torch.backends.cpu.get_cpu_capability()}"


def cpu_device(threads):
    """How bench.py and sweep.py's device.txt name a CPU run, e.g. "cpu x2 threads (AMD EPYC, AVX2)":
    step times depend on the thread count as much as on the CPU."""
    return f"cpu x{threads} threads ({cpu_name()})"


def cpu_fallback_reason():
    """Why --device=auto finds no GPU on a CUDA build of torch, in a few words; None on a CPU-only build
    (nothing was expected) or when CUDA is usable. The reason is CUDA_VISIBLE_DEVICES when it hides
    every GPU, else what CUDA's initialisation says (e.g. "Found no NVIDIA driver on your system")."""
    if torch.version.cuda is None or torch.cuda.is_available():
        return None
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and not hidden.strip():
        return "CUDA_VISIBLE_DEVICES is empty, so no GPU is visible"
    try:
        torch.cuda.init()  # raises with CUDA's reason when is_available() is False
        detail = "torch.cuda.is_available() is False"
    except Exception as e:  # noqa: BLE001  RuntimeError / AssertionError: the message is the reason
        detail = one_line(e).split(". ")[0].rstrip(".")[:160]
    return f"this torch is a CUDA {torch.version.cuda} build but finds no usable GPU ({detail})"


def tune_for(device):
    """Fixed input shapes on CUDA: let cuDNN pick the fastest conv algorithms once per shape (as DARTS'
    and PC-DARTS' scripts do). Not bit-reproducible across runs on CUDA (README says so); `tuned` is
    the form a run uses (it restores the flags and knows --deterministic=1)."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


@contextlib.contextmanager
def tuned(device, deterministic=False):
    """A run's global torch flags, given back on exit (so a process that runs several, the test suite
    or a notebook, does not inherit one run's cuDNN autotuning). deterministic=False: `tune_for`.
    deterministic=True (--deterministic=1): cuDNN benchmark off, cuDNN and every op that has one on
    its deterministic algorithm (torch.use_deterministic_algorithms; an op without one warns once
    instead of stopping the run), and cuBLAS's fixed workspace (CUBLAS_WORKSPACE_CONFIG, which must be
    set before the first matmul on the GPU), so that a CUDA run repeats bit for bit."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
            torch.use_deterministic_algorithms(True, warn_only=True)
        else:
            tune_for(device)
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def seed_everything(seed):
    random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def rng_state():
    """Everything random a run consumes, in a form torch.load(weights_only=True) accepts."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():  # saved with more GPUs visible: the first ones
        for i, s in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


def write_error(path, e, hint="", what="could not write"):
    """OSError `e` on `path` as one WriteError line (what, path, the OS reason, `hint`), errno kept."""
    err = WriteError(f"{what} {path}: {e.strerror or one_line(e)}{hint}")
    err.errno = e.errno
    return err


class Log:
    """Print a line and append it to OUT/log.txt (only on the main process under DDP)."""

    def __init__(self, out=None, enabled=True):
        self.path = os.path.join(out, "log.txt") if out and enabled else None
        self.enabled = enabled
        self.t0 = time.time()

    def __call__(self, msg):
        if not self.enabled:
            return
        line = f"[{time.time() - self.t0:8.1f}s] {msg}"
        print(line, flush=True)
        if self.path:
            try:
                with open(self.path, "a") as f:
                    f.write(line + "\n")
            except OSError as e:
                raise write_error(self.path, e) from e


def duration(seconds):
    """A rough duration for a progress line: 45s, 12m, 3.4h, 2.1d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f}m" if unit == "m" else f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def cosine_lr(lr, epoch, epochs, lr_min=0.0, warmup=0):
    """The lr of an epoch: linear warm-up over `warmup` epochs, else cosine from lr to lr_min.

    The value CosineAnnealingLR(T_max=epochs, eta_min=lr_min) gives when stepped once per epoch; as a
    closed form of the epoch it needs no scheduler state in the checkpoint and extends cleanly.
    """
    if epoch < warmup:
        return lr * (epoch + 1) / warmup
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


@torch.no_grad()
def evaluate(model, loader):
    """Mean cross-entropy and top-1 accuracy over `loader` (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in loader:
        logits = model(x)
        logits = logits[0] if isinstance(logits, tuple) else logits
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        n += y.numel()
    model.train(was_training)
    return loss_sum / max(n, 1), correct / max(n, 1)


def as_dict(cfg):
    """A config dataclass as a plain dict (for config.json and checkpoints)."""
    return dataclasses.asdict(cfg)


def compile_mode(device, backend="inductor", cuda_graphs=True):
    """torch.compile's mode for a forward on `device`: "reduce-overhead" (inductor replays the graph
    through CUDA graphs) on CUDA with cuda_graphs, else None (plain kernels; aot_eager has no modes)."""
    cuda = device is not None and torch.device(device).type == "cuda"
    return "reduce-overhead" if cuda and backend == "inductor" and cuda_graphs else None


def compile_model(model, enabled=True, device=None, backend="inductor", cuda_graphs=True):
    """The callable a training loop runs its forward through: `model` itself, or torch.compile of it.

    The compiled forward shares the parameters, buffers and state_dict of `model`, so optimisers and
    checkpoints keep using `model`. Shapes are static (dynamic=False: loaders drop the last partial
    batch), so one graph is traced per (train/eval mode, batch shape). On CUDA with `cuda_graphs` the
    graph is replayed through CUDA graphs (mode "reduce-overhead", `compile_mode`): a new step is marked
    before every forward, which is safe because each step consumes its outputs (loss, logits) before
    the next forward runs. `backend="aot_eager"` traces the same graphs without generating kernels
    (the fast test suite uses it).

    Each set of the parameters' requires_grad flags gets a compiled function of its own. The search
    switches those flags between its weight and alpha steps (search.py:alpha_step), and a graph traced
    under one set returns no gradient for a parameter that only the other set trains. Dynamo is meant to
    guard on the flags, but some releases do not: torch 2.11 (the GPU machine's) skips a module's tensor
    guards while its parameter dict is unchanged (pytorch/pytorch#139476, fixed by #177158), and torch
    2.1 replays a graph whose loss has no grad_fn; either way alpha stopped moving. Keyed here, no step
    depends on those guards (tests/test_compile.py compares each step with eager on whatever torch runs).
    """
    if not enabled:
        return model
    mode = compile_mode(device, backend, cuda_graphs)
    params = list(model.parameters())
    compiled = {}  # requires_grad flags of `params` -> its compiled function

    def forward(x):
        flags = tuple(p.requires_grad for p in params)  # ~50 us for the 562 of a C=16 NB201 supernet
        if flags not in compiled:
            compiled[flags] = torch.compile(own_code(model, len(compiled)), backend=backend, mode=mode,
                                            dynamic=False)
        if mode is not None:
            torch.compiler.cudagraph_mark_step_begin()
        return compiled[flags](x)
    return forward


def own_code(model, n):
    """A function calling `model` whose code object is its own: dynamo keeps compiled graphs per code
    object, so what is compiled through it is never looked up for another."""
    def call(x):
        return model(x)
    code = call.__code__.replace(co_name=f"compiled_forward_{n}")
    return types.FunctionType(code, call.__globals__, code.co_name, None, call.__closure__)
