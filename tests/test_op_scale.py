"""harness/op_scale.py: the per-edge, per-op mean |gamma| and eta logged beside alpha every epoch."""
import json

import pytest
import torch

import search
from harness import batching, op_scale
from supernet import build_supernet

TINY = ["--dataset=imagefolder", "--C=4", "--batch_size=4", "--log_every=0", "--layers=1"]


@pytest.mark.parametrize("space", ["nb201", "s4"])  # s4: the noise op draws random numbers
def test_measure_leaves_model_and_rng_bit_identical(space):
    model = build_supernet(space, 10, C=4, layers=1 if space == "nb201" else 3, track_running_stats=True,
                           seed=0)
    probe = op_scale.Probe(model, torch.randn(6, 3, 32, 32))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    scales = probe.measure()
    assert torch.equal(rng, torch.get_rng_state())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # BN running statistics put back
    kinds = ("normal",) if space == "nb201" else ("normal", "reduce")
    assert set(scales) == set(kinds)
    assert all(len(v) == len(model.space.edges) for k in kinds for v in scales[k]["eta"].values())


def test_probe_is_the_first_global_batch_for_any_number_of_processes():
    # rank 0 of 2 processes holds every image and a per-process batch of 4: its probe is the 8 images a
    # 1-process search of batch 8 probes, so eta (BN statistics of the probe) does not depend on the count
    x, y = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8), torch.arange(20)
    model = build_supernet("nb201", 10, C=4, layers=1, seed=0)
    kw = dict(device="cpu", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    one = op_scale.make_probe(model, batching.TensorLoader(x, y, 8, **kw))
    two = op_scale.make_probe(model, batching.TensorLoader(x, y, 4, rank=0, world_size=2, **kw))
    assert one.x.shape == (8, 3, 8, 8) and torch.equal(one.x, two.x)


def test_gamma_and_eta_follow_the_bn_weight():
    model = build_supernet("nb201", 10, C=4, layers=1, seed=0)
    probe = op_scale.Probe(model, torch.randn(8, 3, 32, 32))
    base = probe.measure()["normal"]
    assert set(base["gamma"]) == {"nor_conv_1x1", "nor_conv_3x3"}  # the conv ops; skip / pool / none have none
    assert all(g == 1.0 for v in base["gamma"].values() for g in v)  # gamma = 1 at init
    cells = [c for c in model.cells if hasattr(c, "mixed")]
    k, n = model.space.normal[2].index("nor_conv_3x3"), len(cells)
    bn = cells[-1].mixed[2].ops[k].op[2]  # edge 1->2's 3x3 conv op in the last cell: ReLU, conv, BN

    def with_gamma(value):
        with torch.no_grad():
            bn.weight.fill_(value)
        return probe.measure()["normal"]

    zero, two = with_gamma(0.0), with_gamma(-2.0)
    assert two["gamma"]["nor_conv_3x3"][2] == pytest.approx((n - 1 + 2) / n)  # mean |gamma| over cells
    # eta = Var[W gamma / sigma] / Var[W_0] is quadratic in this BN's gamma (sigma: the conv's output,
    # upstream of it): gamma 0, 1, -2 give the last cell's term 0, x, 4x
    x = n * (base["eta"]["nor_conv_3x3"][2] - zero["eta"]["nor_conv_3x3"][2])
    assert x > 0
    assert n * two["eta"]["nor_conv_3x3"][2] == pytest.approx(n * base["eta"]["nor_conv_3x3"][2] + 3 * x, rel=1e-4)
    # edges that do not read node 2 do not see the change
    assert two["eta"]["nor_conv_1x1"][:5] == base["eta"]["nor_conv_1x1"][:5]


def test_a_conv_of_one_weight_has_no_eta():
    """--pc_k equal to C: a 1x1 conv of one channel in and out holds one weight, with no variance to divide by:
    its eta is None (null in alphas.json), not 0 / 0's NaN, which strict JSON readers refuse; gamma is kept."""
    model = build_supernet("darts", 10, C=4, layers=3, pc_k=4, seed=0)
    scales = op_scale.Probe(model, torch.randn(4, 3, 32, 32)).measure()
    sep = scales["normal"]
    assert sep["eta"]["sep_conv_3x3"][0] is None and sep["gamma"]["sep_conv_3x3"][0] == 1.0  # gamma 1 at init
    json.loads(json.dumps(scales, allow_nan=False))  # strict JSON: no NaN anywhere


def test_fast_cell_reports_the_plain_cells_scales():
    """--fast=1's cell calls its BN as a module while the probe hooks it, so sigma is seen."""
    from harness import fast_supernet
    x = torch.randn(8, 3, 32, 32)
    plain, fast = (build_supernet("nb201", 10, C=4, layers=1, seed=0) for _ in range(2))
    assert fast_supernet.speed_up(fast) == 3
    a, b = op_scale.Probe(plain, x).measure(), op_scale.Probe(fast, x).measure()
    for stat in ("gamma", "eta"):
        for op, edges in a["normal"][stat].items():
            assert b["normal"][stat][op] == pytest.approx(edges, rel=1e-4), (stat, op)


def test_search_logs_op_scales_beside_alpha_and_resumes_them(tiny_folder, tmp_path):
    common = TINY + [f"--data={tiny_folder}", "--option=B", "--epochs=2", "--seed=2"]
    search.search(search.make_config(common + [f"--out={tmp_path / 'full'}"]))
    search.search(search.make_config(common + [f"--out={tmp_path / 'cut'}", "--stop_after=1"]))
    search.search(search.make_config([f"--out={tmp_path / 'cut'}", "--resume=1"]))
    full = json.loads((tmp_path / "full" / "alphas.json").read_text())
    cut = json.loads((tmp_path / "cut" / "alphas.json").read_text())
    # option B trains the convs: a resumed run's eta still divides by the variance of the initial weights
    assert [a["op_scale"] for a in full] == [a["op_scale"] for a in cut]
    assert full[0]["op_scale"] != full[1]["op_scale"]  # the convs moved, so eta moved
    assert all("op_scale" not in r for r in json.loads((tmp_path / "full" / "history.json").read_text()))
    assert " eta " in (tmp_path / "full" / "log.txt").read_text()
    import plot  # the figure beside Fig. 5
    paths = plot.main([str(tmp_path / "full"), f"--out={tmp_path / 'fig'}"])
    assert str(tmp_path / "fig" / "op_scale_full.png") in paths


def test_the_harness_imports_no_entry_script():
    """η (Eq. 17-18) is op_scale's, and analysis.py takes it from there: no harness module imports an entry
    script when it is imported (op_scale imported analysis.py for it, an import that ran upward). An import
    inside a function, run only when called, is not counted here."""
    import ast
    import os
    import analysis
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # the entry scripts: the top level less the paper's modules and bench201.py, which is also the
    # dependency-free reader the harness reads benchmark files with
    scripts = {f[:-3] for f in os.listdir(root) if f.endswith(".py")} - {
        "ops", "spaces", "supernet", "genotypes", "architect", "networks", "bench201"}

    def imported_at_import(node):  # the modules a statement imports, function bodies left out
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return set()
        found = {a.name.split(".")[0] for a in node.names} if isinstance(node, ast.Import) else \
            {node.module.split(".")[0]} if isinstance(node, ast.ImportFrom) and node.module else set()
        return found.union(*(imported_at_import(child) for child in ast.iter_child_nodes(node)))

    for name in sorted(os.listdir(os.path.join(root, "harness"))):
        if name.endswith(".py"):
            with open(os.path.join(root, "harness", name)) as f:
                upward = imported_at_import(ast.parse(f.read())) & scripts
            assert not upward, f"harness/{name} imports {sorted(upward)}"
    assert analysis.relative_variance is op_scale.relative_variance
