#!/usr/bin/env python3
"""Which attention form ONNX Runtime's CPU kernels run faster: ONNX's own Attention (opset 23, ONNX
Runtime >= 1.23) with the padding mask as one additive [batch, 1, S, S] bias (what the ONNX Runtime
flavour in crates/qaforge-onnxruntime emits where query, key and value are not three projections
of one input: MobileBERT, and every int8 artifact), or com.microsoft MultiHeadAttention with an
integer key-padding mask (its form before, and still where a graph cannot be raised to opset 23).
This script is how that choice was made, and how to check it again on another ONNX Runtime version
or CPU (as bench/ort_norm_kernels.py does for residual norms).

Each form is a chain of 6 attentions over [1, SEQUENCE, HIDDEN] (query, key and value given; the
mask keeps every key, as a batch of one at its real length does), built with graph optimizations
off so that each session runs exactly the form written. Before timing, both forms run one feature
whose last keys are masked and the largest difference between their outputs is reported. The
sessions are timed in interleaved rounds and each figure is the median over the rounds of the time
per attention. Prints one JSON object.

usage: ort_attention_kernels.py [--sequence 210] [--hidden 128] [--heads 4] [--threads 1] [--rounds 15]
"""

import argparse
import json

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from kernel_timing import interleaved_medians, sessions_as_written

ATTENTIONS = 6
MASKED = -10000.0


def chain(form, hidden, heads):
    """A model of ATTENTIONS attentions in `form`, each one's output the next one's query."""
    scale = 1.0 / float(np.sqrt(hidden // heads))
    nodes, initializers = [], []
    if form == "MultiHeadAttention":
        nodes.append(helper.make_node("Cast", ["mask"], ["mask32"], to=TensorProto.INT32))
    else:
        # (1 - mask) x c over [batch, 1, 1, S], expanded once to [batch, 1, S, S].
        initializers += [numpy_helper.from_array(np.array(1.0, np.float32), "one"), numpy_helper.from_array(np.array(MASKED, np.float32), "c"),
                         numpy_helper.from_array(np.array([1, 2], np.int64), "axes"), numpy_helper.from_array(np.array([1, 1], np.int64), "ones"),
                         numpy_helper.from_array(np.array([1], np.int64), "one_dim")]
        nodes += [helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT), helper.make_node("Sub", ["one", "maskf"], ["inverse"]),
                  helper.make_node("Mul", ["inverse", "c"], ["bias0"]), helper.make_node("Unsqueeze", ["bias0", "axes"], ["bias1"]),
                  helper.make_node("Shape", ["mask"], ["keys"], start=1), helper.make_node("Concat", ["ones", "keys", "one_dim"], ["target"], axis=0),
                  helper.make_node("Expand", ["bias1", "target"], ["bias"])]
    query = "q"
    for i in range(ATTENTIONS):
        if form == "MultiHeadAttention":
            nodes.append(helper.make_node("MultiHeadAttention", [query, "k", "v", "", "mask32"], [f"y{i}"], domain="com.microsoft",
                                          num_heads=heads, scale=scale, mask_filter_value=MASKED))
        else:
            nodes.append(helper.make_node("Attention", [query, "k", "v", "bias"], [f"y{i}"], q_num_heads=heads, kv_num_heads=heads, scale=scale))
        query = f"y{i}"
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, "S", hidden]) for n in ("q", "k", "v")]
    inputs.append(helper.make_tensor_value_info("mask", TensorProto.INT64, [1, "S"]))
    graph = helper.make_graph(nodes, form, inputs, [helper.make_tensor_value_info(query, TensorProto.FLOAT, [1, "S", hidden])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)], ir_version=8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequence", type=int, default=210)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=10, help="runs of each chain per round")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    forms = ["MultiHeadAttention", "Attention (opset 23)"]
    sessions = sessions_as_written({f: chain(f, args.hidden, args.heads) for f in forms}, args.threads)
    feed = {n: rng.standard_normal((1, args.sequence, args.hidden)).astype(np.float32) for n in ("q", "k", "v")}
    masked = dict(feed, mask=np.concatenate([np.ones((1, args.sequence - 10), np.int64), np.zeros((1, 10), np.int64)], axis=1))
    outputs = [s.run(None, masked)[0] for s in sessions.values()]
    feed["mask"] = np.ones((1, args.sequence), np.int64)
    median = interleaved_medians(sessions, feed, args.rounds, args.runs, ATTENTIONS)
    print(json.dumps({
        "onnxruntime": ort.__version__,
        "shape": [1, args.sequence, args.hidden],
        "heads": args.heads,
        "threads": args.threads,
        "rounds": args.rounds,
        "max_abs_difference": float(np.abs(outputs[0] - outputs[1]).max()),
        "microseconds_per_attention": {f: round(v, 1) for f, v in median.items()},
        "faster": min(median, key=median.get),
        "ratio": round(max(median.values()) / min(median.values()), 2),
    }))


if __name__ == "__main__":
    main()
