"""Retrain every cell a seed sweep found and tabulate the test error: the paper's Tables 4-6 as
mean ± std over search seeds (Table 2 needs no retraining: NAS-Bench-201 holds its cells' accuracies).
Run it from the repository root.

    python scripts/retrain_sweep.py --sweep=runs/s3-svhn --dataset=svhn --data=SVHN_DIR  # Table 6, S3 / SVHN
    python scripts/retrain_sweep.py --sweep=runs/darts --data=CIFAR10_DIR                # Table 4, CIFAR-10
    python scripts/retrain_sweep.py --sweep=runs/darts --dataset=cifar100 --data=DIR    # ... moved to CIFAR-100

after the searches: `python sweep.py --out=runs/s3-svhn --space=s3 --dataset=svhn --data=SVHN_DIR --options=BC`
and `python sweep.py --out=runs/darts --space=darts --options=C --data=CIFAR10_DIR`.

For each search in SWEEP (its <option>_s<seed>/ folders) that finished at its own --epochs, one train.py
run: --genotype=SWEEP/<run>/genotype.json --seed=<the search's seed> (so the spread over seeds holds both
the search's and the retraining's randomness, as the papers' mean ± std over searched cells does) into
SWEEP/<run>/train-<dataset>[-<tag>]/, with every other flag passed on unchanged and train.py's recipe for
every key not given (DARTS' 600 epochs, C=36, 20 cells for DARTS-space cells and S1-S4 cells on CIFAR-10,
R-DARTS' C=16, 8 cells for S1-S4 cells on CIFAR-100 and SVHN: train.py's docstring). The runs go --jobs at a time as child processes (harness/jobs.py: per visible GPU, SIGTERM /
Ctrl-C reach each, which checkpoints); rerunning the command is always safe: finished retrainings are
skipped, interrupted ones resumed, and a folder holding a retraining with other settings refused in one
line before anything starts. A search that has not finished is named and not retrained.
Outputs: SWEEP/retrain-<dataset>[-<tag>].md and .json: per option the test error (100 - test accuracy)
mean ± sample std (ddof=1) over the finished retrainings (on ImageNet top-1 and top-5), the best,
parameters and MACs, the paper's number where it has one (Table 4: DARTS space searched on CIFAR-10;
Table 5: searched on ImageNet; Table 6: S1-S4, searched on the data retrained on; an option searched in
another order than the paper's row is named), then a row per run. A score on --test_subset images is marked as a check, not a result.
Exit status: 0 every search finished and was retrained; 1 a search or a retraining did not finish (the
table names which and why); 2 refused before any run started; 128 + N stopped by signal N.
"""
import os
import re
import signal
import sys
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train  # noqa: E402
from genotypes import genotype_to_json, load_genotype  # noqa: E402
from harness import checkpoints, cli, data, jobs as runner, runs  # noqa: E402
from harness.jobs import Job  # noqa: E402
from harness.rundir import read_json_if_any  # noqa: E402
from harness.sweep_table import finished_run, mean_std, plus_minus, run_devices, run_state  # noqa: E402

TRAIN = os.path.join(ROOT, "train.py")  # what each job runs
RUN = re.compile(r"^([A-D])_s(\d+)$")   # a sweep.py run folder: <option>_s<seed>


@dataclass
class RetrainConfig:
    sweep: str = ""      # a sweep.py folder: each finished <option>_s<seed>/ search's cell is retrained
    options: str = ""    # only these options' runs, e.g. C ("": every option the folder holds)
    seeds: str = ""      # only these seeds, comma-separated ("": every seed)
    tag: str = ""        # train-<dataset>-<tag>: keeps two recipes on one dataset apart
    jobs: int = 1        # retrainings at a time; on GPUs per GPU
    threads: int = 0     # CPU threads per retraining; 0: cores // retrainings at once


