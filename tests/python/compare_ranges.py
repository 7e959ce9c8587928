"""Compares the activation ranges of two int8-static artifacts of one graph, calibrated by
different engines (qaforge quantize --calibration-engine tract / ort): every QuantizeLinear's scale
must agree within a relative tolerance and its zero point exactly (or by one step, where the
rounding of zero_point = -min / scale falls on the other side of .5).

  python compare_ranges.py A.onnx B.onnx [--rtol 1e-4]
"""

import argparse
import sys

import onnx
from onnx import numpy_helper


def scales(path):
    model = onnx.load(path)
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            scale = constants[node.input[1]]
            zero = constants[node.input[2]] if len(node.input) > 2 else 0
            found.append((node.input[0], float(scale.reshape(-1)[0]), int(zero.reshape(-1)[0]) if hasattr(zero, "reshape") else 0))
    return found


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rtol", type=float, default=1e-4)
    args = parser.parse_args()
    a, b = scales(args.a), scales(args.b)
    if [x[0] for x in a] != [x[0] for x in b] or not a:
        print(f"the artifacts quantize different activations ({len(a)} vs {len(b)})")
        return 1
    worst = max(abs(sa - sb) / max(sa, sb) for (_, sa, _), (_, sb, _) in zip(a, b))
    zeros = max(abs(za - zb) for (_, _, za), (_, _, zb) in zip(a, b))
    print(f"{len(a)} activation ranges: largest relative scale difference {worst:.2e} (tolerance {args.rtol:.0e}), largest zero-point difference {zeros}")
    return 0 if worst <= args.rtol and zeros <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
