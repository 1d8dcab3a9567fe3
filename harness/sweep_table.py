"""A sweep's run folders read back: whether a run is finished, where it ran, why it did not finish, and
the paper's Table 2 row over seeds (mean ± sample std, ddof=1, and how many seeds ended in the all-skip
cell) as OUT/table.json and OUT/table.md. harness/ladder.py reads several sweeps as one ladder table
with the per-run columns and helpers defined here.

The sweep table and the ladder also set each finished run's found cell against the benchmark and against chance (found_cell):
Table 2's NB201 columns of the cell in genotype.json (CIFAR-10 valid and test, CIFAR-100 and
ImageNet16-120 test), looked up in the --bench201 table given here or else the one the run recorded, so a
run finished before these columns existed gets them without a rerun; its CIFAR-10 test percentile among
every cell and among the pool-free cells, beside the medians of both (bench201.NB201.baselines: what a
random cell gets), with a one-sided p that as many random pool-free cells do as well (mean_uniform_sf); the
final top-2 margin of softmax(α) per edge (alphas.json's last row); and, per option, how alike two seeds'
cells are against two random cells (cell_agreement; the statistics live in harness/cell_stats.py). A
DARTS-style cell (darts, S1-S4: no benchmark) is shown as text, its normal and its reduction cell.

sweep.py starts the searches; this module only reads their folders (rundir.load_run, device.txt,
stderr.txt, genotype.json, alphas.json) and writes the table, so it can be rebuilt from any sweep folder.
"""
import os
import statistics

import bench201
import genotypes as G
from harness import checkpoints
from harness.checkpoints import write_json
from harness.jobs import STOPS, saved_run
from harness.cell_stats import cell_agreement, mean_uniform_sf, wilson
from harness.rundir import load_run

# Paper Table 2's six NB201 columns of a found cell, (dataset, result) as bench201's query names them. A
# table shows those its benchmark file holds (shown_keys): the public accuracy CSV has no CIFAR-100 or
# ImageNet16-120 valid accuracy, the full NB201 .pth / NATS file all six.
TABLE2_COLUMNS = tuple((ds, field) for ds in ("cifar10", "cifar100", "ImageNet16-120")
                       for field in ("valid_acc", "test_acc"))
TABLE2_KEYS = tuple(f"{ds}_{field}" for ds, field in TABLE2_COLUMNS)  # as bench201's CSV header names them
CHANCE_COLUMN = ("cifar10", "test_acc")  # what percentiles and random baselines rank by (Table 2's headline)
PERCENTILES = ("percentile_all", "percentile_pool_free")
# A run "drifted to skip" when its final cell holds at least this many of the NB201 cell's 6 skip edges:
# short of the all-skip cell, but most of the cell parameter-free (the 16k C_s3 run held 5).
SKIP_HEAVY = 4


def finished_run(folder, epochs):
    """The run in `folder` (rundir.Run) if it has done exactly `epochs` epochs on an `epochs`-epoch
    schedule, else None."""
    try:
        run = load_run(folder)
    except ValueError:
        return None
    done = run.rows and run.rows[-1]["epoch"] == epochs and run.config.get("epochs", epochs) == epochs
    return run if done else None


def run_devices(folder):
    """The devices a run's sessions ran on (device.txt), in order, each once: e.g. "GPU 1" or "cpu"."""
    path = os.path.join(folder, "device.txt")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        seen = [line.split(" ", 2)[2].strip() for line in f if line.count(" ") >= 2]
    return ", ".join(dict.fromkeys(seen)) or None


def _last_error(folder):
    path = os.path.join(folder, "stderr.txt")
    if not os.path.isfile(path):
        return "no message"
    with open(path, errors="replace", encoding="utf-8") as f:
        lines = f.read().strip().splitlines()
    return lines[-1] if lines else "no message"


def mean_std(values):
    """(mean, sample std over seeds (ddof=1; 0 for one value), n) of the non-None values."""
    v = [x for x in values if x is not None]
    if not v:
        return None, None, 0
    return statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)


def stats(values):
    """mean_std as {"mean", "std", "n"}: how table.json stores a column."""
    return dict(zip(("mean", "std", "n"), mean_std(values)))


