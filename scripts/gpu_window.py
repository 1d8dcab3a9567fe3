"""The prepared command of a GPU window: one line runs the check or the paper's Table 2 row under a hard
wall-clock limit and leaves what it did in at most 8 files of one folder, as the window returns them.

Here, before a table2 window (packs the data into the ignored folder .gpu/, 16.4 MiB; the window carries it),
and right before its call (results/'s CPU runs into the ignored .aside/, so they do not travel):
    python scripts/gpu_window.py --task=pack
    python scripts/gpu_window.py --task=aside                 # after the call: --task=back
In the window (its command; OUT is the folder that comes back):
    python scripts/gpu_window.py --task=check --out=$OUT      # scripts/gpu_check.py, <= 8 min; carries nothing
    python scripts/gpu_window.py --task=table2 --out=$OUT     # the Table 2 row: sweep.py at full size
Back here, after a table2 window (the run folders into results/nb201-full, checkpoints included):
    python scripts/gpu_window.py --task=back
    python scripts/gpu_window.py --task=unpack --out=FILES_AT
A window of 15 minutes holds one of the two: its machine starts in a minute or two and the check takes
about nine, so the first window runs the check and a later one table2, whose --limit must end before the
call's own (limit_s: the device time left, if less than timeout_s), or nothing is packed.

table2 runs, in the carried tree, `sweep.py --out=results/nb201-full --options=BC --seeds=1,2,3` on the
packed 50,000 CIFAR-10 training images (25k / 25k, the paper's split), C=16, N=5, 50 epochs (19,550
weight steps), --compile=1 (CUDA graphs) and --bench201 from the public table, with --jobs searches at
once on the GPU (give the check's plan). It resumes every run folder it finds there, so the next window
continues with the same command when the unfinished runs' checkpoints travel back (`--task=unpack`, then
`carry` results/nb201-full: ~0.4 MiB per option-C checkpoint, whose random features are rebuilt from the
seed (harness/frozen_state.py), and 13 MiB per option-B checkpoint at C=16: weights and momentum). The 64
MiB that travel hold the tree and .gpu/ too: ~45 MiB of tree with results/'s CPU runs (their committed
checkpoints included), ~1.2 MiB without (`--task=aside`), so that all six unfinished runs' checkpoints fit
(3 x 13 + 3 x 0.4 MiB beside 16.4). `--task=pack`, `aside` and `unpack` each add up the next call's carry and
name the checkpoints to leave out when it is over.

The limit: the child (the check or the sweep) runs in its own process group; at --limit minus the
packing reserve it gets SIGTERM (every search checkpoints after its current step), 20 s later SIGKILL (a
search still in its step, e.g. a first compile, gets SIGTERM as the sweep dies, harness/jobs.py, and
checkpoints on its own: the window returns that run's checkpoint of its last finished epoch).
What it has done is packed into OUT every --every seconds while it runs and once at the end (each file
written beside and renamed, so a window killed mid-write still returns the last whole pack):
  window.md       what ran, how it ended, the files here (and, for table2, the sweep's table and each run's state)
  window.log      the child's output (its last 2 MB)
  check: summary.md, summary.json, check.tar.gz (every step's log; no checkpoint)
  table2: runs.tar.gz (each run folder without checkpoints: config, log, history, alphas, genotype, device,
          plus the sweep's table.md / table.json); checkpoints.tar.gz.N (the unfinished runs'
          checkpoint.pt, in parts of at most 15 MiB, at most 5 parts: those that do not fit are named in window.md)
Exit status: the child's (0: the check passed / every run finished), 124 when the limit stopped it,
2 on a bad flag or a missing pack. A path given on the command line is read from the current folder, a
default one (.gpu, ../shared/..., results/nb201-full) from the repository root, where the child runs.
"""
import time

STARTED = time.time()  # the window's clock starts before torch is imported (harness.cli), which may take a while there

import contextlib  # noqa: E402
import gzip  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
from dataclasses import dataclass  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from harness import cli  # noqa: E402

MAX_FILES, MAX_BYTES, PART_BYTES, MAX_PARTS = 8, 16 * 2**20, 15 * 2**20, 5
LOG_BYTES = 2 * 2**20
TRAVEL_BYTES = 64 * 2**20  # what the device tool sends in all: the checkout, the carried folders
ASIDE = os.path.join(ROOT, ".aside")  # ignored by git: what --task=aside moves here does not travel


