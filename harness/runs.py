"""What every run script shares once its flags are read (harness/cli.py): the device, seeding and RNG
state, the run log, the lr schedule, evaluation and torch.compile (the torchrun/DDP plumbing is ddp.py's,
atomic checkpoints and the stop signals of the training loops are checkpoints.py's).

search.py, train.py, analysis.py, bench.py, bnnas_search.py, ddp.py and jobs.py import these; nothing
here knows about architectures. `pick_device` refuses a device this machine does not have (one line,
cli.ConfigError) and says once why `auto` fell back to the CPU.
"""
import contextlib
import dataclasses
import math
import os
import platform
import random
import sys
import time
import types

import torch
import torch.nn.functional as F

from harness.batching import key_seed
from harness.cli import ConfigError, one_line, write_error


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
    except RuntimeError:  # torch's message lists its ~20 device types; these are the ones a run takes
        raise ConfigError(f"--device={name}: not a device name; use auto, cpu, cuda, cuda:N or mps") from None
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
        with open("/proc/cpuinfo", encoding="utf-8") as f:
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
        if deterministic:  # only what was changed: the call imports torch._inductor, slow, and after a stop
            torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])  # signal perhaps half made


def seed_everything(seed):
    random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def rank_seed(seed, rank):
    """The seed of process `rank`'s own randomness (S4's noise, drop path, partial-channel shuffles): rank 0
    keeps `seed`, so it draws what a 1-process run draws; rank r > 0 a SeedSequence key of (seed, r, RANK_TAG):
    not another run's seed (`seed + rank` gives rank 1 of --seed=0 the stream of rank 0 of --seed=1), nor the
    loaders' (seed, epoch) keys, drawn the same way."""
    return seed if rank == 0 else key_seed(seed, rank, RANK_TAG)


RANK_TAG = 0x52414E4B  # "RANK": keeps rank_seed's keys apart from every other SeedSequence key of the code


def rng_state():
    """Everything random a run consumes, in a form torch.load(weights_only=True) accepts."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():  # Apple GPUs draw device-side randomness (drop path, noise ops) here
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():  # saved with more GPUs visible: the first ones
        for i, s in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


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
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line + "\n")
            except OSError as e:
                raise write_error(self.path, e) from e


def duration(seconds):
    """A rough duration for a progress line: 45s, 12m, 3.4h, 2.1d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f}m" if unit == "m" else f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


# PC-DARTS warms the lr up only for a batch larger than this (train_search_imagenet.py, train_imagenet.py)
PC_DARTS_WARMUP_ABOVE = 256


def cosine_lr(lr, epoch, epochs, lr_min=0.0, warmup=0):
    """The lr of an epoch: cosine from lr to lr_min, its first `warmup` epochs scaled by (epoch + 1) / warmup.

    The value CosineAnnealingLR(T_max=epochs, eta_min=lr_min) gives when stepped once per epoch; as a
    closed form of the epoch it needs no scheduler state in the checkpoint and extends cleanly. The warm-up
    scales the cosine's value, as PC-DARTS' train_search_imagenet.py does (`lr = scheduler.get_lr()[0]`,
    then `lr * (epoch + 1) / 5.0`).
    """
    cosine = lr_min + (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2
    return cosine * (epoch + 1) / warmup if epoch < warmup else cosine


def gpu_memory(device):
    """CUDA: this process's peaks since the last call (MiB), then a fresh count; {} elsewhere.

    gpu_mem_mb: tensors allocated; gpu_reserved_mb: what the caching allocator held, which also counts
    the private pools CUDA graphs keep their buffers in (--compile=1 on CUDA: after capture, little of a
    step shows as allocated). Under torchrun each rank counts its own GPU; the logs show rank 0's."""
    if device.type != "cuda":
        return {}
    mem = dict(gpu_mem_mb=round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
               gpu_reserved_mb=round(torch.cuda.max_memory_reserved(device) / 2**20, 1))
    torch.cuda.reset_peak_memory_stats(device)
    return mem


def gpu_memory_text(row):
    """An epoch line's " mem A/RMB" (allocated / reserved peaks) for a row holding gpu_memory's keys, else ""."""
    return f" mem {row['gpu_mem_mb']:.0f}/{row['gpu_reserved_mb']:.0f}MB" if "gpu_mem_mb" in row else ""


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


@torch.no_grad()
def evaluate(model, loader):
    """(mean cross-entropy, top-1 accuracy, top-5 accuracy) over `loader` (eval mode, no gradients); top-5 as
    DARTS' and PC-DARTS' train_imagenet.py report it (1.0 with 5 classes or fewer)."""
    was_training = model.training
    model.eval()
    loss_sum, correct, correct5, n = 0.0, 0, 0, 0
    for x, y in loader:
        logits = model(x)
        logits = logits[0] if isinstance(logits, tuple) else logits  # (B, classes)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, 5)
        correct5 += (top5 == y[:, None]).any(1).sum().item()
        n += y.numel()
    model.train(was_training)
    return loss_sum / max(n, 1), correct / max(n, 1), correct5 / max(n, 1)


def as_dict(cfg):
    """A config dataclass as a plain dict (for config.json and checkpoints)."""
    return dataclasses.asdict(cfg)


def compile_mode(device, backend="inductor", cuda_graphs=True):
    """torch.compile's mode for a forward on `device`: "reduce-overhead" (inductor replays the graph
    through CUDA graphs) on CUDA with cuda_graphs, else None (plain kernels; aot_eager has no modes)."""
    cuda = device is not None and torch.device(device).type == "cuda"
    return "reduce-overhead" if cuda and backend == "inductor" and cuda_graphs else None


def compile_model(model, enabled=True, device=None, backend="inductor", cuda_graphs=True, batch=None):
    """The callable a training loop runs its forward through: `model` itself, or torch.compile of it.

    The compiled forward shares the parameters, buffers and state_dict of `model`, so optimisers and
    checkpoints keep using `model`. Shapes are static (dynamic=False), so one graph is traced per
    (train/eval mode, batch shape). `batch`: only batches of this size run compiled; any other size (an
    epoch's last partial batch) runs `model` eagerly, the same sums within float32 rounding, and costs no
    compile of its own. On CUDA with `cuda_graphs` the
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
        if batch is not None and len(x) != batch:
            return model(x)
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
