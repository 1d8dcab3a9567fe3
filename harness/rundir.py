"""A run directory read back: what search.py and analysis.py wrote, as one Run (no checkpoint is read).

    run = rundir.load_run("results/nb201-50ep/C_s1")
    [row["skip_count"] for row in run.rows]          # one history row per epoch

search.py runs (config.json has "space"): history.json, or for older runs the epoch lines of log.txt,
plus alphas.json and genotype.json. analysis.py runs (config.json has "exp"): history.json. plot.py draws
its figures from these; anything else that wants a run's numbers without matplotlib imports this file.
"""
import ast
import os
import re
from dataclasses import dataclass

import genotypes as G
from harness.checkpoints import read_json
from spaces import InputError

# search.py's epoch line (progress lines read "epoch N step ..." and do not match), e.g.
# [ 78.1s] epoch 1/50 lr 0.025 train 2.237/0.156 valid 2.238/0.157 68s skip 0 entropy 1.6094 margin 9.07e-06
#   CELL [gamma G eta E] [snr S] [mem A/RMB (CUDA)] [bench201 {'dataset': ..., 'valid_acc': ..., 'test_acc': ...}]
#   (CELL: NB201 string or DARTS normal pairs; runs from before the dataset was logged: no 'dataset', a
#   CIFAR-10 lookup)
_EPOCH_LINE = re.compile(r"\] epoch (\d+)/\d+ lr (\S+) train (\S+)/(\S+) valid (\S+)/(\S+) (\S+)s skip (\d+) "
                         r"entropy (\S+) margin (\S+) (.+?)(?: gamma \S+ eta \S+)?(?: snr \S+)?(?: mem \S+)?"
                         r"(?: bench201 (\{.*\}))?$")
_LOG_KEYS = ("lr", "train_loss", "train_acc", "valid_loss", "valid_acc", "seconds")
# The NB201 dataset whose accuracies a search's --bench201 looks up (search.py --bench201_dataset, default):
# the searched dataset's own; an ImageFolder is taken to be CIFAR-10 (a JPEG copy of CIFAR-10 is how this
# project searches on a CPU); svhn and imagenet have no column in the benchmark.
BENCH201_COLUMNS = {"cifar10": "cifar10", "cifar100": "cifar100", "ImageNet16-120": "ImageNet16-120",
                    "imagefolder": "cifar10"}
BENCH201_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "ImageNet16-120": "ImageNet16-120"}


@dataclass
class Run:
    path: str
    name: str                 # file-name part of this run's figures
    config: dict
    rows: list                # history rows, one per epoch
    alphas: list = None       # alphas.json (search runs)
    genotype: dict = None     # genotype.json (search runs)
    where: str = ""           # the folder above (or its own name) when runs of one option and seed are drawn together

    @property
    def option_seed(self):    # "B s1": what a figure's title says beside the run's name
        return f"{self.config.get('option', '?')} s{self.config.get('seed', '?')}"

    @property
    def label(self):          # "B s1" (or "nb201-16k B s1"): how the figures' legends name a search run
        return f"{self.where + ' ' if self.where else ''}{self.option_seed}"


def read_json_if_any(path, missing=None):
    """The JSON in `path`, or `missing` if there is no such file (a damaged one: a one-line error)."""
    return read_json(path) if os.path.isfile(path) else missing


def parse_log(path, space):
    """search.py's epoch lines -> history-like rows; the last line of an epoch wins (a resume repeats it)."""
    rows = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = _EPOCH_LINE.search(line.rstrip("\n"))
            if not m:
                continue
            g = m.groups()
            row = dict(epoch=int(g[0]), **{k: float(v) for k, v in zip(_LOG_KEYS, g[1:7])},
                       skip_count=int(g[7]), entropy=float(g[8]), margin=float(g[9]))
            cell = g[10].strip()
            if cell.startswith("|"):  # an NB201 arch string
                row["genotype"] = dict(space=space, cell="nb201", arch=cell, nb201_index=G.nb201_index(cell))
            else:  # a DARTS-style run logs its normal cell's (op, input) pairs
                row["genotype"] = dict(space=space, cell="darts", normal=ast.literal_eval(cell))
            if g[11]:
                row["bench201"] = ast.literal_eval(g[11])
            rows[row["epoch"]] = row
    return [rows[e] for e in sorted(rows)]


def load_run(path):
    """A search.py or analysis.py run directory -> Run; anything else is a one-line ValueError."""
    cfg = read_json_if_any(os.path.join(path, "config.json"))
    if cfg is None:
        raise InputError(f"{path}: not a run directory (no config.json)")
    if not isinstance(cfg, dict) or not ({"space", "exp"} & set(cfg)):
        raise InputError(f"{path}: config.json has neither 'space' (search.py) nor 'exp' (analysis.py)")
    rows, log = read_json_if_any(os.path.join(path, "history.json")), os.path.join(path, "log.txt")
    if rows is None and "space" in cfg and os.path.isfile(log):
        rows = parse_log(log, cfg["space"])
    if rows is None:
        raise InputError(f"{path}: no history.json" + ("" if "exp" in cfg else " or log.txt"))
    run = Run(path, os.path.basename(os.path.normpath(path)), cfg, rows)
    if "space" in cfg:
        run.alphas = read_json_if_any(os.path.join(path, "alphas.json"), missing=[])
        last = rows[-1]["genotype"] if rows else None
        run.genotype = read_json_if_any(os.path.join(path, "genotype.json"), missing=last)
    return run


def bench_dataset(run, row=None):
    """The NB201 dataset of a run's benchmark accuracies: the one `row` logged (rows from before rows named
    it were CIFAR-10 lookups), else the run's --bench201_dataset, else its searched dataset's column."""
    if row is not None and "bench201" in row:
        return row["bench201"].get("dataset", "cifar10")
    return run.config.get("bench201_dataset") or BENCH201_COLUMNS.get(run.config.get("dataset", "cifar10"))


def bench_label(runs):
    """How an axis names the benchmark accuracy of `runs`: with their dataset when they share one."""
    names = {BENCH201_NAMES.get(bench_dataset(r, r.rows[-1] if r.rows else None)) for r in runs}
    names.discard(None)
    return f"NAS-Bench-201 {names.pop()} test acc. (%)" if len(names) == 1 else \
        "NAS-Bench-201 test acc. (%), each run's dataset"


def bench_acc(run, row, table):
    """NB201 test accuracy (%) of one epoch's cell on the run's benchmark dataset (bench_dataset): logged
    by the run, else from `table`, else None."""
    if "bench201" in row:
        return row["bench201"]["test_acc"]
    arch, dataset = (row.get("genotype") or {}).get("arch"), bench_dataset(run)
    return table.query(arch, dataset)["test_acc"] if table is not None and arch and dataset else None