def final_all_skip(genotype):
    """Whether a run's final cell (genotype.json's contents) is the all-skip cell (genotypes.all_skip);
    None without one."""
    return None if not genotype else G.all_skip(G.genotype_from_json(genotype))


def count_all_skip(flags):
    """[all_skip per finished run, None where not judged] -> {"count": k, "n": judged}."""
    judged = [f for f in flags if f is not None]
    return dict(count=sum(judged), n=len(judged))


def count_skip_heavy(skips):
    """[final skip edges per finished run, None where unknown] -> {"count": runs with >= SKIP_HEAVY, "n": judged}."""
    judged = [k for k in skips if k is not None]
    return dict(count=sum(k >= SKIP_HEAVY for k in judged), n=len(judged))


def rate_cell(counted):
    """{"count": k, "n": n} -> "k of n (lo-hi%)", the 95% Wilson interval of the rate ("-" when nothing
    was judged)."""
    if not counted or not counted["n"]:
        return "-"
    lo, hi = wilson(counted["count"], counted["n"])
    return f"{counted['count']} of {counted['n']} ({100 * lo:.0f}-{100 * hi:.0f}%)"


def plus_minus(mean, std, digits, n=2):
    """"mean ± std" to `digits` decimals, as the tables print a column; of n = 1 value, the value alone
    (one seed has no spread to show: "± 0.00" would claim one)."""
    return f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def mean_cell(values, digits):
    """A table cell: mean ± sample std of the non-None values to `digits` decimals; "-" without one."""
    mean, std, n = mean_std(values)
    return "-" if not n else plus_minus(mean, std, digits, n)


class Benchmarks:
    """The NB201 tables (bench201.NB201) finished runs are looked up in, each opened once: `given` (a
    sweep's or plot.py's --bench201) for every run, else the path the run recorded (config.json's
    bench201), None where it recorded none or that path no longer resolves (a run made in another
    folder: pass --bench201). A given table that cannot be read is the caller's one-line error."""

    def __init__(self, given=""):
        self.given, self.opened, self._baselines = given or "", {}, {}

    def for_run(self, config):
        path = self.given or (config or {}).get("bench201") or ""
        if not path or (path != self.given and not os.path.exists(path)):
            return None
        if path not in self.opened:
            self.opened[path] = bench201.NB201(path)
        return self.opened[path]

    def baselines(self, path):
        """bench201.NB201.baselines of the opened table `path` by CHANCE_COLUMN, with its path; once each."""
        if path not in self._baselines:
            self._baselines[path] = dict(table=path, **self.opened[path].baselines(*CHANCE_COLUMN))
        return self._baselines[path]


def found_cell(genotype, alphas, bench):
    """A finished run's found cell against the benchmark and chance -> {"margins": {kind: the final top-2
    margin of softmax(α) per edge (genotypes.top2_margins of alphas.json's last row)}} and, for an NB201
    cell (genotype.json's contents) and a table `bench` (bench201.NB201, or None), "nb201": its index and
    table, Table 2's columns (TABLE2_KEYS) and its CIFAR-10 test percentiles among every cell and among
    the pool-free ones (NB201.percentiles: strictly below plus half the ties)."""
    out = {}
    if alphas:
        # alphas.json keeps 6 decimals: so do the margins
        space = (genotype or {}).get("space", "nb201")  # genotype.json names it (runs of every version)
        out["margins"] = {kind: [round(m, 6) for m in G.top2_margins(p, G.choice_ops(space, kind))]
                          for kind, p in alphas[-1]["alphas"].items()}
    arch = (genotype or {}).get("arch")
    if bench is not None and arch:
        looked = {f"{ds}_{field}": bench.query(arch, ds)[field] for ds, field in TABLE2_COLUMNS}
        out["nb201"] = dict(index=bench.index_of(arch), table=bench.path, **looked,
                            **bench.percentiles(arch, *CHANCE_COLUMN))
    return out


