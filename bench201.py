"""NAS-Bench-201 / NATS-Bench (topology) reader using only the Python standard library.

Owns the lookups behind the NB201 columns of RF-DARTS Tables 2 and 3: given an arch string or index,
return CIFAR-10 / CIFAR-100 / ImageNet16-120 valid and test accuracy with the paper convention
(NB201 API `nas_201_api/api_201.py`, get_more_info(hp='200', is_random=False): last epoch, mean over the
stored seeds; CIFAR-10 valid = `cifar10-valid` x-valid, CIFAR-10 test = `cifar10` ori-test, the others
x-valid / x-test; percent, as stored), plus
params (MB = 1e6 parameters, as the benchmark's stored numbers; today's `xautodl/utils/flop_benchmark.py`
divides by 2**20) and FLOPs (1e6 conv/linear multiply-accumulates, as that file counts them) computed
analytically, because the stored costs are wrong for some archs
(NATS-Bench issue #36, AutoDL-Projects issue #134).

Files it reads (the ones `nas_201_api/api_201.py` and NATS-Bench's `nats_bench/api_utils.py` load), from `path`:
  NAS-Bench-201-v1_[01]-*.pth   torch zip container (`*/data.pkl`) or legacy torch layout (pickles)
  NATS-tss-v1_0-3ffb9.pickle.pbz2        one bz2 pickle of the whole benchmark
  NATS-tss-v1_0-3ffb9-simple/            meta.pickle.pbz2 + one {index:06d}.pickle.pbz2 per arch
  table.csv                              written by `--export` (index, arch, per-dataset results)
Pickles go through a restricted Unpickler: only OrderedDict, set and NumPy scalars are rebuilt, the
latter by NumPy-free stand-ins; any other global (os.system, eval, ...) is refused before it runs.

Memory / time: the official API needs ~28 GB RAM for v1_1 (4.7 GB file) and ~1 min to load. A
pickle can only be materialised whole, so this reader also holds the entire v1_0/v1_1 payload while
loading (it keeps only a small summary afterwards). Measured on a synthetic full-structure legacy
.pth (200-epoch dicts, 4 datasets x 3 seeds, plus 12-epoch results; 0.23 MB of pickle per arch):
peak RSS ~5.5x the pickle size and ~22 s per GB on one core, i.e. ESTIMATED ~26 GB / ~2 min for
v1_1 and ~12 GB / ~1 min for v1_0. A NATS -simple directory is read lazily (meta + one ~0.15 MB file,
~20 ms, per queried arch). Convert once on a big machine:
`python bench201.py NAS-Bench-201-v1_1-096897.pth --export nb201.csv` (~5 MB); NB201('nb201.csv')
then opens 15,625 archs in <1 s with ~35 MB of RAM.

Against chance (is a found cell better than a random one?): NB201.ranked (one column over every cell, or
over the 4,096 pool-free cells, sorted), NB201.baselines (the medians of both: what a random cell gets),
NB201.percentiles (where one cell stands in both), percentile (the mid-rank definition), pool_free.

Public: NB201(path).query(arch_or_index, dataset="cifar10") -> dict, NB201.index_of, NB201.export_csv, NB201.column,
NB201.ranked, NB201.baselines, NB201.percentiles, NB201.complete, CELLS, arch_costs(arch, dataset), parse_arch(arch), pool_free(arch),
percentile(value, ranked), BenchmarkFileError, QueryError; CLI: see main().
"""
import argparse
import bisect
import bz2
import collections
import csv
import json
import operator
import os
import pickle
import statistics
import struct
import sys
import zipfile

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")  # NB201 order
DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
# What to do when a .pth does not fit in RAM (a pickle loads whole); harness/cli.py says it too
TOO_BIG = ("a NAS-Bench-201 .pth loads whole (v1_1: ~26 GB of RAM); convert it once with "
           "`python bench201.py FILE --export nb201.csv`")
