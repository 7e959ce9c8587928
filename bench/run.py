#!/usr/bin/env python3
"""`make bench`: qaforge against the Python chain people use today, on this machine, in one run.

Needs the release builds of qaforge and of examples/bench.rs (the Makefile builds them) and a
Python with the pinned peers (bench/requirements.txt). Writes bench/results/bench-<date>.json and .md
(with -2, -3... for a later run the same day)
and prints the Markdown table: for every row qaforge's figure, the peer's and the ratio
(how many times better qaforge is; below 1 means the peer wins). Figures are medians of --runs
runs with [min–max]; whole commands are timed as processes (imports included) and their peak
RSS is read from the kernel (wait4; it includes the ~10 MB this driver had when it forked them).
"""

import argparse
import datetime
import functools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "bench")
QAFORGE = os.path.join(ROOT, "target", "release", "qaforge")
BENCH = os.path.join(ROOT, "target", "release", "examples", "bench")
PEERS = os.path.join(ROOT, "bench", "peers.py")
MODEL = os.path.join(WORK, "mobilebert-uncased-random")
CALIBRATION = os.path.join(ROOT, "golden", "squad", "calibration.json")
SAMPLES = 128


def log(message):
    print(message, file=sys.stderr, flush=True)


class Run:
    """One process: wall seconds, peak RSS (bytes), its stdout, and whether the watchdog killed it."""

    def __init__(self, seconds, peak_rss, stdout, killed, code):
        self.seconds, self.peak_rss, self.stdout, self.killed, self.code = seconds, peak_rss, stdout, killed, code

    def json_lines(self):
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]


def run_process(cmd, memory_limit, timeout):
    """Runs cmd; kills it when its RSS passes memory_limit bytes or it runs past timeout seconds."""
    out_path = os.path.join(WORK, "stdout.tmp")
    with open(out_path, "w") as out:
        started = time.perf_counter()
        err = open(os.path.join(WORK, "stderr.log"), "a")
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT)
        killed = None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
            except (OSError, StopIteration):
                rss = 0
            elapsed = time.perf_counter() - started
            if killed is None and (rss > memory_limit or elapsed > timeout):
                killed = f"killed at {rss / 2**30:.1f} GiB RSS after {elapsed:.0f} s"
                proc.kill()
            time.sleep(0.05)
        seconds = time.perf_counter() - started
    with open(out_path) as f:
        stdout = f.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0 and not killed:
        if cmd[0] != sys.executable:
            raise SystemExit(f"{' '.join(cmd)} failed with exit code {code}:\n{stdout}")
        killed = f"failed (exit {code})"  # a peer's failure is a result, not the bench's end
    return Run(seconds, usage.ru_maxrss * 1024, stdout, killed, code)


def repeat(cmd, runs, memory_limit, timeout, long_after=120.0):
    """runs runs of cmd (one only when the first takes longer than long_after seconds or is killed)."""
    results = [run_process(cmd, memory_limit, timeout)]
    while len(results) < runs and not results[0].killed and results[0].seconds < long_after:
        results.append(run_process(cmd, memory_limit, timeout))
    return results


def spread(values):
    values = sorted(values)
    return {"min": values[0], "median": statistics.median(values), "max": values[-1], "runs": len(values)}


def cell(s, unit, digits=2):
    if s is None:
        return "–"
    if isinstance(s, str):
        return s
    if s["runs"] == 0:  # derived from other rows' medians, or a best-of figure
        return f"{s['median']:.{digits}f} {unit}"
    if s["runs"] == 1:
        return f"{s['median']:.{digits}f} {unit} (1 run)"
    return f"{s['median']:.{digits}f} {unit} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]"


class Table:
    def __init__(self):
        self.rows = []

    def add(self, group, measure, ours, peer, unit, higher_is_better, digits=2, note=""):
        ratio = None
        if isinstance(ours, dict) and isinstance(peer, dict):
            ratio = ours["median"] / peer["median"] if higher_is_better else peer["median"] / ours["median"]
        self.rows.append({"group": group, "measure": measure, "qaforge": ours, "peer": peer, "unit": unit,
                          "higher_is_better": higher_is_better, "ratio": ratio, "digits": digits, "note": note})

    def markdown(self):
        lines = ["| # | measure | qaforge | peer | qaforge advantage |", "|---|---|---|---|---|"]
        for r in self.rows:
            ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else (r["note"] or "–")
            if r["ratio"] is not None and r["note"]:
                ratio += f" ({r['note']})"
            lines.append(f"| {r['group']} | {r['measure']} | {cell(r['qaforge'], r['unit'], r['digits'])} | "
                         f"{cell(r['peer'], r['unit'], r['digits'])} | {ratio} |")
        return "\n".join(lines)


