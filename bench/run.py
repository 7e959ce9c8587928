#!/usr/bin/env python3
"""`make bench`: qaforge against the Python chain people use today, on this machine, in one run.

Needs the release builds of qaforge and of examples/bench.rs (the Makefile builds them) and a
Python with the pinned peers (bench/requirements.txt). Writes bench/results/<date>.json and .md
and prints the Markdown table: for every row qaforge's figure, the peer's and the ratio
(how many times better qaforge is; below 1 means the peer wins). Figures are medians of --runs
runs with [min–max]; whole commands are timed as processes (imports included) and their peak
RSS is read from the kernel (wait4; it includes the ~10 MB this driver had when it forked them).
"""

import argparse
import datetime
import json
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
    args = parser.parse_args()
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

    log("1. convert: qaforge convert vs torch.onnx.export")
    fp32 = os.path.join(WORK, "full.onnx")
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
            one = lambda v: {"min": v, "median": v, "max": v, "runs": 0}
            table.add("3", f"{name} speed-up over fp32 ({length}, batch {batch}), ratio of medians: tract vs ONNX Runtime", one(t), one(o), "×", True)

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

    markdown = table.markdown()
    header = (f"qaforge `make bench`, {facts['date']}: {facts['cores']} cores, {facts['cpu']} "
              f"({', '.join(facts['int8_features'])}); peers torch {facts['peers']['torch']}, onnxruntime "
              f"{facts['peers']['onnxruntime']}; full-size random MobileBERT (24,582,914 parameters); "
              f"qaforge/examples in release builds. Ratios: how many times faster / smaller qaforge is (or, for "
              f"inference rows, tract versus ONNX Runtime on the same artifact).")
    print(header + "\n\n" + markdown)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"bench-{facts['date']}")
    with open(stem + ".json", "w") as f:
        json.dump({"machine": facts, "rows": table.rows}, f, indent=1)
        f.write("\n")
    with open(stem + ".md", "w") as f:
        f.write(header + "\n\n" + markdown + "\n")
    log(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