# (benchmark key, eval set) behind the valid and the test number of each dataset (as NATS-Bench's
# `nats_bench/api_utils.py` remap_dataset_set_names pairs them);
# train_acc is taken from the test key (for CIFAR-10: the model trained on all 50k images)
_SOURCES = {
    "cifar10": (("cifar10-valid", "x-valid"), ("cifar10", "ori-test")),
    "cifar100": (("cifar100", "x-valid"), ("cifar100", "x-test")),
    "ImageNet16-120": (("ImageNet16-120", "x-valid"), ("ImageNet16-120", "x-test")),
}
_ALIASES = {"cifar10": "cifar10", "c10": "cifar10", "cifar100": "cifar100", "c100": "cifar100",
            "imagenet16120": "ImageNet16-120", "imagenet16": "ImageNet16-120", "in16": "ImageNet16-120",
            "imagenet": "ImageNet16-120"}
_SHAPES = {"cifar10": (10, 32), "cifar100": (100, 32), "ImageNet16-120": (120, 16)}  # classes, input h=w
_FIELDS = ("valid_acc", "test_acc", "train_acc", "valid_seeds", "test_seeds")
_NO_RESULT = dict(valid_acc=None, test_acc=None, train_acc=None, valid_seeds=(), test_seeds=())
CSV_HEADER = ["index", "arch"] + [f"{ds}_{f}" for ds in DATASETS for f in _FIELDS]
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of torch's legacy (non-zip) .pth layout
CELLS = len(OPS) ** 6  # 15,625: every NB201 cell; a table with fewer is partial (a cut CSV, a -simple folder
                       # missing files) and moves what a random cell gets (NB201.baselines): `complete` says so


class BenchmarkFileError(ValueError):
    """A benchmark file is missing, truncated, of an unknown format or holds something unexpected."""


class QueryError(ValueError):
    """A bad arch string, index or dataset name, or an arch the file has no results for."""


def parse_arch(arch):
    """'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' -> the 6 ops in edge order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2."""
    if not isinstance(arch, str):
        raise QueryError(f"arch must be a string, got {type(arch).__name__}")
    nodes, ops = arch.split("+"), []
    if len(nodes) != 3:
        raise QueryError(f"bad arch {arch!r}: expected 3 '+'-separated nodes (6 edges), got {len(nodes)}")
    for i, node in enumerate(nodes, 1):
        if len(node) < 2 or node[0] != "|" or node[-1] != "|":
            raise QueryError(f"bad arch {arch!r}: node {i} {node!r} is not wrapped in '|'")
        tokens = node[1:-1].split("|")
        if len(tokens) != i:  # node i has one edge from each earlier node: 1 + 2 + 3 = 6 edges
            raise QueryError(f"bad arch {arch!r}: node {i} has {len(tokens)} edges, expected {i} (6 in all)")
        for j, token in enumerate(tokens):
            op, _, source = token.partition("~")
            if op not in OPS:
                raise QueryError(f"bad arch {arch!r}: unknown op {op!r}, expected one of {', '.join(OPS)}")
            if source != str(j):
                raise QueryError(f"bad arch {arch!r}: edge {token!r} of node {i} must read '~{j}' "
                                 f"(inputs 0..{i - 1} in order)")
            ops.append(op)
    return ops


def canonical_dataset(dataset):
    key = str(dataset).lower().replace("-", "").replace("_", "")
    if key not in _ALIASES:
        raise QueryError(f"unknown dataset {dataset!r}, expected one of {', '.join(DATASETS)}")
    return _ALIASES[key]


def pool_free(arch):
    """Whether no edge of an NB201 arch string is avg_pool_3x3: 4^6 = 4,096 of the 15,625 cells. Of the
    five ops, leaving out this one raises the median cell most (CIFAR-10 test), so the pool-free cells
    are the harder random baseline: a search that only learned to avoid pools beats the median of all
    cells, not necessarily theirs."""
    return "avg_pool_3x3" not in parse_arch(arch)


