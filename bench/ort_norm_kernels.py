#!/usr/bin/env python3
"""Which residual-norm form ONNX Runtime's CPU kernels run faster: com.microsoft
SkipLayerNormalization, or the standard Add + LayerNormalization it replaces. The ONNX Runtime
flavour (crates/qaforge-onnxruntime) emits whichever is faster on the versions qaforge pins; this
script is how that was decided, and how to check it again on another version or CPU.

Each form is a chain of 12 norms over [1, SEQUENCE, HIDDEN] (MiniLM's 12 residual norms at a SQuAD
feature's typical length), built with graph optimizations off, so that each session runs exactly
the form written; the sessions are timed in interleaved rounds (the machine's drift reaches both
alike) and each figure is the median over the rounds of the time per norm. Prints one JSON object.

usage: ort_norm_kernels.py [--sequence 210] [--hidden 384] [--threads 1] [--rounds 15]
"""

import argparse
import json

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from kernel_timing import interleaved_medians, sessions_as_written

NORMS = 12


def chain(form, sequence, hidden, rng):
    """A model of NORMS residual norms in `form`, each reading the previous one's output."""
    initializers = [numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), name) for name in ("gamma", "beta")]
    nodes, x = [], "x"
    for i in range(NORMS):
        if form == "SkipLayerNormalization":
            nodes.append(helper.make_node("SkipLayerNormalization", [x, "skip", "gamma", "beta"], [f"y{i}"], domain="com.microsoft", epsilon=1e-12))
        else:
            nodes.append(helper.make_node("Add", [x, "skip"], [f"sum{i}"]))
            nodes.append(helper.make_node("LayerNormalization", [f"sum{i}", "gamma", "beta"], [f"y{i}"], axis=-1, epsilon=1e-12))
        x = f"y{i}"
    shape = [1, sequence, hidden]
    graph = helper.make_graph(nodes, form, [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "skip")],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)], initializers)
    # IR version 8 so that older ONNX Runtime releases load it too.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)], ir_version=8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequence", type=int, default=210)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=20, help="runs of each chain per round")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    forms = ["SkipLayerNormalization", "Add + LayerNormalization"]
    sessions = sessions_as_written({f: chain(f, args.sequence, args.hidden, rng) for f in forms}, args.threads)
    feed = {n: rng.standard_normal((1, args.sequence, args.hidden)).astype(np.float32) for n in ("x", "skip")}
    median = interleaved_medians(sessions, feed, args.rounds, args.runs, NORMS)
    print(json.dumps({
        "onnxruntime": ort.__version__,
        "shape": [1, args.sequence, args.hidden],
        "threads": args.threads,
        "rounds": args.rounds,
        "microseconds_per_norm": {f: round(v, 1) for f, v in median.items()},
        "faster": min(median, key=median.get),
        "ratio": round(max(median.values()) / min(median.values()), 2),
    }))


if __name__ == "__main__":
    main()
