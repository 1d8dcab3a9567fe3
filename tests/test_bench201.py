"""Tests for bench201.py: every container format, restricted unpickling, paper-convention means,
analytic params/FLOPs against the benchmark's stored costs, one-line errors and the CLI. Fixtures are tiny
hand-built benchmarks in tmp_path (no network, no benchmark download)."""
import bz2
import collections
import hashlib
import io
import itertools
import json
import os
import pickle
import random
import statistics
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

import bench201
from bench201 import BenchmarkFileError, NB201, QueryError

ROOT = Path(__file__).resolve().parents[1]

FORMATS = ("zip", "legacy", "nats_file", "nats_dir")
# 200-epoch seeds per benchmark key; the reader must average exactly these (as api_utils.py get_metrics)
SEEDS = {"cifar10-valid": (777, 888, 999), "cifar10": (777, 888), "cifar100": (777, 888, 999),
         "ImageNet16-120": (888,)}
SETS = {"cifar10-valid": ("x-valid", "ori-test"), "cifar10": ("ori-test",)}  # others: ori-test, x-valid, x-test
NUM_ARCHS, UNEVALUATED = 16, 15


def real_meta_archs():
    """The benchmark's arch list, regenerated as AutoDL's generate_meta_info does and checked by checksum."""
    archs = ["|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops) for ops in itertools.product(bench201.OPS, repeat=6)]
    random.Random(88).shuffle(archs)
    digest = hashlib.sha256("\n".join(archs).encode()).hexdigest()
    assert digest == "83abc799e45cf34e9d2163654668ab998b9a54d01c39e72ca1f71f2cdf356d84"
    return archs


META = real_meta_archs()


# ------------------------------------------------------------------------------------------ fixtures
def value(index, key, seed, setname, epoch):
    v = 10 + index + 3 * list(SEEDS).index(key) + seed / 1000 + epoch / 512 + {"train": 0.1, "x-valid": 0.2,
                                                                                "x-test": 0.3}.get(setname, 0.4)
    return np.float64(v) if seed != 888 else v  # real files mix NumPy and Python floats


def results_count(index, key, seed, epochs):
    """ResultsCount state dict (NB201 API nas_201_api/api_utils.py), keeping 3 epochs so a wrong epoch shows."""
    kept = (0, epochs // 2, epochs - 1)
    sets = SETS.get(key, ("ori-test", "x-valid", "x-test"))
    return {"name": key, "net_state_dict": None, "train_acc5es": None, "train_times": None,
            "train_acc1es": {e: value(index, key, seed, "train", e) for e in kept},
            "train_losses": {e: 1.0 for e in kept}, "params": np.float64(0.5), "flop": np.float64(1.0),
            "arch_config": {"channel": 16, "num_cells": 5, "arch_str": META[index], "class_num": 10},
            "seed": f"{seed:04d}", "epochs": epochs, "latency": [np.float64(0.01)], "eval_names": list(sets),
            "eval_acc1es": collections.OrderedDict((f"{s}@{e}", value(index, key, seed, s, e))
                                                   for s in sets for e in kept),
            "eval_losses": {f"{s}@{e}": 1.0 for s in sets for e in kept}, "eval_times": {}}


def arch_results(index, epochs, seeds):
    return {"arch_index": index, "arch_str": META[index], "clear_net_done": True,
            "dataset_seed": {key: list(s) for key, s in seeds.items()},
            "all_results": {(key, seed): results_count(index, key, seed, epochs)
                            for key, s in seeds.items() for seed in s}}


def payload(nats):
    """NB201 .pth layout ({'full', 'less'}) or NATS layout (OrderedDict {'12', '200'})."""
    infos = {}
    for i in range(NUM_ARCHS - 1):  # the last arch stays unevaluated
        full, less = arch_results(i, 200, SEEDS), arch_results(i, 12, {key: (111,) for key in SEEDS})
        infos[i] = collections.OrderedDict([("12", less), ("200", full)]) if nats else {"full": full, "less": less}
    return {"meta_archs": META[:NUM_ARCHS], "total_archs": NUM_ARCHS, "arch2infos": infos,
            "evaluated_indexes": set(infos) if nats else sorted(infos)}


def _np1_scalar(dtype, data):  # only pickled by name, as numpy 1.x names its scalar constructor
    raise AssertionError


_np1_scalar.__module__, _np1_scalar.__qualname__ = "numpy.core.multiarray", "scalar"


class _Np1Pickler(pickle.Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, np.generic):
            return _np1_scalar, (obj.dtype, obj.tobytes())
        return NotImplemented


def dumps(obj, protocol, np1):
    """numpy 2 pickles scalars as numpy._core.multiarray.scalar; np1=True writes the real files' numpy.core name."""
    if not np1:
        return pickle.dumps(obj, protocol)
    buf, saved = io.BytesIO(), sys.modules.get("numpy.core.multiarray")
    sys.modules["numpy.core.multiarray"] = types.SimpleNamespace(scalar=_np1_scalar)
    try:
        _Np1Pickler(buf, protocol).dump(obj)
    finally:
        sys.modules.pop("numpy.core.multiarray")
        if saved is not None:
            sys.modules["numpy.core.multiarray"] = saved
    return buf.getvalue()


def write_bench(tmp_path, fmt, obj=None, np1=True):
    """Write a benchmark in container `fmt` (torch saves with pickle protocol 2, NATS with 4)."""
    obj = payload(nats=fmt.startswith("nats")) if obj is None else obj
    if fmt == "zip":
        path = tmp_path / "NAS-Bench-201-v1_1.pth"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", dumps(obj, 2, np1))
            zf.writestr("archive/version", "3\n")
    elif fmt == "legacy":
        path = tmp_path / "NAS-Bench-201-v1_0.pth"
        sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
        head = b"".join(pickle.dumps(x, 2) for x in (0x1950A86A20F9469CFC6C, 1001, sys_info))
        path.write_bytes(head + dumps(obj, 2, np1) + pickle.dumps([], 2))
    elif fmt == "nats_file":
        path = tmp_path / "NATS-tss-v1_0-3ffb9.pickle.pbz2"
        path.write_bytes(bz2.compress(dumps(obj, 4, np1)))
    else:
        path = tmp_path / "NATS-tss-v1_0-3ffb9-simple"
        path.mkdir()
        meta = {"meta_archs": obj["meta_archs"], "total_archs": obj["total_archs"], "arch2infos": None,
                "evaluated_indexes": set()}
        (path / "meta.pickle.pbz2").write_bytes(bz2.compress(dumps(meta, 4, np1)))
        for i, infos in (obj["arch2infos"] or {}).items():  # arch 3 uses the short name the loader also accepts
            name = f"{i}.pickle.pbz2" if i == 3 else f"{i:06d}.pickle.pbz2"
            (path / name).write_bytes(bz2.compress(dumps(infos, 4, np1)))
    return path


# (benchmark key, eval set) of each reported number, written out from NAS-Bench-201's own convention
# (D-X-Y/NAS-Bench-201 nas_201_api/api_utils.py print_information; RF-DARTS Tables 2-3), not read from
# bench201._SOURCES: CIFAR-10 valid = the model trained on the 25k half ("cifar10-valid") on the other half
# ("x-valid"), CIFAR-10 test = the model trained on all 50k ("cifar10") on the official test set
# ("ori-test"); CIFAR-100 and ImageNet16-120 split their test set into "x-valid" and "x-test" of one key.
# train: the training accuracy of the model the test number is of.
PAPER_SPLITS = {
    "cifar10": {"valid": ("cifar10-valid", "x-valid"), "test": ("cifar10", "ori-test"), "train": "cifar10"},
    "cifar100": {"valid": ("cifar100", "x-valid"), "test": ("cifar100", "x-test"), "train": "cifar100"},
    "ImageNet16-120": {"valid": ("ImageNet16-120", "x-valid"), "test": ("ImageNet16-120", "x-test"),
                       "train": "ImageNet16-120"},
}


def seed_mean(index, key, setname):
    """The fixture's last-epoch (199) value of `setname` under `key`, averaged over the key's seeds."""
    return sum(float(value(index, key, s, setname, 199)) for s in SEEDS[key]) / len(SEEDS[key])


def expected(index, dataset):
    split = PAPER_SPLITS[dataset]
    (vkey, vset), (tkey, tset) = split["valid"], split["test"]
    return {"valid_acc": seed_mean(index, vkey, vset), "test_acc": seed_mean(index, tkey, tset),
            "train_acc": seed_mean(index, split["train"], "train"),
            "valid_seeds": SEEDS[vkey], "test_seeds": SEEDS[tkey]}


def assert_one_line(err, *fragments):
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


# ------------------------------------------------------------------------------------------ results
@pytest.mark.parametrize("np1", [True, False], ids=["numpy.core", "numpy._core"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_query_gives_seed_mean_of_last_200_epoch_result(tmp_path, fmt, np1):
    """valid / test / train of each dataset are the seed means of PAPER_SPLITS' (key, eval set) pairs; every
    (key, set) the fixture stores has a value of its own, so a swapped or misdirected split cannot pass."""
    stored = [(key, s) for key in SEEDS for s in (*SETS.get(key, ("ori-test", "x-valid", "x-test")), "train")]
    for index in range(NUM_ARCHS - 1):
        assert len({seed_mean(index, key, s) for key, s in stored}) == len(stored)
    bench = NB201(write_bench(tmp_path, fmt, np1=np1))
    assert len(bench) == NUM_ARCHS
    for index in (0, 3, 11, NUM_ARCHS - 2):
        for dataset in bench201.DATASETS:
            result = bench.query(index, dataset)
            assert {k: result[k] for k in bench201._FIELDS} == expected(index, dataset)
            assert (result["index"], result["arch"], result["dataset"]) == (index, META[index], dataset)
            assert (result["params_mb"], result["flops_m"]) == bench201.arch_costs(META[index], dataset)
            assert bench.query(META[index], dataset) == result  # exact-string lookup gives the same row
    assert bench.query(0, "imagenet16-120") == bench.query(0, "ImageNet16-120")
    assert bench.query(np.int64(11), "C10")["index"] == 11
    assert bench.query(3) == bench.query(3, "cifar10")  # the default, as column / ranked / percentiles


@pytest.mark.parametrize("fmt", FORMATS)
def test_query_errors_are_one_line(tmp_path, fmt):
    bench = NB201(write_bench(tmp_path, fmt))
    with pytest.raises(QueryError) as err:
        bench.query(UNEVALUATED, "cifar10")
    assert_one_line(err, f"arch {UNEVALUATED} has no results")
    with pytest.raises(QueryError) as err:
        bench.query(NUM_ARCHS, "cifar10")
    assert_one_line(err, "out of range")
    with pytest.raises(QueryError) as err:
        bench.query(META[1462], "cifar10")  # valid syntax, absent from this 16-arch fixture
    assert_one_line(err, "is not in")
    with pytest.raises(QueryError) as err:
        bench.query(0, "svhn")
    assert_one_line(err, "unknown dataset 'svhn'")


def test_numpy_scalar_stand_ins_decode_every_common_dtype(tmp_path):
    values = [np.float64(0.1), np.float32(2.5), np.float16(-1.5), np.int64(-7), np.int32(5), np.uint8(200),
              np.bool_(True), np.dtype(">f8").type(3.25).astype(">f8"), np.array([1.75], ">f8")[0]]
    for protocol, np1 in ((2, True), (2, False), (4, True), (4, False)):
        path = tmp_path / f"scalars{protocol}{np1}.pkl"
        path.write_bytes(dumps(values, protocol, np1))
        loaded = bench201._unpickle_file(path)
        assert loaded == [v.item() for v in values]
        assert [type(v) for v in loaded] == [float] * 3 + [int] * 3 + [bool, float, float]


# ------------------------------------------------------------------------------------------ safety
class Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("fmt", FORMATS)
def test_hostile_pickle_is_refused_without_running(tmp_path, fmt):
    marker = tmp_path / "pwned"
    obj = payload(nats=fmt.startswith("nats"))
    obj["meta_archs" if fmt == "nats_dir" else "arch2infos"] = Hostile(marker)
    path = write_bench(tmp_path, fmt, obj)
    with pytest.raises(BenchmarkFileError) as err:
        NB201(path)
    assert_one_line(err, "refusing to load", "system")
    if fmt == "nats_dir":  # a per-arch file is read lazily, at query time
        (path / "meta.pickle.pbz2").write_bytes(bz2.compress(dumps({"meta_archs": META[:NUM_ARCHS]}, 4, True)))
        (path / "000000.pickle.pbz2").write_bytes(bz2.compress(pickle.dumps(Hostile(marker), 4)))
        with pytest.raises(BenchmarkFileError) as err:
            NB201(path).query(0, "cifar10")
        assert_one_line(err, "refusing to load")
    assert not marker.exists()


@pytest.mark.parametrize("opcodes, fragment", [
    (b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1.\x85R.", "builtins.eval"),
    (b"\x80\x02csubprocess\nPopen\n.", "subprocess.Popen"),
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x04\x00\x00\x00zlib\x86R.", "encoding 'zlib'"),
    (b"\x80\x02X\x01\x00\x00\x00aQ.", "tensors"),  # persistent id
])
def test_other_globals_and_persistent_ids_are_refused(tmp_path, opcodes, fragment):
    path = tmp_path / "x.pth"
    path.write_bytes(opcodes)
    with pytest.raises(BenchmarkFileError) as err:
        NB201(path)
    assert_one_line(err, fragment)


# ------------------------------------------------------------------------------------------ bad files
@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_file_gives_one_line_error(tmp_path, fmt):
    path = write_bench(tmp_path, fmt)
    target = path / "000011.pickle.pbz2" if fmt == "nats_dir" else path
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    with pytest.raises(BenchmarkFileError) as err:
        NB201(path).query(11, "cifar10")
    assert_one_line(err, "truncated or corrupt", target.name)


def test_wrong_paths_give_one_line_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "plain").mkdir()
    (tmp_path / "other.zip").write_bytes(zipfile_bytes({"a/readme.txt": b"x"}))
    (tmp_path / "bad.csv").write_text("index,arch\n0,x\n")
    cases = {"missing.pth": "no such file", "missing.csv": "no such file", "notes.txt": "not a .pth",
             "empty.pth": "not a .pth", "plain": "not a NATS-Bench -simple dir",
             "other.zip": "without data.pkl", "bad.csv": "header"}
    for name, fragment in cases.items():
        with pytest.raises(BenchmarkFileError) as err:
            NB201(tmp_path / name)
        assert_one_line(err, fragment)
    not_a_bench = tmp_path / "dict.pkl"
    not_a_bench.write_bytes(pickle.dumps({"a": 1}, 2))
    with pytest.raises(BenchmarkFileError) as err:
        NB201(not_a_bench)
    assert_one_line(err, "meta_archs")


def zipfile_bytes(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("arch, fragment", [
    ("|conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv_3x3'"),
    ("|nor_conv_3x3~0|+|none~0|+|none~0|none~1|none~2|", "node 2 has 1 edges, expected 2"),
    ("|nor_conv_3x3~0|+|none~0|none~1|none~2|+|none~0|none~1|none~2|", "node 2 has 3 edges, expected 2"),
    ("|nor_conv_3x3~0|+|none~0|none~1|", "expected 3 '+'-separated nodes"),
    ("|nor_conv_3x3~0|+|none~1|none~0|+|none~0|none~1|none~2|", "must read '~0'"),
    ("|nor_conv_3x3~0|+|none~0|none~x|+|none~0|none~1|none~2|", "must read '~1'"),
    ("|nor_conv_3x3|+|none~0|none~1|+|none~0|none~1|none~2|", "must read '~0'"),
    ("nor_conv_3x3~0+|none~0|none~1|+|none~0|none~1|none~2|", "not wrapped in '|'"),
])
def test_bad_arch_strings_give_one_line_errors(arch, fragment):
    for call in (lambda: bench201.parse_arch(arch), lambda: bench201.arch_costs(arch, "cifar10")):
        with pytest.raises(QueryError) as err:
            call()
        assert_one_line(err, fragment)


# ------------------------------------------------------------------------------------------ costs
# index -> (params MB C10/C100/IN16, MFLOPs C10/C100/IN16), None = not given: the values stored in NATS-Bench's
# NATS-tss-v1_0-3ffb9-simple files (the benchmark's own numbers; index 0 has avg_pool_3x3 edges: pooling
# is not counted)
STORED_COSTS = {
    0: (("0.129306", "0.135156", "0.136456"), ("15.64737", "15.65322", "3.91948")),
    11: (("0.802426", None, None), ("113.95137", None, None)),
}


@pytest.mark.parametrize("index", sorted(STORED_COSTS))
def test_analytic_costs_match_the_stored_benchmark_numbers(index):
    for d, dataset in enumerate(bench201.DATASETS):
        costs = bench201.arch_costs(META[index], dataset)
        for got, want in zip(costs, (STORED_COSTS[index][0][d], STORED_COSTS[index][1][d])):
            if want is not None:  # equal to the printed number of decimals
                assert round(got, len(want.split(".")[1])) == float(want), (index, dataset, got, want)


def arch_of(ops):
    return "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops)


def tiny_network_layers(arch, dataset, C=16, N=5):
    """Every Conv2d and Linear of NB201's infer network, written from its layer shapes (AutoDL
    xautodl/models/cell_infers/tiny_network.py and cells.py; ReLUConvBN and ResNetBasicblock of
    xautodl/models/cell_operations.py), as (C_in, C_out, k, output side, bias), and its BN widths."""
    classes, side = {"cifar10": (10, 32), "cifar100": (100, 32), "ImageNet16-120": (120, 16)}[dataset]
    ops = bench201.parse_arch(arch)
    layers, norms = [(3, C, 3, side, False)], [C]  # stem: Conv2d(3, C, 3, padding=1, bias=False) + BN
    for stage, c in enumerate((C, 2 * C, 4 * C)):
        if stage:  # ResNetBasicblock(c / 2 -> c, stride 2); the stage runs at half the side
            side //= 2
            layers += [(c // 2, c, 3, side, False),  # conv_a: ReLU-Conv 3x3 stride 2-BN
                       (c, c, 3, side, False),       # conv_b: ReLU-Conv 3x3-BN
                       (c // 2, c, 1, side, False)]  # downsample: AvgPool2d(2, 2), then Conv2d 1x1
            norms += [c, c]
        for _ in range(N):  # nor_conv_kxk: ReLU-Conv(c, c, k, bias=False)-BN; none, skip, avg_pool: no conv
            layers += [(c, c, int(op[-1]), side, False) for op in ops if op.startswith("nor_conv_")]
            norms += [c for op in ops if op.startswith("nor_conv_")]
    norms.append(4 * C)  # lastact: BN + ReLU, then global average pooling
    layers.append((4 * C, classes, 1, 1, True))  # classifier: Linear(4C, classes) with bias
    return layers, norms


def tiny_network_costs(arch, dataset):
    """(parameters, MACs) by formula: a conv / linear layer has C_in*C_out*k*k weights (+ C_out biases) and
    does C_in*k*k multiply-accumulates per output element, + 1 for a bias (AutoDL's flop_benchmark.py);
    a BN has 2 parameters per channel and, like pooling and ReLU, costs no MACs."""
    layers, norms = tiny_network_layers(arch, dataset)
    params = sum(ci * co * k * k + bias * co for ci, co, k, _, bias in layers) + 2 * sum(norms)
    macs = sum((ci * k * k + bias) * co * side * side for ci, co, k, side, bias in layers)
    return params, macs


UNIFORM = {op: arch_of([op] * 6) for op in bench201.OPS}  # every edge the same op


def test_costs_equal_the_layer_by_layer_formula():
    # the cheapest cells by hand (CIFAR-10): stem 3*9*16*32^2 = 442,368; each ResNet block (9*c/2*c + 9*c*c +
    # c/2*c) * side^2 = 3,670,016 (c=32 at 16 px, c=64 at 8 px); classifier 64*10 + 10 = 650
    for op in ("none", "skip_connect", "avg_pool_3x3"):
        assert round(bench201.arch_costs(UNIFORM[op], "cifar10")[1] * 1e6) == 442_368 + 2 * 3_670_016 + 650
    archs = list(UNIFORM.values()) + [META[i] for i in (0, 11, 857, 1462, 1835, 4317, 6111, 9930, 11472)]
    archs += random.Random(0).sample(META, 300)
    for arch in archs:
        for dataset in bench201.DATASETS:
            params, flops = bench201.arch_costs(arch, dataset)
            assert (round(params * 1e6), round(flops * 1e6)) == tiny_network_costs(arch, dataset), (arch, dataset)


def test_flops_follow_per_edge_increments_for_every_arch():
    """Turning one skip_connect edge into nor_conv_kxk adds k*k*C*C*H*W MACs in each of the 5 cells of every
    stage: (C, H=W) = (16, 32), (32, 16), (64, 8) on CIFAR, half the sides on ImageNet16-120."""
    per_kk = {"cifar10": 5 * (16**2 * 32**2 + 32**2 * 16**2 + 64**2 * 8**2)}  # 3,932,160
    per_kk["cifar100"], per_kk["ImageNet16-120"] = per_kk["cifar10"], per_kk["cifar10"] // 4
    swaps = 0
    for i, arch in enumerate(META):
        ops, dataset = bench201.parse_arch(arch), bench201.DATASETS[i % 3]
        base = round(bench201.arch_costs(arch, dataset)[1] * 1e6)
        for e in (e for e, op in enumerate(ops) if op == "skip_connect"):
            for k in (1, 3):
                swapped = arch_of(ops[:e] + [f"nor_conv_{k}x{k}"] + ops[e + 1:])
                assert round(bench201.arch_costs(swapped, dataset)[1] * 1e6) - base == k * k * per_kk[dataset]
                swaps += 1
    assert swaps == 2 * 6 * 5**5  # skip_connect on each edge of 5^5 cells


def test_costs_follow_per_edge_increments_for_every_arch():
    # §3.3: 73,306 params + 243,040 per conv3x3 edge + 28,000 per conv1x1 edge (+5,850 C100, +7,150 IN16)
    extra = {"cifar10": 0, "cifar100": 5850, "ImageNet16-120": 7150}
    for i, arch in enumerate(META):
        n3, n1, dataset = arch.count("nor_conv_3x3"), arch.count("nor_conv_1x1"), bench201.DATASETS[i % 3]
        params = 73306 + 243040 * n3 + 28000 * n1 + extra[dataset]
        assert round(bench201.arch_costs(arch, dataset)[0] * 1e6) == params


# ------------------------------------------------------------------------------------------ CSV / CLI
def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "bench201.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("fmt", ["legacy", "nats_dir"])
def test_export_csv_round_trips_every_query(tmp_path, fmt):
    path, table = write_bench(tmp_path, fmt), tmp_path / "table.csv"
    bench = NB201(path)
    assert bench.export_csv(table) == NUM_ARCHS
    small = NB201(table)
    assert small.meta_archs == bench.meta_archs
    for index in range(NUM_ARCHS - 1):
        for dataset in bench201.DATASETS:
            assert small.query(index, dataset) == bench.query(index, dataset)
    with pytest.raises(QueryError) as err:
        small.query(UNEVALUATED, "cifar10")
    assert_one_line(err, "has no results")
    table.write_text(table.read_text()[:-40])  # a cut-off last row
    with pytest.raises(BenchmarkFileError) as err:
        NB201(table)
    assert_one_line(err, "truncated")


def test_cli_prints_row_and_exports(tmp_path):
    path, table = write_bench(tmp_path, "zip"), tmp_path / "t.csv"
    out = run_cli(path, "--index", 11)
    assert out.returncode == 0, out.stderr
    assert META[11] in out.stdout and "0.802426" in out.stdout and "113.95137" in out.stdout
    for dataset in bench201.DATASETS:
        assert f"{expected(11, dataset)['test_acc']:.2f}" in out.stdout
    by_arch = run_cli(path, "--arch", META[11])
    assert by_arch.returncode == 0 and by_arch.stdout == out.stdout
    (tmp_path / "genotype.json").write_text(json.dumps({"space": "nb201", "cell": "nb201", "arch": META[11]}))
    by_file = run_cli(path, f"--arch={tmp_path / 'genotype.json'}")  # what search.py wrote, looked up as it is
    assert by_file.returncode == 0 and by_file.stdout == out.stdout, by_file.stderr
    assert run_cli(path, "--export", table).returncode == 0
    assert run_cli(table, "--index", 11).stdout == out.stdout
    assert NB201(table).query(11, "cifar100") == NB201(path).query(11, "cifar100")


@pytest.mark.parametrize("args, fragment", [
    (["missing.pth", "--index", "0"], "no such file"),
    (["{bench}", "--arch", "|foo~0|+|none~0|none~1|+|none~0|none~1|none~2|"], "unknown op 'foo'"),
    (["{bench}", "--index", "99"], "out of range"),
    (["{bench}", "--arch={darts}"], "holds no NB201 arch string"),
    (["{bench}"], "one of the arguments --arch --index --export is required"),  # argparse's own, one line too
    (["{bench}", "--index=1.5"], "invalid int value"),
    (["{bench}", "--export={bench}"], "is the benchmark being read"),  # never over the file it reads
    (["{bench}", "--export={bench}.d/t.csv"], "No such file or directory"),  # the system refused the write: 1
])
def test_cli_errors_are_one_line_without_traceback(tmp_path, args, fragment):
    bench, darts = write_bench(tmp_path, "legacy"), tmp_path / "darts.json"
    darts.write_text(json.dumps({"space": "darts", "cell": "darts", "normal": [["sep_conv_3x3", 0]]}))
    before = open(bench, "rb").read()
    out = run_cli(*[a.format(bench=bench, darts=darts) for a in args])
    assert out.returncode == (1 if fragment == "No such file or directory" else 2), out.stderr
    assert open(bench, "rb").read() == before and not list(tmp_path.glob("*.tmp*"))
    assert out.stderr.count("\n") == 1 and fragment in out.stderr and "Traceback" not in out.stderr


def test_missing_last_epoch_key_names_the_problem(tmp_path):
    obj = payload(nats=False)
    del obj["arch2infos"][2]["full"]["all_results"][("cifar100", 999)]["eval_acc1es"]["x-test@199"]
    with pytest.raises(BenchmarkFileError) as err:
        NB201(write_bench(tmp_path, "legacy", obj))
    assert_one_line(err, "arch 2", "'cifar100' seed 999 lacks a x-test result", "x-test@199")


# ------------------------------------------------------------------------------------------ against chance
def chance_table(tmp_path):
    """A 7-cell CSV with hand-picked CIFAR-10 test accuracies (None: no result); pools on cells 1, 4, 6."""
    def arch(*ops):
        return "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops)
    rows = [(arch(*["none"] * 6), 10.0), (arch("avg_pool_3x3", *["none"] * 5), 20.0),
            (arch(*["skip_connect"] * 6), 30.0), (arch(*["nor_conv_3x3"] * 6), 30.0),
            (arch(*["avg_pool_3x3"] * 6), 5.0), (arch(*["nor_conv_1x1"] * 6), None),
            (arch(*["nor_conv_1x1"] * 5, "avg_pool_3x3"), 50.0)]
    path = tmp_path / "chance.csv"
    with open(path, "w") as f:
        f.write(",".join(bench201.CSV_HEADER) + "\n")
        for i, (a, test) in enumerate(rows):  # CIFAR-10 valid = test - 1; the other datasets empty
            c10 = ["", ""] if test is None else [repr(test - 1), repr(test)]
            f.write(",".join([str(i), a, *c10, "", "", ""] + [""] * 10) + "\n")
    return NB201(path)


def test_percentiles_and_baselines_of_a_hand_made_table(tmp_path):
    """Sorted CIFAR-10 test: all [5, 10, 20, 30, 30, 50] (the cell without a result left out), pool-free
    [10, 30, 30]; percentile = share strictly below + half the ties."""
    bench = chance_table(tmp_path)
    assert [bench201.pool_free(a) for a in bench.meta_archs] == [True, False, True, True, False, True, False]
    assert bench.ranked() == [5.0, 10.0, 20.0, 30.0, 30.0, 50.0]
    assert bench.ranked(pool_free_only=True) == [10.0, 30.0, 30.0]
    assert bench.ranked("c10", "valid_acc", True) == [9.0, 29.0, 29.0]
    assert bench.baselines() == dict(median_all=25.0, n_all=6, median_pool_free=30.0, n_pool_free=3)
    expected_percentiles = {0: (100 * 1.5 / 6, 100 * 0.5 / 3),   # 10: one cell below, none pool-free below
                            2: (100 * 4 / 6, 100 * 2 / 3),       # 30: 3 below + half of a 2-way tie
                            4: (100 * 0.5 / 6, 0.0),             # 5: the worst; below every pool-free cell
                            6: (100 * 5.5 / 6, 100.0)}           # 50: a pooled cell above every pool-free one
    for index, (everyone, no_pool) in expected_percentiles.items():
        got = bench.percentiles(index)
        assert got == pytest.approx(dict(percentile_all=everyone, percentile_pool_free=no_pool)), index
    assert bench.percentiles(bench.meta_archs[3]) == bench.percentiles(2)  # by arch string; tied cells agree
    assert bench.percentiles(5) == dict(percentile_all=None, percentile_pool_free=None)  # no result
    assert bench201.percentile(25.0, [10.0, 20.0, 30.0]) == pytest.approx(200 / 3)  # need not be an entry
    assert bench201.percentile(7.0, [7.0, 7.0, 7.0]) == 50.0 and bench201.percentile(1.0, [2.0]) == 0.0
    for call, fragment in ((lambda: bench201.percentile(1.0, []), "no cells to rank against"),
                           (lambda: bench.ranked("cifar10", "test"), "unknown result 'test'"),
                           (lambda: bench.ranked("mnist"), "unknown dataset 'mnist'"),
                           (lambda: bench.baselines("cifar100"), "no cifar100 test_acc to take a median of"),
                           (lambda: bench.percentiles(99), "out of range"),
                           (lambda: bench201.pool_free("|none~0|"), "expected 3")):
        with pytest.raises(QueryError) as err:
            call()
        assert_one_line(err, fragment)


def test_cells_are_ints_or_arch_strings_and_complete_means_every_cell(tmp_path):
    """A cell is an int index or an arch string (white space around it ignored, as genotypes.NB201Cell.from_str);
    True, 2.0 or None are refused in one line, not read as cell 1 or a TypeError. `complete`: only a table of
    all 15,625 cells with the column ranks against the whole benchmark (a 7-cell table is partial)."""
    bench = chance_table(tmp_path)
    assert bench.index_of("  " + bench.meta_archs[3] + "\n") == 3
    for bad in (True, 2.0, None):
        with pytest.raises(QueryError) as err:
            bench.query(bad, "cifar10")
        assert_one_line(err, "an int index or an arch string")
    assert bench201.CELLS == 15625 and not bench.complete()


SHARED_TABLE = os.path.join(ROOT, "..", "shared", "data", "nb201", "nb201-public.csv")


@pytest.mark.skipif(not os.path.isfile(SHARED_TABLE), reason="no ../shared/data/nb201/nb201-public.csv")
def test_shared_public_table_gives_the_anchors_of_its_readme():
    import genotypes as G
    bench = NB201(SHARED_TABLE)
    assert len(bench) == 15625 and all(bench.meta_archs[i] == G.nb201_arch(i) for i in (0, 1835, 9930, 15624))

    def acc(index, dataset, key="test_acc"):
        return round(bench.query(index, dataset)[key], 2)
    # 9930: the paper's RF-DARTS cell (Table 3)
    assert (acc(9930, "cifar10", "valid_acc"), acc(9930, "cifar10")) == (91.55, 94.36)
    assert (acc(9930, "cifar100"), acc(9930, "ImageNet16-120")) == (73.51, 46.34)
    assert bench.query(9930, "cifar10")["arch"] == G.RF_DARTS_NB201.to_str()
    # 1835: every edge skip_connect, DARTS' collapse (Table 2's 54.30)
    assert (acc(1835, "cifar10", "valid_acc"), acc(1835, "cifar10")) == (39.77, 54.30)
    assert set(G.NB201Cell.from_str(bench.meta_archs[1835]).ops) == {"skip_connect"}
    # 6111 and 13714: the CIFAR-10 test optimum
    tests = [bench.query(i, "cifar10")["test_acc"] for i in range(len(bench))]
    assert (acc(6111, "cifar10"), acc(13714, "cifar10"), round(max(tests), 2)) == (94.37, 94.37, 94.37)
    # the random baselines: every cell has a CIFAR-10 test accuracy; 4^6 cells have no pooling
    chance = bench.baselines()
    assert (chance["n_all"], chance["n_pool_free"]) == (15625, 4096) and bench.complete()
    assert not bench.complete("cifar100", "valid_acc")  # the public table has no CIFAR-100 valid column
    pool_free = [t for i, t in enumerate(tests) if "pool" not in bench.meta_archs[i]]
    assert (chance["median_all"], chance["median_pool_free"]) == (statistics.median(tests), statistics.median(pool_free))
    assert bench.percentiles(1835)["percentile_all"] < 3 < 99 < bench.percentiles(9930)["percentile_all"]


def test_cli_out_of_memory_is_one_line_naming_the_export(tmp_path, monkeypatch, capsys):
    """A .pth loads whole (v1_1: ~26 GB): running out of RAM ends in one line that names --export, exit 1."""
    def too_big(path):
        raise MemoryError()

    monkeypatch.setattr(bench201, "NB201", too_big)
    assert bench201.main([str(tmp_path / "NAS-Bench-201-v1_1-096897.pth"), "--index", "11"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of memory reading" in err and "--export nb201.csv" in err, err
