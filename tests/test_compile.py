"""--compile=1: no graph breaks in any network's forward, compiled steps agree with eager ones, and a
compiled search resumes exactly.

Inductor needs minutes to compile even a tiny supernet on a loaded 2-core CPU (measured: ~3-4 min per
option, 11 min for this file when each check compiled its own), too long for the suite's budget. So by
default the compiled checks use the "aot_eager" backend: the same dynamo graph capture and AOTAutograd
forward/backward split that --compile=1 runs, without kernel generation. RFDARTS_INDUCTOR_TESTS=1 runs
them with inductor (the real --compile=1 path); the README records that run. Graph-break checks only trace.
"""
import json
import os
import shutil

import pytest
import torch

from harness import runs
import search
from networks import NetworkCIFAR, TinyNetwork
from genotypes import DARTS_V2, NB201Cell
from conftest import STEP_TOL, alternating_steps, assert_steps_agree
from supernet import build_supernet, set_trainable

BACKEND = "inductor" if os.environ.get("RFDARTS_INDUCTOR_TESTS") == "1" else "aot_eager"
# inductor's CPU backend writes and compiles C++: without a compiler there is nothing to test
needs_cc = pytest.mark.skipif(BACKEND == "inductor" and shutil.which("g++") is None
                              and shutil.which("c++") is None,
                              reason="torch.compile with inductor on CPU needs a C++ compiler")



def _graph_breaks(model, x):
    explained = torch._dynamo.explain(model)(x)
    return explained.graph_count, explained.graph_break_count, explained.break_reasons


# Tracing a full DARTS-space supernet takes about a minute; S1 (per-edge DARTS ops) and S4 with
# partial channels + edge normalisation cover the same code paths of supernet.py and ops.py. The NB201
# supernet's forward is checked by the compiled steps below (exactly two graphs, one per step).
@pytest.mark.parametrize("name,kw", [("s1", dict(layers=2)), ("s4", dict(layers=2, pc_k=2))])
def test_supernet_forward_is_one_graph(name, kw):
    if name == "s1" and tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 4):
        pytest.skip("torch 2.1's dynamo breaks S1's edge loop into 4 graphs (same numbers, slower)")
    torch._dynamo.reset()
    model = build_supernet(name, 10, C=4, **kw)
    graphs, breaks, reasons = _graph_breaks(model, torch.randn(2, 3, 16, 16))
    assert (graphs, breaks) == (1, 0), reasons


@pytest.mark.parametrize("net", ["tiny", "cifar"])
def test_network_forward_is_one_graph(net):
    torch._dynamo.reset()
    if net == "tiny":
        model = TinyNetwork(NB201Cell.from_str(
            "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"),
            10, C=4, N=1)
    else:
        model = NetworkCIFAR(DARTS_V2, 10, C=4, layers=3, auxiliary=True)
        model.drop_path_prob = 0.1
    model.train()
    graphs, breaks, reasons = _graph_breaks(model, torch.randn(2, 3, 32, 32))
    assert (graphs, breaks) == (1, 0), reasons


def _steps(option, compiled, steps=3, backend=BACKEND):
    """A few alternating weight/alpha steps; returns per-step (loss, grads) and the final model."""
    return alternating_steps(option, steps, forward_of=lambda m: runs.compile_model(
        m, compiled, torch.device("cpu"), backend=backend))


def counting_aot_eager(returned):
    """The aot_eager backend (AOTAutograd's split, min-cut partition, no kernels) whose backward compiler
    also records how many gradients each backward graph returns (None for an input that needs none)."""
    from functorch.compile import make_boxed_func, min_cut_rematerialization_partition
    from torch._dynamo.backends.common import aot_autograd

    def bw_compiler(gm, example_inputs):
        outs = next(n for n in gm.graph.nodes if n.op == "output").args[0]
        returned.append(sum(o is not None for o in outs))
        return make_boxed_func(gm.forward)
    return aot_autograd(fw_compiler=lambda gm, ex: make_boxed_func(gm.forward), bw_compiler=bw_compiler,
                        partition_fn=min_cut_rematerialization_partition)


