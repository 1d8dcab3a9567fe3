"""Benchmark one search iteration (weight step + alpha step) for Table 1's options A-D.

    python bench.py --space=nb201 --option=C --batch_size=64      # one option, JSON on stdout
    python bench.py --space=nb201 --option=all                     # A-D, each in a fresh process
    python bench.py --C=8 --option=BC --compile=1                  # compiled; also reports compile_s
    python bench.py --option=BC --procs=4 --seconds=20             # 4 at once (B, C, B, C): total iterations/s

Times the very step functions search.py runs (search.weight_step, search.alpha_step) on random data
of the dataset's shape, on CPU or CUDA, and reports seconds per iteration (`iteration_s`: the timed
iterations' wall clock over their count, with no host sync between them, as in search.py) split into
the two steps (`weight_step_s`, `arch_step_s`: the host clock on a CPU, CUDA events on a GPU),
images/s (weight-half images per second, as an epoch counts them) and peak memory (CUDA: max allocated
and max reserved, which also counts the private pool that CUDA graphs keep their buffers in; CPU: the
process's peak RSS, so each option runs in its own process). On CUDA cuDNN autotuning is on, as in
search.py (runs.tune_for). Why option C is cheaper: with the conv weights frozen, autograd skips every
conv weight-gradient kernel in the weight step. The alpha step computes no weight gradient under any
option (compiled too: it has a graph of its own, see search.alpha_step), so it should cost about the
same for A-D and less than option B's weight step.

Every speed number carries its distance to the floor: `gflop_weight_step` / `gflop_arch_step`
are the convolution and matmul FLOPs of one step, counted by torch.utils.flop_counter.FlopCounterMode on
an extra, untimed iteration of the same model (forward and backward, only the gradients the step
computes), on which `saved_mb_*` counts what each step keeps for its backward and `state_mb` the
parameters, gradients and optimiser state (their sum: an eager step's need of GPU memory, measurable on
a CPU); `gflops` is their sum over the iteration time; `peak_gflops` is a float32 2048x2048 matmul on
the same threads (CUDA: at the convolutions' precision, TF32 by default), timed in the same process after
the steps (best of 5); `floor_s` = gflop / peak, the
iteration at peak; `over_floor` = iteration_s / floor_s. `--profile=N` profiles N more iterations with
torch.profiler and adds `profile`: seconds per iteration by op kind (`kind_of`), also printed as a table
on stderr; compiled, the generated (fused) kernels count as "inductor kernels".

For planning GPU sweeps: on CUDA `--compile=1` replays the compiled graph through CUDA graphs as
search.py does (`--cuda_graphs=0`: plain compiled kernels); `--gpu_busy=N` profiles N more iterations
and adds `gpu_kernel_s` (GPU time per iteration) and `gpu_busy` (that over the iteration time: far below
1, the step is launch-bound); `--procs=K --seconds=S` runs K copies at once (the options in turn, as a
sweep's --jobs=K shares one GPU or CPU), times each for the same S seconds once all have warmed up, and
reports `iterations_per_s` summed over them.
"""
import collections
import json
import math
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from harness import cli, concurrency, fast_supernet, runs
from search import alpha_step, weight_step
from supernet import build_supernet, set_trainable


