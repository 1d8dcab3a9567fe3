"""Test setup: the repository root on sys.path (the modules are flat files there), one thread per
process, and the synthetic data shared by the tests: a tiny ImageFolder and complete fake
NAS-Bench-201 tables; a mode that refuses float64 tensors (as MPS does)."""
import os
import sys

# Tiny test networks gain nothing from intra-op threads, and on a 2-core CI machine the 2-process DDP
# tests would oversubscribe the cores; subprocesses inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402  (after OMP_NUM_THREADS, which torch reads when it loads)

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

import numpy as np
import pytest
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves


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


def write_nb201_table(path, offsets=(0, 0, 0)):
    """A complete NB201 table in bench201's --export layout with made-up accuracies: for dataset d of
    bench201.DATASETS, valid = fake_nb201_accuracy(index) - 3 + offsets[d], test = that + 3."""
    import bench201
    import genotypes
    with open(path, "w") as f:
        f.write(",".join(bench201.CSV_HEADER) + "\n")
        for i in range(5 ** 6):  # every cell: 5 ops on each of 6 edges
            acc = fake_nb201_accuracy(i)
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


class Float64Refused(TorchFunctionMode):
    """Every torch op that yields a float64 tensor raises, as on Apple's MPS, which has no float64."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in tree_leaves(out)):
            raise TypeError(f"{getattr(func, '__name__', func)} made a float64 tensor, which MPS cannot hold")
        return out


@pytest.fixture
def no_float64(monkeypatch):
    """A context in which a float64 tensor raises (Float64Refused). An ImageFolder's mean/std are
    computed once on the host before anything reaches the device: fixed numbers here."""
    from harness import data
    monkeypatch.setattr(data, "channel_stats", lambda x: ((0.5,) * 3, (0.25,) * 3))
    return Float64Refused