SET_PER_RUN = ("arch", "genotype", "seed", "out", "resume")  # train.py keys this script gives each run
# The paper's test error (%) of its searched cells, per (space, retraining dataset) and column. Table 4:
# the DARTS space searched on CIFAR-10 (DARTS: its 2nd-order row); Table 6, as printed: dataset -> the
# S1-S4 errors of RF-DARTS, then of DARTS (R-DARTS' code runs it 2nd order), each searched on that data.
# ImageNet: (top-1, top-5). Table 5: the DARTS space searched on ImageNet itself (RF-PCDARTS, PC-DARTS).
TABLE4 = {("darts", "cifar10"): {"RF-DARTS": 2.60, "DARTS 2nd": 2.76},
          ("darts", "cifar100"): {"RF-DARTS": 16.50, "DARTS 2nd": 17.54},
          ("darts", "imagenet"): {"RF-DARTS": (24.0, 7.2), "DARTS 2nd": (26.9, 8.7)}}
TABLE5 = {"RF-PCDARTS": (23.9, 7.1), "PC-DARTS": (24.2, 7.3)}
TABLE6 = {"cifar10": ((2.95, 4.21, 2.83, 3.33), (3.84, 4.85, 3.34, 7.20)),
          "cifar100": ((22.75, 22.18, 24.67, 21.19), (29.46, 26.05, 28.90, 22.85)),
          "svhn": ((2.42, 2.39, 2.47, 2.49), (4.58, 3.53, 3.41, 3.05))}
PAPER = {**TABLE4, **{(f"s{i + 1}", dataset): {"RF-DARTS": rf[i], "DARTS 2nd": darts[i]}
                      for dataset, (rf, darts) in TABLE6.items() for i in range(4)}}
# The search settings behind the three tables (DARTS' defaults; Table 5: PC-DARTS' ImageNet search, K = 2; which sweep.py passes on unless told otherwise;
# C, layers 0: the space's default); a run that departs is compared with the paper only with that named.
PAPER_SEARCH = dict(epochs=50, subset=0, C=(0, 16), layers=(0, 8), unrolled=(False, True), pc_k=1)
# The paper's searches per option: RF-DARTS (C) first order; its DARTS rows (B) second order (R-DARTS' code)


def paper_reference(space, dataset, searched):
    """The paper's numbers for cells of `space` searched on `searched`, retrained on `dataset`, or None."""
    if (space, dataset, searched) == ("darts", "imagenet", "imagenet"):  # Table 5, not Table 4's transfer
        return TABLE5
    return PAPER.get((space, dataset))


def _ints(text, flag):
    try:
        return {int(v) for v in text.split(",") if v.strip()}
    except ValueError:
        raise cli.ConfigError(f"--{flag}={text}: give integers separated by commas") from None


def parse(argv):
    """argv -> (RetrainConfig, the train.py flags shared by every run). --help: both key lists, exit 0."""
    if cli.wants_help(argv):
        cli.show_help(RetrainConfig, more=[("train.py keys, passed on to every retraining (this script sets "
                                             "--genotype, --seed, --out and --resume per run; --arch is refused)",
                                             train.Config, SET_PER_RUN)])
    cfg, flags = cli.split_config(RetrainConfig, argv, SET_PER_RUN, "set per run from the sweep's searches "
                                  "(--sweep= names them; --options= and --seeds= pick some)")
    cli.check_ranges(cfg, dict(jobs="[1, inf)", threads="[0, inf)"))
    if not cfg.sweep or not os.path.isdir(cfg.sweep):
        raise cli.ConfigError(f"--sweep={cfg.sweep}: no such folder (give a sweep.py folder)")
    if set(cfg.options.upper()) - set("ABCD"):
        raise cli.ConfigError(f"--options={cfg.options}: give letters of A, B, C, D (e.g. C)")
    if not all(c.isalnum() or c in "._-" for c in cfg.tag) or cfg.tag.startswith("."):  # a part of file names
        raise cli.ConfigError(f"--tag={cfg.tag}: use letters, digits, '.', '_' and '-' (it names folders and files)")
    return cfg, flags