def darts_cells(genotype):
    """A DARTS-style cell (genotype.json's contents) as the tables show it, {"cells": {kind: genotypes.cell_str},
    "reduce_skip_count"}; {} for an NB201 cell or none (its arch string is the table's cell)."""
    found = G.genotype_from_json(genotype) if genotype else None
    if not isinstance(found, G.Genotype):
        return {}
    return dict(cells={k: G.cell_str(found, k) for k in ("normal", "reduce")},
                reduce_skip_count=G.op_counts(found, "reduce").get("skip_connect", 0))


def darts_cell_rows(named, *first):
    """The table of DARTS-style runs' cells, after the line that says how to read them: [(leading cells, run
    name, record with darts_cells and margins)] -> Markdown lines; `first` names the leading columns."""
    return ["Each finished seed's cells, node by node (genotypes.cell_str: `|op~input|op~input|+...`, input 0 is "
            "c_{k-2}, 1 is c_{k-1}, j >= 2 the cell's node j - 2, which the cell figures number from 0); train.py "
            "reads a run's genotype.json (`--genotype=`), not this text:", "",
            *table_header(*first, "run", "normal cell", "skip edges (reduction)", "reduction cell", *MARGIN_COLUMNS),
            *(f"| {''.join(c + ' | ' for c in lead)}{name} | {_code(r['cells']['normal'])} | {r['reduce_skip_count']} | "
              f"{_code(r['cells']['reduce'])} | {margin_cells(r)}" for lead, name, r in named)]


def cell_since(rows):
    """The epoch from which the run's last cell held to its end (history's cell per epoch): how settled
    the found cell is (a cell that came in the last epoch or two won a near tie late); None without it."""
    cells = [r.get("genotype") for r in rows]
    if not cells or cells[-1] is None:
        return None
    i = len(cells) - 1
    while i > 0 and cells[i - 1] == cells[-1]:
        i -= 1
    return rows[i]["epoch"]


def alpha_separation(alphas):
    """How far α has moved from uniform, per epoch: {"curve": [(epoch, the largest softmax(α) of each edge,
    averaged over every edge of every cell kind)] per alphas.json row, "uniform": that average for
    uniform α (1 / the edge's candidates: 0.2 on NB201; 1 is one op per edge)}; None without alphas.
    The margins say how near a choice is to flipping; this says how far the search has gone at all."""
    if not alphas:
        return None
    edges = [p for ps in alphas[0]["alphas"].values() for p in ps]
    return dict(uniform=statistics.fmean(1 / len(p) for p in edges),
                curve=[(row["epoch"], statistics.fmean(max(p) for ps in row["alphas"].values() for p in ps))
                       for row in alphas])


def separation_at(sep, steps_per_epoch, steps):
    """alpha_separation's value after `steps` weight steps, linear between epoch ends (from uniform at
    step 0); None past the run's last epoch or without one."""
    points = [(0, sep["uniform"])] + [(e * steps_per_epoch, v) for e, v in sep["curve"]] if sep else []
    for (s0, v0), (s1, v1) in zip(points, points[1:]):
        if s0 <= steps <= s1:
            return v0 + (v1 - v0) * (steps - s0) / (s1 - s0)
    return None


def against_chance(lookups, baselines):
    """Over the found cells of one option (or rung and option; found_cell's "nb201" dicts): mean ± sample
    std of Table 2's columns and of the percentiles, and "chance": the random baselines of the table they
    were looked up in (`baselines`: table path -> Benchmarks.baselines' dict; None if several tables) with
    whether the CIFAR-10 test mean beats the pool-free median and "p_pool_free": the chance that as many random
    pool-free cells reach the found cells' mean pool-free percentile (mean_uniform_sf)."""
    out = dict(n=len(lookups), **{k: stats([x.get(k) for x in lookups]) for k in TABLE2_KEYS + PERCENTILES})
    tables, mean = {x["table"] for x in lookups}, out["_".join(CHANCE_COLUMN)]["mean"]
    chance = baselines(tables.pop()) if len(tables) == 1 else None
    if chance:
        pct = out["percentile_pool_free"]
        chance = dict(chance, beats_pool_free_median=None if mean is None else mean > chance["median_pool_free"],
                      p_pool_free=None if pct["mean"] is None else mean_uniform_sf(pct["mean"] / 100, pct["n"]))
    return dict(out, chance=chance)


