"""Device choices on the CPU, with the machine mocked where a GPU would be needed: the suite's CPU
pinning, the global flags a run sets and gives back, and what --device=auto says when it falls back
to the CPU. The same paths on a real GPU are tests/test_cuda.py's."""
import pytest
import torch

from harness import cli, runs
import search
import train

NB201 = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"


def test_cpu_tests_run_on_the_cpu_even_where_cuda_is(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert runs.pick_device("auto") == torch.device("cpu")  # conftest pins auto to the CPU here
    assert runs.pick_device("cuda:1") == torch.device("cuda", 1)  # an explicit device is left alone


@pytest.mark.real_device
def test_auto_picks_cuda_where_it_is(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runs.pick_device("auto") == torch.device("cuda")


def test_a_run_gives_the_global_flags_back(tiny_folder, tmp_path, monkeypatch):
    """A run turns cuDNN autotuning on (on CUDA; faked here) for its own steps only: a later run in the
    same process (the suite, a notebook) starts from the flags it had, and bit-identical checks hold."""
    monkeypatch.setattr(runs, "tune_for", lambda device: setattr(torch.backends.cudnn, "benchmark", True))
    seen, real = [], torch.optim.SGD.step

    def step(self, *a, **k):
        seen.append(torch.backends.cudnn.benchmark)
        return real(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    torch.backends.cudnn.benchmark = False
    common = ["--dataset=imagefolder", f"--data={tiny_folder}", "--C=4", "--layers=1", "--epochs=1",
              "--device=cpu"]
    search.search(search.make_config(common + ["--batch_size=4", "--log_every=0", f"--out={tmp_path / 's'}"]))
    assert seen and all(seen) and not torch.backends.cudnn.benchmark
    seen.clear()
    train.main(common + [f"--arch={NB201}", "--batch_size=8", "--subset=16", f"--out={tmp_path / 't'}"])
    assert seen and all(seen) and not torch.backends.cudnn.benchmark


@pytest.mark.real_device
def test_auto_says_in_one_line_why_it_runs_on_the_cpu(monkeypatch, capsys):
    """A CUDA build of torch without a usable driver falls back to the CPU: once per process, one line
    says why (CUDA's own reason); a CPU-only build, or --device=cpu, says nothing."""
    def no_driver():
        raise RuntimeError("Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU")

    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "init", no_driver)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(runs, "_SAID_CPU", [])
    capsys.readouterr()
    assert runs.pick_device("auto") == torch.device("cpu") == runs.pick_device("auto")
    err = capsys.readouterr().err
    assert err == ("note: running on the CPU: this torch is a CUDA 12.4 build but finds no usable GPU (Found no "
                   "NVIDIA driver on your system) (--device=cpu silences this)\n"), err
    monkeypatch.setattr(runs, "_SAID_CPU", [])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    runs.pick_device("auto")
    assert "CUDA_VISIBLE_DEVICES is empty, so no GPU is visible" in capsys.readouterr().err
    monkeypatch.setattr(runs, "_SAID_CPU", [])
    runs.pick_device("cpu")
    monkeypatch.setattr(torch.version, "cuda", None)  # a CPU-only build: nothing was expected
    runs.pick_device("auto")
    assert capsys.readouterr().err == ""


class FakeDist:
    """torch.distributed's set-up calls, recorded (no process group is made)."""

    def __init__(self, monkeypatch, gpus):
        import torch.distributed as dist
        self.calls = []
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)  # runs.pick_device asks
        monkeypatch.setattr(torch.cuda, "set_device", lambda d: self.calls.append(("set_device", d)))
        monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: self.calls.append((backend, kw)))
        monkeypatch.setattr(dist, "new_group", lambda **kw: self.calls.append(("new_group", kw)) or "data group")


def torchrun_env(monkeypatch, rank, world):
    for k, v in dict(WORLD_SIZE=world, RANK=rank, LOCAL_RANK=rank, LOCAL_WORLD_SIZE=world).items():
        monkeypatch.setenv(k, str(v))


