"""What a GPU check's steps (scripts/gpu_check.py) decide, read from their records: which mode runs the
Table 2 searches faster (eager, or compiled with CUDA graphs), the plan for the paper's Table 2 row (3 seeds
x options B and C x 19,550 iterations: minutes per number of searches at once on the GPU, and sweep.py's
flags), and the summary as Markdown. A record is {name, what, status, seconds, limit_s, result, ...};
pure functions of them (no torch, no files).
"""
import json

# The paper's Table 2 row: 3 seeds of options B and C, 50 epochs of 391 steps (25k / 25k CIFAR-10).
TABLE2_RUNS, TABLE2_ITERATIONS = 6, 19_550


def ok_result(records, name):
    """A step's parsed result where it passed, else None."""
    rec = records.get(name) or {}
    return rec.get("result") if rec.get("status") == "ok" else None


def faster_mode(records):
    """'graphs' when compiled + CUDA graphs ran for both options and beat eager on option C, else 'eager'
    (what procs_K and the sweep's --compile should use): a mode the plan has only one option's time for
    cannot price the Table 2 row."""
    eager, graphs = ok_result(records, "bench_C_eager"), ok_result(records, "bench_C_graphs")
    if graphs and ok_result(records, "bench_B_graphs") and (not eager or graphs["iteration_s"] < eager["iteration_s"]):
        return "graphs"
    return "eager"


# Search seconds a table2 window gives (gpu_window.py: a 560 s command less its 25 s packing reserve and the
# start): each window's searches compile again from a cold cache (a fresh machine), once per window.
WINDOW_SEARCH_S = 500


def row_minutes(k, rates):
    """Minutes for the Table 2 row with k searches at once, from rates {searches at once: iterations per
    second in all}: the sweep runs the 6 searches k at a time, ceil(6 / k) rounds, the last one with the
    remainder r at its own rate (where measured; else at k's rate per search)."""
    full, rest = divmod(TABLE2_RUNS, k)
    seconds = full * k * TABLE2_ITERATIONS / rates[k]
    if rest:
        seconds += rest * TABLE2_ITERATIONS / rates.get(rest, rates[k] * rest / k)
    return seconds / 60


