"""bench.py's distance to the floor: counted FLOPs, the matmul peak, the profile by op kind; and its
sharing numbers, from harness/concurrency.py: gpu_busy's kernel time and --procs's copies at once."""
import json

import pytest
import torch
import torch.nn.functional as F

import bench
from harness import cli, concurrency

TINY = ["--C=4", "--layers=1", "--batch_size=2", "--image_size=16", "--steps=1", "--warmup=0", "--device=cpu",
        "--peak_n=256"]


def test_count_gflop_counts_a_convolution_and_its_backward_exactly():
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    w = torch.randn(6, 4, 3, 3)
    forward = 2 * 2 * 6 * 4 * 9 * 8 * 8  # 2 * batch * C_out * C_in * k * k * H * W (padding 1)
    assert bench.count_gflop(lambda: F.conv2d(x, w, padding=1)) * 1e9 == forward
    # backward: the input gradient only (w needs none), one more convolution's worth
    assert bench.count_gflop(lambda: F.conv2d(x, w, padding=1).sum().backward()) * 1e9 == 2 * forward
    w.requires_grad_(True)  # and the weight gradient: a third
    assert bench.count_gflop(lambda: F.conv2d(x, w, padding=1).sum().backward()) * 1e9 == 3 * forward
    # a depthwise conv (DARTS' sep / dil convs): C_in / groups = 1 input channel per output, in every direction
    # (torch's own formula counts its weight gradient `groups` times over)
    dw = torch.randn(4, 1, 3, 3, requires_grad=True)
    depthwise = 2 * 2 * 4 * 1 * 9 * 8 * 8
    assert bench.count_gflop(lambda: F.conv2d(x, dw, padding=1, groups=4).sum().backward()) * 1e9 == 3 * depthwise


def test_saved_mib_counts_what_autograd_keeps_for_the_backward_exactly():
    x, w = torch.randn(8, 16), torch.randn(4, 16, requires_grad=True)
    step = lambda: F.linear(x, w).sum().backward()  # noqa: E731
    # dL/dw = grad_out^T x needs x (8 x 16 float32: 512 bytes); dL/dx is not asked for, so w is not kept
    assert bench.saved_mib(step) * 2**20 == x.nbytes
    x.requires_grad_(True)  # now dL/dx = grad_out w needs w too, unless w is a parameter held anyway
    assert bench.saved_mib(step) * 2**20 == x.nbytes + w.nbytes
    assert bench.saved_mib(step, [w]) * 2**20 == x.nbytes
    # a view of a kept storage adds nothing (x[:4] shares x's storage)
    assert bench.saved_mib(lambda: (F.linear(x, w) * F.linear(x[:4], w).sum()).sum().backward(), [w]) \
        * 2**20 == x.nbytes + 8 * 4 * 4 + 4  # + the first product and the second's sum, saved by the mul


@pytest.mark.parametrize("name, kind", [
    ("aten::convolution_backward", "conv backward"), ("aten::mkldnn_convolution", "conv forward"),
    ("aten::native_batch_norm_backward", "batch norm backward"), ("aten::addmm", "matmul (classifier)"),
    ("aten::avg_pool2d", "pooling"), ("Optimizer.step#SGD.step", "optimizer"),
    ("cpp_fused_add_mul_0", "inductor kernels"), ("aten::t", "allocation and views"),
    ("aten::mul", "elementwise"), ("something else", "other")])
def test_profile_kinds(name, kind):
    assert bench.kind_of(name) == kind


def test_options_report_flops_peak_floor_and_a_profile(capsys):
    c = bench.bench_option(cli.parse_config(bench.BenchConfig, TINY + ["--fast=0", "--profile=1"]), "C")
    b = bench.bench_option(cli.parse_config(bench.BenchConfig, TINY + ["--fast=0"]), "B")
    for r in (b, c):
        assert r["gflop"] == pytest.approx(r["gflop_weight_step"] + r["gflop_arch_step"], abs=2e-3)
        assert r["gflop_arch_step"] > 0 and r["peak_gflops"] > 0
        assert r["floor_s"] == pytest.approx(r["gflop"] / r["peak_gflops"], rel=1e-2, abs=1e-4)
    # option B's weight step also computes the conv weight gradients; the alpha step computes none in either
    assert b["gflop_weight_step"] > c["gflop_weight_step"] > 0
    assert b["gflop_arch_step"] == pytest.approx(c["gflop_arch_step"])
    # what a GPU must hold: B keeps every conv weight's gradient and momentum, C only the BN affine ones'
    assert b["state_mb"] > c["state_mb"] > 0 and min(b["saved_mb_weight_step"], c["saved_mb_arch_step"]) > 0
    prof = c["profile"]
    assert prof["wall"] > 0 and "conv forward" in prof and "conv backward" in prof
    assert "op kind" in capsys.readouterr().err  # the table on stderr; stdout stays JSON