def agreement_line(option, agreement):
    """cell_agreement's dict as one sentence of the table."""
    a = agreement
    pairs = f"{a['pairs']} pair{'s' if a['pairs'] != 1 else ''}"
    if "reduce" not in a:
        return (f"Cells alike ({option}): two seeds' cells share {a['mean']:.2f} of {a['edges']} edges on average "
                f"({pairs}, {a['identical']} with one cell); two random cells share {a['chance']:.2f}, two random "
                f"pool-free cells {a['chance_pool_free']:.2f}.")
    r = a["reduce"]
    return (f"Cells alike ({option}): two seeds' normal cells share {a['mean']:.2f} of {a['edges']} (node, input, op) "
            f"choices on average ({pairs}, {a['identical']} with one normal cell), their reduction cells "
            f"{r['mean']:.2f} ({r['identical']} with one); two random cells share {a['chance']:.2f} "
            f"(reduction: {r['chance']:.2f}), and a random normal cell holds {a['skip_chance']:.2f} skip edges.")


def given_benchmark(jobs):
    """The --bench201 a sweep passes its searches ("" without one): it wins over what a run recorded."""
    given = [a.split("=", 1)[1] for j in jobs[:1] for a in j.argv if a.startswith("--bench201=")]
    return given[-1] if given else ""


def state_text(r):
    """A table.json seed row's state as said in table.md and ladder.md: 'unfinished, 21 of 50 epochs done',
    'failed, 3 of 50 epochs done: <its last stderr line>'."""
    state, colon, why = r["state"].partition(": ")
    if r.get("epochs_done") is not None:  # how far it got, before the reason
        state += f", {r['epochs_done']} of {r['epochs']} epochs done"
    return state + colon + why


STOP_CODES = {-s for s in STOPS} | {128 + s for s in STOPS}  # a run ended by a stop: "stopped", not failed


def run_state(name, folder, epochs, status):
    """A run that is not finished: failed (exit N) / stopped (by a signal, continue with the same command)
    / unfinished (not run in this invocation, or exit 0 short of `epochs`), with its last error line."""
    code = (status or {}).get(name)
    if code is None:
        return "unfinished"
    what = "stopped" if code in STOP_CODES else "failed" if code else f"unfinished after exit 0 (not at epoch {epochs})"
    return f"{what} (exit {code}): {_last_error(folder)}" if code else what


def summarize(jobs, status=None, bench201_path=None):
    """-> (the sweep's table: per option, each seed's final numbers and mean ± std over the finished
    seeds, with found_cell's lookups in `bench201_path` (default: the sweep's --bench201, else each run's
    recorded table) and against_chance per option; the finished runs, each read once)."""
    table, done, genotypes, spaces = {}, [], {}, {}
    benchmarks = Benchmarks(given_benchmark(jobs) if bench201_path is None else bench201_path)
    for name, folder, _, _, epochs in jobs:
        option, seed = name.split("_s")
        rec = dict(seed=int(seed), folder=folder, device=run_devices(folder))
        run = finished_run(folder, epochs)
        code = (status or {}).get(name)
        if run is not None:
            done.append(run)
            if code and code not in STOP_CODES:  # its files are whole, but something failed after (the sweep: exit 1)
                rec["ended"] = f"exit {code} after its last epoch: {_last_error(folder)}"
            last = run.rows[-1]
            bench = last.get("bench201") or {}
            schedules = [s["epochs"] for s in run.config.get("sessions", []) if "epochs" in s]
            rec.update(darts_cells(run.genotype))
            genotypes.setdefault(option, []).append(run.genotype)
            spaces.setdefault(option, set()).add(run.config.get("space", "nb201"))
            rec.update(state="finished", epochs=last["epoch"], arch=(run.genotype or {}).get("arch"),
                       bench_test_acc=bench.get("test_acc"),
                       bench201_dataset=bench.get("dataset", "cifar10") if bench else None,  # older runs: CIFAR-10
                       schedules=[e for i, e in enumerate(schedules) if e not in schedules[:i]] or [epochs],
                       skip_count=last["skip_count"], all_skip=final_all_skip(run.genotype), train_acc=100 * last["train_acc"],
                       alpha_half_acc=100 * last["valid_acc"],
                       minutes=sum(r["seconds"] for r in run.rows) / 60, compile=run.config.get("compile", False),
                       init_seed=run.config.get("init_seed"), cell_since=cell_since(run.rows),
                       **found_cell(run.genotype, run.alphas, benchmarks.for_run(run.config)))
        else:
            saved, logged = saved_run(folder)  # how far it got: a long sweep's progress (None: not started)
            rec.update(state=run_state(name, folder, epochs, status), epochs=epochs,
                       epochs_done=None if saved is None else logged)
        table.setdefault(option, []).append(rec)
    keys = ("bench_test_acc", "skip_count", "train_acc", "alpha_half_acc", "minutes")
    out = {}
    for option, recs in table.items():
        finished = [r for r in recs if r["state"] == "finished"]
        out[option] = dict(seeds=recs, n=len(finished), bench201_dataset=_dataset(finished),
                           all_skip=count_all_skip([r["all_skip"] for r in finished]),
                           skip_heavy=count_skip_heavy([r["skip_count"] for r in finished]),
                           **{k: stats([r[k] for r in finished]) for k in keys})
        if "," in (out[option]["bench201_dataset"] or ""):  # accuracies of two datasets: no mean of them
            out[option]["bench_test_acc"] = stats([])
        space = spaces.get(option, set())
        agreement = cell_agreement(genotypes.get(option, []), *space) if len(space) == 1 else None
        if agreement:
            out[option]["cell_agreement"] = agreement
        lookups = [r["nb201"] for r in finished if "nb201" in r]
        if lookups:
            out[option]["nb201"] = against_chance(lookups, benchmarks.baselines)
    return out, done


