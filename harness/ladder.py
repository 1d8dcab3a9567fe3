"""The data ladder: several sweeps (sweep.py's folders) that differ in the number of search images read
as one table, a rung per image count, beside the paper's Table 2 at its 19,550 weight steps. Each
(option, seed) of a rung counts once (the first folder given wins; ladder_notes names the others), and
only sweeps whose settings differ in nothing but the image count pool (search_settings, check_settings;
anything else is refused in one line). Two ImageFolder folders count as one dataset when the smaller's
training images lie byte for byte in the larger (nested_imagefolders: cifar10-jpeg in cifar10-50k).

What makes a setting and what is run plumbing is the search script's: ladder takes that script's module
(its SearchConfig and RUN_KEYS) from the caller (plot.py), so this harness module imports no entry
script. Per-run columns (the found cell, its NB201 columns, percentiles, margins, how far α moved) are
sweep_table's; how α orders every NB201 cell against the benchmark is rank_table's (rank_table, ranked).
"""
import filecmp
import functools
import itertools
import os
import re

from harness import checkpoints
from harness.alpha_grads import adam_drift, agreement, gradient_snr, gradient_snr_curve
from harness.data import list_images
from harness.rundir import BENCH201_COLUMNS, read_json_if_any
from harness.cli import ConfigError, saved_settings
from harness.rank_table import rank_table, ranked
from harness.sweep_table import (SKIP_HEAVY, Benchmarks, table_header, rate_cell,
                                 against_chance, chance_cells, chance_columns, chance_note, count_all_skip,
                                 count_skip_heavy, final_all_skip, found_cell, found_cells, found_columns, mean_cell,
                                 shown_keys, alpha_separation, separation_at, darts_cells, darts_cell_rows, finished_run,
                                 state_text)
from spaces import get_space

# The paper's Table 2 (NAS-Bench-201 CIFAR-10, 3 runs each, 25k/25k images, 50 epochs of 391 steps)
PAPER_STEPS = 50 * 391
PAPER_LADDER_NOTE = (f"Paper, Table 2 (25,000 / 25,000 images, {PAPER_STEPS:,} weight steps, 3 runs each, "
                     "NB201 CIFAR-10): DARTS 54.30 ± 0.00 (the all-skip cell in every run), RF-DARTS 94.27 ± 0.15.")


def search_size(run_dir):
    """(weight images, α images, weight steps) of a search: the image counts and steps per epoch from
    log.txt's first line, times config.json's epochs (steps None without it); None without a log."""
    path = os.path.join(run_dir, "log.txt")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        m = re.search(r"(\d+) weight / (\d+) alpha images, (\d+) steps per epoch", f.read())
    if not m:
        return None
    config = os.path.join(run_dir, "config.json")
    epochs = checkpoints.read_json(config).get("epochs") if os.path.isfile(config) else None
    return int(m[1]), int(m[2]), int(m[3]) * epochs if epochs else None


# config.json keys that are not a sweep's setting: the image count (a ladder's rungs differ in it; ImageNet
# sets it by the per-class fractions) and each run's own option and seed
IMAGE_KEYS = ("subset", "weight_frac", "arch_frac")
RUN_IDENTITY = ("option", "seed")


def search_settings(config, search):
    """A search's settings as a ladder compares them (config.json's contents -> dict): every key but
    IMAGE_KEYS, RUN_IDENTITY and the run plumbing; `search` is the search script's module (search.py):
    its SearchConfig gives the defaults, its RUN_KEYS the plumbing. Plumbing is RUN_KEYS (what a resumed
    run may change: out, resume, device, stop_after, log_every, workers, download, ddp_backend, the bench201
    path, and compile, deterministic, fast, which change float rounding, not the search's sums) less two
    that do change what a rung measures, epochs (the schedule) and bench201_dataset (the benchmark
    column); plus sessions (each session's record) and data, the folder a named dataset's files lie in
    (for an ImageFolder the folder is the dataset: compared by check_settings). Written-out defaults compare equal to their
    short forms: a key config.json lacks (a run from before that setting existed) has the value such
    runs ran with (cli.saved_settings); the space is get_space's
    name for it ("NB201" is "nb201"); C and layers 0 are the space's own; bench201_dataset "" is the
    searched dataset's column (rundir.BENCH201_COLUMNS). config.json records no code version: one
    setting's runs on different code compare equal (results/README: the 4k seed-3 rerun)."""
    settings = saved_settings(search.SearchConfig, config)
    space = get_space(settings["space"])
    settings.update(space=space.name, C=settings["C"] or space.C, layers=settings["layers"] or space.layers,
                    bench201_dataset=settings["bench201_dataset"] or BENCH201_COLUMNS.get(settings["dataset"]))
    plumbing = (search.RUN_KEYS - {"epochs", "bench201_dataset"}) | {"sessions"}
    if settings["dataset"] != "imagefolder":
        plumbing.add("data")
    return {k: v for k, v in settings.items() if k not in plumbing and k not in IMAGE_KEYS + RUN_IDENTITY}