def test_the_timed_iterations_have_no_sync_between_them_and_cuda_splits_them_by_events(monkeypatch):
    """iteration_s is the timed loop's wall clock over its count (search.py never syncs between steps);
    the split into the two steps comes from the host clock on a CPU and from CUDA events on a GPU."""
    syncs = []
    monkeypatch.setattr(bench.concurrency, "sync", lambda device: syncs.append(device))
    r = bench.bench_option(cli.parse_config(bench.BenchConfig, TINY + ["--flops=0", "--steps=4", "--warmup=2"]), "C")
    assert len(syncs) == 2 * 2 + 2 and r["iterations"] == 4  # around each warm-up, then the timed loop's ends
    assert r["iteration_s"] == pytest.approx(1 / r["iterations_per_s"], rel=1e-2, abs=1e-3)
    assert r["weight_step_s"] > 0 and r["arch_step_s"] > 0
    assert r["weight_step_s"] + r["arch_step_s"] <= r["iteration_s"] + 2e-4  # parts of the same wall clock

    class Event:  # torch.cuda.Event's interface: record() in the stream, elapsed_time in milliseconds
        made = []

        def __init__(self, enable_timing=False):
            assert enable_timing
            self.at = None
            Event.made.append(self)

        def record(self):
            self.at = len(Event.made) * 0.25

        def elapsed_time(self, end):
            return (end.at - self.at) * 1e3
    monkeypatch.setattr(concurrency.torch.cuda, "Event", Event)
    cuda = torch.device("cuda")
    t0, t1 = concurrency.stamp(cuda), concurrency.stamp(cuda)
    assert concurrency.seconds(cuda, t0, t1) == pytest.approx(0.25) and all(e.at is not None for e in Event.made)
    cpu = torch.device("cpu")
    t0 = concurrency.stamp(cpu)
    assert isinstance(t0, float) and concurrency.seconds(cpu, t0, t0 + 2) == 2


def test_the_cuda_peak_runs_at_the_convolutions_precision_and_gives_the_matmul_flag_back(monkeypatch):
    seen = []
    real = torch.randn
    monkeypatch.setattr(bench.torch, "randn", lambda *a, **k: seen.append(torch.backends.cuda.matmul.allow_tf32)
                        or real(*a, **{**k, "device": "cpu"}))
    before = torch.backends.cuda.matmul.allow_tf32
    for conv_tf32 in (True, False):
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", conv_tf32)
        assert bench.matmul_peak(torch.device("cpu"), 64, repeats=1) > 0
        assert seen[-1] is conv_tf32 and torch.backends.cuda.matmul.allow_tf32 is before


def test_busy_seconds_is_the_union_of_intervals():
    assert concurrency.busy_seconds([]) == 0.0
    assert concurrency.busy_seconds([(0, 2), (1, 3), (5, 6)]) == 4  # overlap counted once, the gap not at all
    assert concurrency.busy_seconds([(4, 5), (0, 10), (2, 3)]) == 10  # nested, in any order


def test_gpu_kernel_seconds_reads_the_profiler_and_finds_no_kernel_on_the_cpu():
    x = torch.randn(64, 64)
    assert concurrency.gpu_kernel_seconds(lambda: x @ x, 2, torch.device("cpu")) == 0.0