def _dataset(recs):
    """The benchmark dataset the finished runs' accuracies come from (None: no benchmark)."""
    names = sorted({r["bench201_dataset"] for r in recs if r.get("bench201_dataset")})
    return ", ".join(names) or None


DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}  # ImageNet16-120 is written as it is


def markdown(summary):
    def cell(s, digits):
        return "-" if s["mean"] is None else plus_minus(s["mean"], s["std"], digits, s["n"])

    dataset = _dataset([{"bench201_dataset": s["bench201_dataset"]} for s in summary.values()])
    bench = f"NB201 {DATASET_NAMES.get(dataset, dataset)} test acc." if dataset else "benchmark test acc."
    mixed = "," in (dataset or "")  # runs looked up in two NB201 datasets (_dataset joins their names)
    if mixed:
        bench = f"NB201 test acc. ({dataset}: each run's own; no mean over two)"
    lines = [f"| option | seeds | {bench} (%) | final skip edges | all-skip cells | >= {SKIP_HEAVY} skip edges | "
             "supernet train acc. (%) | α-half acc. (%) | minutes per run |", "|---|---|---|---|---|---|---|---|---|"]
    for option, s in summary.items():
        lines.append(f"| {option} | {s['n']} | {cell(s['bench_test_acc'], 2)} | {cell(s['skip_count'], 2)} | "
                     f"{rate_cell(s.get('all_skip'))} | {rate_cell(s.get('skip_heavy'))} | "
                     f"{cell(s['train_acc'], 1)} | {cell(s['alpha_half_acc'], 1)} | {cell(s['minutes'], 1)} |")
    fixed = {f"{o}_s{r['seed']}": r["init_seed"] for o, s in summary.items() for r in s["seeds"]
             if r.get("init_seed") is not None}
    if fixed:  # the seeds then vary the data alone: say so before anyone reads the spread as over inits
        where = "every finished run" if len(fixed) == sum(s["n"] for s in summary.values()) else ", ".join(fixed)
        lines += ["", f"The supernet's init (random features, α) is --init_seed="
                  f"{', '.join(map(str, sorted(set(fixed.values()))))} in {where}: there the seeds vary only the "
                  "data (split, order, augmentation)."]
    found = {o: s["nb201"] for o, s in summary.items() if s.get("nb201")}
    keys = shown_keys(found.values())
    if found:
        lines += ["", *table_header("option", *chance_columns(keys)),
                  *(f"| {o} | {chance_cells(agg, keys)}" for o, agg in found.items()), "", chance_note(found.values())]
    alike = [agreement_line(o, s["cell_agreement"]) for o, s in summary.items() if s.get("cell_agreement")]
    if alike:
        lines += ["", " ".join(alike)]
    finished = [r for s in summary.values() for r in s["seeds"] if r["state"] == "finished"]
    darts_only = bool(finished) and all("cells" in r for r in finished)
    lines += ["", "Mean ± sample std (ddof=1) over the finished seeds; k of n with the 95% Wilson interval of the "
              "rate. Each seed:", "",
              f"| run | state | {bench} | skip | train | α-half | minutes | compiled | device | cell since epoch | "
              f"{'normal cell' if darts_only else 'cell'} |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for option, s in summary.items():
        for r in s["seeds"]:
            if r["state"] != "finished":
                state = state_text(r).replace("|", chr(92) + "|")
                lines.append(f"| {option}_s{r['seed']} | {state} | | | | | | | {r.get('device') or '-'} | | |")
                continue
            acc = "-" if r["bench_test_acc"] is None else f"{r['bench_test_acc']:.2f}" + (
                f" ({r['bench201_dataset']})" if mixed else "")
            earlier = ", ".join(map(str, r["schedules"][:-1]))
            state = f"finished ({r['epochs']} ep" + (f"; continued from a {earlier}-epoch schedule)" if earlier else ")")
            if r.get("ended"):
                state += f"; then {r['ended']}".replace("|", chr(92) + "|")
            lines.append(f"| {option}_s{r['seed']} | {state} | {acc} | {r['skip_count']} | "
                         f"{r['train_acc']:.1f} | {r['alpha_half_acc']:.1f} | {r['minutes']:.1f} | "
                         f"{'yes' if r['compile'] else 'no'} | {r.get('device') or '-'} | "
                         f"{r.get('cell_since') or '-'} | {_code(r['arch'] or r.get('cells', {}).get('normal'))} |")
    seeds = [(f"{o}_s{r['seed']}", r) for o, s in summary.items() for r in s["seeds"] if r["state"] == "finished"]
    nb201_seeds = [(name, r) for name, r in seeds if "cells" not in r and ("nb201" in r or "margins" in r)]
    if nb201_seeds:
        lines += ["", "Each finished seed's found cell:", "", *table_header("run", *found_columns(keys)),
                  *(f"| {name} | {found_cells(r, keys)}" for name, r in nb201_seeds)]
    darts_seeds = [((), name, r) for name, r in seeds if "cells" in r]
    if darts_seeds:  # DARTS-style: no benchmark; both cells and the margins of both kinds
        lines += ["", *darts_cell_rows(darts_seeds)]
    return "\n".join(lines) + "\n"


def _code(text):
    """A cell's text as Markdown code inside a table ("-" for none): its | escaped."""
    return "`-`" if not text else "`" + text.replace("|", chr(92) + "|") + "`"


def table_header(*names):
    """A Markdown table's header line and its separator line."""
    return ["| " + " | ".join(names) + " |", "|---" * len(names) + "|"]


def shown_keys(aggs):
    """The TABLE2_KEYS that at least one of `aggs` (against_chance's dicts) has a value for: the columns a
    table shows, so a benchmark file without a result adds no column of dashes."""
    return tuple(k for k in TABLE2_KEYS if any(a[k]["mean"] is not None for a in aggs))


def chance_columns(keys=TABLE2_KEYS):
    """The names of chance_cells' columns; `keys`: the Table 2 columns shown (shown_keys)."""
    return ["cells", *(f"{_column_name(k)} (%)" for k in keys), "percentile, all cells",
            "percentile, pool-free cells", "median, all cells (%)", "median, pool-free cells (%)",
            "mean beats the pool-free median (p)"]


def chance_cells(agg, keys=TABLE2_KEYS):
    """against_chance's dict as the rest of a Markdown row: cells counted, mean ± std per column (`keys`) and
    percentile, the two medians and whether the CIFAR-10 test mean beats the pool-free one, with p_pool_free."""
    cells = [str(agg["n"])]
    cells += ["-" if agg[k]["mean"] is None else plus_minus(agg[k]["mean"], agg[k]["std"], 2 if k in TABLE2_KEYS else 1,
                                                             agg[k]["n"])
              for k in keys + PERCENTILES]
    chance = agg["chance"]
    if chance is None:
        cells += ["-", "-", "-"]
    else:
        beats, p = chance["beats_pool_free_median"], chance["p_pool_free"]
        cells += [f"{chance['median_all']:.2f}", f"{chance['median_pool_free']:.2f}",
                  "-" if beats is None else ("yes" if beats else "no") + ("" if p is None else f" ({p:.2g})")]
    return " | ".join(cells) + " |"


def chance_note(aggs):
    """What the chance table's numbers are, naming the table(s) and the cell counts."""
    tables = {(a["chance"]["table"], a["chance"]["n_all"], a["chance"]["n_pool_free"]) for a in aggs if a["chance"]}
    where = "; ".join(f"{t} ({n:,} cells, {m:,} pool-free" + ("" if n == bench201.CELLS else
                      f": NOT the whole benchmark, {bench201.CELLS:,} cells; a cut or partial table") + ")"
                      for t, n, m in sorted(tables)) or "several tables"
    return ("Found cells on NAS-Bench-201 (paper Table 2's columns, looked up from each run's genotype.json) and "
            "against chance: mean ± sample std (ddof=1) over the finished seeds. Percentile of a cell's CIFAR-10 "
            "test accuracy among every cell and among the pool-free cells (no avg_pool_3x3 edge): the share "
            "strictly below plus half the ties; the medians are what a random cell of each set gets. (p): the "
            "chance that as many random pool-free cells reach the found cells' mean pool-free percentile (a "
            "random cell's percentile is uniform: the Irwin-Hall law of the mean; one-sided). "
            f"Table: {where}.")


MARGIN_COLUMNS = ("top-2 margin of softmax(α) per edge (last epoch)", "smallest margin")


def found_columns(keys=TABLE2_KEYS):
    """The names of found_cells' columns; `keys`: the Table 2 columns shown (shown_keys)."""
    return ["NB201 index", *map(_column_name, keys), "percentile, all", "percentile, pool-free",
            *MARGIN_COLUMNS]


def found_cells(rec, keys=TABLE2_KEYS):
    """One run's found_cell (its "nb201" and "margins") as the rest of a Markdown row; "-" where absent."""
    nb = rec.get("nb201") or {}

    def num(k, digits):
        return "-" if nb.get(k) is None else f"{nb[k]:.{digits}f}"
    cells = [str(nb.get("index", "-")), *(num(k, 2) for k in keys), *(num(k, 1) for k in PERCENTILES)]
    return " | ".join(cells) + " | " + margin_cells(rec)


def margin_cells(rec):
    """A run's final top-2 margins ("margins" of found_cell) as the MARGIN_COLUMNS, ending the row."""
    margins = rec.get("margins") or {}
    every = [m for ms in margins.values() for m in ms]
    # .2e as the log's margin: near ties (1e-5) and clear choices (1e-2) both readable
    per_edge = "; ".join((f"{kind}: " if len(margins) > 1 else "") + ", ".join(f"{m:.2e}" for m in ms)
                         for kind, ms in margins.items())
    return f"{per_edge or '-'} | {f'{min(every):.2e}' if every else '-'} |"


def _column_name(key):
    """'cifar10_valid_acc' -> 'CIFAR-10 valid'."""
    ds, field = next((ds, f) for ds, f in TABLE2_COLUMNS if f"{ds}_{f}" == key)
    return f"{DATASET_NAMES.get(ds, ds)} {field.split('_')[0]}"


def write_table(cfg, jobs, status=None, say=print):
    """OUT/table.json and OUT/table.md (each atomic) -> (summary, the finished runs)."""
    summary, done = summarize(jobs, status)
    write_json(os.path.join(cfg.out, "table.json"), summary)
    text = markdown(summary)
    checkpoints.atomic_write(os.path.join(cfg.out, "table.md"), lambda f: f.write(text), mode="w")
    say(text)
    return summary, done


# ---------------------------------------------------------------------------------------------------------------