def machine(table):
    model = platform.processor()
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    gemm = run_process([BENCH, "gemm"], 2**40, 600).json_lines()
    ceiling = max(g["gflops_one_core"] for g in gemm)
    cores = os.cpu_count()
    table.add("5", f"tract fp32 MatMul ceiling, best of 5 runs of {', '.join(str(g['gemm']) + '²' for g in gemm)}, one core",
              {"min": ceiling, "median": ceiling, "max": ceiling, "runs": 0}, None, "GFLOP/s", True, 1,
              note=f"{cores} cores → ~{ceiling * cores:.0f} GFLOP/s")
    return {"cores": cores, "cpu": model, "int8_features": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma"}),
            "gemm": gemm, "python": platform.python_version(), "date": datetime.date.today().isoformat()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--infer-features", type=int, default=16, help="golden features per inference run")
    parser.add_argument("--memory-limit-gib", type=float, default=16.0, help="peers are killed above this RSS")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds before a process is killed")
    parser.add_argument("--ort-library", required=True, help="libonnxruntime of the onnxruntime wheel")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    parser.add_argument("--ort-threads", type=lambda v: [int(t) for t in v.split(",")], default=sorted({1, os.cpu_count() or 1}),
                        help="section 6: comma-separated ONNX Runtime intra-op thread counts, each timed in its own process "
                             "(default: 1 and every core)")
    parser.add_argument("--sections", default="1,2,3,4,6,7,8", help="comma-separated: 1-4 the Python chain and tract, 6 ONNX Runtime artifacts, "
                        "7 fidelity of int8 on the trained fixture, 8 int4 and the size budget (sizes, speed, fidelity)")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    os.makedirs(WORK, exist_ok=True)
    limit = int(args.memory_limit_gib * 2**30)
    py = sys.executable
    table = Table()
    peak = []  # (command, ours, peer) peak RSS rows, printed after the time rows

    log("machine and GEMM ceiling")
    facts = machine(table)
    # Versions come from a child: importing torch here would grow this process to ~500 MB, and a
    # forked child's peak RSS (what wait4 reports) counts the parent's pages it had before exec.
    versions = subprocess.run([py, "-c", "import json, torch, onnxruntime; print(json.dumps("
                               "{'torch': torch.__version__, 'onnxruntime': onnxruntime.__version__}))"],
                              capture_output=True, text=True, check=True).stdout
    facts["peers"] = json.loads(versions)
    run_process([BENCH, "checkpoint", MODEL], 2**40, 600)
    fp32 = os.path.join(WORK, "full.onnx")
    features = os.path.join(WORK, "calibration-features.safetensors")
    if "1" not in sections:
        run_process([QAFORGE, "convert", MODEL, "-o", fp32], 2**40, 600)
        run_process([py, PEERS, "export", MODEL, os.path.join(WORK, "torch-export.onnx")], limit, args.timeout)
        run_process([BENCH, "features", MODEL, CALIBRATION, str(SAMPLES), features], 2**40, 600)
    else:
        chain(args, table, peak, py, limit, fp32, features)
    if "6" in sections:
        onnxruntime_artifacts(args, table, py, limit, fp32, features)
    if "7" in sections:
        fidelity(args, table, py, limit, features, facts["int8_features"])
    if "8" in sections:
        four_bit(args, table, py, limit, fp32, features)
    write(args, table, facts)


def chain(args, table, peak, py, limit, fp32, features):
    """Sections 1-4: qaforge against the Python chain, and tract against ONNX Runtime."""
    log("1. convert: qaforge convert vs torch.onnx.export")
    quick = max(args.runs, 5)  # sub-second commands get more runs: their spread is larger
    ours = repeat([QAFORGE, "convert", MODEL, "-o", fp32], quick, 2**40, args.timeout)
    theirs = repeat([py, PEERS, "export", MODEL, os.path.join(WORK, "torch-export.onnx")], args.runs, limit, args.timeout)
    export_only = [r.json_lines()[0]["export_s"] for r in theirs if not r.killed]
    table.add("1", "convert full-size MobileBERT, whole process (imports included)", spread([r.seconds for r in ours]),
              spread([r.seconds for r in theirs]), "s", False)
    table.add("1", "… peer's torch.onnx.export call alone (no imports, no model load)", spread([r.seconds for r in ours]),
              spread(export_only), "s", False)
    peak.append(("convert", ours, theirs))

    log("2. quantize: qaforge vs onnxruntime.quantization")
    features = os.path.join(WORK, "calibration-features.safetensors")
    run_process([BENCH, "features", MODEL, CALIBRATION, str(SAMPLES), features], 2**40, 600)
    artifacts = {"fp32": fp32}
    our_runs = {}
    jobs = [("int8-dynamic", ["--precision", "int8-dynamic"], ["quantize-dynamic"], "int8 dynamic"),
            ("int8-static-minmax", ["--precision", "int8-static", "--method", "minmax"], ["quantize-static", "minmax"],
             f"int8 static, MinMax, {SAMPLES} features"),
            ("int8-static-minmax", ["--precision", "int8-static", "--method", "minmax"], ["quantize-static", "minmax-bounded"],
             f"int8 static, MinMax, {SAMPLES} features, peer with CalibMaxIntermediateOutputs=15"),
            ("int8-static-percentile", ["--precision", "int8-static", "--method", "percentile"],
             ["quantize-static", "percentile"], f"int8 static, percentile 99.999, {SAMPLES} features")]
    for name, our_args, peer_args, label in jobs:
        out = os.path.join(WORK, f"full.{name}.onnx")
        calib = ["--calibration", CALIBRATION, "--tokenizer", MODEL, "--samples", str(SAMPLES)] if "static" in name else []
        if name not in our_runs:  # the MinMax rows share qaforge's runs
            our_runs[name] = repeat([QAFORGE, "quantize", fp32, "-o", out] + our_args + calib, quick if not calib else args.runs, 2**40, args.timeout)
        ours = our_runs[name]
        peer_out = os.path.join(WORK, f"ort.{name}.{peer_args[-1]}.onnx")
        peer_cmd = [py, PEERS, peer_args[0], fp32, peer_out] + ([features, peer_args[1]] if len(peer_args) > 1 else [])
        theirs = repeat(peer_cmd, args.runs, limit, args.timeout)
        done = [r for r in theirs if not r.killed]
        peer_cell = spread([r.seconds for r in done]) if done else theirs[0].killed
        table.add("2", f"quantize {label}, whole process", spread([r.seconds for r in ours]), peer_cell, "s", False)
        size = os.path.getsize(out)
        peer_size = f"{os.path.getsize(peer_out) / 2**20:.1f} MiB" if done and os.path.exists(peer_out) else "–"
        table.add("2", f"… artifact size ({label})", f"{size / 2**20:.1f} MiB ({100 * size / os.path.getsize(fp32):.1f}% of fp32)",
                  peer_size, "", False)
        peak.append((f"quantize {label}", ours, theirs))
        artifacts[name] = out
    fp16 = os.path.join(WORK, "full.fp16.onnx")
    ours = repeat([QAFORGE, "quantize", fp32, "-o", fp16, "--precision", "fp16"], quick, 2**40, args.timeout)
    table.add("2", "quantize fp16, whole process (no peer in onnxruntime.quantization)", spread([r.seconds for r in ours]),
              None, "s", False, note=f"{100 * os.path.getsize(fp16) / os.path.getsize(fp32):.1f}% of fp32")
    artifacts["fp16"] = fp16

    log("3. inference: tract vs ONNX Runtime on the same artifacts and inputs")
    speed = {}
    for name in ["fp32", "fp16", "int8-dynamic", "int8-static-percentile"]:
        for engine in ["tract", args.ort_library]:
            lines = run_process([BENCH, "infer", artifacts[name], engine, str(args.infer_features), str(args.runs)],
                                2**40, args.timeout).json_lines()
            for line in lines:
                key = (name, line["length"], line["batch"])
                speed.setdefault(key, {})["tract" if engine == "tract" else "ort"] = spread(line["features_per_s"])
                speed[key]["mean_real_length"] = line["mean_real_length"]
    for (name, length, batch), s in speed.items():
        what = "384 tokens" if length == "384" else f"real lengths (mean {s['mean_real_length']:.0f}), dynamic padding"
        table.add("3", f"{name}: features/s, {what}, batch {batch}", s["tract"], s["ort"], "/s", True)
    for length, batch in [("384", 1), ("384", 8), ("real", 1), ("real", 8)]:
        for name in ["int8-dynamic", "int8-static-percentile"]:
            t = speed[(name, length, batch)]["tract"]["median"] / speed[("fp32", length, batch)]["tract"]["median"]
            o = speed[(name, length, batch)]["ort"]["median"] / speed[("fp32", length, batch)]["ort"]["median"]
            table.add("3", f"{name} speed-up over fp32 ({length}, batch {batch}), ratio of medians: tract vs ONNX Runtime", single(t), single(o), "×", True)

    log("verify throughput on the fixture")
    tiny = os.path.join(WORK, "mobilebert-tiny.onnx")
    run_process([QAFORGE, "convert", os.path.join(ROOT, "golden", "mobilebert-tiny"), "-o", tiny], 2**40, 600)
    verify = {}
    for engine in ["tract", "ort"]:
        rates = []
        for _ in range(args.runs):
            report = os.path.join(WORK, f"verify-{engine}.json")
            run_process([QAFORGE, "verify", tiny, "--golden", os.path.join(ROOT, "golden", "mobilebert-tiny"), "--report", report,
                         "--engine", engine, "--ort-library", args.ort_library], 2**40, 600)
            with open(report) as f:
                r = json.load(f)
            rates.append(r["features"] / r["seconds"])
        verify[engine] = spread(rates)
    table.add("3", "qaforge verify on mobilebert-tiny (289 features, load + run), features/s: --engine tract vs ort",
              verify["tract"], verify["ort"], "/s", True)

    log("golden bundle throughput (the candle reference) on the fixture")
    rates = []
    for k in range(args.runs):
        out = os.path.join(WORK, f"bundle-{k}")
        result = run_process([QAFORGE, "golden", os.path.join(ROOT, "golden", "mobilebert-tiny"), "--data",
                              os.path.join(ROOT, "golden", "squad", "eval.json"), "-o", out], 2**40, 600)
        line = next(l for l in result.stdout.splitlines() if l.strip().startswith("time"))
        rates.append(float(line.split("(")[1].split()[0]))
    table.add("3", "qaforge golden on mobilebert-tiny (289 features, load + run), features/s: candle reference vs verify --engine tract",
              spread(rates), verify["tract"], "/s", True)

    for what, ours, theirs in peak:
        done = [r for r in theirs if not r.killed]
        table.add("4", f"peak RSS, {what}", spread([r.peak_rss / 2**20 for r in ours]),
                  spread([r.peak_rss / 2**20 for r in done]) if done else theirs[0].killed, "MiB", False, 0)


SPEED = os.path.join(ROOT, "bench", "ort_speed.py")
NORM_KERNELS = os.path.join(ROOT, "bench", "ort_norm_kernels.py")
ATTENTION_KERNELS = os.path.join(ROOT, "bench", "ort_attention_kernels.py")
TRAINED = os.path.join(ROOT, "golden", "minilm-l6-squad2")


def single(value):
    """A figure measured once (a ratio, a size, an agreement), in the table's spread form."""
    return {"min": value, "median": value, "max": value, "runs": 0}


def rate_of(speeds, name):
    """One artifact's features/s from bench/ort_speed.py's output: the median round and the spread."""
    r = speeds["artifacts"][name]
    per_round = [speeds["features_per_round"] / t for t in r["seconds_per_round"]]
    return {"min": min(per_round), "median": r["features_per_s"], "max": max(per_round), "runs": len(per_round)}


def paired_ratio(speeds, ours, peer):
    """ours' speed over peer's, round by round: both ran back to back in each round, so the ratio
    of the same round cancels most of the machine's drift, which moves whole rounds by tens of
    percent. Returns "median× [min–max]" over the rounds."""
    ratios = sorted(p / o for o, p in zip(speeds["artifacts"][ours]["seconds_per_round"], speeds["artifacts"][peer]["seconds_per_round"]))
    return f"{statistics.median(ratios):.2f}× [{ratios[0]:.2f}–{ratios[-1]:.2f}]"


def onnxruntime_artifacts(args, table, py, limit, fp32, features):
    """Section 6: the artifacts phones run, in ONNX Runtime: qaforge's --for onnxruntime flavour
    against the best peer artifact of the same model (torch export; ONNX Runtime's offline
    optimizer where it applies; onnxruntime.quantization's quantize_dynamic and quantize_static of
    the torch export), every artifact timed in one process in interleaved rounds, with the op
    counts of ONNX Runtime's optimized graphs and, for qaforge's artifacts, ONNX Runtime's profile."""
    flavour = ["--for", "onnxruntime", "--ort-library", args.ort_library]
    for model, label, qa_fp32 in [(MODEL, "full-size MobileBERT (random)", fp32), (TRAINED, "trained fixture minilm-l6-squad2 (BERT, 6 layers)", None)]:
        stem = os.path.join(WORK, "ort." + os.path.basename(model))
        log(f"6. ONNX Runtime artifacts: {label}")
        if qa_fp32 is None:
            qa_fp32 = stem + ".qaforge.onnx"
            run_process([QAFORGE, "convert", model, "-o", qa_fp32], 2**40, 600)
        torch_export = os.path.join(WORK, "torch-export.onnx") if model == MODEL else stem + ".torch.onnx"
        if model != MODEL:
            run_process([py, PEERS, "export", model, torch_export], limit, args.timeout)
        calib = ["--calibration", CALIBRATION, "--tokenizer", model, "--samples", str(SAMPLES)]
        artifacts = {
            "torch export fp32": torch_export,
            "qaforge fp32": qa_fp32,
            "qaforge fp32 --for onnxruntime": stem + ".fp32.ort.onnx",
            "ORT quantize_dynamic": stem + ".ort-dynamic.onnx",
            "qaforge int8-dynamic": stem + ".int8-dynamic.onnx",
            "qaforge int8-dynamic --for onnxruntime": stem + ".int8-dynamic.ort.onnx",
            "qaforge int8-dynamic --activation-scales token --for onnxruntime": stem + ".int8-dynamic-token.ort.onnx",
            "ORT quantize_static (QDQ, MinMax)": stem + ".ort-static.onnx",
            "qaforge int8-static --for onnxruntime": stem + ".int8-static.ort.onnx",
        }
        run_process([QAFORGE, "convert", model, "-o", artifacts["qaforge fp32 --for onnxruntime"]] + flavour, 2**40, 600)
        run_process([QAFORGE, "quantize", qa_fp32, "-o", artifacts["qaforge int8-dynamic"], "--precision", "int8-dynamic"], 2**40, 600)
        run_process([QAFORGE, "quantize", qa_fp32, "-o", artifacts["qaforge int8-dynamic --for onnxruntime"], "--precision", "int8-dynamic"] + flavour, 2**40, 600)
        run_process([QAFORGE, "quantize", qa_fp32, "-o", artifacts["qaforge int8-dynamic --activation-scales token --for onnxruntime"], "--precision", "int8-dynamic",
                     "--activation-scales", "token"] + flavour, 2**40, 600)
        run_process([QAFORGE, "quantize", qa_fp32, "-o", artifacts["qaforge int8-static --for onnxruntime"], "--precision", "int8-static", "--method", "percentile"] + calib + flavour, 2**40, args.timeout)
        run_process([py, PEERS, "quantize-dynamic", torch_export, artifacts["ORT quantize_dynamic"]], limit, args.timeout)
        run_process([py, PEERS, "quantize-static", torch_export, artifacts["ORT quantize_static (QDQ, MinMax)"], features, "minmax-bounded"], limit, args.timeout)
        if model != MODEL:
            # ONNX Runtime's offline transformer optimizer knows BERT (not MobileBERT, whose graphs it leaves as they are).
            artifacts["torch export + ORT optimizer (bert)"] = stem + ".torch.optimized.onnx"
            run_process([py, PEERS, "ort-optimize", torch_export, artifacts["torch export + ORT optimizer (bert)"], model], limit, args.timeout)
        missing = [k for k, v in artifacts.items() if not os.path.exists(v)]
        for k in missing:
            log(f"  {k}: not produced ({artifacts[k]}); see {os.path.join(WORK, 'stderr.log')}")
            del artifacts[k]
        # Every artifact is profiled (after the timed rounds, in sessions of their own): the share of
        # kernel time in matrix products says how far each is from its GEMM limit. Each thread count
        # gets its own process: on 2-vCPU virtual machines the second intra-op thread helps fp32 more
        # than int8 (its cores share execution units, or the host lends them out), so the int8-to-fp32
        # ratios depend on it and one thread is the steadiest measure of a core's work.
        for threads in args.ort_threads:
            speed_rows(args, table, py, label, artifacts, features, threads)
    kernel_rows(args, table, py)


def kernel_rows(args, table, py):
    """Section 6's kernel rows: the two forms of each op family where the flavour had to choose
    between a com.microsoft kernel and standard ops, timed on the ONNX Runtime at hand."""
    # The flavour leaves residual norms as Add + LayerNormalization because that form beats
    # com.microsoft SkipLayerNormalization on the ONNX Runtime versions qaforge pins; this row says
    # whether it still does on the ONNX Runtime and CPU at hand.
    kernels = run_process([py, NORM_KERNELS], 2**40, args.timeout).json_lines()[0]
    per_norm = kernels["microseconds_per_norm"]
    table.add("6", f"residual norm over {kernels['shape']}, ONNX Runtime {kernels['onnxruntime']}, {kernels['threads']} thread: "
              "µs per norm, Add + LayerNormalization (the flavour's form) vs com.microsoft SkipLayerNormalization",
              single(per_norm["Add + LayerNormalization"]), single(per_norm["SkipLayerNormalization"]), "µs", False, digits=0,
              note=f"medians of {kernels['rounds']} interleaved rounds, bench/ort_norm_kernels.py")
    # Attention: where the projections are not packed (MobileBERT, int8) the flavour emits ONNX's own
    # Attention (opset 23), com.microsoft MultiHeadAttention where the graph cannot be raised to 23;
    # this row says which of the two the ONNX Runtime and CPU at hand run faster, at MobileBERT's and
    # MiniLM's widths.
    for hidden, heads in [(128, 4), (384, 12)]:
        kernels = run_process([py, ATTENTION_KERNELS, "--hidden", str(hidden), "--heads", str(heads)], 2**40, args.timeout).json_lines()[0]
        per = kernels["microseconds_per_attention"]
        table.add("6", f"attention over {kernels['shape']}, {heads} heads, ONNX Runtime {kernels['onnxruntime']}, {kernels['threads']} thread: "
                  "µs per attention, ONNX Attention (opset 23, the flavour's form) vs com.microsoft MultiHeadAttention (its fallback)",
                  single(per["Attention (opset 23)"]), single(per["MultiHeadAttention"]), "µs", False, digits=0,
                  note=f"medians of {kernels['rounds']} interleaved rounds, outputs differ by {kernels['max_abs_difference']:.1e} at most, "
                       "bench/ort_attention_kernels.py")


def speed_rows(args, table, py, label, artifacts, features, threads):
    """Section 6's rows for one intra-op thread count: features/s of every artifact in one process
    (interleaved rounds), the paired ratios, the share of time in matrix products and the profiles."""
    result = run_process([py, SPEED, features] + [f"{k}={v}" for k, v in artifacts.items()] + ["--rounds", str(max(args.runs, 7)),
                         "--threads", str(threads), "--profile"] + list(artifacts), 2**40, args.timeout)
    speeds = result.json_lines()[0]
    runs = speeds["artifacts"]

    rate = functools.partial(rate_of, speeds)

    def nodes(name):
        r = runs[name]
        fused = ", ".join(f"{n} {op}" for op, n in r["fused_ops"].items())
        return f"{r['optimized_nodes']} nodes" + (f" ({fused})" if fused else "")

    per = f"{threads} thread" + ("s" if threads != 1 else "")
    where = f"{label}, ONNX Runtime {speeds['onnxruntime']}, {per}, batch 1, real lengths (mean {speeds['mean_real_length']:.0f})"
    rows = [("fp32", "qaforge fp32 --for onnxruntime", "torch export fp32"),
            ("fp32", "qaforge fp32 --for onnxruntime", "torch export + ORT optimizer (bert)"),
            ("fp32", "qaforge fp32 --for onnxruntime", "qaforge fp32"),
            ("int8-dynamic", "qaforge int8-dynamic --for onnxruntime", "ORT quantize_dynamic"),
            ("int8-dynamic", "qaforge int8-dynamic --for onnxruntime", "qaforge int8-dynamic"),
            ("int8-dynamic", "qaforge int8-dynamic --for onnxruntime", "qaforge fp32"),
            ("int8-dynamic", "qaforge int8-dynamic --for onnxruntime", "qaforge fp32 --for onnxruntime"),
            # Per-token activation scales: what their fidelity costs in speed.
            ("int8-dynamic", "qaforge int8-dynamic --activation-scales token --for onnxruntime", "qaforge int8-dynamic --for onnxruntime"),
            ("int8-dynamic", "qaforge int8-dynamic --activation-scales token --for onnxruntime", "ORT quantize_dynamic"),
            ("int8-dynamic", "qaforge int8-dynamic --activation-scales token --for onnxruntime", "qaforge fp32 --for onnxruntime"),
            ("int8-static", "qaforge int8-static --for onnxruntime", "ORT quantize_static (QDQ, MinMax)"),
            ("int8-static", "qaforge int8-static --for onnxruntime", "qaforge fp32"),
            ("int8-static", "qaforge int8-static --for onnxruntime", "qaforge fp32 --for onnxruntime")]
    for precision, ours, peer in rows:
        if ours in runs and peer in runs:
            table.add("6", f"{where}: features/s, {ours} vs {peer}", rate(ours), rate(peer), "/s", True,
                      note=f"per-round ratio {paired_ratio(speeds, ours, peer)}; optimized graphs: {nodes(ours)} vs {nodes(peer)}")
    for precision, ours, peer in rows:
        if ours in runs and peer in runs and "gemm_share" in runs[ours] and "gemm_share" in runs[peer]:
            table.add("6", f"{label}, {per}: share of kernel time in matrix-product kernels (ONNX Runtime profiler), {ours} vs {peer}",
                      single(runs[ours]["gemm_share"]), single(runs[peer]["gemm_share"]), "%", True, digits=1)
    for name in ["qaforge fp32 --for onnxruntime", "qaforge int8-dynamic --for onnxruntime", "qaforge int8-static --for onnxruntime"]:
        profile = runs.get(name, {}).get("kernel_time_by_op")
        if profile:
            table.add("6", f"{label}, {per}: where {name}'s time goes (ONNX Runtime profiler, % of kernel time)", None, None, "", True,
                      note=", ".join(f"{op} {pct}%" for op, pct in profile.items()))


def fidelity(args, table, py, limit, features, int8_features):
    """Section 7: how closely each int8 artifact follows the float model, qaforge's modes beside
    ONNX Runtime's quantizers (their defaults, qaforge's choices, and qaforge's float-kept set), all
    judged by one harness: `qaforge verify --engine ort` against the trained fixture's PyTorch
    golden (answer agreement F1 with the float model, ΔF1 against the gold answers, logit cosine).
    The peers quantize the torch export of the same weights and calibrate on the same features."""
    model = TRAINED
    stem = os.path.join(WORK, "fidelity." + os.path.basename(model))
    log("7. fidelity on the trained fixture: qaforge's int8 against onnxruntime.quantization's")
    qa_fp32 = stem + ".qaforge.onnx"
    torch_export = stem + ".torch.onnx"
    run_process([QAFORGE, "convert", model, "-o", qa_fp32], 2**40, 600)
    run_process([py, PEERS, "export", model, torch_export], limit, args.timeout)
    calib = ["--calibration", CALIBRATION, "--tokenizer", model, "--samples", str(SAMPLES)]
    # qaforge's int8 for this CPU: ONNX Runtime computes the default (arm64) storage exactly only
    # with VNNI; without it, the x86-avx2 storage (u8 x u8) is what a user ships for it, and the
    # peers get ONNX Runtime's own advice for such CPUs (reduce_range) beside their defaults.
    vnni = "avx512_vnni" in int8_features or "avx_vnni" in int8_features
    target = [] if vnni else ["--target", "x86-avx2"]
    ours = {"qaforge int8-dynamic": [], "qaforge int8-static minmax": ["--method", "minmax"] + calib,
            "qaforge int8-static percentile": ["--method", "percentile"] + calib, "qaforge int8-static mse": ["--method", "mse"] + calib,
            # Scale migration (quantize --smooth, docs/commands.md).
            "qaforge int8-dynamic --smooth": ["--smooth"] + calib,
            # One activation range per token (quantize --activation-scales token).
            "qaforge int8-dynamic --activation-scales token": ["--activation-scales", "token"],
            "qaforge int8-static minmax --smooth": ["--method", "minmax", "--smooth"] + calib,
            # The four products the sensitivity ranking names first with float activations and
            # int8 weights (quantize --float-activations): the plain int8 size.
            "qaforge int8-static minmax --smooth --float-activations": ["--method", "minmax", "--smooth"] + calib
            + [a for n in range(4) for a in ("--float-activations", f"layer.{n}.output")]}
    artifacts = {}
    for name, extra in ours.items():
        artifacts[name] = f"{stem}.{name.split(' ', 1)[1].replace(' --', '-').replace(' ', '-')}.onnx"
        precision = "int8-dynamic" if "dynamic" in name else "int8-static"
        run_process([QAFORGE, "quantize", qa_fp32, "-o", artifacts[name], "--precision", precision] + extra + target, 2**40, args.timeout)
    peers = {"ORT quantize_dynamic (defaults)": ["quantize-dynamic", "default"],
             "ORT quantize_dynamic (per-channel)": ["quantize-dynamic", "per-channel"],
             "ORT quantize_dynamic (per-channel, qaforge's float-kept set)": ["quantize-dynamic", "float-kept"],
             "ORT quantize_static (defaults, MinMax)": ["quantize-static", "minmax-bounded", "default"],
             "ORT quantize_static (qaforge's choices, MinMax)": ["quantize-static", "minmax-bounded", "qaforge"],
             "ORT quantize_static (qaforge's choices and float-kept set, MinMax)": ["quantize-static", "minmax-bounded", "float-kept"],
             "ORT quantize_static (qaforge's choices and float-kept set, Percentile)": ["quantize-static", "percentile", "float-kept"]}
    if not vnni:
        peers["ORT quantize_dynamic (per-channel, reduce_range)"] = ["quantize-dynamic", "per-channel-reduce-range"]
        peers["ORT quantize_static (qaforge's choices, reduce_range, MinMax)"] = ["quantize-static", "minmax-bounded", "qaforge-reduce-range"]
    for i, (name, job) in enumerate(peers.items()):
        artifacts[name] = f"{stem}.peer{i}.onnx"
        extra = [features] + job[1:] if job[0] == "quantize-static" else job[1:]
        run_process([py, PEERS, job[0], torch_export, artifacts[name]] + extra, limit, args.timeout)
    judged = {}
    for name, path in artifacts.items():
        if not os.path.exists(path):
            log(f"  {name}: not produced ({path}); see {os.path.join(WORK, 'stderr.log')}")
            continue
        report = path + ".report.json"
        # Bounds wide open: the figures are what is compared here, not a verdict (verify's exit
        # status is not either: a collapsed peer still gets its row).
        subprocess.run([QAFORGE, "verify", path, "--golden", model, "--engine", "ort", "--ort-library", args.ort_library,
                        "--min-agreement-f1", "0", "--max-f1-drop", "100", "--min-cosine", "0", "--report", report],
                       cwd=ROOT, capture_output=True, timeout=args.timeout)
        if os.path.exists(report):
            with open(report) as f:
                r = json.load(f)
            judged[name] = {"agreement": r["squad"]["agreement_f1"], "delta_f1": -r["squad"]["f1_drop"],
                            "cosine": r["logits"]["cosine"], "mean_abs_diff": r["logits"]["mean_abs_diff"],
                            "batch_size": r.get("batch_size"), "bytes": r["size_bytes"]}
            log(f"  {name}: agreement F1 {judged[name]['agreement']:.2f}, ΔF1 {judged[name]['delta_f1']:+.2f}, "
                f"cosine {judged[name]['cosine']:.5f}")
    where = (f"trained fixture minilm-l6-squad2, 251 questions, ONNX Runtime, batch 1 for per-tensor int8-dynamic, "
             f"qaforge target {'arm64 (VNNI CPU)' if vnni else 'x86-avx2 (no VNNI)'}")
    for ours_name in ours:
        kind = "quantize_dynamic" if "dynamic" in ours_name else "quantize_static"
        for peer_name in [p for p in peers if kind in p]:
            if ours_name in judged and peer_name in judged:
                a, b = judged[ours_name], judged[peer_name]
                table.add("7", f"{where}: answer agreement F1 with the float model, {ours_name} vs {peer_name}",
                          single(a["agreement"]), single(b["agreement"]), "", True,
                          note=f"ΔF1 {a['delta_f1']:+.2f} vs {b['delta_f1']:+.2f}, cosine {a['cosine']:.5f} vs {b['cosine']:.5f}, "
                               f"mean |Δ| {a['mean_abs_diff']:.4f} vs {b['mean_abs_diff']:.4f}")
    table.fidelity = judged


def judge(args, model, path):
    """qaforge verify --engine ort of `path` against `model`'s golden, bounds wide open: the figures
    are what is compared (a collapsed artifact still gets its row)."""
    report = path + ".report.json"
    subprocess.run([QAFORGE, "verify", path, "--golden", model, "--engine", "ort", "--ort-library", args.ort_library,
                    "--min-agreement-f1", "0", "--max-f1-drop", "100", "--min-cosine", "0", "--report", report],
                   cwd=ROOT, capture_output=True, timeout=args.timeout)
    if not os.path.exists(report):
        return None
    with open(report) as f:
        r = json.load(f)
    return {"agreement": r["squad"]["agreement_f1"], "delta_f1": -r["squad"]["f1_drop"], "cosine": r["logits"]["cosine"],
            "bytes": r["size_bytes"]}


def four_bit(args, table, py, limit, fp32, features):
    """Section 8: int4. (a) Full-size MobileBERT: the size of qaforge's int4 artifacts (blocks of 32
    and 128) and of `--max-size 12MB` against ONNX Runtime's matmul_nbits_quantizer (its defaults,
    and with its Gather quantization for the embedding table), and their speed in ONNX Runtime
    beside fp32 and int8-dynamic (interleaved rounds, one process). (b) The trained fixture: answer
    agreement with the float model of qaforge's roundings (block search, GPTQ) and of the size
    budget at the full-size budget's bytes per parameter, against matmul_nbits_quantizer's defaults,
    HQQ and GPTQ, all judged by qaforge verify in ONNX Runtime."""
    log("8. int4: full-size sizes and speed")
    stem = os.path.join(WORK, "int4." + os.path.basename(MODEL))
    torch_export = os.path.join(WORK, "torch-export.onnx")
    calib = ["--calibration", CALIBRATION, "--samples", str(SAMPLES)]
    artifacts = {"qaforge fp32": fp32, "qaforge int8-dynamic": stem + ".int8-dynamic.onnx",
                 "qaforge int4 (blocks of 32)": stem + ".int4-b32.onnx", "qaforge int4 (blocks of 128)": stem + ".int4-b128.onnx",
                 "qaforge int4 --max-size 12MB": stem + ".12mb.onnx",
                 "ORT matmul_nbits (defaults)": stem + ".ort-nbits.onnx", "ORT matmul_nbits (MatMul and Gather)": stem + ".ort-nbits-tables.onnx"}
    run_process([QAFORGE, "quantize", fp32, "-o", artifacts["qaforge int8-dynamic"], "--precision", "int8-dynamic"], 2**40, 600)
    run_process([QAFORGE, "quantize", fp32, "-o", artifacts["qaforge int4 (blocks of 32)"], "--precision", "int4"], 2**40, 600)
    run_process([QAFORGE, "quantize", fp32, "-o", artifacts["qaforge int4 (blocks of 128)"], "--precision", "int4", "--block-size", "128"], 2**40, 600)
    budget = run_process([QAFORGE, "quantize", fp32, "-o", artifacts["qaforge int4 --max-size 12MB"], "--precision", "int4", "--block-size", "128",
                          "--max-size", "12MB", "--tokenizer", MODEL] + calib, 2**40, args.timeout)
    run_process([py, PEERS, "matmul-nbits", torch_export, artifacts["ORT matmul_nbits (defaults)"], "default"], limit, args.timeout)
    run_process([py, PEERS, "matmul-nbits", torch_export, artifacts["ORT matmul_nbits (MatMul and Gather)"], "tables"], limit, args.timeout)
    for k in [k for k, v in artifacts.items() if not os.path.exists(v)]:
        log(f"  {k}: not produced ({artifacts[k]}); see {os.path.join(WORK, 'stderr.log')}")
        del artifacts[k]
    sizes = {k: os.path.getsize(v) for k, v in artifacts.items()}
    for ours in ["qaforge int4 (blocks of 32)", "qaforge int4 (blocks of 128)", "qaforge int4 --max-size 12MB"]:
        for peer in ["ORT matmul_nbits (defaults)", "ORT matmul_nbits (MatMul and Gather)", "qaforge int8-dynamic"]:
            if ours in sizes and peer in sizes:
                table.add("8", f"full-size MobileBERT: artifact bytes, {ours} vs {peer}", single(sizes[ours]), single(sizes[peer]), " B", False, digits=0,
                          note=f"quantize took {budget.seconds:.0f} s" if ours.endswith("12MB") else "")
    result = run_process([py, SPEED, features] + [f"{k}={v}" for k, v in artifacts.items()] + ["--rounds", str(max(args.runs, 7))], 2**40, args.timeout)
    speeds = result.json_lines()[0]
    runs = speeds["artifacts"]

    rate = functools.partial(rate_of, speeds)

    where = f"full-size MobileBERT (random), ONNX Runtime {speeds['onnxruntime']}, {speeds['threads']} threads, batch 1, real lengths"
    for ours in ["qaforge int4 (blocks of 32)", "qaforge int4 (blocks of 128)", "qaforge int4 --max-size 12MB"]:
        for peer in ["ORT matmul_nbits (defaults)", "qaforge int8-dynamic", "qaforge fp32"]:
            if ours in runs and peer in runs:
                table.add("8", f"{where}: features/s, {ours} vs {peer}", rate(ours), rate(peer), "/s", True)

    log("8. int4: fidelity on the trained fixture")
    model = TRAINED
    stem = os.path.join(WORK, "int4." + os.path.basename(model))
    qa_fp32, torch_export = stem + ".qaforge.onnx", stem + ".torch.onnx"
    run_process([QAFORGE, "convert", model, "-o", qa_fp32], 2**40, 600)
    run_process([py, PEERS, "export", model, torch_export], limit, args.timeout)
    calib = ["--calibration", CALIBRATION, "--tokenizer", model, "--samples", str(SAMPLES)]
    # The full-size budget's bytes per parameter: 12 MB for 24,582,914 parameters.
    with open(os.path.join(model, "model.safetensors"), "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    parameters = sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    proxy = str(int(12e6 * parameters / 24582914))
    ours = {"qaforge int4 (blocks of 32, search)": ["--block-size", "32"],
            "qaforge int4 (blocks of 32, GPTQ)": ["--block-size", "32", "--rounding", "gptq"] + calib,
            "qaforge int4 (blocks of 128, search)": ["--block-size", "128"],
            "qaforge int4 (blocks of 128, GPTQ)": ["--block-size", "128", "--rounding", "gptq"] + calib,
            f"qaforge int4 --max-size {proxy} (search)": ["--block-size", "128", "--max-size", proxy] + calib,
            f"qaforge int4 --max-size {proxy} (GPTQ)": ["--block-size", "128", "--max-size", proxy, "--rounding", "gptq"] + calib,
            "qaforge int4 --max-size 12MB (GPTQ)": ["--block-size", "128", "--max-size", "12MB", "--rounding", "gptq"] + calib}
    peers = {"ORT matmul_nbits (defaults: blocks of 128, round to nearest)": ["default", "128"],
             "ORT matmul_nbits (MatMul and Gather, blocks of 128)": ["tables", "128"],
             "ORT matmul_nbits (MatMul and Gather, blocks of 32)": ["tables", "32"],
             "ORT matmul_nbits (HQQ, blocks of 128)": ["hqq", "128"],
             "ORT matmul_nbits (GPTQ, blocks of 128)": ["gptq", "128", os.path.join(WORK, "int4.trained-features.safetensors")]}
    run_process([BENCH, "features", model, CALIBRATION, str(SAMPLES), peers["ORT matmul_nbits (GPTQ, blocks of 128)"][2]], 2**40, 600)
    artifacts = {}
    for i, (name, extra) in enumerate(ours.items()):
        artifacts[name] = f"{stem}.ours{i}.onnx"
        run_process([QAFORGE, "quantize", qa_fp32, "-o", artifacts[name], "--precision", "int4"] + extra, 2**40, args.timeout)
    for i, (name, job) in enumerate(peers.items()):
        artifacts[name] = f"{stem}.peer{i}.onnx"
        run_process([py, PEERS, "matmul-nbits", torch_export, artifacts[name]] + job, limit, args.timeout)
    judged = {}
    for name, path in artifacts.items():
        r = judge(args, model, path) if os.path.exists(path) else None
        if r is None:
            log(f"  {name}: not produced or not judged ({path})")
            continue
        judged[name] = r
        log(f"  {name}: {r['bytes']} bytes, agreement F1 {r['agreement']:.2f}, ΔF1 {r['delta_f1']:+.2f}, cosine {r['cosine']:.5f}")
    where = "trained fixture minilm-l6-squad2, 251 questions, ONNX Runtime"
    for o in ours:
        for p in peers:
            if o in judged and p in judged:
                a, b = judged[o], judged[p]
                table.add("8", f"{where}: answer agreement F1 with the float model, {o} vs {p}", single(a["agreement"]), single(b["agreement"]), "", True,
                          note=f"{a['bytes']} vs {b['bytes']} bytes; ΔF1 {a['delta_f1']:+.2f} vs {b['delta_f1']:+.2f}, cosine {a['cosine']:.5f} vs {b['cosine']:.5f}")
    table.int4 = judged


def write(args, table, facts):
    markdown = table.markdown()
    header = (f"qaforge `make bench` (sections {args.sections}), {facts['date']}: {facts['cores']} cores, {facts['cpu']} "
              f"({', '.join(facts['int8_features'])}); peers torch {facts['peers']['torch']}, onnxruntime "
              f"{facts['peers']['onnxruntime']}; full-size random MobileBERT (24,582,914 parameters); "
              f"qaforge/examples in release builds. Ratios: how many times faster / smaller qaforge is (or, for "
              f"section 3's inference rows, tract versus ONNX Runtime on the same artifact; section 6: qaforge's "
              f"ONNX Runtime artifact versus the peer artifact, both in ONNX Runtime; section 7: qaforge's answer agreement "
              f"with the float model versus the peer quantizer's, one harness).")
    print(header + "\n\n" + markdown)
    os.makedirs(args.out, exist_ok=True)
    partial = "" if args.sections == "1,2,3,4,6,7,8" else "-sections-" + args.sections.replace(",", "")
    stem = os.path.join(args.out, f"bench-{facts['date']}{partial}")
    # A second run on the same day (another machine, another commit) gets its own files.
    base, again = stem, 1
    while os.path.exists(stem + ".json") or os.path.exists(stem + ".md"):
        again += 1
        stem = f"{base}-{again}"
    with open(stem + ".json", "w") as f:
        json.dump({"machine": facts, "rows": table.rows, "fidelity": getattr(table, "fidelity", None), "int4": getattr(table, "int4", None)}, f, indent=1)
        f.write("\n")
    with open(stem + ".md", "w") as f:
        f.write(header + "\n\n" + markdown + "\n")
    log(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