# Compiling the tiny supernet's two steps is most of this file's time: each option compiles once, and
# every check below reads this one compiled run (graphs, backward outputs, losses, weights).
@pytest.fixture(scope="module", params=["B", "C"])
def eager_and_compiled(request):
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    returned = []  # per backward graph: how many gradients it returns (aot_eager runs only)
    compiled = _steps(request.param, True, backend=counting_aot_eager(returned) if BACKEND == "aot_eager"
                      else BACKEND)
    graphs = counters["stats"]["unique_graphs"]
    return request.param, _steps(request.param, False), compiled, dict(graphs=graphs, returned=returned)


@needs_cc
def test_compiled_steps_match_eager(eager_and_compiled):
    option, eager, compiled, _ = eager_and_compiled
    assert_steps_agree(option, eager, compiled)
    torch.testing.assert_close(compiled[1].alphas_normal, eager[1].alphas_normal, **STEP_TOL)


@needs_cc
def test_compiled_alpha_step_computes_no_weight_gradient(eager_and_compiled):
    """The alpha step has a backward graph of its own that returns alpha's gradient only, and the weight
    step's returns the trainable weights' only. Two graphs, reused step after step (no recompiles)."""
    option, _, (_, model), seen = eager_and_compiled
    assert seen["graphs"] == 2  # 3 steps of each kind: one graph per step kind, no break, no recompile
    if BACKEND != "aot_eager":
        pytest.skip("backward graphs are counted under aot_eager (inductor's are compiled kernels)")
    after = {n: p.requires_grad for n, p in model.named_parameters()}
    arch = set_trainable(model, option, verbose=False)["arch"]  # the flags option `option` sets
    assert after == {n: p.requires_grad for n, p in model.named_parameters()}  # the steps gave them back
    weights = [p for p in model.weight_parameters() if p.requires_grad]
    assert sorted(seen["returned"]) == [len(arch), len(weights)] and len(weights) > len(arch)


def test_each_set_of_requires_grad_flags_gets_its_own_compiled_function(monkeypatch):
    """The weight and alpha steps (which switch each other's parameters' requires_grad off) never share
    a compiled function, whatever dynamo guards; the same flags again reuse theirs. Each function has a
    code object of its own, as dynamo keeps its graphs per code object."""
    made = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: made.append(fn) or fn)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    forward = runs.compile_model(model, True, torch.device("cpu"))
    x = torch.randn(4, 3)
    for _ in range(2):
        forward(x)  # every parameter trains
        with search.no_grad_for(list(model[0].parameters())):
            torch.testing.assert_close(forward(x), model(x))
    assert len(made) == 2 and made[0].__code__ is not made[1].__code__


def test_with_batch_given_only_full_batches_run_compiled(monkeypatch):
    """search.py's forward: compile_model(..., batch=B) runs an epoch's last partial batch through the
    model itself, so no graph is compiled for one step per epoch."""
    made, ran = [], []

    def fake_compile(fn, **kw):
        made.append(kw)
        return lambda x: ran.append(len(x)) or fn(x)
    monkeypatch.setattr(torch, "compile", fake_compile)
    model = torch.nn.Linear(3, 2)
    forward = runs.compile_model(model, True, torch.device("cpu"), batch=4)
    for n in (4, 2, 4, 3):
        x = torch.randn(n, 3)
        torch.testing.assert_close(forward(x), model(x), rtol=0, atol=0)
    assert ran == [4, 4] and len(made) == 1 and made[0]["dynamic"] is False