@pytest.mark.parametrize("gpus", [1, 2])
def test_each_torchrun_process_takes_its_gpu_or_one_line_says_why_not(monkeypatch, capsys, gpus):
    from harness import ddp
    fake = FakeDist(monkeypatch, gpus)
    torchrun_env(monkeypatch, 1, 2)
    if gpus == 2:  # one process per GPU: NCCL, bound to this process's GPU, and the long data wait
        assert ddp.setup("cuda") == (1, 2, torch.device("cuda", 1))
        assert fake.calls[:2] == [("set_device", torch.device("cuda", 1)),
                                  ("nccl", dict(rank=1, world_size=2, device_id=torch.device("cuda", 1)))]
        assert fake.calls[2] == ("new_group", dict(backend="gloo", timeout=ddp.DATA_WAIT))
        assert ddp.DATA_WAIT.total_seconds() > 600  # longer than NCCL's default 10 minutes
        return
    with pytest.raises(SystemExit) as e:  # rank 1 of 2 on one GPU: exits quietly, rank 0 says why
        ddp.setup("cuda")
    assert e.value.code == 2 and not fake.calls
    torchrun_env(monkeypatch, 0, 2)
    with pytest.raises(SystemExit) as e:
        cli.run(lambda argv: ddp.setup("cuda"), [])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "2 processes on this node but 1 GPU(s)" in err
    assert "--nproc_per_node=1" in err and "--ddp_backend=gloo" in err and not fake.calls
    torchrun_env(monkeypatch, 1, 2)  # the opt-in: both processes share GPU 0 over gloo
    assert ddp.setup("cuda", "gloo") == (1, 2, torch.device("cuda", 0))
    assert fake.calls[1] == ("gloo", dict(rank=1, world_size=2, device_id=None))
    with pytest.raises(cli.ConfigError, match="--ddp_backend=mpi"):
        ddp.setup("cuda", "mpi")


def test_rank0s_data_preparation_is_waited_for_on_the_long_gloo_group(monkeypatch):
    import torch.distributed as dist
    from harness import ddp
    FakeDist(monkeypatch, 0)
    torchrun_env(monkeypatch, 0, 2)
    assert ddp.setup("cpu") == (0, 2, torch.device("cpu"))
    waits = []
    monkeypatch.setattr(dist, "barrier", lambda group=None: waits.append(group))
    ddp.wait_for_rank0(2)
    ddp.barrier(2)
    assert waits == ["data group", None]
    monkeypatch.setattr(dist, "destroy_process_group", lambda: waits.append("destroyed"))
    ddp.teardown(2)
    assert waits[-1] == "destroyed" and not ddp._DATA_GROUP