@dataclass
class BenchConfig:
    space: str = "nb201"       # nb201 | darts | s1 | s2 | s3 | s4 (search.py's spaces)
    option: str = "all"        # A | B | C | D | all
    batch_size: int = 64       # images per step, in each of the two steps
    C: int = 0                 # 0: the space's default
    layers: int = 0            # nb201: cells per stage; DARTS-style: cells (0: the space's default)
    pc_k: int = 1              # partial channels K (1: off), as search.py --pc_k
    image_size: int = 32       # side of the random images (CIFAR: 32)
    num_classes: int = 10      # classifier outputs
    steps: int = 10            # timed iterations
    warmup: int = 3            # untimed iterations first (allocator, cuDNN autotune)
    device: str = "auto"       # auto | cpu | cuda | cuda:1 | mps
    threads: int = 0           # torch CPU threads (0: torch's default)
    compile: bool = False      # torch.compile the forward (search.py --compile=1); see compile_s
    cuda_graphs: bool = True   # compiled on CUDA: replay through CUDA graphs (search.py's mode); 0: plain kernels
    backend: str = "inductor"  # torch.compile backend; eager / aot_eager only trace (the suite's tiny checks)
    fast: bool = True          # as search.py --fast: harness/fast_supernet.py, eager only; 0: supernet.py
    seed: int = 0              # the supernet's init and the random data
    flops: bool = True         # count FLOPs per step (one extra untimed iteration) and time the matmul peak
    profile: int = 0           # profile this many more iterations by op kind (torch.profiler)
    peak_n: int = 2048         # the matmul size of the peak measurement (n x n float32)
    gpu_busy: int = 0          # CUDA: profile this many more iterations for gpu_busy (kernel time / wall)
    seconds: float = 0.0       # >0: time as many iterations as fit in this many seconds instead of --steps
    procs: int = 1             # run this many copies at once (--option's letters in turn, e.g. BC: B, C, B, ...)
    barrier: str = ""          # set by --procs for its copies: a folder where they meet before timing


# The range of every numeric setting (cli.check_ranges); C and layers 0: the space's default.
# image_size >= 4: the supernets halve it twice (two reductions), and a 1x1 map cannot be halved.
RANGES = dict(batch_size="[1, inf)", C="[0, inf)", layers="[0, inf)", pc_k="[1, inf)", image_size="[4, inf)",
              num_classes="[1, inf)", steps="[1, inf)", warmup="[0, inf)", threads="[0, inf)",
              profile="[0, inf)", peak_n="[1, inf)", gpu_busy="[0, inf)", seconds="[0, inf)",
              procs="[1, inf)", seed=cli.SEED_RANGE)


def matmul_peak(device, n=2048, repeats=5):
    """GFLOP/s of an n x n float32 matmul on `device` (the threads set now), best of `repeats` after a
    warm-up: the reference for how far a step is from what the core can do. On CUDA the matmul runs at
    the steps' convolution precision: TF32 where cuDNN may use it (PyTorch's default for convolutions,
    not for matmuls), else a TF32 conv would outrun the "peak" and the floor would be none. Matrices that
    cannot be allocated are --peak_n's fault, said in one line (cli.ConfigError), not a traceback."""
    saved = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        best = float("inf")
        for i in range(repeats + 2):
            concurrency.sync(device)
            t0 = time.perf_counter()
            a @ b
            concurrency.sync(device)
            if i >= 2:
                best = min(best, time.perf_counter() - t0)
    except RuntimeError as e:  # torch.OutOfMemoryError is one; so are the CPU allocator's and a size overflow
        text = cli.one_line(e)
        if not isinstance(e, torch.cuda.OutOfMemoryError) and "alloc" not in text and "overflow" not in text:
            raise
        raise cli.ConfigError(f"--peak_n={n}: {peak_bytes(n) / 2**30:.3g} GiB for the matmul peak could not be "
                               f"allocated on {device} ({text[:120]}); lower --peak_n (default 2048) or pass "
                               "--flops=0 (no peak, no FLOP counts)") from None
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return 2 * n ** 3 / best / 1e9


def peak_bytes(n):
    """Memory of the matmul peak: three n x n float32 matrices (a, b and a @ b)."""
    return 3 * 4 * n * n


def memory_bytes(device):
    """The memory of `device`: a GPU's total, the machine's physical memory for the CPU; None where it is
    not known (MPS, a system without sysconf)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            return None
    return None


def check_peak(cfg, device):
    """Refuse a --peak_n whose matrices exceed the device's whole memory before any step runs (the peak
    is measured last, after the steps, or in each option's child process)."""
    if not cfg.flops:
        return
    need, have = peak_bytes(cfg.peak_n), memory_bytes(device)
    if have is not None and need > have:
        raise cli.ConfigError(f"--peak_n={cfg.peak_n}: the matmul peak needs three {cfg.peak_n} x {cfg.peak_n} "
                               f"float32 matrices, {need / 2**30:.3g} GiB, more than the {have / 2**30:.3g} GiB of "
                               f"{device}; lower --peak_n (default 2048) or pass --flops=0 (no peak, no FLOP counts)")


