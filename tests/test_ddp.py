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


def test_gradients_are_averaged_over_two_ranks_in_every_bucket(one_rank_group, monkeypatch):
    """With world size 2, each gradient becomes (own + other rank's) / 2: the all_reduce (SUM, as
    torch.distributed's default) is simulated by adding the other rank's gradients, flattened in the same
    order, to each bucket. Several buckets (800 floats each), so every bucket must be divided by the world
    size, not only the first or the last."""
    torch.manual_seed(0)
    own = [torch.randn(300), None, torch.randn(20, 30), torch.randn(5), torch.randn(900), torch.randn(7, 3)]
    other = [None if g is None else torch.randn_like(g) for g in own]
    other_flat = torch.cat([g.reshape(-1) for g in other if g is not None])
    sent = []  # numel of each bucket all-reduced

    def all_reduce(t, op=dist.ReduceOp.SUM, *a, **k):
        assert op == dist.ReduceOp.SUM
        start = sum(sent)
        t.add_(other_flat[start:start + t.numel()])  # the other rank's share of this bucket
        sent.append(t.numel())

    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 2)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    grads = [None if g is None else g.clone() for g in own]
    ddp.average_grads(grads, bucket_mb=800 * 4 / 2**20)
    assert sent == [900, 905, 21] and sum(sent) == other_flat.numel()  # three buckets, every element once
    for g, mine, theirs in zip(grads, own, other):
        assert g is None if mine is None else torch.allclose(g, (mine + theirs) / 2, rtol=0, atol=1e-6)


def test_stop_signals_poll_every_n_steps_under_ddp(monkeypatch):
    """Under DDP a loop asks `requested(step)` after every step; every step until rank 0 has a pace (steps 1, 2),
    then only every poll_every-th step (at most 10 by default, what train.py and search.py construct) runs the collective, an all_reduce with MAX, so a
    stop asked for on either rank is returned by both at the next poll, never in between. The collective
    is simulated: it records the step and takes the max with the other rank's signal number."""
    polls, other = [], {"signum": 0}

    def all_reduce(t, op=dist.ReduceOp.SUM, *a, **k):
        assert op == dist.ReduceOp.MAX
        polls.append(step)
        t.copy_(torch.maximum(t, torch.tensor([other["signum"], 0], dtype=t.dtype)))  # (signal, poll interval)

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    stop = checkpoints.StopSignals(world=2)
    seen = {}
    for step in range(1, 41):
        if step == 13:
            stop.signum = 15  # SIGTERM on this rank after step 13: seen at the poll of step 20
        if step == 23:
            stop.signum, other["signum"] = 0, 2  # (a fresh start) SIGINT on the other rank: seen at step 30
        seen[step] = stop.requested(step)
    assert polls == [1, 2, 10, 20, 30, 40]  # the collective at the polling steps only: every step until a pace
    assert [s for s in seen if seen[s]] == [20, 30, 40] and (seen[20], seen[30]) == (15, 2)
    assert seen[13] == seen[19] == 0  # asked for, not yet polled: no rank stops before the others
    step = "no step"
    assert stop.requested() == 2 and polls[-1] == "no step"  # without a step it always polls
    polls.clear()
    one = checkpoints.StopSignals(world=1)
    one.signum = 15
    assert one.requested(3) == 15 and polls == []  # one process: its own flag at once, no collective


