#!/usr/bin/env python3
"""`make bench` section 9, serving: the same questions answered four ways on the trained fixture,
per precision, on this machine in one run.

  (a) transformers' pipeline("question-answering") in PyTorch, at batch size 1 and at its best
      batch size among 1, 4, 8, 16 (transformers 4.57: version 5 removed the pipeline);
  (b) a plain ONNX Runtime Python loop on the same artifact qaforge runs: tokenizers' windows,
      one window a run (batch 1), run_qa.py's post-processing in numpy;
  (c) `qaforge answer --batch` (by default a session a core of one thread each, and --sessions 1
      with every core);
  (d) `qaforge serve` loaded by wrk on loopback at concurrency 1, 8 and 32 (a Lua script sends
      the questions in turn, each wrk thread from its own offset).

Each gives questions/s (tokenizing and post-processing included; loading excluded, as the loop
excludes its session's creation: (c)'s whole process, loading included, is shown beside), and (d) p50 and
p99 latency; serve's added latency at concurrency 1 is its mean request time minus the mean
tokenization and inference time its /metrics report. Answers' agreement with the float model is
the SQuAD F1 of each path's predictions against the fp32 artifact's `answer --batch`
predictions. Writes bench/results/serving-<date>.{json,md} (-2, -3... for another run that day); every load loop is bounded (wrk
--duration) and every server is stopped by SIGTERM before the next starts.

  python bench/serving.py --ort-library LIB [--questions 300] [--precisions fp32,int8-static]
"""

import argparse
import collections
import datetime
import json
import os
import re
import signal
import string
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "bench", "serving")
# The release build by default; QAFORGE=path measures another (the table names which).
QAFORGE = os.environ.get("QAFORGE", os.path.join(ROOT, "target", "release", "qaforge"))
FIXTURE = os.path.join(ROOT, "golden", "minilm-l6-squad2")
CALIBRATION = os.path.join(ROOT, "golden", "squad", "calibration.json")


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def questions_of(dev, count):
    """The first `count` questions of the SQuAD v2 dev set (its first articles are the trained
    fixture's held-out ones), as SQuAD JSON and as (id, question, context) triples."""
    with open(dev) as f:
        data = json.load(f)["data"]
    picked, articles = [], []
    for article in data:
        paragraphs = []
        for p in article["paragraphs"]:
            qas = [qa for qa in p["qas"]][: max(0, count - len(picked))]
            picked.extend((qa["id"], qa["question"], p["context"]) for qa in qas)
            if qas:
                paragraphs.append({"context": p["context"], "qas": qas})
            if len(picked) >= count:
                break
        if paragraphs:
            articles.append({"title": article["title"], "paragraphs": paragraphs})
        if len(picked) >= count:
            break
    return {"version": "v2.0", "data": articles}, picked