# Op kinds of a profile, by the name torch.profiler gives an op or region: (kind, name fragments).
# First match wins, so the backward kinds come before their forward ones.
KINDS = (
    ("conv backward", ("convolution_backward", "conv2d_backward", "conv_depthwise2d_backward")),
    ("conv forward", ("convolution", "conv2d", "conv_depthwise2d")),
    ("batch norm backward", ("batch_norm_backward",)),
    ("batch norm forward", ("batch_norm",)),
    ("matmul (classifier)", ("addmm", "::mm", "::bmm", "matmul", "linear")),
    ("pooling", ("pool",)),
    ("optimizer", ("_foreach_", "Optimizer.", "clip_grad")),
    ("inductor kernels", ("Compiled", "cpp_fused", "Torch-Compiled", "## Call")),
    ("copies and layout", ("copy_", "clone", "contiguous", "::cat", "::stack", "to_dense", "reorder",
                           "::to", "_to_copy")),
    ("allocation and views", ("empty", "resize_", "as_strided", "::view", "select", "slice", "expand",
                              "permute", "transpose", "reshape", "unsqueeze", "squeeze", "detach",
                              "alias", "t", "zeros", "ones", "new_", "fill_", "zero_")),
    ("autograd engine", ("autograd::", "Backward0", "Backward1")),
    ("elementwise", ("aten::",)),  # mul, add, relu, threshold_backward, div, softmax, loss, ...
)


def kind_of(name):
    """The op kind (a KINDS entry) that profiled op or region `name` belongs to."""
    for kind, fragments in KINDS:
        if any(f in name if f != "t" else name.endswith("::t") for f in fragments):
            return kind
    return "other"


def profile_by_kind(run_iteration, iterations, device):
    """Seconds per iteration by op kind (self time of every profiled op), plus `wall` and `untraced`
    (wall minus the ops: Python between them)."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(iterations):
            run_iteration()
        wall = (time.perf_counter() - t0) / iterations
    by = collections.Counter()
    for e in prof.key_averages():
        by[kind_of(e.key)] += e.self_cpu_time_total / 1e6 / iterations
    out = {k: round(v, 4) for k, v in by.most_common()}
    out["wall"], out["untraced"] = round(wall, 4), round(wall - sum(by.values()), 4)
    return out


def print_profile(prof, file=None):
    file = file or sys.stderr
    wall = prof["wall"]
    print(f"{'op kind':24s} {'s/iter':>8s} {'share':>6s}", file=file)
    for k, v in prof.items():
        if k != "wall":
            print(f"{k:24s} {v:8.3f} {100 * v / wall:5.1f}%", file=file)
    print(f"{'wall':24s} {wall:8.3f}", file=file)


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                        output_padding, groups, output_mask, out_shape=None, **kwargs):
    """FLOPs of aten.convolution_backward from shapes: the input gradient and the weight gradient each take
    the forward's multiply-adds, 2 * prod(w_shape) * N * prod(the non-transposed conv's output size); w_shape
    holds C_in / groups, so grouped convs count right. (torch's own formula, 2.1-2.14, counts a grouped conv's
    weight gradient as if ungrouped: `groups` times too many for the depthwise convs of DARTS' sep / dil
    convs when they train, options A and B.)"""
    spatial = (x_shape if transposed else grad_out_shape)[2:]
    macs = x_shape[0] * math.prod(w_shape) * math.prod(spatial)
    return 2 * macs * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def count_gflop(step):
    """GFLOP (convolutions and matmuls, forward and backward; a multiply-add is 2) that one call of `step`
    runs. On the CPU avg pooling runs as a depthwise conv (ops.pool_3x3), so it counts there too."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop}) \
            as counter:
        step()
    return counter.get_total_flops() / 1e9


def saved_mib(step, params=()):
    """MiB that one call of `step` keeps alive for its backward: the distinct storages autograd saves
    (activations), `params` excluded (they are held anyway). Device-independent: with the parameters,
    gradients and optimiser state (`state_mib`) it is what an eager step needs of a GPU's memory, before
    the allocator's rounding, cuDNN workspaces and the transient tensors of the backward itself."""
    held = {p.untyped_storage().data_ptr() for p in params}
    saved = {}  # data_ptr -> storage: kept here, so no address is freed and reused while counting

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in held:
            saved[storage.data_ptr()] = storage
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(s.nbytes() for s in saved.values()) / 2**20