def test_gpu_kernel_seconds_is_the_union_of_the_profilers_cuda_spans_per_iteration(monkeypatch):
    """With a stand-in profiler's events (microseconds): CUDA kernels 0-10, 5-20 and 30-40 overlap to 30 us
    of GPU work; the CPU event spanning them all is not GPU time; over 2 iterations: 15 us each."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType
    def span(kind, start, end):
        return SimpleNamespace(device_type=kind, time_range=SimpleNamespace(start=start, end=end))

    events = [span(DeviceType.CUDA, 0, 10), span(DeviceType.CPU, 0, 100), span(DeviceType.CUDA, 5, 20),
              span(DeviceType.CUDA, 30, 40)]

    class Profile:
        def __init__(self, activities):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def events(self):
            return events

    monkeypatch.setattr(torch.profiler, "profile", Profile)
    ran = []
    assert concurrency.gpu_kernel_seconds(lambda: ran.append(1), 2, torch.device("cpu")) == pytest.approx(15e-6)
    assert ran == [1, 1]


def test_procs_time_copies_together_and_sum_their_rates():
    argv = TINY + ["--procs=2", "--seconds=0.5", "--threads=1"]
    cfg = cli.parse_config(bench.BenchConfig, argv)
    out = concurrency.run_procs(cfg, argv + ["--option=BC"], "BC", bench.__file__)
    assert out["procs"] == 2 and [r["option"] for r in out["results"]] == ["B", "C"]
    assert all(r["iterations"] >= 1 and "barrier_wait_s" in r for r in out["results"])
    assert out["iterations_per_s"] == pytest.approx(sum(r["iterations_per_s"] for r in out["results"]), abs=2e-3)
    assert out["threads_per_copy"] == 1


def test_procs_copies_share_the_cores_as_a_sweep_does(monkeypatch):
    """--threads=0: each of K copies gets cores // K threads (sweep.py's split), not torch's default of all,
    and as many compile workers (inductor's default: every core in each copy)."""
    seen, envs = [], []
    monkeypatch.delenv("TORCHINDUCTOR_COMPILE_THREADS", raising=False)

    class Child:  # records each copy's command line, prints a result
        returncode = 0

        def __init__(self, argv, **kwargs):
            seen.append(argv)
            envs.append(kwargs["env"])

        def communicate(self):
            return json.dumps(dict(device="cpu", iterations_per_s=1.0)), ""
    monkeypatch.setattr(concurrency.subprocess, "Popen", Child)
    monkeypatch.setattr(concurrency.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(concurrency.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    argv = TINY + ["--procs=6", "--seconds=0.5", "--threads=0"]
    out = concurrency.run_procs(cli.parse_config(bench.BenchConfig, argv), argv, "BC", bench.__file__)
    assert out["threads_per_copy"] == 2 and len(seen) == 6
    assert all([a for a in argv if a.startswith("--threads")] == ["--threads=2"] for argv in seen)
    assert all(env["TORCHINDUCTOR_COMPILE_THREADS"] == env["OMP_NUM_THREADS"] == "2" for env in envs)


def test_procs_without_seconds_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        cli.run(bench.main, TINY + ["--procs=2"])
    assert e.value.code == 2 and "--seconds" in capsys.readouterr().err


@pytest.mark.parametrize("flag, words", [("--image_size=2", "--image_size=2: out of range, must lie in [4, inf)"),
                                         ("--threads=99999", "--threads=99999: this machine has")])  # was SIGSEGV
def test_a_size_or_thread_count_the_run_cannot_take_is_one_line(capsys, flag, words):
    with pytest.raises(SystemExit) as e:
        cli.run(bench.main, TINY + [flag])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and words in err[0], err


def test_a_peak_n_too_big_for_the_machine_is_one_line(capsys):
    """bench.py --peak_n=99999999999 ended in a 30-line CalledProcessError traceback (the peak's child
    could not allocate its matrices): refused before any step, naming --peak_n and why."""
    for option in ("C", "all"):
        with pytest.raises(SystemExit) as e:
            cli.run(bench.main, TINY + ["--peak_n=99999999999", f"--option={option}"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1, err
        assert err.startswith("error: --peak_n=99999999999: the matmul peak needs three 99999999999 x 99999999999 "
                              "float32 matrices, 1.12e+14 GiB, more than the "), err
    # a size the machine has but cannot allocate now: the peak's own allocation says the same in one line
    with pytest.raises(cli.ConfigError, match=r"^--peak_n=99999999999: 1.12e\+14 GiB for the matmul peak could "
                                               r"not be allocated on cpu \(Storage size calculation overflowed"):
        bench.matmul_peak(torch.device("cpu"), 99999999999)


def test_a_failed_child_is_one_line_after_its_own_error(capfd, monkeypatch):
    """--option=BC runs each option in a child: its one-line error passes through and the parent adds one
    line with the child's exit status (was: the child's stderr swallowed, then CalledProcessError)."""
    monkeypatch.setattr(bench, "memory_bytes", lambda device: None)  # the parent lets it through; the child not
    with pytest.raises(SystemExit) as e:
        cli.run(bench.main, TINY + ["--peak_n=99999999999", "--option=BC"])
    err = capfd.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 2, err
    assert err[0].startswith("error: --peak_n=99999999999: the matmul peak needs") and "Traceback" not in err[0]
    assert err[1] == "error: 1 of bench.py's child processes failed: option B (exit 2); the error is above"