@dataclass
class WindowConfig:
    task: str = "check"                 # pack | check | table2 | unpack | aside | back
    out: str = ""                       # the returned folder (default: $OUT); for unpack: the folder the window returned
    limit: int = 560                    # seconds for the whole command, packing included (a window's command: <= 600)
    reserve: int = 25                   # seconds kept for the last pack after the child is stopped
    every: int = 60                     # seconds between packs while the child runs
    pack_dir: str = ".gpu"              # the carried folder: the packed data, unpacked next to it in the window
    data: str = "../shared/data/cifar10-50k"              # --task=pack: the ImageFolder tree to pack
    bench201: str = "../shared/data/nb201/nb201-public.csv"  # --task=pack: the public NAS-Bench-201 table
    runs_out: str = "results/nb201-full"  # table2: the sweep's folder (in the carried tree)
    options: str = "BC"                 # table2: the sweep's --options (Table 1's B and C)
    seeds: str = "1,2,3"                # table2: the sweep's --seeds
    jobs: int = 6                       # table2: searches at once on the GPU (the check's plan says which)
    compile: bool = True                # table2: --compile of the searches (CUDA graphs on a GPU)
    size: str = "paper"                 # paper | tiny (C=4, one cell, batch 4: the suite's check)
    epochs: int = 50                    # table2: search epochs (the paper's 50)
    device: str = "auto"                # check and table2: every step's / search's --device
    only: str = ""                      # check: scripts/gpu_check.py's --only (step names or prefixes)


# table2's search flags per size; the data and the table are the packed ones.
SEARCH = {"paper": ["--C=16", "--layers=5", "--log_every=50"],
          "tiny": ["--C=4", "--layers=1", "--batch_size=4", "--log_every=0", "--workers=0"]}


def say(msg):
    print(f"gpu_window: {msg}", file=sys.stderr, flush=True)


def data_name(cfg):
    return os.path.basename(os.path.normpath(cfg.data))


