"""The CUDA set: what only a GPU can check, skipped where CUDA is not available (every other test runs on
the CPU on any machine, see conftest.py). `python scripts/gpu_check.py` runs this file on the first
GPU machine and records the result; `python -m pytest -q tests/test_cuda.py` runs it alone.

Covered: compiled steps replayed through CUDA graphs against eager ones (losses, gradients and alpha
within a stated tolerance, no graph skipped) and a compiled search's own loop and resume, bf16 autocast and channels_last in train.py with the test
set scored in float32, the on-device TensorLoader (the CPU's batches), the CUDA RNG state through a
checkpoint and a --deterministic=1 search that repeats and resumes bit for bit, the out-of-memory line,
a run's cuDNN flags given back, the sweep's searches on the GPUs, and two torchrun processes on the
GPUs (NCCL on two; on one, refused in one line, then shared over gloo with --ddp_backend=gloo).
Nothing here times anything: scripts/gpu_check.py measures.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import CUDA, CUDA_ENV
from harness import batching, cli, runs
import search
import sweep
import train
from supernet import build_supernet, set_trainable

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--dataset=imagefolder", "--C=4", "--batch_size=4", "--log_every=0", "--device=cuda"]
# Compiled against eager on the GPU, float32 with TF32 off: fused kernels and other cuDNN algorithms
# reorder sums, so after a few steps of a tiny supernet values agree to 1e-3 (relative and absolute).
TOL = dict(atol=1e-3, rtol=1e-3)


@pytest.fixture
def no_tf32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _steps(option, compiled, steps=3):
    """A few alternating weight/alpha steps on the GPU -> per step (losses, gradients), final model."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_supernet("nb201", 10, C=4, layers=1, seed=0).to(device)
    arch = set_trainable(model, option, verbose=False)["arch"]
    weights = [p for p in model.weight_parameters() if p.requires_grad]
    w_opt = torch.optim.SGD(weights, 0.025, momentum=0.9, nesterov=True, weight_decay=5e-4)
    a_opt = torch.optim.Adam(arch, 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    forward = runs.compile_model(model, compiled, device)  # inductor + CUDA graphs, as search.py
    g = torch.Generator().manual_seed(1)
    record = []
    for _ in range(steps):
        x, xa = (torch.randn(8, 3, 16, 16, generator=g).to(device) for _ in range(2))
        y = torch.randint(0, 10, (8,), generator=g).to(device)
        lw, _ = search.weight_step(forward, weights, arch, w_opt, x, y, clip=5.0)
        gw = [p.grad.clone() for p in weights]
        la, _ = search.alpha_step(forward, arch, weights, a_opt, xa, y)
        record.append((lw.clone(), la.clone(), gw + [p.grad.clone() for p in arch]))
    return record, model


def test_this_process_still_counts_the_gpus_it_hides_from_its_subprocesses():
    """conftest.py hides the GPUs from every subprocess (CUDA_VISIBLE_DEVICES=""); this process keeps them."""
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "" and torch.cuda.device_count() >= 1
    assert runs.pick_device("cuda").type == "cuda" and len(torch.cuda.get_rng_state_all()) >= 1


@pytest.mark.parametrize("option", ["B", "C"])
def test_compiled_steps_with_cuda_graphs_match_eager(option, no_tf32):
    from torch._dynamo.utils import counters
    assert runs.compile_mode(torch.device("cuda")) == "reduce-overhead"
    torch._dynamo.reset()
    counters.clear()
    eager, model_e = _steps(option, False)
    # a graph that cannot be captured raises here instead of falling back to eager without a word
    # compile_threads=1: inductor's worker processes would inherit conftest's CUDA_VISIBLE_DEVICES="" (torch
    # 2.11's workers look for a GPU driver when they load Triton kernels); in this process they see the GPU
    with torch._inductor.config.patch({"triton.cudagraph_or_error": True, "compile_threads": 1}):
        compiled, model_c = _steps(option, True)
    assert counters["inductor"]["cudagraph_skips"] == 0
    for step, (e, c) in enumerate(zip(eager, compiled)):
        torch.testing.assert_close(c[0], e[0], **TOL, msg=f"{option} weight loss, step {step}")
        torch.testing.assert_close(c[1], e[1], **TOL, msg=f"{option} alpha loss, step {step}")
        for ge, gc in zip(e[2], c[2]):
            torch.testing.assert_close(gc, ge, **TOL, msg=f"{option} gradient, step {step}")
    torch.testing.assert_close(model_c.alphas_normal, model_e.alphas_normal, **TOL)
    init = build_supernet("nb201", 10, C=4, layers=1, seed=0).alphas_normal
    assert not torch.equal(model_e.alphas_normal.cpu(), init)  # the steps moved alpha


def test_compiled_search_with_cuda_graphs_runs_the_real_loop_and_resumes(tiny_folder, tmp_path, no_tf32):
    """search.py --compile=1 on CUDA through its own loop (second in this file: it is what the Table 2 sweep
    runs, so a check cut short still has it): the weight and
    alpha graphs replayed step after step, each epoch's last partial batch eager (12 images per half in
    steps of 5, 5, 2), a run stopped after epoch 1 and resumed (compiling again) ending where the
    uninterrupted one does; no graph skipped and alpha moved."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    common = ["--dataset=imagefolder", f"--data={tiny_folder}", "--C=4", "--layers=1", "--batch_size=5",
              "--epochs=2", "--seed=3", "--compile=1", "--log_every=0", "--device=cuda"]
    with torch._inductor.config.patch({"triton.cudagraph_or_error": True, "compile_threads": 1}):
        full, history = search.search(search.make_config(common + [f"--out={tmp_path / 'full'}"]))
        search.search(search.make_config(common + [f"--out={tmp_path / 'cut'}", "--stop_after=1"]))
        resumed, _ = search.search(search.make_config([f"--out={tmp_path / 'cut'}", "--resume=1"]))
    assert counters["inductor"]["cudagraph_skips"] == 0
    assert [h["epoch"] for h in history] == [1, 2] and all(h["train_loss"] == h["train_loss"] for h in history)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(b, a, **TOL, msg=name)
    init = build_supernet("nb201", 3, C=4, layers=1, seed=3).alphas_normal  # the tiny folder: 3 classes
    assert not torch.equal(full.alphas_normal.detach().cpu(), init)


def test_train_runs_bf16_channels_last_and_scores_in_float32(tiny_folder, tmp_path, monkeypatch):
    seen = []
    real = torch.nn.Conv2d.forward

    def conv_forward(self, x):
        out = real(self, x)
        if out.is_cuda:  # (training step?, dtype, NHWC?); count_macs runs on the CPU before
            seen.append((torch.is_grad_enabled(), out.dtype, out.is_contiguous(memory_format=torch.channels_last)))
        return out

    monkeypatch.setattr(torch.nn.Conv2d, "forward", conv_forward)
    train.main(["--arch=DARTS_V2", "--dataset=imagefolder", f"--data={tiny_folder}", "--C=4", "--layers=3",
                "--batch_size=8", "--subset=16", "--epochs=1", "--device=cuda", f"--out={tmp_path}"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["amp"] and config["channels_last"]  # the defaults: on for CUDA
    training = [s for s in seen if s[0]]
    assert training and all(dtype == torch.bfloat16 for _, dtype, _ in training)
    scoring = [s for s in seen if not s[0]]  # the test set, scored once at the end: float32
    assert scoring and all(dtype == torch.float32 for _, dtype, _ in scoring)
    # NHWC from the stem on (a strided slice, as in FactorizedReduce, may hand cuDNN another layout)
    assert training[0][2] and sum(nhwc for _, _, nhwc in seen) >= 0.9 * len(seen)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= metrics["test_acc"] <= 1 and metrics["test_loss"] == metrics["test_loss"]
    row = json.loads((tmp_path / "history.json").read_text())[0]  # the epoch's peaks of GPU memory
    assert 0 < row["gpu_mem_mb"] <= row["gpu_reserved_mb"]


def test_tensor_loader_on_cuda_gives_the_cpu_batches():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (40,), generator=g)
    kw = dict(mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3), train=True, cutout=4, seed=3)
    loaders = [batching.TensorLoader(x, y, 8, torch.device(d), **kw) for d in ("cpu", "cuda")]
    for loader in loaders:
        loader.set_epoch(2)
    pairs = list(zip(*loaders))
    assert len(pairs) == 5
    for (xc, yc), (xg, yg) in pairs:  # the draws come from a CPU generator: the same crops, flips, cutouts
        assert xg.device.type == yg.device.type == "cuda"
        assert torch.equal(yg.cpu(), yc)
        torch.testing.assert_close(xg.cpu(), xc, rtol=0, atol=1e-6)


def test_cuda_rng_state_survives_a_checkpoint(tmp_path):
    torch.cuda.manual_seed_all(5)
    torch.randn(3, device="cuda")
    torch.save(runs.rng_state(), tmp_path / "rng.pt")
    want = torch.randn(4, device="cuda")
    torch.randn(10, device="cuda")
    state = torch.load(tmp_path / "rng.pt", weights_only=True)  # as a checkpoint is read back
    assert len(state["cuda"]) == torch.cuda.device_count()
    runs.set_rng_state(state)
    assert torch.equal(torch.randn(4, device="cuda"), want)


def test_deterministic_cuda_search_repeats_and_resumes_bit_for_bit(tiny_folder, tmp_path):
    """--deterministic=1 on CUDA: S4 (its noise op draws from the CUDA RNG on every forward) run twice
    ends bit-identical, and a run stopped after epoch 1 and resumed ends as the uninterrupted one."""
    common = TINY + [f"--data={tiny_folder}", "--space=s4", "--layers=2", "--epochs=2", "--seed=3",
                     "--deterministic=1"]
    full, _ = search.search(search.make_config(common + [f"--out={tmp_path / 'full'}"]))
    again, _ = search.search(search.make_config(common + [f"--out={tmp_path / 'again'}"]))
    search.search(search.make_config(common + [f"--out={tmp_path / 'cut'}", "--stop_after=1"]))
    resumed, history = search.search(search.make_config([f"--out={tmp_path / 'cut'}", "--resume=1"]))
    assert [h["epoch"] for h in history] == [1, 2] and next(resumed.parameters()).is_cuda
    for other in (again, resumed):
        for (name, a), b in zip(full.state_dict().items(), other.state_dict().values()):
            assert torch.equal(a, b), name


def test_search_on_cuda_gives_the_cudnn_flags_back(tiny_folder, tmp_path):
    torch.backends.cudnn.benchmark = False
    seen = []
    real = search.gradient_step

    def step(*args, **kwargs):
        seen.append(torch.backends.cudnn.benchmark)
        return real(*args, **kwargs)

    search.gradient_step, argv = step, TINY[:-1] + ["--device=auto", f"--data={tiny_folder}",
                                                    "--layers=1", "--epochs=1", f"--out={tmp_path}"]
    try:
        model, _ = search.search(search.make_config(argv))
    finally:
        search.gradient_step = real
    assert next(model.parameters()).is_cuda and "device cuda" in (tmp_path / "log.txt").read_text()
    history = json.loads((tmp_path / "history.json").read_text())
    mem, held = history[0]["gpu_mem_mb"], history[0]["gpu_reserved_mb"]  # the epoch's peaks, also logged
    assert 0 < mem <= held and f" mem {mem:.0f}/{held:.0f}MB" in (tmp_path / "log.txt").read_text()
    assert seen and all(seen) and not torch.backends.cudnn.benchmark  # on for the run, off after it


def test_out_of_memory_on_cuda_is_one_line(capsys):
    def oom(argv):
        torch.empty(1 << 50, dtype=torch.uint8, device="cuda")  # 1 PiB

    with pytest.raises(SystemExit) as e:
        cli.run(oom, [])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1 and "out of memory" in err and "--batch_size" in err, err


def test_sweep_runs_its_searches_on_the_gpus(tiny_folder, tmp_path, monkeypatch):
    if CUDA_ENV.get("CUDA_VISIBLE_DEVICES") is None:  # the sweep sees the machine's GPUs, as a user's would
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", CUDA_ENV["CUDA_VISIBLE_DEVICES"])
    summary = sweep.main([f"--out={tmp_path}", "--options=C", "--seeds=1,2", "--dataset=imagefolder",
                          f"--data={tiny_folder}", "--C=4", "--layers=1", "--batch_size=4", "--epochs=1",
                          "--log_every=0"])
    seeds = summary["C"]["seeds"]
    assert [r["state"] for r in seeds] == ["finished", "finished"], seeds
    devices = [r["device"] for r in seeds]
    assert all(d.startswith("GPU ") for d in devices) and len(set(devices)) == min(2, torch.cuda.device_count())
    for r in seeds:  # each search saw its one GPU as cuda:0
        assert "device cuda" in open(os.path.join(r["folder"], "log.txt")).read()


def test_two_torchrun_processes_on_the_gpus(tiny_folder, tmp_path):
    """Two GPUs: NCCL, one process each. One GPU: refused in one line, then shared over gloo."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "search.py", *TINY,
           f"--data={tiny_folder}", "--layers=1", "--epochs=1"]
    extra = []
    if torch.cuda.device_count() == 1:
        r = subprocess.run(cmd + [f"--out={tmp_path / 'refused'}"], cwd=ROOT, env=CUDA_ENV, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode != 0 and "torchrun started 2 processes on this node but 1 GPU(s)" in r.stderr, r.stderr
        extra = ["--ddp_backend=gloo"]
    r = subprocess.run(cmd + extra + [f"--out={tmp_path / 'run'}"], cwd=ROOT, env=CUDA_ENV, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "2 process(es), device cuda" in log and "epoch 1/1" in log  # alpha agreement is checked each epoch