def test_a_step_whose_parameters_get_no_gradient_stops():
    """gradient_step refuses a step in which none of its parameters reaches the loss (what a replayed
    graph of the other step gives) instead of silently leaving them where they are."""
    model, unused = torch.nn.Linear(3, 2), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([unused], lr=0.1, weight_decay=0.1)
    with pytest.raises(RuntimeError, match="gradients are all None"):
        search.gradient_step(model, [unused], opt, torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    assert unused.grad is None and torch.equal(unused, torch.zeros(2))


@needs_cc
def test_compiled_option_c_keeps_convs_frozen(eager_and_compiled):
    option, _, (_, model_c), _ = eager_and_compiled
    init = build_supernet("nb201", 10, C=4, layers=1, seed=0)
    convs = [n for n, m in model_c.named_modules() if isinstance(m, torch.nn.Conv2d)]
    same = [torch.equal(model_c.get_submodule(n).weight, init.get_submodule(n).weight) for n in convs]
    assert all(same) if option == "C" else not any(same)


@needs_cc
def test_compiled_search_resumes_exactly(tiny_folder, tmp_path, monkeypatch):
    """What a resume restores (weights, optimiser states, alpha, RNG) through the compiled wrapper. The
    kernels are the checks above's business, so outside the inductor run this traces with dynamo's
    "eager" backend (the same graph capture, guards and OptimizedModule, without AOTAutograd's
    forward/backward split: 28 s instead of 38 s on a loaded 2-core CPU)."""
    real = runs.compile_model
    backend = "inductor" if BACKEND == "inductor" else "eager"
    monkeypatch.setattr(runs, "compile_model", lambda *a, **k: real(*a, **{**k, "backend": backend}))
    tiny = ["--dataset=imagefolder", f"--data={tiny_folder}", "--C=4", "--batch_size=5", "--layers=1",
            "--epochs=2", "--seed=3", "--compile=1"]  # 12 images per half: steps of 5, 5 and 2 (eager)
    full, _ = search.search(search.make_config(tiny + [f"--out={tmp_path / 'full'}"]))
    search.search(search.make_config(tiny + [f"--out={tmp_path / 'cut'}", "--stop_after=1"]))
    resumed, history = search.search(search.make_config([f"--out={tmp_path / 'cut'}", "--resume=1"]))
    assert [h["epoch"] for h in history] == [1, 2]
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n
    rows = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2] and "alphas" not in rows[0]
    # compile is a speed setting: a compiled run may be continued eagerly (and vice versa)
    cfg = search.make_config([f"--out={tmp_path / 'cut'}", "--resume=1", "--epochs=3", "--compile=0"])
    assert not cfg.compile and cfg.epochs == 3


def test_changing_drop_path_does_not_recompile():
    """train.py --compile=1 sets drop_path_prob to a 0-dim tensor it fills every epoch: one graph for
    the whole ramp, p = 0 included, where the kept masks are the identity (same values as eager's skip)."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    model = NetworkCIFAR(DARTS_V2, 10, C=4, layers=3, auxiliary=False).train()
    x = torch.randn(2, 3, 16, 16)
    model.drop_path_prob = 0.0
    plain = model(x)
    p = torch.zeros(())
    model.drop_path_prob = p
    torch.testing.assert_close(model(x), plain, rtol=0, atol=0)  # at p = 0 the kept masks are the identity
    forward = runs.compile_model(model, True, torch.device("cpu"), backend="aot_eager")
    outs = []
    for value in (0.0, 0.1, 0.2, 0.3):
        model.drop_path_prob = p.fill_(value)
        outs.append(forward(x))
    assert counters["stats"]["unique_graphs"] == 1  # one graph for the whole ramp, epoch 0 included
    assert not torch.equal(outs[0], outs[3])  # the tensor's value really reached the graph


def test_compiled_retraining_runs_without_per_epoch_recompiles(tiny_folder, tmp_path, monkeypatch):
    import train
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    real = runs.compile_model
    monkeypatch.setattr(runs, "compile_model", lambda *a, **k: real(*a, **{**k, "backend": BACKEND}))
    train.main(["--arch=DARTS_V2", "--dataset=imagefolder", f"--data={tiny_folder}", "--C=4",
                "--layers=3", "--batch_size=8", "--epochs=4", "--compile=1", f"--out={tmp_path}"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 4 and 0 <= metrics["test_acc"] <= 1
    # 4 epochs with drop path ramping 0 -> 0.15 over 24 images in batches of 8 (no partial batch):
    # one training graph for the whole run
    assert counters["stats"]["unique_graphs"] == 1
