"""Device choices on the CPU, with the machine mocked where a GPU would be needed: the suite's CPU
pinning, the global flags a run sets and gives back, and what --device=auto says when it falls back
to the CPU. The same paths on a real GPU are tests/test_cuda.py's."""
import pytest
import torch

from harness import runs
import search
import train

NB201 = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"


def test_cpu_tests_run_on_the_cpu_even_where_cuda_is(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
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
