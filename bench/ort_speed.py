#!/usr/bin/env python3
"""ONNX Runtime speed of several artifacts of one model, in one process, timed in interleaved
rounds: each round runs every session once over the same features (batch 1, each feature cut to
its real length), so that the machine's drift reaches every artifact alike; each artifact's
figure is the median of its rounds. Also reports the op counts of ONNX Runtime's optimized graph
(ORT_ENABLE_ALL, as the session runs it) and, for the artifacts named in --profile, where the
time goes (ONNX Runtime's profiler: kernel time by op type, and the share in matrix-product
kernels, i.e. how close the artifact runs to its GEMM limit). Prints one JSON object.

usage: ort_speed.py FEATURES.safetensors LABEL=ARTIFACT.onnx... [--threads 2] [--rounds 7]
                    [--features 16] [--profile LABEL...]
"""

import argparse
import collections
import json
import os
import statistics
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file

# Kernels whose work is a matrix product (the integer ones include quantizing their float input);
# attention kernels also multiply matrices but spend part of their time in softmax and reshapes, so
# they are not counted: the share is a lower bound on the time spent multiplying.
GEMM = {"MatMul", "Gemm", "FusedMatMul", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul",
        "QGemm", "MatMulNBits"}
FUSED = ["Attention", "MultiHeadAttention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu", "FastGelu", "Gelu",
         "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearMatMul", "FusedMatMul"]


def options(threads, optimized_path=None, profile_prefix=None):
    o = ort.SessionOptions()
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.log_severity_level = 3
    if optimized_path:
        o.optimized_model_filepath = optimized_path
    if profile_prefix:
        o.enable_profiling = True
        o.profile_file_prefix = profile_prefix
    return o


def feeds(session, tensors, i):
    n = int(tensors["attention_mask"][i].sum())
    row = {k: np.ascontiguousarray(v[i:i + 1, :n]).astype(np.int64) for k, v in tensors.items()}
    out = {}
    for inp in session.get_inputs():
        value = row[inp.name]
        out[inp.name] = value.astype(np.int32) if inp.type == "tensor(int32)" else value
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("features")
    parser.add_argument("artifacts", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--features-per-round", type=int, default=16)
    parser.add_argument("--profile", nargs="*", default=[])
    args = parser.parse_args()
    tensors = load_file(args.features)
    count = min(args.features_per_round, tensors["input_ids"].shape[0])
    artifacts = dict(a.split("=", 1) for a in args.artifacts)
    result = {"onnxruntime": ort.__version__, "threads": args.threads, "rounds": args.rounds, "features_per_round": count,
              "mean_real_length": float(np.mean([tensors["attention_mask"][i].sum() for i in range(count)])), "artifacts": {}}
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, path in artifacts.items():
            optimized = os.path.join(tmp, f"{len(sessions)}.onnx")
            sessions[label] = ort.InferenceSession(path, options(args.threads, optimized_path=optimized), providers=["CPUExecutionProvider"])
            ops = collections.Counter(n.op_type for n in onnx.load(optimized).graph.node)
            result["artifacts"][label] = {"path": path, "size_bytes": os.path.getsize(path), "optimized_nodes": sum(ops.values()),
                                          "fused_ops": {op: ops[op] for op in FUSED if ops.get(op)}, "seconds_per_round": []}
        all_feeds = {label: [feeds(s, tensors, i) for i in range(count)] for label, s in sessions.items()}
        for s in sessions.values():  # warm-up
            s.run(None, feeds(s, tensors, 0))
        for _ in range(args.rounds):
            for label, s in sessions.items():
                started = time.perf_counter()
                for f in all_feeds[label]:
                    s.run(None, f)
                result["artifacts"][label]["seconds_per_round"].append(time.perf_counter() - started)
        for label in sessions:
            r = result["artifacts"][label]
            r["median_s"] = statistics.median(r["seconds_per_round"])
            r["features_per_s"] = count / r["median_s"]
        for label in args.profile:
            prefix = os.path.join(tmp, "profile")
            s = ort.InferenceSession(artifacts[label], options(args.threads, profile_prefix=prefix), providers=["CPUExecutionProvider"])
            for i in range(count):
                s.run(None, feeds(s, tensors, i))
            with open(s.end_profiling()) as f:
                events = json.load(f)
            by_op = collections.Counter()
            for e in events:
                if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                    by_op[e["args"].get("op_name", "?")] += e.get("dur", 0)
            total = sum(by_op.values()) or 1
            result["artifacts"][label]["kernel_time_by_op"] = {op: round(100 * us / total, 1) for op, us in by_op.most_common(8)}
            result["artifacts"][label]["gemm_share"] = round(100 * sum(us for op, us in by_op.items() if op in GEMM) / total, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
