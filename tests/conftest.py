"""Test setup: the repository root on sys.path (the modules are flat files there), one thread per
process, the CPU for every test outside the CUDA set, and the synthetic data shared by the tests: a
tiny ImageFolder and complete fake NAS-Bench-201 tables; a mode that refuses float64 tensors (as MPS
does).

The suite passes on a machine with a GPU as on one without: every test runs on the CPU (the scripts'
--device=auto is pinned to the CPU in this process, and the subprocesses the tests start see no GPU),
except the CUDA set (tests/test_cuda.py, marked `cuda`), which runs only where CUDA is and gives its
subprocesses the GPUs back (CUDA_ENV). Global torch flags a test or a run sets (cuDNN autotuning,
deterministic algorithms) are given back after every test."""
import os
import sys

# Tiny test networks gain nothing from intra-op threads, and on a 2-core CI machine the 2-process DDP
# tests would oversubscribe the cores; subprocesses inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402  (after OMP_NUM_THREADS, which torch reads when it loads)

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# The GPUs stay visible to this process (CUDA reads CUDA_VISIBLE_DEVICES once, when it initialises,
# which happens here) and are hidden from every subprocess a test starts: search.py, train.py, sweep.py
# and torchrun run there with --device=auto and must run on the CPU. CUDA tests pass CUDA_ENV instead.
CUDA = torch.cuda.is_available()
CUDA_ENV = dict(os.environ)
if CUDA:
    torch.cuda.init()
    # Counted now, while the GPUs are visible: from CUDA's initialisation on, the count is cached. Counted
    # after the next line it would be 0, and cached as such, on torch releases whose device_count asks NVML
    # (which re-reads CUDA_VISIBLE_DEVICES) even after initialisation (2.11's torch/cuda/__init__.py does):
    # every CUDA test would then find no GPU.
    torch.cuda.device_count()
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import numpy as np
import pytest
from torch.overrides import TorchFunctionMode


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: runs on CUDA (tests/test_cuda.py); skipped without a GPU")
    config.addinivalue_line("markers", "real_device: sees the real --device=auto (its test mocks the machine)")


@pytest.fixture(autouse=True)
def cpu_unless_cuda_test(request):
    """Outside the CUDA set, --device=auto means the CPU (the bit-identical checks compare CPU runs,
    and a CUDA model next to CPU tensors would fail on a GPU machine), and the global torch flags a
    run sets are given back afterwards, so one test's cuDNN autotuning never reaches another. Its own
    MonkeyPatch: a test's monkeypatch.undo() leaves the pin in place."""
    flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    with pytest.MonkeyPatch.context() as pin:
        if not ({"cuda", "real_device"} & {m.name for m in request.node.iter_markers()}):
            from harness import runs
            real = runs.pick_device
            pin.setattr(runs, "pick_device", lambda name="auto": real("cpu" if name == "auto" else name))
        yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags[:2]
    torch.use_deterministic_algorithms(flags[2], warn_only=flags[3])


def make_image_folder(root, classes=3, train_per_class=8, test_per_class=4, size=16, seed=0):
    """A tiny ImageFolder tree of random PNGs: root/{train,test}/class{k}/{i}.png."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c in range(classes):
            d = os.path.join(root, split, f"class{c}")
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(img).save(os.path.join(d, f"{i}.png"))
    return str(root)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("tiny_folder"))


def fake_nb201_accuracy(index):
    """The fake table's CIFAR-10 test accuracy of cell `index`: 50-95 %, different for neighbours."""
    return 50 + (index * 37 % 4501) / 100


def write_nb201_table(path, offsets=(0, 0, 0), accuracy=fake_nb201_accuracy):
    """A complete NB201 table in bench201's --export layout with made-up accuracies: for dataset d of
    bench201.DATASETS, valid = accuracy(index) - 3 + offsets[d], test = that + 3."""
    import bench201
    import genotypes
    with open(path, "w") as f:
        f.write(",".join(bench201.CSV_HEADER) + "\n")
        for i in range(5 ** 6):  # every cell: 5 ops on each of 6 edges
            acc = accuracy(i)
            cells = [c for off in offsets for c in (repr(acc + off - 3), repr(acc + off), "", "777", "777")]
            f.write(",".join([str(i), genotypes.nb201_arch(i)] + cells) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def nb201_table(tmp_path_factory):
    """The same made-up accuracies for each of the three datasets (write_nb201_table)."""
    return write_nb201_table(tmp_path_factory.mktemp("nb201") / "nb201.csv")


# bench201.DATASETS order: cifar10, cifar100, ImageNet16-120
NB201_OFFSETS = {"cifar10": 0, "cifar100": -10, "ImageNet16-120": -20}


@pytest.fixture(scope="session")
def nb201_table_by_dataset(tmp_path_factory):
    """A table whose datasets differ: test accuracy fake_nb201_accuracy(index) + NB201_OFFSETS[dataset]."""
    return write_nb201_table(tmp_path_factory.mktemp("nb201") / "by_dataset.csv", tuple(NB201_OFFSETS.values()))


def tensors_in(out):
    """The tensors in an op's output: a tensor, or tuples / lists / dicts of them (torch ops return no
    other nesting). Not torch.utils._pytree: a private module whose names differ across torch >= 2.1."""
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, (tuple, list)):
        for item in out:
            yield from tensors_in(item)
    elif isinstance(out, dict):
        for item in out.values():
            yield from tensors_in(item)


