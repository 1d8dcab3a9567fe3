"""The multi-process plumbing without a second process: bucketed gradient averaging, stop-signal
polling every N steps, per-rank RNG states, and the one-line out-of-memory hint."""
import pytest
import torch
import torch.distributed as dist

from harness import checkpoints, ddp, runs


@pytest.fixture
def one_rank_group():
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_gradients_are_averaged_in_buckets(one_rank_group, monkeypatch):
    calls = []
    real = dist.all_reduce
    monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: (calls.append(t.numel()), real(t, *a, **k))[1])
    grads = [torch.randn(300), None, torch.randn(20, 30), torch.randn(5)]
    before = [g.clone() if g is not None else None for g in grads]
    ddp.average_grads(grads)  # one process: the average is the gradient itself, in one all_reduce
    assert calls == [905] and all(torch.equal(a, b) for a, b in zip(grads, before) if a is not None)
    calls.clear()
    ddp.average_grads(grads, bucket_mb=800 * 4 / 2**20)  # a bucket is sent once it holds >= 800 floats
    assert calls == [900, 5]


def test_stop_signals_poll_every_n_steps_under_ddp():
    stop = checkpoints.StopSignals(world=2, poll_every=10)
    stop.signum = 15
    assert stop.requested(3) == 0     # no collective (there is no process group here to call)
    with pytest.raises((RuntimeError, ValueError)):
        stop.requested(10)             # every 10th step it asks the other ranks
    assert checkpoints.StopSignals(world=1).requested(3) == 0  # one process: its own flag, no collective


def test_rng_states_per_rank():
    torch.manual_seed(1)
    states = [runs.rng_state(), runs.rng_state()]
    torch.manual_seed(2)
    a = torch.rand(3)
    assert ddp.restore_rng(states, rank=1, world=2)
    b = torch.rand(3)
    torch.manual_seed(1)
    assert torch.equal(b, torch.rand(3)) and not torch.equal(a, b)
    assert not ddp.restore_rng(states, rank=0, world=4)   # saved by 2 processes: not restored
    assert ddp.restore_rng(states[0], rank=0, world=1)    # one state, as older runs saved it


def test_out_of_memory_is_one_line_with_what_to_lower(capsys):
    def oom(argv):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15 GiB total)")

    with pytest.raises(SystemExit) as e:
        runs.cli(oom, [])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1 and "lower --batch_size" in err, err