def pack(cfg):
    """The data and the table into PACK_DIR (ignored by git; the window's `carry` names it), checked as the
    window's sweep will check them (a wrong file found there costs the window); an older pack's or a local
    window's leftovers in PACK_DIR are removed first (they would travel, and be read instead)."""
    import bench201  # the standard library only
    from harness.data import DatasetError, need_train_folder
    try:
        need_train_folder(cfg.data)
        bench201.check_file(cfg.bench201)
    except (DatasetError, bench201.BenchmarkFileError) as e:
        raise cli.ConfigError(f"--task=pack: {e}") from None
    pack_dir = os.path.realpath(cfg.pack_dir)
    for inside in (ROOT, cfg.data, cfg.bench201):  # it is cleared of the window's leftovers: never one of these
        if os.path.commonpath([pack_dir, os.path.realpath(inside)]) == pack_dir:
            raise cli.ConfigError(f"--pack_dir={cfg.pack_dir} holds {inside}: give a folder of its own (default .gpu)")
    os.makedirs(cfg.pack_dir, exist_ok=True)
    for path in leftovers(cfg, keep=(data_name(cfg) + ".tar.gz",)):
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    archive = os.path.join(cfg.pack_dir, data_name(cfg) + ".tar.gz")
    with tarfile.open(archive + ".tmp", "w:gz") as tar:
        tar.add(cfg.data, arcname=data_name(cfg))
    os.replace(archive + ".tmp", archive)
    table = os.path.join(cfg.pack_dir, "nb201-public.csv.gz")  # 2.5 -> 0.5 MiB; the window unzips it
    with open(cfg.bench201, "rb") as src, gzip.open(table + ".tmp", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(table + ".tmp", table)
    data = packed_bytes(cfg)
    carry = os.path.relpath(cfg.pack_dir, ROOT)  # the device tool names carried folders from the repository root
    say(f"packed {archive} and {os.path.basename(table)}: {data / 2**20:.1f} MiB in {cfg.pack_dir} ("
        + ("outside the repository: the device tool carries only folders inside it)" if carry.startswith("..")
           else f"carry it: run(carry=['{carry}']))"))
    for line in carry_note(tree_bytes(), data, unfinished_checkpoints(cfg), leftovers(cfg)):
        say(line)


def leftovers(cfg, keep=()):
    """What a window run here left in PACK_DIR (its unpacked data and table, check folders, log, half-written
    files) or, with `keep`, also every archive but those (an older pack's): removed by the next pack, named by
    carry_note. Only these names: any other file in PACK_DIR is someone else's and stays."""
    if not os.path.isdir(cfg.pack_dir):
        return []

    def made_by_a_window(n):
        return (n in ("data", "nb201-public.csv", "window-child.log") or n.startswith("check-") or n.endswith(".tmp")
                or (bool(keep) and n.endswith(".tar.gz") and n not in keep))
    return [os.path.join(cfg.pack_dir, n) for n in sorted(os.listdir(cfg.pack_dir)) if made_by_a_window(n)]


def packed_bytes(cfg):
    """What `carry` sends of --pack_dir: every file in it."""
    return sum(os.path.getsize(p) for p in _files_under(cfg.pack_dir)) if os.path.isdir(cfg.pack_dir) else 0


def unfinished_checkpoints(cfg):
    """{path: bytes} of the checkpoints in --runs_out (git ignores them: carried with the folder); a
    finished run's and every checkpoint.prev.pt are keyed "spare: PATH" (they can stay behind at no loss)."""
    if not os.path.isdir(cfg.runs_out):
        return {}
    finished = {name for name, _, done in run_states(cfg) if done}
    found = {}
    for p in _files_under(cfg.runs_out):
        name = os.path.basename(p)
        if not is_checkpoint(name) or name == ".lock":
            continue
        run = os.path.basename(os.path.dirname(p))
        spare = name != "checkpoint.pt" or run in finished
        found[f"spare: {p}" if spare else p] = os.path.getsize(p)
    return found


def bench201_table(cfg):
    """PACK_DIR/nb201-public.csv, unzipped once from the packed .csv.gz."""
    table = os.path.join(cfg.pack_dir, "nb201-public.csv")
    if not os.path.exists(table):
        with gzip.open(table + ".gz", "rb") as src, open(table + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(table + ".tmp", table)
    return table


def unpacked_data(cfg):
    """PACK_DIR/data/<name>: the packed ImageFolder tree, extracted once."""
    archives = [f for f in sorted(os.listdir(cfg.pack_dir)) if f.endswith(".tar.gz")] if os.path.isdir(cfg.pack_dir) else []
    if not archives or not os.path.exists(os.path.join(cfg.pack_dir, "nb201-public.csv.gz")):
        raise cli.ConfigError(f"{cfg.pack_dir}: no packed data (run --task=pack before the window and carry "
                               f"{cfg.pack_dir})")
    name = archives[0][: -len(".tar.gz")]
    target = os.path.join(cfg.pack_dir, "data")
    if not os.path.isdir(os.path.join(target, name)):
        with tarfile.open(os.path.join(cfg.pack_dir, archives[0])) as tar:
            tar.extractall(target, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(target)
    return os.path.join(target, name)


def child_argv(cfg, work):
    """The command the window runs (after the python executable)."""
    if cfg.task == "check":
        return ["scripts/gpu_check.py", f"--size={cfg.size}", f"--device={cfg.device}", f"--out={work}",
                f"--budget={min(480, max(cfg.limit - cfg.reserve - 40, 60))}"] + ([f"--only={cfg.only}"] if cfg.only else [])
    data = unpacked_data(cfg)
    return ["sweep.py", f"--out={cfg.runs_out}", f"--options={cfg.options}", f"--seeds={cfg.seeds}",
            f"--jobs={cfg.jobs}", "--dataset=imagefolder", f"--data={os.path.relpath(data, ROOT)}",
            f"--epochs={cfg.epochs}", f"--compile={int(cfg.compile)}", f"--device={cfg.device}",
            f"--bench201={os.path.relpath(bench201_table(cfg), ROOT)}", *SEARCH[cfg.size]]


def _write(out, name, data):
    """OUT/name <- data (bytes), written beside and renamed: a kill mid-write leaves the last whole file."""
    tmp = os.path.join(out, f".{name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, os.path.join(out, name))


def _tar(members):
    """members: [(path on disk, name in the archive)] -> the .tar.gz bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, arcname in members:
            if ".tmp" in os.path.basename(path):  # an atomic write in flight: renamed away any moment
                continue
            try:
                tar.add(path, arcname=arcname)
            except OSError:  # gone or replaced between the listing and now (a rotated checkpoint): skip it
                continue
    return buf.getvalue()


def _files_under(folder, skip=lambda name: False):
    for base, _, names in os.walk(folder):
        for name in sorted(names):
            if not skip(name):
                yield os.path.join(base, name)


def is_checkpoint(name):
    return name.startswith("checkpoint") or name == ".lock"


def run_states(cfg):
    """[(run name, epochs done, finished?)] of the sweep's run folders."""
    from harness.checkpoints import read_json
    states = []
    if not os.path.isdir(cfg.runs_out):
        return states
    for name in sorted(os.listdir(cfg.runs_out)):
        folder = os.path.join(cfg.runs_out, name)
        if not os.path.isdir(folder) or name == "figures":
            continue
        history = os.path.join(folder, "history.json")
        done = len(read_json(history)) if os.path.exists(history) else 0
        states.append((name, done, done >= cfg.epochs and os.path.exists(os.path.join(folder, "genotype.json"))))
    return states


def pack_results(cfg, work, log_path, status, t0):
    """Everything worth returning, into OUT, in at most MAX_FILES files of at most MAX_BYTES each."""
    files, notes = {}, []
    with open(log_path, "rb") as f:
        f.seek(max(os.path.getsize(log_path) - LOG_BYTES, 0))
        files["window.log"] = f.read()
    if cfg.task == "check":
        for name in ("summary.md", "summary.json"):
            path = os.path.join(work, name)
            if os.path.exists(path):
                with open(path, "rb") as f:
                    files[name] = f.read()
        files["check.tar.gz"] = _tar([(p, os.path.relpath(p, work)) for p in _files_under(work, is_checkpoint)])
    else:
        top = os.path.dirname(os.path.normpath(cfg.runs_out)) or "."
        files["runs.tar.gz"] = _tar([(p, os.path.relpath(p, top)) for p in _files_under(cfg.runs_out, is_checkpoint)])
        states = run_states(cfg)
        ckpts = [(os.path.join(cfg.runs_out, name, "checkpoint.pt"), name) for name, _, finished in states
                 if not finished]
        parts, part, size = [], [], 0
        for path, name in ckpts:
            if not os.path.exists(path):
                continue
            n = os.path.getsize(path)
            if part and size + n > PART_BYTES:
                parts.append(part)
                part, size = [], 0
            part.append((path, os.path.relpath(path, os.path.dirname(os.path.normpath(cfg.runs_out)) or ".")))
            size += n
        if part:
            parts.append(part)
        for i, members in enumerate(parts):
            blob = _tar(members)
            if i >= MAX_PARTS or len(blob) > MAX_BYTES:
                notes.append(f"not returned (over the window's file limits): {', '.join(m[1] for m in members)}")
                continue
            files[f"checkpoints.tar.gz.{i}"] = blob
    lines = [f"# GPU window: --task={cfg.task}", "", f"status: {status}; {time.time() - t0:.0f} s of the "
             f"{cfg.limit} s limit; child: `python {' '.join(cfg.child)}`", ""]
    if cfg.task == "table2":
        lines += ["| run | epochs done | finished |", "|---|---|---|"]
        lines += [f"| {name} | {done} of {cfg.epochs} | {'yes' if fin else 'no'} |" for name, done, fin in run_states(cfg)]
        table = os.path.join(cfg.runs_out, "table.md")
        if os.path.exists(table):
            with open(table, encoding="utf-8") as f:
                lines += ["", f.read().strip()]
    lines += ["", "Files: " + ", ".join(f"{k} ({len(v) / 2**20:.2f} MB)" for k, v in files.items())] + notes
    files = dict(list({"window.md": ("\n".join(lines) + "\n").encode(), **files}.items())[:MAX_FILES])
    for name, blob in files.items():
        _write(cfg.out, name, blob)
    for name in os.listdir(cfg.out):  # an earlier pack's parts this one did not write (a run finished since):
        if name.startswith("checkpoints.tar.gz.") and name not in files:  # unpacked, they would overwrite newer
            os.remove(os.path.join(cfg.out, name))


def run_window(cfg, t0):
    """Run the child under the limit, counted from `t0` (STARTED on the command line), packing as it goes."""
    os.makedirs(cfg.out, exist_ok=True)
    if os.listdir(cfg.out):
        raise cli.ConfigError(f"--out={cfg.out} is not empty: the window returns only what this run writes there")
    work = os.path.join(cfg.pack_dir, "check-" + time.strftime("%Y%m%d-%H%M%S"))
    cfg.child = child_argv(cfg, work)
    os.makedirs(cfg.pack_dir, exist_ok=True)
    log_path = os.path.join(cfg.pack_dir, "window-child.log")
    say(f"python {' '.join(cfg.child)} (limit {cfg.limit} s)")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, *cfg.child], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline, next_pack, status = t0 + cfg.limit - cfg.reserve, t0 + cfg.every, None
    previous = {s: signal.signal(s, lambda signum, frame: os.killpg(proc.pid, signal.SIGTERM))
                for s in (signal.SIGTERM, signal.SIGINT)}  # a stop from outside: the child checkpoints too
    try:
        while proc.poll() is None:
            if time.time() >= deadline:
                say(f"limit: stopping the child at {time.time() - t0:.0f} s")
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                status = f"stopped at the limit (child exit {proc.returncode})"
                break
            if time.time() >= next_pack:
                try:
                    pack_results(cfg, work, log_path, "running", t0)
                except OSError as e:  # a file moved under the pack: the next pack (or the last) has it
                    say(f"a pack while running failed ({e}); going on")
                next_pack = time.time() + cfg.every
            time.sleep(0.5)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    rc = 124 if status else proc.returncode
    status = status or f"child exit {proc.returncode}"
    pack_results(cfg, work, log_path, status, t0)
    say(f"{status}; results in {cfg.out}")
    return rc


def tree_bytes():
    """Bytes of what the device tool sends of this checkout by itself: tracked files and untracked ones
    git does not ignore (None outside a git checkout)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        return None
    return sum(os.path.getsize(os.path.join(ROOT, f)) for f in listed if f and os.path.isfile(os.path.join(ROOT, f)))


def carry_note(tree, data, checkpoints, stale=()):
    """The lines that say whether the next window's carry fits in TRAVEL_BYTES: `tree` (tree_bytes, or
    None), `data` (the --pack_dir's bytes, `stale` included: its leftovers' paths) and {checkpoint path:
    bytes} (unfinished_checkpoints: "spare: PATH" for those that can stay behind at no loss, named first)."""
    total = (tree or 0) + data + sum(checkpoints.values())
    parts = f"tree {'?' if tree is None else f'{tree / 2**20:.1f}'}, packed data {data / 2**20:.1f}, " \
            f"{len(checkpoints)} checkpoint(s) {sum(checkpoints.values()) / 2**20:.1f}"
    lines = [f"the next window carries {total / 2**20:.1f} MiB of {TRAVEL_BYTES // 2**20} ({parts})"]
    if total > TRAVEL_BYTES:
        over, drop = total - TRAVEL_BYTES, []
        for path, size in sorted(checkpoints.items(), key=lambda kv: (not kv[0].startswith("spare: "), -kv[1])):
            if over <= 0:
                break
            drop.append(path)
            over -= size
        lost = any(not p.startswith("spare: ") for p in drop)
        lines.append(f"over the limit by {(total - TRAVEL_BYTES) / 2**20:.1f} MiB: "
                     + (f"--task=pack again removes the packed folder's leftovers ({', '.join(stale)}); " if stale else "")
                     + "`--task=aside` sets results/'s CPU runs aside; still over, move "
                     + (", ".join(p.split("spare: ")[-1] for p in drop) or "other files") + " out of the tree before "
                     "the call" + (" (a run without its checkpoint starts again from epoch 0)" if lost else ""))
    return lines


def results_folders(cfg):
    """The folders of results/ that --task=aside moves: all but the one that is or holds --runs_out (the
    window's own runs; main makes --runs_out absolute, a relative one here is read from the repository root)."""
    src = os.path.join(ROOT, "results")
    keep = os.path.abspath(os.path.join(ROOT, cfg.runs_out))
    folders = [os.path.join(src, n) for n in sorted(os.listdir(src))] if os.path.isdir(src) else []
    return [f for f in folders if os.path.isdir(f) and os.path.commonpath([f, keep]) != f]


def set_aside(cfg):
    """--task=aside, here right before a table2 call: results/'s folders (the CPU runs, ~30 MiB the window
    never reads) but --runs_out's into the ignored ASIDE/results, so that the call's tree is the code and
    the window's own runs, and the carry holds every unfinished run's checkpoint. Refused while a run
    writes into one of them (its .lock is held): stop it first, its checkpoint keeps it. Until --task=back,
    git shows those files as deleted and tests/test_docs.py fails (it reads results/): commit nothing, run
    no suite in between."""
    from harness.checkpoints import RunBusy, RunLock
    folders, dst = results_folders(cfg), os.path.join(ASIDE, "results")
    taken = [f for f in folders if os.path.exists(os.path.join(dst, os.path.basename(f)))]
    if taken:
        raise cli.ConfigError(f"--task=aside: {dst} already holds {os.path.basename(taken[0])}: run --task=back first")
    moved = sum(os.path.getsize(p) for f in folders for p in _files_under(f))
    with contextlib.ExitStack() as held:  # every run folder's lock, held until the folders have moved:
        for folder in folders:            # no run can start in one meanwhile
            for lock in (p for p in _files_under(folder) if os.path.basename(p) == ".lock"):
                try:
                    held.enter_context(RunLock(os.path.dirname(lock)))
                except RunBusy as e:
                    raise cli.ConfigError(f"--task=aside: {e}; stop that run first (SIGTERM: it checkpoints)") from None
        os.makedirs(dst, exist_ok=True)
        for folder in folders:
            os.replace(folder, os.path.join(dst, os.path.basename(folder)))  # one file system: a rename
    say(f"set {len(folders)} folders of results/ aside in {dst} ({moved / 2**20:.1f} MiB); after the call: --task=back")
    for line in carry_note(tree_bytes(), packed_bytes(cfg), unfinished_checkpoints(cfg), leftovers(cfg)):
        say(line)


def bring_back(cfg):
    """--task=back: what --task=aside set aside, back into results/ (a folder that exists there again is
    refused, not merged)."""
    src = os.path.join(ASIDE, "results")
    names = sorted(os.listdir(src)) if os.path.isdir(src) else []
    clash = [n for n in names if os.path.exists(os.path.join(ROOT, "results", n))]
    if clash:
        raise cli.ConfigError(f"--task=back: results/{clash[0]} exists again: move one of the two away first")
    for name in names:
        os.replace(os.path.join(src, name), os.path.join(ROOT, "results", name))
    say(f"brought {len(names)} folders back into results/" if names else f"nothing set aside in {src}")


def unpack(cfg):
    """A table2 window's runs.tar.gz and checkpoint parts into the run folders here (the archives name
    results/nb201-full/... relative to the parent of --runs_out); then whether the next window's carry
    (this checkout, --pack_dir and the unfinished runs' checkpoints) fits in what travels."""
    top = os.path.dirname(os.path.normpath(cfg.runs_out)) or "."
    names = sorted(f for f in os.listdir(cfg.out) if f == "runs.tar.gz" or f.startswith("checkpoints.tar.gz."))
    if "runs.tar.gz" not in names:
        raise cli.ConfigError(f"--out={cfg.out}: no runs.tar.gz (the folder a --task=table2 window returned)")
    for name in names:
        with tarfile.open(os.path.join(cfg.out, name)) as tar:
            tar.extractall(top, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(top)
    say(f"unpacked {', '.join(names)} into {cfg.runs_out}")
    for line in carry_note(tree_bytes(), packed_bytes(cfg), unfinished_checkpoints(cfg), leftovers(cfg)):
        say(line)


def main(argv=None):
    cfg, given = cli.parse_config(WindowConfig, argv), cli.explicit_keys(argv)
    if not cfg.out and os.environ.get("OUT"):  # the device's $OUT: read from here, as a given --out
        cfg.out, given = os.environ["OUT"], given | {"out"}
    for key in ("out", "pack_dir", "data", "bench201", "runs_out"):  # the child runs in ROOT: every path absolute,
        value = getattr(cfg, key)  # a given one read from here, a default one (.gpu, ../shared/...) from ROOT
        if value:
            setattr(cfg, key, os.path.abspath(value if key in given else os.path.join(ROOT, value)))
    if cfg.task not in ("pack", "check", "table2", "unpack", "aside", "back"):
        raise cli.ConfigError(f"--task={cfg.task}: choose pack, check, table2, unpack, aside or back")
    if cfg.size not in SEARCH:
        raise cli.ConfigError(f"--size={cfg.size}: choose paper or tiny")
    cli.check_ranges(cfg, dict(limit="[10, inf)", reserve="[5, inf)", every="[1, inf)", jobs="[1, inf)",
                                epochs="[1, inf)"))
    if cfg.task == "pack":
        return pack(cfg)
    if cfg.task in ("aside", "back"):
        return set_aside(cfg) if cfg.task == "aside" else bring_back(cfg)
    if not cfg.out:
        raise cli.ConfigError("--out: give the folder the window returns (there: --out=$OUT)")
    if cfg.task == "unpack":
        return unpack(cfg)
    return run_window(cfg, STARTED if argv is None else time.time())


if __name__ == "__main__":
    sys.exit(cli.run(main))