def table2_plan(records):
    """From the measured steps: total iterations per second with k searches at once (k = 1: B and C one
    after the other, 2 / (t_B + t_C)), each scaled by what a real search epoch costs over bench.py's bare
    iterations in the same mode (evaluation, data, logging: search_eager over bench C eager, or
    search_compiled over bench C with CUDA graphs), and the minutes the whole Table 2 row (6 runs x 19,550
    iterations, row_minutes) takes at each k; compiled, plus one cold compile (the cold benches'
    compile_s) per window of WINDOW_SEARCH_S. -> dict, or {} when nothing ran."""
    mode = faster_mode(records)
    single = {o: ok_result(records, f"bench_{o}_{mode}") for o in "BC"}
    rates = {}
    if single["B"] and single["C"]:
        rates[1] = 2 / (single["B"]["iteration_s"] + single["C"]["iteration_s"])
    for k in (2, 4, 6):
        res = ok_result(records, f"procs_{k}")
        if res and res.get("compile") == (mode != "eager"):
            rates[k] = res["iterations_per_s"]
    if not rates:
        return {}
    search_name = "search_compiled" if mode != "eager" and ok_result(records, "search_compiled") else "search_eager"
    search = ok_result(records, search_name)
    bench_c = ok_result(records, "bench_C_graphs" if search_name == "search_compiled" else "bench_C_eager")
    overhead = search["iteration_s"] / bench_c["iteration_s"] if search and bench_c else 1.0
    cold = [(ok_result(records, f"bench_{o}_graphs_cold") or {}).get("compile_s") for o in "BC"] if mode != "eager" else []
    compile_s = max([c for c in cold if c is not None], default=0.0)
    minutes, windows = {}, {}
    for k in rates:
        searching = row_minutes(k, rates) * overhead
        windows[k] = -(-searching * 60 // WINDOW_SEARCH_S)  # the compiles lengthen the row by a window at most
        minutes[k] = searching + windows[k] * compile_s / 60
    best = min(minutes, key=lambda k: (round(minutes[k], 1), k))
    return dict(mode=mode, overhead=round(overhead, 3), overhead_from=search_name if search else None,
                iterations_per_s={k: round(r, 2) for k, r in rates.items()}, compile_s=round(compile_s, 1),
                minutes={k: round(m, 1) for k, m in minutes.items()}, windows={k: int(w) for k, w in windows.items()},
                jobs=best, sweep_flags=f"--jobs={best} --compile={int(mode != 'eager')}")


def result_text(s):
    res = s.get("result") or {}
    if s["name"] == "cuda_set":
        counts = ", ".join(f"{v} {k}" for k, v in res.items() if k not in ("tests", "failures"))
        return counts + ("; failed: " + ", ".join(res["failures"]) if res.get("failures") else "")
    if not res:
        return ""
    if s["name"].startswith("procs"):
        per = ", ".join(f"{r['option']} {r['iteration_s']} s" for r in res["results"])
        return f"{res['iterations_per_s']} iterations/s in all ({per} per iteration)"
    if s["name"].startswith("bench"):
        busy = f", GPU busy {res['gpu_busy']:.0%}" if res.get("gpu_busy") is not None else ""
        memory = (f"{res.get('peak_mem_mb')} MB allocated / {res['peak_reserved_mb']} MB reserved"
                  if res.get("peak_reserved_mb") is not None else f"{res.get('peak_mem_mb')} MB (the process, CPU)")
        return (f"{res.get('iteration_s')} s/iteration, {res.get('images_per_s')} img/s{busy}, peak {memory}"
                + (f", compile {res.get('compile_s')} s" if res.get("compile") else ""))
    if s["name"].startswith(("search", "torchrun")):
        return (f"{res['epoch_s']} s per epoch of {res['steps']} steps x {res['batch']} ({res['processes']} "
                f"process(es)), {res['images_per_s']} img/s"
                + (f", epoch {res['epochs']}'s peak {res['gpu_mem_mb']} MB allocated / {res['gpu_reserved_mb']} MB "
                   "reserved" if res.get("gpu_mem_mb") is not None else ""))
    if s["name"].startswith("train") and "images_per_s" in res:
        return f"{res['images_per_s']} img/s (last of {res['epochs']} epochs)"
    return json.dumps(res)[:300]  # a step of another kind: its result as it is


def markdown(summary):
    env = summary["steps"][0].get("result", {})
    gpus = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in env.get("gpus", [])) or "none"
    lines = [f"# GPU check ({summary['size']} size), {summary['started']}", "",
             f"torch {env.get('torch')} (CUDA build {env.get('cuda_build')}, cuDNN {env.get('cudnn')}), driver "
             f"{env.get('driver')}, GPUs: {gpus}; --device=auto picks {env.get('auto_device')}"
             + (f" ({env['cpu_reason']})" if env.get("cpu_reason") else "") + ".",
             f"{summary['passed']} of {summary['ran']} steps that ran passed (env, above, included), "
             f"{summary['skipped']} skipped, "
             f"{summary['cut']} cut by the budget or a stop, in {summary['wall_s']:.0f} s (budget {summary['budget_s']} s)"
             + ("." if summary.get("done", True) else "; still running (this summary is rewritten after each step)."),
             "", "| step | what | status | seconds (limit) | result |", "|---|---|---|---|---|"]
    for s in summary["steps"][1:]:
        text = s.get("why", "") if s["status"] == "skipped" else result_text(s)
        if s["status"] not in ("ok", "skipped") and s["name"] != "cuda_set":
            text = (s.get("error") or " / ".join(s.get("tail", [])[-3:]))[:300]
        limit = f" ({s['limit_s']})" if "limit_s" in s else ""
        lines.append(f"| {s['name']} | {s['what']} | {s['status']} | {s.get('seconds', '-')}{limit} | "
                     f"{text.replace('|', '/')} |")
    p = summary.get("table2")
    if p and "error" in p:
        lines += ["", f"## Table 2 plan: not made ({p['error']}); the steps above hold the measurements"]
    elif p:
        lines += ["", f"## Table 2 plan ({TABLE2_RUNS} runs x {TABLE2_ITERATIONS:,} iterations, {p['mode']})", "",
                  "| searches at once | iterations/s in all | predicted minutes for the row | windows of "
                  f"{WINDOW_SEARCH_S} s |", "|---|---|---|---|"]
        lines += [f"| {k} | {p['iterations_per_s'][k]} | {p['minutes'][k]} | {p['windows'][k]} |" for k in p["minutes"]]
        lines += ["", f"A real search epoch costs {p['overhead']}x bench.py's bare iterations (evaluation, data, "
                      f"logging; {p['overhead_from'] or 'no search epoch ran: 1x assumed'}); the runs go "
                      f"ceil(6 / k) rounds of k"
                  + (f"; each window compiles again from a cold cache: +{p['compile_s']} s per window (one search "
                     "compiling alone with every core; k compiling at once share the cores, so their compile can "
                     "take up to k times that)" if p["compile_s"] else "") + f". Run the row with `sweep.py ... {p['sweep_flags']}`: ~{p['minutes'][p['jobs']]} min."]
        missing = [k for k in (2, 4, 6) if k not in p["minutes"]]
        if missing:  # the budget ran out before them (or they failed): a later window can measure them alone
            lines += ["", f"Not measured: {', '.join(map(str, missing))} searches at once. A later window measures "
                          "them alone (eager, as no compiled bench runs with them): `python3 scripts/gpu_window.py "
                          "--task=check --only=procs --out=$OUT`."]
    return "\n".join(lines) + "\n"
