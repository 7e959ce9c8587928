#!/usr/bin/env python3
"""Checks that ONNX Runtime reads qaforge's block-quantized weights as the operator's specification
says: for every <fixture>.budget.onnx of ARTIFACT_DIR (int4 under `--max-size`, with 2-bit and
4-bit MatMulNBits, zero points and int8 or float products), a float twin is built by decoding each
MatMulNBits weight with numpy alone, from ONNX Runtime's ContribOperators.md (codes packed from
the lowest bits, `bits` per code, blocks of `block_size` along K per output column, one scale
each, zero points packed the same way per column or 2^(bits-1) when absent), and the two graphs
must give the same logits on the golden features (float32 rounding apart). Shares no code with
qaforge's packer. Also writes the twin as <fixture>.budget.dequantized.onnx, which `make test`
verifies in tract against the artifact's own tract logits.

  python tests/python/check_nbits.py ARTIFACT_DIR GOLDEN_DIR
"""

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from safetensors.numpy import load_file

TOLERANCE = 2e-3


def unpack(data, bits, count):
    """`count` codes of `bits` bits from bytes, the first in the lowest bits."""
    per_byte = 8 // bits
    codes = np.zeros((data.size, per_byte), dtype=np.uint8)
    for i in range(per_byte):
        codes[:, i] = (data >> (bits * i)) & ((1 << bits) - 1)
    return codes.reshape(-1)[:count]


def dequantize(node, inits):
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    k, n, bits, block = attrs["K"], attrs["N"], attrs.get("bits", 4), attrs["block_size"]
    blocks = -(-k // block)
    b = numpy_helper.to_array(inits[node.input[1]]).reshape(n, blocks, -1)
    scales = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32).reshape(n, blocks)
    if len(node.input) > 3 and node.input[3]:
        packed = numpy_helper.to_array(inits[node.input[3]]).reshape(n, -1)
        zeros = np.stack([unpack(packed[c], bits, blocks) for c in range(n)]).astype(np.float32)
    else:
        zeros = np.full((n, blocks), 2 ** (bits - 1), dtype=np.float32)
    codes = np.stack([unpack(b[c].reshape(-1), bits, blocks * block) for c in range(n)]).reshape(n, blocks, block).astype(np.float32)
    w = ((codes - zeros[:, :, None]) * scales[:, :, None]).reshape(n, blocks * block)[:, :k]
    return w.T.astype(np.float32), bits


def float_twin(model):
    inits = {t.name: t for t in model.graph.initializer}
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    nodes, widths = [], {}
    for node in twin.graph.node:
        if node.domain == "com.microsoft" and node.op_type == "MatMulNBits":
            w, bits = dequantize(node, inits)
            widths[bits] = widths.get(bits, 0) + 1
            name = node.output[0] + ".dequantized_weight"
            twin.graph.initializer.append(numpy_helper.from_array(w, name))
            nodes.append(helper.make_node("MatMul", [node.input[0], name], list(node.output), name=node.name))
        else:
            nodes.append(node)
    del twin.graph.node[:]
    twin.graph.node.extend(nodes)
    read = {i for n in twin.graph.node for i in n.input}
    kept = [t for t in twin.graph.initializer if t.name in read]
    del twin.graph.initializer[:]
    twin.graph.initializer.extend(kept)
    return twin, widths


def logits(model_bytes, feeds, count):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    inputs = {i.name: v[:count] for i, v in zip(session.get_inputs(), feeds)}
    return session.run(["start_logits", "end_logits"], inputs)


def main():
    artifacts, golden = Path(sys.argv[1]), Path(sys.argv[2])
    paths = sorted(artifacts.glob("*.budget.onnx"))
    if not paths:
        raise SystemExit(f"{artifacts}: no *.budget.onnx artifacts")
    failures = 0
    for path in paths:
        fixture = path.name[: -len(".budget.onnx")]
        own = golden / fixture / "golden" / "features.safetensors"
        features = load_file(own if own.exists() else golden / "squad" / "features.safetensors")
        feeds = [features[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")]
        model = onnx.load(str(path))
        twin, widths = float_twin(model)
        twin_path = artifacts / f"{fixture}.budget.dequantized.onnx"
        onnx.save(twin, str(twin_path))
        count = 16
        got = logits(path.read_bytes(), feeds, count)
        want = logits(twin.SerializeToString(), feeds, count)
        mask = feeds[1][:count] == 1
        worst = max(float(np.abs(g[mask] - w[mask]).max()) for g, w in zip(got, want))
        scale = max(float(np.abs(w[mask]).max()) for w in want)
        ok = worst <= TOLERANCE * max(1.0, scale) and 2 in widths
        failures += not ok
        print(f"{path}: MatMulNBits by bits {dict(sorted(widths.items()))}; ONNX Runtime {ort.__version__} against the numpy-decoded "
              f"float twin on {count} features: max |Δ| {worst:.3e} (logits up to {scale:.2f}): {'ok' if ok else 'FAIL'}"
              + ("" if 2 in widths else " (no 2-bit product: the budget did not bite)"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