def normalize(s):
    s = "".join(c for c in s.lower() if c not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def agreement(predictions, reference):
    """SQuAD F1 of `predictions` against `reference` (both id → text), in percent."""
    total = 0.0
    for qid, want in reference.items():
        got = predictions.get(qid, "")
        a, b = normalize(got).split(), normalize(want).split()
        if not a or not b:
            total += float(a == b)
            continue
        common = sum((collections.Counter(a) & collections.Counter(b)).values())
        if common:
            p, r = common / len(a), common / len(b)
            total += 2 * p * r / (p + r)
    return 100.0 * total / max(1, len(reference))


def pipeline_run(picked, batch_size, threads):
    """(a) in a child process: transformers' pipeline over every question."""
    code = f"""
import json, sys, time, torch
torch.set_num_threads({threads})
from transformers import pipeline
qa = pipeline("question-answering", model={FIXTURE!r}, tokenizer={FIXTURE!r}, device="cpu")
picked = json.load(sys.stdin)
started = time.perf_counter()
out = qa([{{"question": q, "context": c}} for _, q, c in picked], batch_size={batch_size}, handle_impossible_answer=True, max_answer_len=30)
seconds = time.perf_counter() - started
out = out if isinstance(out, list) else [out]
print(json.dumps({{"seconds": seconds, "predictions": {{p[0]: o["answer"] for p, o in zip(picked, out)}}}}))
"""
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(picked), capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def ort_loop(artifact, picked, threads):
    """(b) in a child process: one ONNX Runtime session, one window a run, run_qa.py's
    post-processing (n-best 20, answers up to 30 tokens, null score against the best span)."""
    code = f"""
import json, sys, time
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
options = ort.SessionOptions(); options.intra_op_num_threads = {threads}
session = ort.InferenceSession({artifact!r}, options, providers=["CPUExecutionProvider"])
tok = Tokenizer.from_file({os.path.join(FIXTURE, 'tokenizer.json')!r})
tok.enable_truncation(max_length=384, stride=128, strategy="only_second"); tok.no_padding()
picked = json.load(sys.stdin)
started = time.perf_counter()
predictions = {{}}
for qid, question, context in picked:
    first = tok.encode(question.lstrip(), context)
    null, best = None, None
    for enc in [first] + list(first.overflowing):
        n = len(enc.ids)
        ids = np.array([enc.ids + [0]], dtype=np.int64)
        feed = {{"input_ids": ids, "attention_mask": np.array([[1] * n + [0]], dtype=np.int64), "token_type_ids": np.array([enc.type_ids + [0]], dtype=np.int64)}}
        s, e = session.run(None, feed)
        s, e = s[0][:n], e[0][:n]
        offsets = [o if sid == 1 else None for o, sid in zip(enc.offsets, enc.sequence_ids)]
        score = s[0] + e[0]
        null = score if null is None else min(null, score)
        for i in np.argsort(s)[-1:-21:-1]:
            for j in np.argsort(e)[-1:-21:-1]:
                if offsets[i] is None or offsets[j] is None or j < i or j - i + 1 > 30:
                    continue
                if best is None or s[i] + e[j] > best[0]:
                    best = (s[i] + e[j], offsets[i][0], offsets[j][1])
    predictions[qid] = context[best[1]:best[2]] if best is not None and null - best[0] <= 0 else ""
print(json.dumps({{"seconds": time.perf_counter() - started, "predictions": predictions}}))
"""
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(picked), capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def answer_batch(artifact, squad_path, out, ort_library, extra=()):
    """(c): `answer --batch --json`; its questions/s count the answering (tokenizing, running,
    post-processing), not the loading, as the loop's count no session creation; the whole
    process's time is kept beside it."""
    started = time.perf_counter()
    done = subprocess.run([QAFORGE, "answer", artifact, "--tokenizer", FIXTURE, "--batch", squad_path, "-o", out, "--engine", "ort",
                           "--ort-library", ort_library, "--json", *extra], check=True, capture_output=True, text=True)
    process_seconds = time.perf_counter() - started
    summary = json.loads(done.stdout)
    with open(out) as f:
        return {"seconds": summary["seconds"] - summary["load_seconds"], "process_seconds": process_seconds,
                "load_seconds": summary["load_seconds"], "predictions": json.load(f)}


WRK_SCRIPT = """
-- Every wrk thread walks the same bodies from its own offset (thread k of n starts k/n of the way
-- in), so that a run covers the questions evenly rather than the first few many times over.
local bodies = {}
local i = 0
local next_id = 0
setup = function(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
init = function(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  i = math.floor(id * #bodies / tonumber(args[2]))
end
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/predict", {["Content-Type"] = "application/json"}, bodies[i])
end
"""


def metric_sum(text, name):
    m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def serve_load(artifact, picked, ort_library, concurrency, seconds, port=18080, extra=()):
    """(d): a server, wrk at `concurrency` for `seconds`, then SIGTERM. Returns questions/s, p50,
    p99 (ms) and, from /metrics, the mean tokenization + inference time per request."""
    bodies = os.path.join(WORK, "bodies.jsonl")
    with open(bodies, "w") as f:
        for _, q, c in picked:
            f.write(json.dumps({"inputs": {"question": q, "context": c}}) + "\n")
    script = os.path.join(WORK, "rotate.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)
    server = subprocess.Popen([QAFORGE, "serve", artifact, "--tokenizer", FIXTURE, "--port", str(port), "--engine", "ort",
                               "--ort-library", ort_library, "--max-concurrent-requests", "128", *extra], stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(base + "/ready", timeout=2).status == 200:
                    break
            except Exception:
                pass
            if time.time() > deadline:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.2)
        threads = min(concurrency, 4)
        out = subprocess.run(["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds}s", "--latency", "-s", script, base, "--", bodies, str(threads)],
                             capture_output=True, text=True, check=True, timeout=seconds + 120).stdout
        metrics = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)

    def latency(label):
        m = re.search(rf"^\s*{label}%\s+([0-9.]+)(us|ms|s)$", out, re.M)
        if not m:
            return None
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    count = metric_sum(metrics, "qaforge_request_inference_duration_seconds_count") or 1.0
    compute_ms = 1000 * (metric_sum(metrics, "qaforge_request_inference_duration_seconds_sum") + metric_sum(metrics, "qaforge_request_tokenization_duration_seconds_sum")) / count
    mean_ms = 1000 * metric_sum(metrics, "qaforge_request_duration_seconds_sum") / max(1.0, metric_sum(metrics, "qaforge_request_duration_seconds_count"))
    return {"questions_per_second": rate, "p50_ms": latency("50"), "p99_ms": latency("99"), "non_2xx": int(errors.group(1)) if errors else 0,
            "server_mean_ms": mean_ms, "compute_mean_ms": compute_ms}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ort-library", required=True)
    p.add_argument("--dev", default=os.path.join(ROOT, "..", "shared", "data", "squad-v2", "dev-v2.0.json"))
    p.add_argument("--questions", type=int, default=300)
    p.add_argument("--precisions", default="fp32,int8-static,int8-dynamic")
    p.add_argument("--seconds", type=int, default=20, help="wrk's duration at each concurrency")
    p.add_argument("--skip-pipeline", action="store_true")
    p.add_argument("--repeats", type=int, default=3, help="runs of (b) and (c) each, taking turns; the median is reported")
    args = p.parse_args()
    os.makedirs(WORK, exist_ok=True)
    threads = os.cpu_count() or 1
    squad, picked = questions_of(args.dev, args.questions)
    squad_path = os.path.join(WORK, "questions.json")
    with open(squad_path, "w") as f:
        json.dump(squad, f)
    artifacts = {"fp32": os.path.join(WORK, "fp32.onnx")}
    subprocess.run([QAFORGE, "convert", FIXTURE, "-o", artifacts["fp32"]], check=True, capture_output=True)
    for precision in args.precisions.split(","):
        if precision == "fp32":
            continue
        artifacts[precision] = os.path.join(WORK, f"{precision}.onnx")
        extra = ["--calibration", CALIBRATION, "--tokenizer", FIXTURE] if precision == "int8-static" else []
        # x86-avx2 storage: ONNX Runtime computes it exactly on every x86 CPU.
        target = ["--target", "x86-avx2"] if precision.startswith("int8") else []
        subprocess.run([QAFORGE, "quantize", artifacts["fp32"], "-o", artifacts[precision], "--precision", precision, *extra, *target],
                       check=True, capture_output=True)
    rows = []
    float_answers = answer_batch(artifacts["fp32"], squad_path, os.path.join(WORK, "fp32.predictions.json"), args.ort_library)["predictions"]

    def row(path, precision, result, **more):
        rows.append({"path": path, "precision": precision, "questions_per_second": len(picked) / result["seconds"] if "seconds" in result else result["questions_per_second"],
                     "agreement_f1": agreement(result["predictions"], float_answers) if "predictions" in result else None, **more})
        log(f"  {path} {precision}: {rows[-1]['questions_per_second']:.1f} questions/s" + (f", agreement {rows[-1]['agreement_f1']:.2f}" if rows[-1]["agreement_f1"] is not None else ""))

    if not args.skip_pipeline:
        log("(a) transformers pipeline, PyTorch fp32")
        best = None
        for batch_size in (1, 4, 8, 16):
            result = pipeline_run(picked, batch_size, threads)
            row(f"(a) transformers pipeline, batch {batch_size}", "fp32 (PyTorch)", result)
            if best is None or result["seconds"] < best[1]["seconds"]:
                best = (batch_size, result)
    for precision, artifact in artifacts.items():
        # (b) and (c) take turns, `--repeats` times: this machine's readings move by 10-15% from
        # one minute to the next, so each path's median run is kept (every reading is in the JSON).
        runs = collections.defaultdict(list)
        paths = [("(b) ONNX Runtime Python loop, batch 1", lambda: ort_loop(artifact, picked, threads))]
        for label, extra, suffix in (("(c) qaforge answer --batch (a session a core)", [], ""), ("(c) qaforge answer --batch --sessions 1", ["--sessions", "1"], "-1")):
            out = os.path.join(WORK, f"{precision}.predictions{suffix}.json")
            paths.append((label, lambda extra=extra, out=out: answer_batch(artifact, squad_path, out, args.ort_library, extra)))
        for repeat in range(args.repeats):
            for label, run in paths:
                log(f"{label}, {precision} ({repeat + 1}/{args.repeats})")
                runs[label].append(run())
        for label, _ in paths:
            ordered = sorted(runs[label], key=lambda r: r["seconds"])
            median = ordered[len(ordered) // 2]
            more = {"readings": [len(picked) / r["seconds"] for r in runs[label]]}
            if "process_seconds" in median:
                more.update(process_questions_per_second=len(picked) / median["process_seconds"], load_seconds=median["load_seconds"])
            row(label, precision, median, **more)
        for concurrency, extra in ((1, []), (8, []), (32, []), (8, ["--sessions", "2"])):
            label = f"(d) qaforge serve{' ' + ' '.join(extra) if extra else ''}, concurrency {concurrency}"
            log(f"{label}, {precision}")
            result = serve_load(artifact, picked, args.ort_library, concurrency, args.seconds, extra=extra)
            row(label, precision, result, p50_ms=result["p50_ms"], p99_ms=result["p99_ms"], non_2xx=result["non_2xx"],
                added_ms=result["server_mean_ms"] - result["compute_mean_ms"])
    date = datetime.date.today().isoformat()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    out = os.path.join(ROOT, "bench", "results", f"serving-{date}")
    # Another run the same day writes -2, -3...: earlier readings are kept.
    if os.path.exists(out + ".json"):
        out += "-" + str(next(k for k in range(2, 1000) if not os.path.exists(f"{out}-{k}.json")))
    with open(out + ".json", "w") as f:
        json.dump({"date": date, "cpu": cpu, "cores": threads, "questions": len(picked), "qaforge": os.path.relpath(QAFORGE, ROOT), "rows": rows}, f, indent=1)
        f.write("\n")
    build = os.path.relpath(QAFORGE, ROOT)
    lines = [f"`make bench` section 9 (serving), {date}: {threads} cores, {cpu}; {len(picked)} SQuAD v2 dev questions, trained fixture minilm-l6-squad2; qaforge {build}", "",
             "| path | precision | questions/s | with loading | p50 ms | p99 ms | added ms (c=1) | agreement F1 with fp32 |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        fmt = lambda v, d=1: "" if v is None else f"{v:.{d}f}"
        lines.append(f"| {r['path']} | {r['precision']} | {r['questions_per_second']:.1f} | {fmt(r.get('process_questions_per_second'))} | {fmt(r.get('p50_ms'))} | {fmt(r.get('p99_ms'))} | "
                     f"{fmt(r.get('added_ms'), 2) if 'concurrency 1' in r['path'] else ''} | {fmt(r['agreement_f1'], 2)} |")
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
