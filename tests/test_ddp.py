"""The multi-process plumbing without a second process: bucketed gradient averaging, stop-signal
polling every N steps, per-rank RNG states, and the one-line out-of-memory hint."""
import pytest
import torch
import torch.distributed as dist

from harness import checkpoints, cli, ddp, runs


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
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15 GiB total)")

    with pytest.raises(SystemExit) as e:
        cli.run(oom, [])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1 and "lower --batch_size" in err, err


def test_parameters_a_cell_leaves_without_gradient_are_found():
    """What DDP must be told (find_unused_parameters): a DARTS cell that never reads input state 0, or
    reads it only through `noise`, leaves preprocess0 without gradient. The probe runs on a copy:
    weights, BN statistics and RNG untouched."""
    import genotypes as G
    from networks import NetworkCIFAR
    x = torch.zeros(2, 3, 32, 32)
    assert ddp.unused_parameters(NetworkCIFAR(G.DARTS_V2, 10, C=4, layers=3, auxiliary=True), x) == []
    normal = [("sep_conv_3x3", 1), ("skip_connect", 1), ("sep_conv_3x3", 1), ("skip_connect", 2),
              ("max_pool_3x3", 1), ("skip_connect", 3), ("skip_connect", 4), ("dil_conv_3x3", 2)]
    for first in (("sep_conv_3x3", 1), ("noise", 0)):  # s0 not read, or read only through noise
        g = G.Genotype([first] + normal[1:], G.DARTS_CONCAT, G.DARTS_V2.reduce, G.DARTS_CONCAT)
        net = NetworkCIFAR(g, 10, C=4, layers=3, auxiliary=False)  # cell 0 normal, cells 1-2 reduction
        before, rng = {k: v.clone() for k, v in net.state_dict().items()}, torch.get_rng_state()
        unused = ddp.unused_parameters(net, x)
        assert unused and all(n.startswith("cells.0.preprocess0.") for n in unused), unused
        assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
        assert torch.equal(rng, torch.get_rng_state()) and all(p.grad is None for p in net.parameters())