def percentile(value, ranked):
    """Percentile (0-100) of `value` in `ranked` (numbers sorted ascending) by the mid-rank definition:
    100 x (the share of entries strictly below `value` + half the share equal to it). A value tied with
    the whole population is at 50, the best of n distinct values at 100 (1 - 1 / (2n)), a value below
    all at 0; a value need not be one of the entries."""
    if not ranked:
        raise QueryError("no cells to rank against (the benchmark has no results for this column)")
    below, upto = bisect.bisect_left(ranked, value), bisect.bisect_right(ranked, value)
    return 100 * (below + (upto - below) / 2) / len(ranked)


def arch_costs(arch, dataset):
    """(params in MB, FLOPs in M) of the NB201 infer network (C=16, N=5), as the benchmark counts them."""
    ops, (classes, h) = parse_arch(arch), _SHAPES[canonical_dataset(dataset)]
    c = 16
    params, flops = 27 * c + 2 * c, 27 * c * h * h  # stem: conv3x3 3->16 (no bias) + BN (not counted)
    for stage in range(3):
        if stage:  # ResNet block c->2c, stride 2: conv_a (3x3, s2), conv_b (3x3), shortcut avgpool + 1x1
            h, macs = h // 2, 9 * c * 2 * c + 9 * 4 * c * c + c * 2 * c
            params, flops, c = params + macs + 8 * c, flops + macs * h * h, 2 * c  # + two BNs of 2c
        for op in ops:  # 5 cells per stage; only ReLU-Conv-BN edges cost anything
            k = {"nor_conv_1x1": 1, "nor_conv_3x3": 9}.get(op, 0)
            params += 5 * (k * c * c + 2 * c) if k else 0
            flops += 5 * k * c * c * h * h
    params += 2 * c + c * classes + classes  # lastact BN + linear classifier with bias
    flops += c * classes + classes  # AutoDL's counter adds one op per output for the bias
    return params / 1e6, flops / 1e6


# ---------------------------------------------------------------- restricted unpickling (OrderedDict, NumPy scalars)
class _DType:
    """NumPy-free numpy.dtype: keeps the type code ('f8', 'i8', ...) and the byte order from __setstate__."""

    def __init__(self, code, align=False, copy=True):
        self.code, self.order = code, "<"

    def __setstate__(self, state):  # numpy's state is (3, '<', ...); '|' and '=' mean native: little
        if isinstance(state, tuple) and len(state) > 1 and state[1] == ">":
            self.order = ">"


_STRUCT_CODES = {"f8": "d", "f4": "f", "f2": "e", "i8": "q", "i4": "i", "i2": "h", "i1": "b",
                 "u8": "Q", "u4": "I", "u2": "H", "u1": "B", "b1": "?"}


def _scalar(dtype, data):
    """NumPy-free numpy.core.multiarray.scalar(dtype, raw bytes) -> Python float / int / bool."""
    fmt = _STRUCT_CODES.get(getattr(dtype, "code", None))
    if fmt is None or not isinstance(data, bytes):
        raise BenchmarkFileError(f"unsupported NumPy scalar of dtype {getattr(dtype, 'code', dtype)!r}")
    return struct.unpack(dtype.order + fmt, data)[0]


