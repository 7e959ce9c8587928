"""ONNX Runtime's own quantizers on a user's export: writes quantize_dynamic (per-channel QInt8
weights) and quantize_static (QDQ, calibrated on the golden features) of EXPORT into OUT_DIR, for
`qaforge verify` to judge at the precision their operators show (they carry no qaforge metadata).

    python ort_quantize_export.py EXPORT.onnx FEATURES.safetensors OUT_DIR
"""
import os
import sys

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from safetensors.numpy import load_file


def features(path, count):
    tensors = load_file(path)
    return {name: tensors[name][:count].astype(np.int64) for name in ("input_ids", "attention_mask", "token_type_ids")}


class Features(CalibrationDataReader):
    """The first features, each cut one token past its length (as qaforge runs them)."""

    def __init__(self, model, tensors):
        self.inputs = [i.name for i in model.graph.input]
        lengths = tensors["attention_mask"].sum(axis=1)
        roles = {"input_ids": "input_ids", "attention_mask": "attention_mask", "token_type_ids": "token_type_ids"}
        self.feeds = iter([{name: tensors[roles[name]][i:i + 1, : min(int(lengths[i]) + 1, tensors["input_ids"].shape[1])] for name in self.inputs} for i in range(len(lengths))])

    def get_next(self):
        return next(self.feeds, None)


def main():
    export, feature_file, out = sys.argv[1:4]
    os.makedirs(out, exist_ok=True)
    name = os.path.basename(export)[: -len(".onnx")]
    dynamic, static = os.path.join(out, f"{name}.ort-dynamic.onnx"), os.path.join(out, f"{name}.ort-static.onnx")
    quantize_dynamic(export, dynamic, weight_type=QuantType.QUInt8, per_channel=True)
    quantize_static(export, static, Features(onnx.load(export), features(feature_file, 16)), quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8)
    print(dynamic)
    print(static)


if __name__ == "__main__":
    main()