def test_cuda_graphs_have_their_own_switch_off_under_ddp(tiny_folder, tmp_path, monkeypatch):
    """--compile=1 replays through CUDA graphs on CUDA only, and train.py keeps them off under DDP by
    default (--cuda_graphs=1 forces them); the mode each case gets, without compiling anything."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert runs.compile_mode(cuda) == "reduce-overhead" and runs.compile_mode(cpu) is None
    assert runs.compile_mode(cuda, cuda_graphs=False) is None and runs.compile_mode(cuda, "aot_eager") is None
    cfg = cli.parse_config(train.Config, [])
    assert train.cuda_graphs_on(cfg, 1) and not train.cuda_graphs_on(cfg, 8)
    assert train.cuda_graphs_on(cli.parse_config(train.Config, ["--cuda_graphs=1"]), 8)
    assert not train.cuda_graphs_on(cli.parse_config(train.Config, ["--cuda_graphs=0"]), 1)
    asked = []
    monkeypatch.setattr(runs, "compile_model", lambda model, enabled, device, **kw: asked.append(kw) or model)
    train.main(["--dataset=imagefolder", f"--data={tiny_folder}", f"--arch={NB201}", "--C=4", "--layers=1",
                "--batch_size=8", "--subset=16", "--epochs=1", "--compile=1", "--device=cpu", f"--out={tmp_path}"])
    assert asked == [dict(cuda_graphs=True)]  # one process


def test_deterministic_runs_turn_autotuning_off_for_their_own_steps(tiny_folder, tmp_path, monkeypatch):
    """--deterministic=1: no cuDNN autotuning and deterministic algorithms while the run's steps run
    (what makes a CUDA run repeat bit for bit; tests/test_cuda.py checks that), all given back after."""
    monkeypatch.setattr(runs, "tune_for", lambda device: setattr(torch.backends.cudnn, "benchmark", True))
    seen, real = [], torch.optim.SGD.step

    def step(self, *a, **k):
        seen.append((torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
                     torch.are_deterministic_algorithms_enabled()))
        return real(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    common = ["--dataset=imagefolder", f"--data={tiny_folder}", "--C=4", "--layers=1", "--epochs=1",
              "--device=cpu", "--deterministic=1"]
    search.search(search.make_config(common + ["--batch_size=4", "--log_every=0", f"--out={tmp_path / 's'}"]))
    train.main(common + [f"--arch={NB201}", "--batch_size=8", "--subset=16", f"--out={tmp_path / 't'}"])
    assert seen and set(seen) == {(False, True, True)}
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic


def test_imagenet_retraining_on_many_gpus_says_what_the_global_batch_leaves_per_gpu():
    from harness import train_run
    big = train_run.data_info("imagenet")  # large images: the ImageNet recipe, batch 128
    cfg = cli.parse_config(train.Config, [], **train.RECIPES["imagenet"])
    note = train.small_batch_note(cfg, big, 8)
    assert "16 images per process for BN on 8 processes" in note and "batch 1024 and lr 0.5" in note
    assert train.small_batch_note(cfg, big, 1) is None and train.small_batch_note(cfg, big, 4) is None
    assert train.small_batch_note(cli.parse_config(train.Config, ["--batch_size=1024"]), big, 8) is None
    assert train.small_batch_note(cfg, train_run.data_info("cifar10"), 8) is None


def test_progress_says_time_left_and_a_full_cpu_search_how_long(monkeypatch):
    from harness import search_run
    lines, now = [], 10_000.0
    monkeypatch.setattr(search_run.time, "time", lambda: now)
    cfg = search.make_config(["--log_every=4", "--epochs=10"])
    tally = search_run.Tally(torch.device("cpu"))
    search_run.progress(lines.append, cfg, 0, 3, 10, tally, now - 20, "ckpt")  # 4 steps in 20 s, 5 s each
    assert lines[-1].endswith("(20s; left: epoch ~30s, run ~8m)")  # 6 steps; + 9 epochs x 10 steps
    search_run.progress(lines.append, cfg, 9, 1, 10, tally, now - 20, "ckpt")  # not a --log_every step
    assert len(lines) == 1
    clock = [now]
    monkeypatch.setattr(search_run.time, "time", lambda: clock[0])

    def steps_timed(c, device, epoch, steps=390, seconds=1.5):
        """A session's first `steps` steps in `epoch`, `seconds` each after 30 s for the first (a compile):
        the note, and the progress line of step 12 at the session's pace."""
        pace, clock[0] = search_run.Pace(), now
        note = search_run.CpuNote(lines.append, c, torch.device(device), 390, pace)
        for step in range(steps):
            clock[0] += 30.0 if step == 0 else seconds
            pace.step()
            note(epoch)
            if step == 11:  # (step + 1) % --log_every == 0
                search_run.progress(paced.append, c, epoch, step, 390, tally, now, "ckpt", pace.seconds())
    paced = []
    steps_timed(cfg, "cpu", 0)
    assert lines[-1] == ("note: on the CPU this search of the whole dataset (C=16) takes about 98m here (1.50 s "
                         "per step, 390 steps x 10 epochs); a reduced run: --subset=4000 --C=8 (the 2-core runs of "
                         "results/README.md), or a GPU")  # the compile's 30 s not counted: 1.50 s, not 6.5
    assert len(lines) == 2
    left = search_run.runs.duration  # 378 steps left in the epoch, 9 more epochs, at 1.50 s (not at 3.9 s)
    assert paced[0].endswith(f"left: epoch ~{left(1.5 * 378)}, run ~{left(1.5 * (378 + 9 * 390))})"), paced
    narrow = search.make_config(["--epochs=10", "--C=8"])
    steps_timed(narrow, "cpu", 0)
    assert "(C=8)" in lines[-1] and "a reduced run: --subset=4000 (the" in lines[-1]
    reduced = search.make_config(["--subset=4000"])
    short = search.make_config(["--epochs=1"])  # 390 steps of 1.5 s: ~10 min, not worth a note
    for c, device, epoch, steps in ((cfg, "cuda", 0, 390), (reduced, "cpu", 0, 390), (cfg, "cpu", 1, 390),
                                    (cfg, "cpu", 0, 5), (short, "cpu", 0, 390)):
        steps_timed(c, device, epoch, steps)
    assert len(lines) == 3  # a GPU, a reduced run, a later epoch, too few steps or a short run: no note
    assert [runs.duration(s) for s in (45, 150, 7200, 3 * 86400)] == ["45s", "2m", "2.0h", "3.0d"]


def test_bench_tunes_cudnn_like_a_run_and_reports_reserved_memory(monkeypatch):
    import bench
    tuned = []
    monkeypatch.setattr(runs, "tune_for", lambda device: tuned.append(device))
    cfg = cli.parse_config(bench.BenchConfig, ["--C=4", "--layers=1", "--batch_size=2", "--image_size=16",
                                                "--steps=1", "--warmup=0", "--device=cpu"])
    result = bench.bench_option(cfg, "C")
    assert tuned == [torch.device("cpu")] and result["peak_reserved_mb"] is None  # CUDA only
    assert result["iteration_s"] > 0 and result["option"] == "C"


def test_a_device_that_is_not_one_is_named_with_the_ones_a_run_takes():
    # torch's own message lists its ~20 device types (ipu, xla, hpu, ...), none of them what a user meant
    with pytest.raises(cli.ConfigError, match=r"^--device=gpu: not a device name; use auto, cpu, cuda, cuda:N or mps$"):
        runs.check_device("gpu")
