#!/usr/bin/env python3
"""The Python tools qaforge is compared with, one job per process so that bench/run.py measures
each whole process (imports included) and its peak RSS. Prints one JSON object on stdout.

  peers.py export MODEL_DIR OUT.onnx            torch.onnx.export of the model's ...ForQuestionAnswering
  peers.py ort-optimize IN.onnx OUT.onnx MODEL_DIR  ONNX Runtime's offline transformer optimizer (model_type bert),
                                                for the architectures it knows (not MobileBERT)
  peers.py quantize-dynamic IN.onnx OUT.onnx [per-channel|default|float-kept|per-channel-reduce-range]
                                                onnxruntime.quantization.quantize_dynamic
  peers.py quantize-static IN.onnx OUT.onnx FEATURES.safetensors minmax|minmax-bounded|percentile [qaforge|default|float-kept|qaforge-reduce-range]
                                                onnxruntime.quantization.quantize_static (QDQ)
  peers.py matmul-nbits IN.onnx OUT.onnx default|tables|hqq|gptq [BLOCK] [FEATURES.safetensors]
                                                onnxruntime.quantization.matmul_nbits_quantizer (4-bit
                                                MatMulNBits): its defaults (round to nearest, asymmetric),
                                                `tables` also its Gather quantization (embedding tables),
                                                `hqq` its HQQ search, `gptq` its GPTQ on the features

Variants: `default` calls the quantizer with nothing but its inputs (what its documentation shows);
`per-channel` / `qaforge` makes qaforge's choices (per-channel int8 weights; static: uint8
activations, QDQ); `float-kept` adds qaforge's float-kept set on top (float_kept).
"""

import json
import sys
import time

started = time.perf_counter()


def export(model_dir, out):
    import torch
    from transformers import AutoModelForQuestionAnswering
    imported = time.perf_counter()
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    loaded = time.perf_counter()
    ids = torch.ones(1, 16, dtype=torch.int64)
    with torch.no_grad():
        # The TorchScript exporter (dynamo=False) is what optimum and most tutorials run; the dynamo
        # exporter needs onnxscript, which is not part of this comparison.
        torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), out,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["start_logits", "end_logits"],
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in
                                        ["input_ids", "attention_mask", "token_type_ids", "start_logits", "end_logits"]},
                          opset_version=17, dynamo=False)
    done = time.perf_counter()
    return {"import_s": imported - started, "load_s": loaded - imported, "export_s": done - loaded}


def ort_optimize(src, out, config_dir):
    from onnxruntime.transformers.optimizer import optimize_model
    imported = time.perf_counter()
    with open(f"{config_dir}/config.json") as f:
        config = json.load(f)
    optimized = optimize_model(src, model_type="bert", num_heads=config["num_attention_heads"], hidden_size=config["hidden_size"])
    optimized.save_model_to_file(out)
    return {"import_s": imported - started, "optimize_s": time.perf_counter() - imported, "fused": optimized.get_fused_operator_statistics()}


def float_kept(path):
    """The products qaforge's int8 leaves in float, found by structure as qaforge finds them: every
    MatMul/Gemm without a constant operand (attention's two activation products) and the QA head
    (the products met first walking back from the graph's outputs)."""
    import onnx
    graph = onnx.load(path).graph
    constants = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in graph.node for o in n.output}
    products = [n for n in graph.node if n.op_type in ("MatMul", "Gemm")]
    kept = {n.name for n in products if not any(i in constants for i in n.input)}
    stack, seen = [o.name for o in graph.output], set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in ("MatMul", "Gemm"):
            kept.add(node.name)
        else:
            stack.extend(node.input)
    return sorted(kept)


def quantize_dynamic(src, out, variant="per-channel"):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    imported = time.perf_counter()
    if variant == "default":
        quantize_dynamic(src, out)
        excluded = []
    else:
        # Per-channel int8 weights, as qaforge writes them; `per-channel-reduce-range`: 7-bit
        # weights, ONNX Runtime's advice for x86 CPUs without VNNI, whose u8 x s8 kernel saturates.
        excluded = float_kept(src) if variant == "float-kept" else []
        quantize_dynamic(src, out, per_channel=True, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                         reduce_range=variant == "per-channel-reduce-range")
    return {"import_s": imported - started, "quantize_s": time.perf_counter() - imported, "excluded": excluded}