def searches(cfg):
    """The sweep's runs to retrain, [(name, option, seed, folder)] in option-then-seed order."""
    options, seeds = set(cfg.options.upper()), _ints(cfg.seeds, "seeds")
    found = sorted((m[1], int(m[2]), m[0]) for m in map(RUN.match, os.listdir(cfg.sweep))
                   if m and os.path.isdir(os.path.join(cfg.sweep, m[0])))
    picked = [(name, o, s, os.path.join(cfg.sweep, name)) for o, s, name in found
              if (not options or o in options) and (not seeds or s in seeds)]
    if not picked:
        raise cli.ConfigError(f"{cfg.sweep}: no <option>_s<seed> search folders"
                              + (" of the given --options / --seeds" if options or seeds else ""))
    return picked


def plan(cfg, flags):
    """-> (the retraining jobs, {name: (option, seed, search folder, search finished)}). Each finished
    search's retraining is checked before any starts (train.resolve: flags, data, genotype) and its folder
    read: done when metrics.json holds a run of exactly its epochs, resume when it holds a checkpoint. A
    folder holding a retraining of another cell (the search changed since), other settings or another
    number of epochs is refused (cli.ConfigError, one line): a result is never silently mixed."""
    jobs, found = [], {}
    for name, option, seed, folder in searches(cfg):
        settings = read_json_if_any(os.path.join(folder, "config.json")) or {}
        done = "epochs" in settings and finished_run(folder, settings["epochs"]) is not None
        found[name] = (option, seed, folder, done)
        if not done:
            continue
        out, cell = os.path.join(folder, f"train-{_name(flags, cfg)}"), os.path.join(folder, "genotype.json")
        # RF-PCDARTS follows PC-DARTS' training setting (paper Sec. 5): its cells take that recipe
        pc = settings.get("pc_k", 1) > 1 and "recipe" not in cli.explicit_keys(flags)
        argv = [*flags, *(["--recipe=pcdarts"] if pc else []), f"--seed={seed}", f"--out={out}"]
        want = runs.as_dict(train.resolve([*argv, f"--genotype={cell}"], check_out=False)[0])
        checkpoints.refuse_if_busy(out)  # a retraining still running there (e.g. a killed script's)
        saved, state = checkpoints.saved_settings(out), "new"
        if saved is not None:
            # the cell by its content, not its path: a sweep folder moved or named another way is the same run
            full = cli.saved_settings(train.Config, saved)
            # where the data lies is not a setting: a moved folder or a relative path is the same run
            differ = cli.differing(want, full, train.RUN_KEYS | {"genotype", "data"})
            if differ:
                what = ", ".join(f"{k}={full[k]!r} not {want[k]!r}" for k in differ)
                raise cli.ConfigError(f"{out} holds a retraining with other settings ({what}): pass --tag=NAME")
            if saved.get("epochs") != want["epochs"]:  # a resume would change its lr schedule part-way
                raise cli.ConfigError(f"{out} holds a retraining of {saved.get('epochs')} epochs, not "
                                      f"--epochs={want['epochs']}: pass --epochs={saved.get('epochs')} or --tag=NAME")
            if _trained_cell(out) not in (None, genotype_to_json(load_genotype(cell))):
                raise cli.ConfigError(f"{out} retrained another cell than {cell} holds now (the search changed "
                                      "since): pass --tag=NAME, or move that folder away")
            metrics = read_json_if_any(os.path.join(out, "metrics.json")) or {}
            if metrics.get("epochs") == want["epochs"]:
                state = "done"
        if state == "new" and checkpoints.has_checkpoint(os.path.join(out, "checkpoint.pt")):
            state = "resume"  # train.py takes the cell from its checkpoint: the path is not passed again
        jobs.append(Job(name, out, argv + (["--resume=1"] if state == "resume" else [f"--genotype={cell}"]), state,
                        want["epochs"]))
    return jobs, found


