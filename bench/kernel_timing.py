"""What bench/ort_norm_kernels.py and bench/ort_attention_kernels.py share: ONNX Runtime sessions that
run a graph exactly as written, and interleaved timing of several such sessions."""

import statistics
import time

import onnxruntime as ort


def sessions_as_written(models, threads):
    """One CPU session per (name, ModelProto) in `models`, graph optimizations off (each runs exactly
    the form written), `threads` intra-op threads."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return {name: ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]) for name, model in models.items()}


def interleaved_medians(sessions, feed, rounds, runs, units):
    """Each round runs every session `runs` times on `feed`, one after the other (the machine's drift
    reaches them alike); returns each session's median over the rounds of µs per unit (a session
    run holding `units` of the op timed)."""
    microseconds = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            for _ in range(runs):
                session.run(None, feed)
            microseconds[name].append((time.perf_counter() - start) / runs / units * 1e6)
    return {name: statistics.median(v) for name, v in microseconds.items()}