def _train_images(root):
    """{(class folder, file name): path} of an ImageFolder root's train/ split, as a search lists it."""
    files, _, _ = list_images(os.path.join(root, "train"))
    return {(os.path.basename(os.path.dirname(f)), os.path.basename(f)): f for f in files}


@functools.lru_cache(maxsize=None)
def nested_imagefolders(a, b):
    """Why two ImageFolder roots are not one dataset at two sizes, or "" when they are: the same class
    folders under train/, and every training image of the root with fewer lies, byte for byte, under the
    same class and file name in the other (../shared/data/cifar10-jpeg/train is the first 2,500 files
    per class of cifar10-50k/train). A search reads only train/ (harness/data.search_split), so this is
    what makes a 25k / 25k rung from the larger folder a bigger rung of the smaller folder's ladder. One
    difference remains: an ImageFolder is normalised by its train/'s own channel mean and std
    (harness/data.dataset_info; a --subset rung keeps its folder's), which for cifar10-jpeg against
    cifar10-50k differ by at most 7e-4 (means 0.4919, 0.4823, 0.4463 against 0.4913, 0.4821, 0.4465).
    Cost: every image of the smaller folder is read twice, once per copy (2 s for those 25,000 JPEGs on a
    2-core CPU; minutes for a folder of ImageNet's size), once per pair in a process."""
    for root in (a, b):
        if not os.path.isdir(os.path.join(root, "train")):
            return f"{os.path.join(root, 'train')} is not on this machine, so the images cannot be compared"
    images = {root: _train_images(root) for root in (a, b)}
    small, large = sorted((a, b), key=lambda root: len(images[root]))
    inner, outer = images[small], images[large]
    if {c for c, _ in inner} != {c for c, _ in outer}:
        return f"the class folders of {small}/train and {large}/train differ"
    for key, here in sorted(inner.items()):
        there = outer.get(key, os.path.join(large, "train", *key))
        if key not in outer or not filecmp.cmp(here, there, shallow=False):  # sizes first, then the bytes
            return f"{here} is not, byte for byte, {there}"
    return ""


def check_settings(labelled):
    """Refuse, in one ConfigError line naming two run folders and the keys, a ladder whose runs'
    search_settings differ: [(run folder, settings)], every finished run of every sweep given. Two
    ImageFolder folders (`data`) compare equal when one holds the other's training images
    (nested_imagefolders): the same dataset at two sizes."""
    (first, ref), *rest = labelled
    for folder, settings in rest:
        keys = sorted(k for k in ref.keys() | settings.keys() if ref.get(k) != settings.get(k))
        if "data" in keys and ref.get("dataset") == settings.get("dataset") == "imagefolder":
            keys.remove("data")  # below: every pair of folders, not each against the first
        if keys:
            what = ", ".join(f"{k} {ref.get(k)!r} / {settings.get(k)!r}" for k in keys)
            raise ConfigError(f"{first} and {folder} differ in more than the number of search images ({what}): "
                              "a ladder pools sweeps of one setting; plot these apart")
    if ref.get("dataset") == "imagefolder":
        # nesting is checked per pair: A inside B and inside C says nothing of B against C (both may hold A)
        where = {}
        for folder, settings in labelled:
            where.setdefault(settings.get("data"), folder)
        for a, b in itertools.combinations(sorted(where), 2):
            why = nested_imagefolders(a, b)
            if why:
                raise ConfigError(f"{where[a]} and {where[b]} differ in more than the number of search images "
                                  f"(data {a!r} / {b!r}: {why}): a ladder pools sweeps of one setting; plot these apart")