class Float64Refused(TorchFunctionMode):
    """Every torch op that yields a float64 tensor raises, as on Apple's MPS, which has no float64."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(t.dtype == torch.float64 for t in tensors_in(out)):
            raise TypeError(f"{getattr(func, '__name__', func)} made a float64 tensor, which MPS cannot hold")
        return out


@pytest.fixture
def no_float64(monkeypatch):
    """A context in which a float64 tensor raises (Float64Refused). An ImageFolder's mean/std are
    computed once on the host before anything reaches the device: fixed numbers here."""
    from harness import data
    monkeypatch.setattr(data, "channel_stats", lambda x: ((0.5,) * 3, (0.25,) * 3))
    return Float64Refused


def alternating_steps(option, steps=3, prepare=None, forward_of=None):
    """A few alternating weight / alpha steps of a tiny NB201 supernet (C=4, one cell per stage), as
    search.py runs them: per step (weight loss, alpha loss, weight grads, alpha grads), and the model.
    `prepare(model)` changes the model first (--fast=1); `forward_of(model)` is what the steps call
    (a compiled forward); by default the model itself."""
    import search
    from supernet import build_supernet, set_trainable
    torch.manual_seed(0)
    model = build_supernet("nb201", 10, C=4, layers=1, seed=0)
    if prepare is not None:
        prepare(model)
    arch = set_trainable(model, option, verbose=False)["arch"]
    weights = [p for p in model.weight_parameters() if p.requires_grad]
    w_opt = torch.optim.SGD(weights, 0.025, momentum=0.9, nesterov=True, weight_decay=5e-4)
    a_opt = torch.optim.Adam(arch, 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    forward = forward_of(model) if forward_of is not None else model
    g = torch.Generator().manual_seed(1)
    record = []
    for _ in range(steps):
        x, xa = torch.randn(8, 3, 16, 16, generator=g), torch.randn(8, 3, 16, 16, generator=g)
        y = torch.randint(0, 10, (8,), generator=g)
        lw, _ = search.weight_step(forward, weights, arch, w_opt, x, y, clip=5.0)
        gw = [p.grad.clone() for p in weights]
        la, _ = search.alpha_step(forward, arch, weights, a_opt, xa, y)
        record.append((lw, la, gw, [p.grad.clone() for p in arch]))
    return record, model


# Stated float32 tolerance between two computations of the same steps (compiled kernels, or --fast's
# rearranged cell: sums fused or reordered): absolute 1e-4 plus relative 1e-3 on losses, gradients,
# alpha and weights after a few steps of a tiny supernet.
STEP_TOL = dict(atol=1e-4, rtol=1e-3)


def assert_steps_agree(option, ref, other):
    """Two alternating_steps results, (record, model) each, agree within STEP_TOL: every step's losses and
    gradients, then every entry of the final state_dict; and the steps really moved alpha (the comparison
    is not between two untouched tensors)."""
    from supernet import build_supernet
    (rec_r, model_r), (rec_o, model_o) = ref, other
    for step, (r, o) in enumerate(zip(rec_r, rec_o)):
        torch.testing.assert_close(o[0], r[0], **STEP_TOL, msg=f"{option} weight loss, step {step}")
        torch.testing.assert_close(o[1], r[1], **STEP_TOL, msg=f"{option} alpha loss, step {step}")
        for gr, go in zip(r[2] + r[3], o[2] + o[3]):
            torch.testing.assert_close(go, gr, **STEP_TOL, msg=f"{option} gradient, step {step}")
    for (n, a), b in zip(model_r.state_dict().items(), model_o.state_dict().values()):
        torch.testing.assert_close(b, a, **STEP_TOL, msg=n)
    assert not torch.equal(model_r.alphas_normal, build_supernet("nb201", 10, C=4, layers=1).alphas_normal)