def _trained_cell(out):
    """The cell (genotype_to_json) a retraining folder trained: metrics.json's, else its checkpoint's."""
    metrics = read_json_if_any(os.path.join(out, "metrics.json")) or {}
    if "genotype" in metrics:
        return metrics["genotype"]
    path = os.path.join(out, "checkpoint.pt")
    if not checkpoints.has_checkpoint(path):
        return None
    try:
        return checkpoints.load_checkpoint(path, required=("genotype",), log=lambda msg: None)["genotype"]
    except checkpoints.CheckpointError:  # unreadable: the retraining's resume names it, as one failed run
        return None


def _name(flags, cfg):
    """<dataset>[-<tag>]: the retraining folders' name after train-, and the table's after retrain-."""
    return _dataset(flags) + (f"-{cfg.tag}" if cfg.tag else "")


def _dataset(flags):
    """The dataset the retrainings train on (--dataset, else train.py's default)."""
    return cli.parse_config(train.Config, flags).dataset


def summarize(cfg, flags, jobs, found, status=None):
    """-> the table's content: per option the test error over the finished retrainings, a row per run."""
    dataset, by_name = _dataset(flags), {j.name: j for j in jobs}
    configs = [read_json_if_any(os.path.join(f, "config.json")) for *_, f, _ in found.values()]
    search = next((c for c in configs if c), {})  # the searches share their settings (sweep.py)
    space, searched = search.get("space"), search.get("dataset")
    paper = paper_reference(space, dataset, searched)
    departs = _departures(search, flags, space, dataset) if paper else []
    order = {"B": "DARTS 2nd", "C": "RF-DARTS"}  # which paper row an option's cells stand beside
    for option, unrolled in (("C", True), ("B", False)):
        if paper and order[option] in paper and any(c.get("option") == option and bool(c.get("unrolled")) == unrolled
                                                    for c in configs if c):
            departs.append(f"option {option} searched {'2nd' if unrolled else '1st'} order (the paper's "
                           f"{order[option]}: {'1st' if unrolled else '2nd'})")
    rows, options = [], {}
    for name, (option, seed, folder, search_done) in found.items():
        rec = dict(name=name, option=option, seed=seed, device=None, error=None)
        job = by_name.get(name)
        if not search_done:
            rec["state"] = "search not finished: not retrained"
        else:
            metrics = read_json_if_any(os.path.join(job.folder, "metrics.json")) or {}
            rec["device"] = run_devices(job.folder)
            if metrics.get("epochs") == job.epochs:
                settings = read_json_if_any(os.path.join(job.folder, "config.json")) or {}
                top5 = metrics.get("test_acc_top5")  # ImageNet's second column (Table 4); older runs: none
                rec.update(state="finished", error=100 * (1 - metrics["test_acc"]), params_m=metrics["params_m"],
                           error_top5=None if top5 is None else 100 * (1 - top5),
                           macs_m=metrics["macs_m"], epochs=metrics["epochs"], minutes=metrics["seconds"] / 60,
                           test_images=metrics["test_images"], check=bool(settings.get("test_subset")))
            elif not os.path.isfile(os.path.join(job.folder, "config.json")) and job.state == "new":
                rec["state"] = run_state(name, job.folder, job.epochs, status) + " (not started)"
            else:  # how far it got (train.py's history.json), before the reason
                history = read_json_if_any(os.path.join(job.folder, "history.json"), missing=[]) or []
                state, colon, why = run_state(name, job.folder, job.epochs, status).partition(": ")
                logged = f"{history[-1]['epoch'] if history else '?'} of {job.epochs}"
                rec["state"] = f"{state}, {logged} epochs done{colon}{why}"
        rows.append(rec)
        options.setdefault(option, []).append(rec)
    table = {}
    for option, recs in options.items():
        done = [r for r in recs if r["state"] == "finished"]
        mean, std, n = mean_std([r["error"] for r in done])
        best = min(done, key=lambda r: r["error"]) if done else None
        top5 = mean_std([r.get("error_top5") for r in done if r.get("error_top5") is not None])
        table[option] = dict(runs=len(recs), n=n, error=dict(mean=mean, std=std),
                             error_top5=dict(mean=top5[0], std=top5[1], n=top5[2]),
                             best=best and dict(name=best["name"], error=best["error"]),
                             params_m=mean_std([r["params_m"] for r in done])[0],
                             macs_m=mean_std([r["macs_m"] for r in done])[0], check=any(r["check"] for r in done))
    return dict(sweep=cfg.sweep, dataset=dataset, space=space, searched_on=searched, paper=paper,
                protocol_departures=departs, options=table, runs=rows)