class Ladder(dict):
    """ladder()'s {option: {size: [seed records]}}, plus `left_out`: [(run folder, why)] for each run of the
    sweeps that does not count (unfinished, failed), so that the notes name it as the sweep's table does."""
    def __init__(self):
        super().__init__()
        self.left_out = []
        self.continued = []  # [(run folder, its schedules' lengths in order)]: a finished run continued to more


def ladder(sweep_dirs, search, bench201_path=""):
    """{option: {(weight images, α images): [per finished seed: dict(seed, acc, skip, all_skip, steps,
    epochs, space, bench201_dataset, folder, repeats, margins, nb201, chance)]}} over sweep folders (each
    sweep's table.json, whose finished state is the sweep's own: an unfinished run does not count; sizes,
    settings, found cells and margins from each run's folder: found_cell, looked up in `bench201_path` or
    else the table the run recorded; chance: that table's random baselines).

    Every finished run's search_settings must be equal (check_settings: one line otherwise), so the
    rungs differ in the image count only. An (option, seed) that two sweeps hold at one rung counts once:
    the run of the first folder given is kept, the others are listed in its `repeats` as (sweep folder,
    benchmark acc., final skip edges) for ladder_notes, as is each run that does not count (`left_out`).
    A folder given twice is read once."""
    by, benchmarks, labelled, dirs = Ladder(), Benchmarks(bench201_path), [], {}
    for d in sweep_dirs:
        dirs.setdefault(os.path.realpath(d), d)  # a folder named twice (or by two paths): its first name
    for d in dirs.values():
        for option, s in checkpoints.read_json(os.path.join(d, "table.json")).items():
            for r in s["seeds"]:
                folder = os.path.join(d, f"{option}_s{r['seed']}")
                size = search_size(folder) if r.get("state") == "finished" else None
                if size is None:
                    by.left_out.append((folder, state_text(r) if r.get("state") != "finished"
                                        else "finished, but its log.txt holds no search-size line"))
                    continue
                genotype, alphas, config = (read_json_if_any(os.path.join(folder, f"{name}.json"))
                                            for name in ("genotype", "alphas", "config"))
                if not config or "epochs" not in config:
                    raise ConfigError(f"{folder}: finished in {os.path.join(d, 'table.json')} but its config.json "
                                      "is missing or holds no epochs, so its settings cannot be compared")
                if finished_run(folder, config["epochs"]) is None:  # table.json is older than the folder
                    by.left_out.append((folder, f"{os.path.join(d, 'table.json')} says finished, but the folder "
                                                f"no longer holds all {config['epochs']} epochs (table.json is "
                                                "stale: --report_only=1 on its sweep rewrites it)"))
                    continue
                schedules = [s["epochs"] for s in config.get("sessions", []) if "epochs" in s]
                if len(set(schedules)) > 1:  # counted, but its lr schedule changed length on the way
                    by.continued.append((folder, list(dict.fromkeys(schedules))))
                settings = search_settings(config, search)
                labelled.append((folder, settings))
                rung = by.setdefault(option, {}).setdefault(size[:2], [])
                kept = next((rec for rec in rung if rec["seed"] == r["seed"]), None)
                if kept is not None:  # the same (option, seed) at this rung in an earlier folder: counted there
                    kept["repeats"].append((d, r["bench_test_acc"], r["skip_count"]))
                    continue
                flag = r.get("all_skip")
                if flag is None:  # a table written before all_skip was recorded
                    flag = final_all_skip(genotype)
                rec = dict(seed=r["seed"], acc=r["bench_test_acc"], skip=r["skip_count"], all_skip=flag, steps=size[2],
                           epochs=config["epochs"], space=settings["space"],
                           bench201_dataset=settings["bench201_dataset"], folder=d, repeats=[],
                           data=config.get("data") if settings["dataset"] == "imagefolder" else None,
                           separation=alpha_separation(alphas), snr=gradient_snr(alphas),
                           snr_curve=gradient_snr_curve(alphas),
                           drift=adam_drift(alphas, size[2] / config["epochs"], settings["arch_lr"]),
                           **found_cell(genotype, alphas, benchmarks.for_run(config)), **darts_cells(genotype))
                rec["chance"] = benchmarks.baselines(rec["nb201"]["table"]) if "nb201" in rec else None
                if "nb201" in rec:
                    rec["rank"] = ranked(benchmarks.for_run(config), alphas)
                rung.append(rec)
    if labelled:
        check_settings(labelled)
    return by