def calibration_reader(features, model_path):
    """The features qaforge calibrates on (int8-static ranges, int4 statistics) as ONNX Runtime's
    CalibrationDataReader: one at a time, each cut one token past its last real token (qaforge pads
    its calibration batches the same way), fed by the model's input names (by name where they are
    input_ids / attention_mask / token_type_ids, else by position). Returns the reader and the
    number of features."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader
    from safetensors.numpy import load_file
    tensors = load_file(features)
    lengths = tensors["attention_mask"].sum(axis=1)
    inputs = [i.name for i in onnx.load(model_path, load_external_data=False).graph.input]
    feed = {k: (k if k in inputs else inputs[j]) for j, k in enumerate(("input_ids", "attention_mask", "token_type_ids")) if j < len(inputs)}

    class Features(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(lengths):
                return None
            n = min(int(lengths[self.i]) + 1, tensors["input_ids"].shape[1])
            row = {name: np.ascontiguousarray(tensors[k][self.i:self.i + 1, :n]) for k, name in feed.items()}
            self.i += 1
            return row

        def rewind(self):
            self.i = 0

    return Features(), len(lengths)


def quantize_static(src, out, features, method, variant="qaforge"):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    imported = time.perf_counter()
    reader, count = calibration_reader(features, src)

    method_enum = {"minmax": CalibrationMethod.MinMax, "minmax-bounded": CalibrationMethod.MinMax,
                   "percentile": CalibrationMethod.Percentile}[method]
    extra = {"CalibPercentile": 99.999}
    if method == "minmax-bounded":
        # ONNX Runtime's own remedy for MinMax memory: fold min/max every 15 features instead of
        # keeping every intermediate output of every feature (not the default, and not available
        # for Percentile or Entropy). 15, not 16: with a count that divides the number of
        # features, onnxruntime 1.23.2 empties its list at the last fold and then raises
        # "No data is collected".
        extra["CalibMaxIntermediateOutputs"] = 15
    excluded = float_kept(src) if variant == "float-kept" else []
    if variant == "default":
        quantize_static(src, out, reader, calibrate_method=method_enum, extra_options=extra)
    else:
        # qaforge's choices: QDQ, uint8 activations, per-channel int8 weights, percentile 99.999.
        quantize_static(src, out, reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=method_enum, extra_options=extra, nodes_to_exclude=excluded,
                        reduce_range=variant == "qaforge-reduce-range")
    return {"import_s": imported - started, "quantize_s": time.perf_counter() - imported, "features": count,
            "excluded": excluded}


def matmul_nbits(src, out, variant, block="128", features=None):
    import onnx
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq
    imported = time.perf_counter()
    block = int(block)
    kwargs = {"block_size": block}
    if variant == "tables":
        kwargs["op_types_to_quantize"] = ("MatMul", "Gather")
    elif variant == "hqq":
        kwargs["algo_config"] = mnq.HQQWeightOnlyQuantConfig(block_size=block, bits=4)
    elif variant == "gptq":
        reader, _ = calibration_reader(features, src)
        kwargs["algo_config"] = mnq.GPTQWeightOnlyQuantConfig(calibration_data_reader=reader, block_size=block)
        # Symmetric: onnxruntime 1.32's GPTQ packs asymmetric zero points across columns and then
        # fails to reshape them when K / block is odd (384 / 128 here: "cannot reshape array of
        # size 2304 into shape (1536, newaxis)").
        kwargs["is_symmetric"] = True
    elif variant != "default":
        raise SystemExit(f"unknown matmul-nbits variant {variant}")
    quantizer = mnq.MatMulNBitsQuantizer(onnx.load(src), **kwargs)
    quantizer.process()
    quantizer.model.save_model_to_file(out, use_external_data_format=False)
    return {"import_s": imported - started, "quantize_s": time.perf_counter() - imported, "variant": variant, "block_size": block}


def main():
    job, args = sys.argv[1], sys.argv[2:]
    result = {"export": export, "ort-optimize": ort_optimize, "quantize-dynamic": quantize_dynamic, "quantize-static": quantize_static,
              "matmul-nbits": matmul_nbits}[job](*args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