def state_mib(model, *optimizers):
    """MiB of the parameters, buffers (BN running statistics), gradients and the optimisers' state."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [t for opt in optimizers for st in opt.state.values() for t in st.values() if torch.is_tensor(t)]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def bench_option(cfg, option):
    device = runs.pick_device(cfg.device)
    runs.tune_for(device)  # cuDNN autotuning on CUDA, as search.py and train.py run (warm-up steps absorb it)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = build_supernet(cfg.space, cfg.num_classes, C=cfg.C or None, layers=cfg.layers or None,
                           pc_k=cfg.pc_k, seed=cfg.seed).to(device)
    fast = fast_supernet.applies(cfg.fast, cfg.compile)  # as search.py: eager steps only
    if fast:
        fast_supernet.speed_up(model)
    set_trainable(model, option, verbose=False)
    weights = [p for p in model.weight_parameters() if p.requires_grad]
    w_opt = torch.optim.SGD(weights, 0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(model.arch_parameters(), 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    shape = (cfg.batch_size, 3, cfg.image_size, cfg.image_size)
    x, xa = torch.randn(shape, device=device), torch.randn(shape, device=device)
    y = torch.randint(0, cfg.num_classes, (cfg.batch_size,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def w_step(f):
        return weight_step(f, weights, model.arch_parameters(), w_opt, x, y, 5.0)

    def a_step(f):
        return alpha_step(f, model.arch_parameters(), weights, a_opt, xa, y)

    flops = {}
    if cfg.flops:  # an extra iteration, eager (a compiled graph runs the same convolutions and matmuls)
        flops = dict(gflop_weight_step=count_gflop(lambda: w_step(model)),
                     gflop_arch_step=count_gflop(lambda: a_step(model)))
        params = [*model.parameters(), *model.buffers()]  # held anyway: not counted as saved
        memory = dict(saved_mb_weight_step=round(saved_mib(lambda: w_step(model), params), 1),
                      saved_mb_arch_step=round(saved_mib(lambda: a_step(model), params), 1),
                      state_mb=round(state_mib(model, w_opt, a_opt), 1))
    forward = runs.compile_model(model, cfg.compile, device, backend=cfg.backend, cuda_graphs=cfg.cuda_graphs)

    def iteration(marks):  # one weight step and one alpha step; their start, middle and end go to `marks`
        t0 = concurrency.stamp(device)
        w_step(forward)
        t1 = concurrency.stamp(device)
        a_step(forward)
        marks.append((t0, t1, concurrency.stamp(device)))

    t_first = 0.0  # with --compile=1 the first iteration also traces and compiles forward and backward
    for i in range(cfg.warmup):
        concurrency.sync(device)
        t0 = time.perf_counter()
        iteration([])
        concurrency.sync(device)
        t_first = t_first or time.perf_counter() - t0
    waited = concurrency.meet(cfg.barrier)
    # No host sync between iterations, as search.py has none: the host queues the next step's kernels while
    # the GPU runs this one. The split into the two steps comes from CUDA events, timed on the GPU's clock.
    marks = []
    concurrency.sync(device)
    n, start = 0, time.perf_counter()
    while (time.perf_counter() - start < cfg.seconds) if cfg.seconds else n < cfg.steps:
        iteration(marks)
        n += 1
    concurrency.sync(device)
    elapsed = time.perf_counter() - start
    t_w, t_a = (sum(concurrency.seconds(device, m[i], m[i + 1]) for m in marks) / n for i in (0, 1))
    t_first = t_first or concurrency.seconds(device, marks[0][0], marks[0][2])  # --warmup=0: the first timed iteration
    t_it = elapsed / n
    reserved = None
    if device.type == "cuda":  # CUDA graphs' private pool: in reserved, not always in allocated
        mem = torch.cuda.max_memory_allocated(device) / 2**20
        reserved = round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
        name = torch.cuda.get_device_name(device)
    else:
        mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        name = runs.cpu_device(torch.get_num_threads())
    out = dict(option=option, space=cfg.space, batch_size=cfg.batch_size, device=name,
               compile=cfg.compile, cuda_graphs=cfg.compile and runs.compile_mode(device, cfg.backend, cfg.cuda_graphs)
               is not None, fast=fast, weight_step_s=round(t_w, 4), arch_step_s=round(t_a, 4),
               first_iteration_s=round(t_first, 2), compile_s=round(max(t_first - t_it, 0.0), 2),
               iteration_s=round(t_it, 4), images_per_s=round(cfg.batch_size / t_it, 1),
               peak_mem_mb=round(mem, 1), peak_reserved_mb=reserved,
               trainable=sum(p.numel() for p in weights), iterations=n, iterations_per_s=round(n / elapsed, 3))
    if cfg.barrier:
        out["barrier_wait_s"] = waited
    if flops:
        out.update(memory)
        gflop, peak = sum(flops.values()), matmul_peak(device, cfg.peak_n)
        out.update({k: round(v, 3) for k, v in flops.items()}, gflop=round(gflop, 3),
                   gflops=round(gflop / t_it, 2), peak_gflops=round(peak, 1),
                   floor_s=round(gflop / peak, 4), over_floor=round(t_it * peak / gflop, 2))
    if cfg.gpu_busy and device.type == "cuda":
        try:  # the profiler over CUDA graphs captured before it first ran: a crash there must not lose the timings
            kernel_s = concurrency.gpu_kernel_seconds(lambda: (w_step(forward), a_step(forward)), cfg.gpu_busy, device)
            out.update(gpu_kernel_s=round(kernel_s, 5), gpu_busy=round(min(kernel_s / t_it, 1.0), 3))
        except RuntimeError as e:
            out["gpu_busy_error"] = " ".join(str(e).split())[:200]
    if cfg.profile:
        out["profile"] = profile_by_kind(lambda: (w_step(forward), a_step(forward)), cfg.profile, device)
        print_profile(out["profile"])
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cfg = cli.parse_config(BenchConfig, argv)
    cli.check_ranges(cfg, RANGES)
    if cfg.threads > (os.cpu_count() or 1):  # torch.set_num_threads crashes (SIGSEGV) far above the cores
        raise cli.ConfigError(f"--threads={cfg.threads}: this machine has {os.cpu_count()} cores")
    options = "ABCD" if cfg.option.lower() == "all" else cfg.option.upper()
    if not options or set(options) - set("ABCD"):
        raise cli.ConfigError(f"--option={cfg.option}: give A, B, C, D, several (e.g. BC) or all")
    if cfg.backend not in ("inductor", "aot_eager", "eager"):
        raise cli.ConfigError(f"--backend={cfg.backend}: choose inductor, aot_eager or eager")
    if cfg.procs > 1:
        if not cfg.seconds:
            raise cli.ConfigError(f"--procs={cfg.procs} times every copy over the same wall-clock window: "
                                   "give its length with --seconds=S")
        print(json.dumps(concurrency.run_procs(cfg, argv, options, __file__)))
        return
    device = runs.pick_device(cfg.device)  # here once (a CPU fallback is announced once, not per option)
    check_peak(cfg, device)
    if len(options) == 1:
        print(json.dumps(bench_option(cfg, options)))
        return
    results = []
    for option in options:  # a fresh process per option: CPU peak RSS (and compile cost) is per process
        args = [a for a in argv if not a.startswith("--option=")] + [f"--option={option}", f"--device={device}"]
        # its stderr passes through: a failed child's own one-line error (or traceback) is what to read
        child = subprocess.run([sys.executable, os.path.abspath(__file__), *args], stdout=subprocess.PIPE, text=True)
        if child.returncode:
            concurrency.child_failed([(f"option {option}", child.returncode)], __file__)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    by = {r["option"]: r for r in results}
    summary = {f"{a}_over_C_{what}": round(by[a][f"{what}_s"] / by["C"][f"{what}_s"], 3)
               for a in "AB" if a in by and "C" in by for what in ("iteration", "weight_step")}
    print(json.dumps({"results": results, "summary": summary}, indent=1))


if __name__ == "__main__":
    cli.run(main)