def _latin1(text, encoding="latin1"):
    """Protocol-2 pickles (torch.save's default) spell bytes as _codecs.encode(str, 'latin1')."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise BenchmarkFileError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


_ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict,
            ("builtins", "set"): set, ("__builtin__", "set"): set,
            ("numpy.core.multiarray", "scalar"): _scalar, ("numpy._core.multiarray", "scalar"): _scalar,
            ("numpy", "dtype"): _DType, ("_codecs", "encode"): _latin1}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):  # called before any global is used, so nothing else can run
        if (module, name) not in _ALLOWED:
            raise BenchmarkFileError(f"refusing to load {module}.{name}: not a NAS-Bench-201 data type")
        return _ALLOWED[(module, name)]

    def persistent_load(self, pid):
        raise BenchmarkFileError("file holds tensors (a weights archive?), not the results-only benchmark")


def _unpickle_file(path):
    """The object in a torch .pth (zip or legacy), a bz2 pickle or a plain pickle; read whole."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(0)
            if head.startswith(b"PK\x03\x04"):  # torch >= 1.6 zip container: pickle in */data.pkl
                with zipfile.ZipFile(f) as zf:
                    names = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                    if not names:
                        raise BenchmarkFileError("zip file without data.pkl, not a torch .pth")
                    with zf.open(names[0]) as member:
                        return _SafeUnpickler(member).load()
            if head.startswith(b"BZh"):  # NATS .pickle.pbz2
                with bz2.open(f) as stream:
                    return _SafeUnpickler(stream).load()
            if not head.startswith(b"\x80"):
                raise BenchmarkFileError("not a .pth, .pickle.pbz2 or .csv benchmark file")
            first = _SafeUnpickler(f).load()
            if first != _TORCH_MAGIC:
                return first  # a plain pickle of the benchmark dict
            _SafeUnpickler(f).load(), _SafeUnpickler(f).load()  # protocol version, sys-info dict
            return _SafeUnpickler(f).load()  # the payload; an (empty) storage-key list follows
    except BenchmarkFileError as err:  # a refused global, an odd scalar, no data.pkl, ...: name the file
        raise BenchmarkFileError(f"{path}: {err}") from None
    except FileNotFoundError:
        raise BenchmarkFileError(f"{path}: no such file") from None
    except (pickle.UnpicklingError, EOFError, OSError, zipfile.BadZipFile, ValueError, struct.error,
            KeyError, IndexError, TypeError, AttributeError) as err:
        detail = " ".join(str(err).split())  # keep the error on one line
        raise BenchmarkFileError(f"{path}: truncated or corrupt file ({type(err).__name__}: {detail})") from None


def _seed_mean(state, key, setname, where):
    """Mean over dataset_seed[key] of the last-epoch value of `setname` (as NB201 API `api_utils.py`
    get_metrics); None if absent."""
    seeds = tuple(state["dataset_seed"].get(key, ()))
    values = []
    for seed in seeds:
        try:
            rc = state["all_results"][(key, seed)]
            last = rc["epochs"] - 1
            values.append(rc["train_acc1es"][last] if setname == "train" else
                          rc["eval_acc1es"][f"{setname}@{last}"])
        except (KeyError, TypeError) as err:
            message = f"{where}: {key!r} seed {seed} lacks a {setname} result ({err!r})"
            raise BenchmarkFileError(message) from None
    return (sum(values) / len(values) if values else None), seeds


def _summarise(infos, where):
    """{'full'/'200': ArchResults-state, ...} -> {dataset: {valid_acc, test_acc, train_acc, *_seeds}}."""
    state = infos.get("200", infos.get("full")) if isinstance(infos, dict) else None
    if not isinstance(state, dict) or not isinstance(state.get("dataset_seed"), dict):
        raise BenchmarkFileError(f"{where}: no 200-epoch ('200' / 'full') ArchResults")
    row = {}
    for ds, ((vkey, vset), (tkey, tset)) in _SOURCES.items():
        valid, valid_seeds = _seed_mean(state, vkey, vset, where)
        test, test_seeds = _seed_mean(state, tkey, tset, where)
        train, _ = _seed_mean(state, tkey, "train", where)
        if (valid, test) != (None, None):
            row[ds] = dict(valid_acc=valid, test_acc=test, train_acc=train,
                           valid_seeds=valid_seeds, test_seeds=test_seeds)
    return row


