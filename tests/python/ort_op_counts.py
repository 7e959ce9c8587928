"""Op counts of ONNX Runtime's optimized graphs (ORT_ENABLE_ALL, as sessions run them): qaforge's
portable and ONNX Runtime-flavour artifacts beside onnxruntime.quantization's own quantize_dynamic and
quantize_static (QDQ) of the same fp32 model. Asserts that the flavour's fusions survive ONNX Runtime's
optimizer and cover every product and attention, and that its graphs are smaller than ONNX
Runtime's own quantized ones. Also checks `qaforge package`'s required_operators.config against
ONNX Runtime's create_config_from_models on the same .ort file.

usage: ort_op_counts.py DIR FIXTURE   (DIR holds FIXTURE.{onnx,ort.onnx,int8-dynamic[.ort].onnx,
                                        int8-static[.ort].onnx} and FIXTURE.ort + its .config)
"""

import collections
import pathlib
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.tools.ort_format_model import create_config_from_models


def optimized_counts(path: pathlib.Path, scratch: pathlib.Path) -> collections.Counter:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(scratch / (path.name + ".optimized.onnx"))
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    model = onnx.load(options.optimized_model_filepath)
    return collections.Counter(n.op_type for n in model.graph.node)


class RandomTokens(CalibrationDataReader):
    """A few batches of random token ids: op counts do not depend on the ranges."""

    def __init__(self, model: onnx.ModelProto):
        rng = np.random.default_rng(0)
        names = [i.name for i in model.graph.input]
        self.batches = iter(
            [{n: (rng.integers(100, 1000, (2, 32)) if n == "input_ids" else np.ones((2, 32), np.int64) if n == "attention_mask" else np.zeros((2, 32), np.int64)).astype(np.int64) for n in names} for _ in range(4)]
        )

    def get_next(self):
        return next(self.batches, None)


def main() -> int:
    folder, fixture = pathlib.Path(sys.argv[1]), sys.argv[2]
    failures = []

    def check(condition: bool, message: str):
        if not condition:
            failures.append(message)

    with tempfile.TemporaryDirectory() as tmp:
        scratch = pathlib.Path(tmp)
        fp32 = folder / f"{fixture}.onnx"
        peers = {"ORT quantize_dynamic": scratch / "ort.int8-dynamic.onnx", "ORT quantize_static (QDQ)": scratch / "ort.int8-static.onnx"}
        quantize_dynamic(str(fp32), str(peers["ORT quantize_dynamic"]), weight_type=QuantType.QInt8, per_channel=True)
        quantize_static(str(fp32), str(peers["ORT quantize_static (QDQ)"]), RandomTokens(onnx.load(str(fp32))), quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8)
        artifacts = {
            "qaforge fp32": fp32,
            "qaforge fp32 --for onnxruntime": folder / f"{fixture}.ort.onnx",
            "qaforge int8-dynamic": folder / f"{fixture}.int8-dynamic.onnx",
            "qaforge int8-dynamic --for onnxruntime": folder / f"{fixture}.int8-dynamic.ort.onnx",
            "qaforge int8-static": folder / f"{fixture}.int8-static.onnx",
            "qaforge int8-static --for onnxruntime": folder / f"{fixture}.int8-static.ort.onnx",
            **peers,
        }
        counts = {label: optimized_counts(path, scratch) for label, path in artifacts.items()}

    shown = ["Attention", "MultiHeadAttention", "SkipLayerNormalization", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger", "DynamicQuantizeLinear", "QuantizeLinear", "MatMul", "FusedMatMul", "Softmax", "Add", "Mul"]
    print(f"### {fixture}: ONNX Runtime {ort.__version__} optimized graphs (ORT_ENABLE_ALL)\n")
    print("| artifact | nodes | " + " | ".join(shown) + " |")
    print("|---|---:|" + "---:|" * len(shown))
    for label, c in counts.items():
        print(f"| {label} | {sum(c.values())} | " + " | ".join(str(c.get(op, 0)) for op in shown) + " |")
    print()

    portable, flavour = counts["qaforge fp32"], counts["qaforge fp32 --for onnxruntime"]
    attentions = portable["Softmax"]
    check(attentions > 0, "the portable fp32 graph has no Softmax")
    for precision in ["fp32", "int8-dynamic", "int8-static"]:
        c = counts[f"qaforge {precision} --for onnxruntime"]
        check(c["Attention"] + c["MultiHeadAttention"] == attentions and c["Softmax"] == 0, f"{precision}: {attentions} attentions, {c['Attention'] + c['MultiHeadAttention']} fused, {c['Softmax']} Softmax left")
        base = counts["qaforge fp32" if precision == "fp32" else f"qaforge {precision}"]
        check(sum(c.values()) < sum(base.values()), f"{precision}: the flavour's optimized graph ({sum(c.values())} nodes) is not smaller than the portable one's ({sum(base.values())})")
    dynamic = counts["qaforge int8-dynamic --for onnxruntime"]
    products = onnx.load(str(artifacts["qaforge int8-dynamic"])).graph.node
    quantized = sum(1 for n in products if n.op_type == "MatMulInteger")
    check(dynamic["DynamicQuantizeMatMul"] == quantized and dynamic["MatMulInteger"] + dynamic["DynamicQuantizeLinear"] + dynamic["MatMulIntegerToFloat"] == 0, f"int8-dynamic: {quantized} int8 products, {dynamic['DynamicQuantizeMatMul']} DynamicQuantizeMatMul")
    static = counts["qaforge int8-static --for onnxruntime"]
    qdq = sum(1 for n in onnx.load(str(artifacts["qaforge int8-static"])).graph.node if n.op_type == "QuantizeLinear")
    check(static["MatMulIntegerToFloat"] > 0 and static["QuantizeLinear"] == qdq, f"int8-static: {static['MatMulIntegerToFloat']} MatMulIntegerToFloat, {static['QuantizeLinear']} QuantizeLinear (artifact quantizes {qdq} activations)")
    # Every fused product took its bias: MatMulIntegerToFloat with 7 inputs in the artifact itself.
    fused = [n for n in onnx.load(str(artifacts["qaforge int8-static --for onnxruntime"])).graph.node if n.op_type == "MatMulIntegerToFloat"]
    check(all(len(n.input) == 7 for n in fused), "int8-static: some MatMulIntegerToFloat has no bias")
    for mine, theirs in [("qaforge int8-dynamic --for onnxruntime", "ORT quantize_dynamic"), ("qaforge int8-static --for onnxruntime", "ORT quantize_static (QDQ)")]:
        check(sum(counts[mine].values()) < sum(counts[theirs].values()), f"{mine}: {sum(counts[mine].values())} nodes, not fewer than {theirs}'s {sum(counts[theirs].values())}")

    # The package's operator list is the one ONNX Runtime's own tool reads from the .ort file.
    package = folder / f"{fixture}.ort"
    with tempfile.TemporaryDirectory() as tmp:
        theirs = pathlib.Path(tmp) / "config"
        create_config_from_models([package], theirs, False)
        lines = lambda p: [l for l in p.read_text().splitlines() if l and not l.startswith("#")]
        mine = lines(folder / f"{fixture}.required_operators.config")
        check(mine == lines(theirs), f"required_operators.config differs from ONNX Runtime's: {mine} vs {lines(theirs)}")

    for f in failures:
        print(f"FAIL {fixture}: {f}")
    if not failures:
        print(f"ok {fixture}: every attention and int8 product fused; smaller than ONNX Runtime's own quantized graphs; required operators match ONNX Runtime's tool")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