def ladder_notes(by):
    """One line per (option, seed) that several sweeps held at one rung (ladder's `repeats`): where it
    was, what each run found, and which one counted; then one per run that does not count (`left_out`)."""
    def found(acc, skip):
        return f"{'-' if acc is None else f'{acc:.2f}'}, {skip} skip edges"
    notes = []
    for option in sorted(by):
        for size in sorted(by[option]):
            for r in by[option][size]:
                if r["repeats"]:
                    others = "; ".join(f"{d} ({found(acc, skip)})" for d, acc, skip in r["repeats"])
                    notes.append(f"note: {option}_s{r['seed']} at {size[0]:,} / {size[1]:,} images is in "
                                 f"{r['folder']} ({found(r['acc'], r['skip'])}) and in {others}: counted once, "
                                 f"from {r['folder']} (the first folder given)")
    notes += [f"note: {folder} was continued from a {', '.join(map(str, lengths[:-1]))}-epoch schedule to "
              f"{lengths[-1]} epochs (its lr schedule changed length on the way)"
              for folder, lengths in getattr(by, "continued", [])]
    return notes + [f"note: {folder} is not counted ({why})" for folder, why in getattr(by, "left_out", [])]


def data_note(rungs):
    """["", a line naming each rung's ImageFolder folders] when the rungs come from more than one folder
    (check_settings let them pool: nested_imagefolders), else []. rungs: [(size, option, records)]."""
    folders = {}
    for size, _, recs in rungs:
        folders.setdefault(size, set()).update(r["data"] for r in recs if r.get("data"))
    if len(set().union(*folders.values())) < 2:
        return []
    where = "; ".join(f"{size[0]:,} / {size[1]:,} images from {', '.join(sorted(f))}"
                      for size, f in sorted(folders.items()) if f)
    return ["", f"ImageFolder data: {where} (one dataset: each smaller folder's training images lie, byte for "
                "byte, in the larger)."]


SNR_COLUMNS = ("α gradient SNR, last 10 epochs", "α's moves against Adam's: r, slope")


def drift_cell(records):
    """A table cell: agreement (r, slope) of the records' pooled adam_drift pairs; "-" without."""
    fit = agreement([pair for r in records for pair in r.get("drift") or []])
    return "-" if fit is None else f"{fit[0]:.2f}, {fit[1]:.2f}"


def separation_table(rungs):
    """How far α moved (alpha_separation), per rung and option: mean ± sample std over seeds of the last
    epoch's value and of its value after the shortest run's weight steps, where every run can be read
    at one length (does α separate with the steps taken, or with the schedule?); where runs recorded
    it, their α gradient's signal-to-noise ratio over the last 10 epochs (gradient_snr: why α moves as
    far as it does). [] without alphas. rungs: [(size, option, records)]."""
    recs = [r for *_, rs in rungs for r in rs if r.get("separation") and r["steps"]]
    if not recs:
        return []
    common = min(r["steps"] for r in recs)
    snr = any(r.get("snr") is not None for r in recs)

    uniform = sorted({round(r["separation"]["uniform"], 3) for r in recs})
    lines = ["", "How far α moved: the largest softmax(α) of each edge, averaged over the edges (uniform α: "
             f"{', '.join(map(str, uniform))}; one op per edge: 1), mean ± sample std over the finished seeds:", "",
             *table_header("search images (weight / α)", "option", "seeds", "last epoch",
                           f"after {common:,} weight steps",
                           *(SNR_COLUMNS if snr else []))]
    for size, option, rs in rungs:
        rs = [r for r in rs if r.get("separation") and r["steps"]]
        if rs:
            at = [separation_at(r["separation"], r["steps"] / r["epochs"], common) for r in rs]
            lines.append(f"| {size[0]:,} / {size[1]:,} | {option} | {len(rs)} | "
                         f"{mean_cell([r['separation']['curve'][-1][1] for r in rs], 3)} | {mean_cell(at, 3)} |"
                         + (f" {mean_cell([r.get('snr') for r in rs], 3)} | {drift_cell(rs)} |" if snr else ""))
    if snr:
        lines += ["", "α gradient SNR: the root mean square over α's entries of the gradient's mean / std over an "
                  "epoch's α steps, whole passes over the α images, so the mean is the epoch's full-data gradient "
                  "(harness/alpha_grads.py); runs from before it was recorded are not counted there. α's moves "
                  "against Adam's: each epoch's change of each α entry against arch_lr * steps * mean / RMS of its "
                  "gradient, both centred per edge (alpha_grads.adam_drift), pooled over the seeds' epochs: "
                  "Pearson r and the slope (1: as predicted; a check of the bookkeeping, which pure noise passes "
                  "too, not of the signal's size)."]
    return lines