def check_file(path):
    """Refuse at a glance what NB201(path) would refuse after reading it: no such file, a folder that is not a
    NATS-Bench -simple one, a .csv whose header is not `--export`'s. For a run's start-up checks (the table
    itself is read later; a whole .pth takes minutes)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise BenchmarkFileError(f"{path}: no such file or folder")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "meta.pickle.pbz2")):
        raise BenchmarkFileError(f"{path}: not a NATS-Bench -simple dir (no meta.pickle.pbz2)")
    if path.lower().endswith(".csv"):
        try:
            with open(path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), None)
        except (ValueError, UnicodeDecodeError, csv.Error) as err:
            raise BenchmarkFileError(f"{path}: bad CSV ({type(err).__name__}: {err})") from None
        if header != CSV_HEADER:
            raise BenchmarkFileError(f"{path}: header is not that of a bench201 --export CSV")


class NB201:
    """Paper-convention results + analytic costs. The .pth / single .pbz2 is read whole in __init__
    (see the module docstring for RAM); a NATS -simple directory reads one small file per new arch."""

    def __init__(self, path):
        self.path, self._dir = os.fspath(path), None
        self._rows = {}  # index -> _summarise() result; filled on demand for a -simple directory
        self._ranked = {}  # (dataset, field, pool_free_only) -> ranked(); filled on first use
        is_csv = self.path.lower().endswith(".csv")
        check_file(self.path)  # missing, a folder without the meta file, a CSV of another header
        if os.path.isdir(self.path):
            self._dir, payload = self.path, _unpickle_file(os.path.join(self.path, "meta.pickle.pbz2"))
        elif is_csv:
            payload = self._read_csv()
        else:
            payload = _unpickle_file(self.path)
        if not isinstance(payload, dict) or not isinstance(payload.get("meta_archs"), list):
            raise BenchmarkFileError(f"{self.path}: no 'meta_archs' list, not a NAS-Bench-201 benchmark")
        self.meta_archs = payload["meta_archs"]
        self._index = {arch: i for i, arch in enumerate(self.meta_archs)}
        if self._dir is None and not is_csv:  # whole-file formats: keep only the small summary
            if not isinstance(payload.get("arch2infos"), dict):
                raise BenchmarkFileError(f"{self.path}: no 'arch2infos' dict, not a NAS-Bench-201 benchmark")
            for index, infos in payload["arch2infos"].items():
                self._rows[index] = _summarise(infos, f"{self.path} arch {index}")

    def __len__(self):
        return len(self.meta_archs)

    def complete(self, dataset="cifar10", field="test_acc"):
        """Whether every one of the CELLS NB201 cells has `field` of `dataset`: only then are baselines and
        percentiles against the whole benchmark. Reads every file of a -simple folder (as ranked does)."""
        return len(self.meta_archs) == CELLS and len(self.ranked(dataset, field)) == CELLS

    def index_of(self, arch_or_index):
        """Benchmark index of an int index or an exact (full 6-edge) arch string (surrounding white space
        ignored, as genotypes.NB201Cell.from_str does)."""
        if isinstance(arch_or_index, str):
            arch = arch_or_index.strip()
            parse_arch(arch)  # one-line syntax errors before the lookup
            if arch not in self._index:
                raise QueryError(f"arch {arch!r} is not in {self.path}")
            return self._index[arch]
        try:  # an int; not a bool (True is no cell's index), a float or None
            if isinstance(arch_or_index, bool):
                raise TypeError
            index = operator.index(arch_or_index)
        except TypeError:
            raise QueryError(f"a cell is an int index or an arch string, not {arch_or_index!r}") from None
        if not 0 <= index < len(self.meta_archs):
            raise QueryError(f"index {index} out of range 0..{len(self.meta_archs) - 1}")
        return index

    def _results(self, index, missing_ok=False):
        if index not in self._rows and self._dir is not None:
            for name in (f"{index:06d}.pickle.pbz2", f"{index}.pickle.pbz2"):
                file = os.path.join(self._dir, name)
                if os.path.isfile(file):
                    self._rows[index] = _summarise(_unpickle_file(file), file)
                    break
        if not self._rows.get(index) and not missing_ok:
            raise QueryError(f"arch {index} has no results in {self.path}")
        return self._rows.get(index, {})

    def query(self, arch_or_index, dataset="cifar10"):
        """{index, arch, dataset, valid_acc, test_acc, train_acc (percent, seed mean; None if not stored),
        valid_seeds, test_seeds, params_mb, flops_m}."""
        ds, index = canonical_dataset(dataset), self.index_of(arch_or_index)
        arch = self.meta_archs[index]
        result = self._results(index).get(ds, _NO_RESULT)
        params_mb, flops_m = arch_costs(arch, ds)
        return dict(index=index, arch=arch, dataset=ds, **result, params_mb=params_mb, flops_m=flops_m)

    def column(self, dataset="cifar10", field="test_acc"):
        """`field` (valid_acc, test_acc or train_acc) of `dataset` for every cell in index order, None where
        the file holds none. A NATS -simple directory reads all its files for it."""
        ds = canonical_dataset(dataset)
        if field not in _FIELDS[:3]:
            raise QueryError(f"unknown result {field!r}, expected one of {', '.join(_FIELDS[:3])}")
        return [self._results(i, missing_ok=True).get(ds, _NO_RESULT)[field] for i in range(len(self.meta_archs))]

    def ranked(self, dataset="cifar10", field="test_acc", pool_free_only=False):
        """`field` of `dataset` (column) over every cell that has it, sorted ascending: the population a
        found cell is ranked in; `pool_free_only`: only the pool-free cells (pool_free). Kept after the
        first call."""
        key = (canonical_dataset(dataset), field, bool(pool_free_only))
        if key not in self._ranked:
            values = zip(self.meta_archs, self.column(dataset, field))
            self._ranked[key] = sorted(v for arch, v in values
                                       if v is not None and (not pool_free_only or pool_free(arch)))
        return self._ranked[key]

    def baselines(self, dataset="cifar10", field="test_acc"):
        """What a cell drawn at random gets: {median_all, median_pool_free} (`field` of `dataset`, the
        median over every cell and over the pool-free cells) and the cells counted, {n_all, n_pool_free}."""
        out = {}
        for name, only in (("all", False), ("pool_free", True)):
            ranked = self.ranked(dataset, field, only)
            if not ranked:
                raise QueryError(f"{self.path} has no {canonical_dataset(dataset)} {field} to take a median of")
            out.update({f"median_{name}": statistics.median(ranked), f"n_{name}": len(ranked)})
        return out

    def percentiles(self, arch_or_index, dataset="cifar10", field="test_acc"):
        """{percentile_all, percentile_pool_free}: where the cell's `field` of `dataset` stands among every
        cell and among the pool-free cells (percentile's mid-rank definition; the cell need not be pool-free
        itself); None for a cell without that result."""
        ranked = {name: self.ranked(dataset, field, only) for name, only in (("all", False), ("pool_free", True))}
        value = self._results(self.index_of(arch_or_index), missing_ok=True).get(
            canonical_dataset(dataset), _NO_RESULT)[field]
        return {f"percentile_{name}": None if value is None else percentile(value, r) for name, r in ranked.items()}

    def export_csv(self, out_path):
        """Write CSV_HEADER rows for every arch (empty cells where no results); returns the count. Never over
        the file it reads; written beside out_path and renamed, so a stop leaves no half table there."""
        if os.path.exists(out_path) and os.path.samefile(out_path, self.path):
            raise BenchmarkFileError(f"--export={out_path} is the benchmark being read: give another file")
        tmp = f"{out_path}.tmp{os.getpid()}"
        try:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(CSV_HEADER)
                for index, arch in enumerate(self.meta_archs):
                    row = self._results(index, missing_ok=True)
                    cells = [row.get(ds, _NO_RESULT)[field] for ds in DATASETS for field in _FIELDS]
                    writer.writerow([index, arch] + [_format_cell(value) for value in cells])
            os.replace(tmp, out_path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return len(self.meta_archs)

    def _read_csv(self):
        try:
            with open(self.path, newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                if next(reader, None) != CSV_HEADER:
                    raise BenchmarkFileError(f"{self.path}: header is not that of a bench201 --export CSV")
                archs = []
                for line, cells in enumerate(reader, 2):
                    if len(cells) != len(CSV_HEADER) or cells[0] != str(len(archs)):
                        raise BenchmarkFileError(f"{self.path} line {line}: truncated or out-of-order row")
                    archs.append(cells[1])
                    values = iter(cells[2:])
                    row = {ds: {f: _parse_cell(next(values), f) for f in _FIELDS} for ds in DATASETS}
                    self._rows[len(archs) - 1] = {ds: r for ds, r in row.items()  # as _summarise() drops them
                                                  if (r["valid_acc"], r["test_acc"]) != (None, None)}
        except BenchmarkFileError:
            raise
        except FileNotFoundError:
            raise BenchmarkFileError(f"{self.path}: no such file") from None
        except (ValueError, UnicodeDecodeError, csv.Error) as err:
            raise BenchmarkFileError(f"{self.path}: bad CSV ({type(err).__name__}: {err})") from None
        return {"meta_archs": archs}


def _format_cell(value):  # repr() round-trips floats exactly; seeds are space-separated ints
    if value is None:
        return ""
    return " ".join(map(str, value)) if isinstance(value, tuple) else repr(value)


def _parse_cell(cell, field):
    if field.endswith("_seeds"):
        return tuple(int(s) for s in cell.split())
    return float(cell) if cell else None


def format_row(bench, arch_or_index):
    """The table row of one arch on all three datasets, as the CLI prints it."""
    results = [bench.query(arch_or_index, ds) for ds in DATASETS]
    lines = [f"index {results[0]['index']}  {results[0]['arch']}",
             f"{'dataset':<16}{'valid':>8}{'test':>8}{'params(MB)':>12}{'FLOPs(M)':>12}  seeds(test)"]
    for r in results:
        acc = ["-" if r[k] is None else f"{r[k]:.2f}" for k in ("valid_acc", "test_acc")]
        lines.append(f"{r['dataset']:<16}{acc[0]:>8}{acc[1]:>8}{r['params_mb']:>12.6f}{r['flops_m']:>12.5f}"
                     f"  {' '.join(map(str, r['test_seeds']))}")
    return "\n".join(lines)


def _arch_of(given):
    """--arch: an arch string as it is, or a search's genotype.json (its "arch" entry; NB201 cells only)."""
    if not os.path.isfile(given):
        return given
    try:
        with open(given, encoding="utf-8") as f:
            arch = json.load(f).get("arch")
    except (ValueError, AttributeError):  # not JSON, or JSON that is not an object
        raise QueryError(f"--arch={given}: not a genotype.json (a JSON object with an 'arch' entry)") from None
    if not isinstance(arch, str):
        raise QueryError(f"--arch={given}: holds no NB201 arch string (a DARTS-space cell has no benchmark)")
    return arch


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, as every other refusal of this project (argparse adds its usage)
        self.exit(2, f"bench201.py: error: {message} (--help shows the usage)\n")


def main(argv=None):
    parser = _Parser(description="Query NAS-Bench-201 / NATS-tss results (paper convention).")
    parser.add_argument("path", help=".pth, .pickle.pbz2, NATS -simple directory or an --export CSV")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--arch", help="full arch string, e.g. '|nor_conv_3x3~0|+|...|+|...|', or the path of a "
                                     "genotype.json that search.py wrote")
    what.add_argument("--index", type=int, help="benchmark index")
    what.add_argument("--export", metavar="CSV", help="convert the whole benchmark into a small CSV")
    args = parser.parse_args(argv)
    try:
        bench = NB201(args.path)
        if args.export:
            print(f"wrote {bench.export_csv(args.export)} archs to {args.export}")
        else:
            print(format_row(bench, _arch_of(args.arch) if args.arch is not None else args.index))
    except (BenchmarkFileError, QueryError) as err:
        print(f"bench201.py: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a read or write the system refused (no permission, disk full, a folder): 1
        print(f"bench201.py: error: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        return 1
    except MemoryError:  # a pickle loads whole: v1_1 needs ~26 GB (estimated, see the top of this file)
        print(f"bench201.py: error: out of memory reading {args.path}: {TOO_BIG} on a larger machine", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