def test_slow_steps_poll_sooner_with_every_rank_told(monkeypatch):
    """torchrun SIGKILLs its workers 30 s after forwarding a stop, so slow steps poll sooner: rank 0
    proposes as many steps as take STOP_WITHIN_S (1 to 10) with each poll, and the all-reduce's MAX (the
    other rank puts 0) gives both ranks the same interval. Here a step takes 2 s, then 0.1 s."""
    clock, reduced = {"t": 0.0}, []
    monkeypatch.setattr(checkpoints.time, "monotonic", lambda: clock["t"])

    def all_reduce(t, op=dist.ReduceOp.SUM, *a, **k):
        reduced.append(t.tolist())
        t.copy_(torch.maximum(t, torch.zeros_like(t)))  # the other rank: no signal, no proposal

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    stop, polled = checkpoints.StopSignals(world=2), []
    for step in range(1, 31):
        clock["t"] += 2.0 if step <= 12 else 0.1
        if stop.requested(step) == 0 and reduced and len(reduced) > len(polled):
            polled.append(step)
    assert checkpoints.STOP_WITHIN_S == 5.0
    # from the first step (no pace yet: 0 proposed); 2 s a step: every 2 steps; steps 13-14 at 0.1 s: 10 (the cap)
    assert polled == [1, 2, 4, 6, 8, 10, 12, 14, 20, 30]
    assert [r[1] for r in reduced] == [0, 2, 2, 2, 2, 2, 2, 10, 10, 10]
    stop.requested()  # a poll without a step (an epoch's end) forgets the pace: the next proposal is 0
    assert stop.requested(40) == 0 and reduced[-1][1] == 0


def test_rank_seeds_keep_rank_0_and_never_meet_another_runs_seed():
    assert [runs.rank_seed(s, 0) for s in (0, 1, 7)] == [0, 1, 7]  # rank 0 draws what a 1-process run draws
    seeds = {(s, r): runs.rank_seed(s, r) for s in range(8) for r in range(8)}
    assert len(set(seeds.values())) == 64  # seed + rank would give (0, 1) and (1, 0) one stream
    from harness.batching import key_seed
    assert runs.rank_seed(3, 2) == key_seed(3, 2, runs.RANK_TAG)  # a function of (seed, rank) alone: a resume agrees
    assert runs.rank_seed(3, 1) != key_seed(3, 1)  # not the loaders' (seed, epoch 1) stream either


def test_ranks_that_disagree_stop_the_run(monkeypatch):
    """check_ranks_agree compares each tensor with rank 0's copy (a broadcast): equal passes, any
    difference stops the run naming what differs."""
    t = [torch.ones(3), torch.zeros(2)]
    monkeypatch.setattr(ddp.dist, "broadcast", lambda ref, src: None)  # rank 0's copy: this rank's own
    ddp.check_ranks_agree(t, "alpha or a trained weight")

    def other_rank0(ref, src):
        ref.add_(1e-7 if ref.numel() == 2 else 0.0)  # rank 0 holds a different second tensor

    monkeypatch.setattr(ddp.dist, "broadcast", other_rank0)
    with pytest.raises(RuntimeError, match="alpha or a trained weight differs between DDP ranks"):
        ddp.check_ranks_agree(t, "alpha or a trained weight")


def test_rng_states_per_rank():
    torch.manual_seed(1)
    rank0 = runs.rng_state()
    first = torch.rand(3)  # the two saved states differ: rank 1's stream starts where rank 0's left off
    states = [rank0, runs.rng_state()]
    second = torch.rand(3)
    torch.manual_seed(2)
    a = torch.rand(3)
    assert ddp.restore_rng(states, rank=1, world=2)
    b = torch.rand(3)
    assert torch.equal(b, second) and not torch.equal(b, first) and not torch.equal(a, b)
    assert ddp.restore_rng(states, rank=0, world=2) and torch.equal(torch.rand(3), first)
    assert not ddp.restore_rng(states, rank=0, world=4)   # saved by 2 processes: not restored
    assert ddp.restore_rng(states[0], rank=0, world=1)    # one state, as older runs saved it


def test_the_mps_generator_is_saved_and_restored(monkeypatch):
    """On an Apple GPU, device-side randomness (drop path, S4's noise ops) draws from the MPS generator: a
    checkpoint's RNG state holds it too (the generator faked here, so the test runs anywhere)."""
    generator = {"state": torch.tensor([1, 2], dtype=torch.uint8)}
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: generator["state"].clone())
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda s: generator.update(state=s))
    state = runs.rng_state()
    generator["state"] = torch.tensor([9, 9], dtype=torch.uint8)  # the run goes on drawing
    runs.set_rng_state(state)
    assert generator["state"].tolist() == [1, 2]