def ladder_markdown(by):
    """The ladder as Markdown: per number of search images and option, mean ± sample std over the
    finished seeds (ddof=1) and how many ended in the all-skip cell; where the runs' cells were looked up,
    a second table with Table 2's columns against chance (against_chance); how far α moved
    (separation_table); how α orders every NB201 cell (rank_table); and each seed's found cell and final
    top-2 margins (found_cells)."""
    lines = ["| search images (weight / α) | weight steps per run | option | finished seeds | benchmark test acc. (%) "
             f"| per seed | all-skip cells | >= {SKIP_HEAVY} skip edges | final skip edges |",
             "|---|---|---|---|---|---|---|---|---|"]
    rungs = [(size, option, by[option][size]) for size in sorted({size for sizes in by.values() for size in sizes})
             for option in sorted(by) if by[option].get(size)]
    for size, option, recs in rungs:
        steps = sorted({r["steps"] for r in recs if r["steps"]})
        seeds = ", ".join("-" if r["acc"] is None else f"{r['acc']:.2f}" for r in recs)
        lines.append(f"| {size[0]:,} / {size[1]:,} | {', '.join(f'{s:,}' for s in steps) or '-'} | {option} | "
                     f"{len(recs)} | {mean_cell([r['acc'] for r in recs], 2)} | {seeds} | "
                     f"{rate_cell(count_all_skip([r['all_skip'] for r in recs]))} | "
                     f"{rate_cell(count_skip_heavy([r['skip'] for r in recs]))} | {mean_cell([r['skip'] for r in recs], 2)} |")
    epochs, notes = sorted({r["epochs"] for *_, recs in rungs for r in recs}), ladder_notes(by)
    lines += ["", f"{', '.join(map(str, epochs)) or '-'} epochs per run; every run's settings are the same but for "
              "the number of images (config.json" + ("; a run continued from a shorter schedule is named below"
                                                     if getattr(by, "continued", None) else "") +
              "). k of n: with the 95% Wilson interval of the rate.",
              *(["", PAPER_LADDER_NOTE] if any(r["space"] == "nb201" for *_, rs in rungs for r in rs) else []),
              *(["", *notes] if notes else []), *data_note(rungs)]
    found = [(size, option, against_chance([r["nb201"] for r in recs if "nb201" in r],
                                           {r["chance"]["table"]: r["chance"] for r in recs if r["chance"]}.get))
             for size, option, recs in rungs if any("nb201" in r for r in recs)]
    keys = shown_keys([agg for *_, agg in found])
    if found:
        lines += ["", *table_header("search images (weight / α)", "option", *chance_columns(keys)),
                  *(f"| {size[0]:,} / {size[1]:,} | {option} | {chance_cells(agg, keys)}"
                    for size, option, agg in found),
                  "", chance_note([agg for *_, agg in found])]
    lines += separation_table(rungs)
    lines += rank_table(rungs)
    seeds = [(size, f"{option}_s{r['seed']}", r) for size, option, recs in rungs for r in recs
             if "cells" not in r and ("nb201" in r or "margins" in r)]
    if seeds:
        lines += ["", "Each finished seed's found cell:", "",
                  *table_header("search images (weight / α)", "run", *found_columns(keys)),
                  *(f"| {size[0]:,} / {size[1]:,} | {name} | {found_cells(r, keys)}" for size, name, r in seeds)]
    darts = [((f"{size[0]:,} / {size[1]:,}",), f"{option}_s{r['seed']}", r) for size, option, recs in rungs
             for r in recs if "cells" in r]
    if darts:  # DARTS-style cells: no benchmark, both cells as text
        lines += ["", *darts_cell_rows(darts, "search images (weight / α)")]
    return "\n".join(lines) + "\n"