def _departures(search, flags, space, dataset):
    """What departs from the paper's protocol for (space, dataset): Table 4 searched on CIFAR-10, Table 5 on
    ImageNet itself, Table 6 on the data retrained on, with the paper's search settings, and the retraining
    on its recipe."""
    out = []
    wanted = dataset if space != "darts" or (dataset, search.get("dataset")) == ("imagenet", "imagenet") else "cifar10"
    if search.get("dataset") != wanted:
        out.append(f"searched on {search.get('dataset')}, not {wanted}")
    for key, paper in PAPER_SEARCH.items():
        if key == "pc_k" and (space, wanted) == ("darts", "imagenet"):
            paper = 2  # Table 5 searched with PC-DARTS' ImageNet setting (search.py IMAGENET_DEFAULTS)
        if key in search and search[key] not in (paper if isinstance(paper, tuple) else (paper,)):
            out.append(f"search {key}={search[key]}")
    given = sorted(cli.explicit_keys(flags) & (train.RECIPE_KEYS | {"subset", "test_subset"}), key=str.lower)
    return out + [f"retraining {a[2:]}" for a in flags if a[2:].split("=", 1)[0] in given]


def _paper_value(v):
    return f"{v[0]:.1f} / {v[1]:.1f} (top-1 / top-5)" if isinstance(v, (list, tuple)) else f"{v:.2f}"


def markdown(summary):
    paper = summary["paper"]
    ref = "; ".join(f"{k} {_paper_value(v)}" for k, v in paper.items()) if paper else "none for this space and data"
    top5 = summary["dataset"] == "imagenet"  # the ImageNet rows report top-1 / top-5 (Tables 4-5)
    if paper and summary["protocol_departures"]:  # a number beside it only with what differs named
        ref += f", under another protocol than this table's: {', '.join(summary['protocol_departures'])}"
    lines = [f"Retrained on {summary['dataset']}: the cells of {summary['sweep']} ({summary['space']} space, "
             f"searched on {summary['searched_on']}).", "",
             "| option | finished / runs | test error (%), mean ± std | "
             + ("top-5 error (%), mean ± std | " if top5 else "") + "best (%) | params (M) | MACs (M) |",
             "|---|---|---|---|---|---|" + ("---|" if top5 else "")]
    for option, s in summary["options"].items():
        err = "-" if s["error"]["mean"] is None else plus_minus(s["error"]["mean"], s["error"]["std"], 2, s["n"])
        if top5:
            t5 = s.get("error_top5") or {}
            err += " | " + ("-" if t5.get("mean") is None else plus_minus(t5["mean"], t5["std"], 2, t5["n"]))
        best = "-" if not s["best"] else f"{s['best']['error']:.2f} ({s['best']['name']})"
        num = [("-" if s[k] is None else f"{s[k]:.2f}") for k in ("params_m", "macs_m")]
        lines.append(f"| {option} | {s['n']} / {s['runs']} | {err}{' (test subset: a check)' if s['check'] else ''} "
                     f"| {best} | {num[0]} | {num[1]} |")
    lines += ["", f"Test error = 100 - test accuracy, mean ± sample std (ddof=1) over the finished retrainings; "
              f"params without the auxiliary head. Paper (test error %): {ref}.", "",
              "| run | state | test error (%) | " + ("top-5 (%) | " if top5 else "") + "params (M) | epochs | minutes | "
              "device |", "|---|---|---|---|---|---|---|" + ("---|" if top5 else "")]
    for r in summary["runs"]:
        if r["state"] != "finished":
            lines.append(f"| {r['name']} | {r['state'].replace('|', '/')} | | | | | {'| ' if top5 else ''}"
                         f"{r['device'] or '-'} |")
            continue
        images = f" ({r['test_images']} test images: a check)" if r["check"] else ""
        t5 = (f" | {'-' if r.get('error_top5') is None else format(r['error_top5'], '.2f')}" if top5 else "")
        lines.append(f"| {r['name']} | finished | {r['error']:.2f}{images}{t5} | {r['params_m']:.3f} | {r['epochs']} | "
                     f"{r['minutes']:.1f} | {r['device'] or '-'} |")
    return "\n".join(lines) + "\n"