def test_out_of_memory_is_one_line_with_what_to_lower(capsys):
    def oom(argv):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15 GiB total)")

    with pytest.raises(SystemExit) as e:
        cli.run(oom, [])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1 and "lower --batch_size" in err, err


def test_out_of_host_memory_is_one_line_naming_the_benchmark_csv(capsys):
    """Python's MemoryError and torch's CPU allocator (a RuntimeError, e.g. a --C far too large) alike; any
    other RuntimeError is a bug and keeps its traceback."""
    for error in (MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:127] . DefaultCPUAllocator: can't "
                                              "allocate memory: you tried to allocate 4000000000000 bytes.")):
        def oom(argv):
            raise error

        with pytest.raises(SystemExit) as e:
            cli.run(oom, [])
        err = capsys.readouterr().err
        assert e.value.code == 1 and err.count("\n") == 1 and "--export nb201.csv" in err and "--C" in err, err

    def bug(argv):
        raise RuntimeError("shape mismatch")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        cli.run(bug, [])


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


def test_an_epochs_tally_sums_every_ranks_images(one_rank_group, monkeypatch):
    """search.py's epoch row under DDP: loss and accuracy over the global batch's images, each rank's sums added
    (a second rank simulated: its sums join the all-reduce), not rank 0's alone."""
    from harness.search_run import Tally
    other = [2.0 * 3, 1, 3, 0.5 * 4, 4, 4]  # rank 1: weight steps loss 2.0 on 3 images, 1 right; alpha 0.5 on 4, 4 right
    real = dist.all_reduce
    monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: (real(t, *a, **k), t.add_(torch.tensor(other, dtype=t.dtype)))[1])
    tally = Tally("cpu")
    tally.weight((torch.tensor(1.0), torch.tensor(2)), 5)
    tally.alpha((torch.tensor(1.5), torch.tensor(1)), 4)
    assert Tally.means(tally.total(world=2)) == pytest.approx(((5 + 6) / 8, 3 / 8, (6 + 2) / 8, 5 / 8), rel=1e-12)
    assert Tally.means(tally.local()) == pytest.approx((1.0, 2 / 5, 1.5, 1 / 4))  # rank 0's own, for its progress line


def test_while_armed_a_signal_is_recorded_and_a_second_ctrl_c_stops_at_once_also_after_a_sigterm():
    """A second Ctrl-C stops at once, but not the same one delivered twice within a second (the terminal
    signals torchrun's process group and torchrun forwards it: workers get one keypress as two SIGINTs)."""
    import signal
    now = [100.0]
    for first in (signal.SIGINT, signal.SIGTERM):
        stop = checkpoints.StopSignals()
        stop._clock, stop.armed = (lambda: now[0]), True
        stop._handle(first, None)
        assert stop.requested() == first  # recorded: the loop checkpoints the step, then stops
        if first == signal.SIGTERM:
            stop._handle(signal.SIGINT, None)  # a first Ctrl-C after it: recorded too (the SIGTERM stays)
            assert stop.requested() == signal.SIGTERM
        now[0] += 0.01
        stop._handle(signal.SIGINT, None)  # the same keypress forwarded: still only recorded
        assert stop.requested() == first
        now[0] += checkpoints.SAME_CTRL_C_S
        with pytest.raises(KeyboardInterrupt):
            stop._handle(signal.SIGINT, None)  # the user insists: at once
    stop = checkpoints.StopSignals()  # unarmed (set-up): a Ctrl-C is a KeyboardInterrupt at once
    stop._clock = lambda: now[0]
    with pytest.raises(KeyboardInterrupt):
        stop._handle(signal.SIGINT, None)
    stop._handle(signal.SIGINT, None)  # its forwarded copy does not interrupt the clean-up