def epoch_line(name, row):
    """A retraining's line per finished epoch, from its history.json row."""
    return f"{name}: epoch {row['epoch']} lr {row['lr']:.4g} train {row['train_loss']:.3f} / {row['train_acc']:.3f}"


def write_table(cfg, flags, jobs, found, status=None, say=print):
    summary = summarize(cfg, flags, jobs, found, status)
    base = os.path.join(cfg.sweep, f"retrain-{_name(flags, cfg)}")
    checkpoints.write_json(base + ".json", summary)
    text = markdown(summary)
    checkpoints.atomic_write(base + ".md", lambda f: f.write(text), mode="w")
    say(text)
    return summary


def main(argv=None):
    """Retrain every finished search's cell not retrained yet, then write the table -> its summary; exits
    1 when a search or a retraining did not finish (the table names which and why)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg, flags = parse(argv)
    jobs, found, status = [], {}, {}  # status: each ended retraining's exit status, kept for the table
    try:
        jobs, found = plan(cfg, flags)
        write_table(cfg, flags, jobs, found, say=lambda text: None)  # never claims what the folders no longer hold
        if any(j.state != "done" for j in jobs):  # a first run's download, once: not N retrainings at once
            given = cli.parse_config(train.Config, flags)
            data.fetch(given.dataset, given.data, given.download)

        def ended(statuses):
            status.update(statuses)
            write_table(cfg, flags, jobs, found, status, say=lambda text: None)
        _, signum = runner.run_all(jobs, TRAIN, train.Config, cfg.jobs, cfg.threads, epoch_line=epoch_line,
                                   on_end=ended, what="retrainings")
        if signum:
            raise cli.Preempted("", signum)
    except (cli.Preempted, KeyboardInterrupt) as e:  # also outside run_all (cli.run's SIGTERM handler)
        if found:
            write_table(cfg, flags, jobs, found, status)
        signum = getattr(e, "signum", signal.SIGINT)
        raise cli.Preempted(f"retraining stopped by {signal.Signals(signum).name}: every run that was going "
                             "checkpointed; rerun the same command to continue", signum) from None
    summary = write_table(cfg, flags, jobs, found, status)
    left = [r["name"] for r in summary["runs"] if r["state"] != "finished"]
    if left:
        print(f"error: {len(left)} of {len(found)} cells not retrained to the end ({', '.join(left)}): "
              f"{os.path.join(cfg.sweep, 'retrain-' + _name(flags, cfg) + '.md')} says why",
              file=sys.stderr)
        sys.exit(1)
    return summary


if __name__ == "__main__":
    cli.run(main)
