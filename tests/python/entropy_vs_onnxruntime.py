#!/usr/bin/env python3
"""Why entropy calibration collapses F1 on BERT: qaforge's calibrated ranges next to ONNX Runtime's
own entropy calibrator (onnxruntime.quantization, CalibrationMethod.Entropy), activation by
activation, on the same calibration features of the trained fixture; then ONNX Runtime's
quantize_static with each of its methods, scored by `qaforge verify`, with qaforge's defaults kept
float (QA head, attention MatMuls) and, to measure what keeping attention float buys, without.

  entropy_vs_onnxruntime.py QAFORGE LIBONNXRUNTIME WORK_DIR [--samples 128] [--peers]

WORK_DIR must hold tests/trained_fixture.sh's artifacts (fp32.onnx, int8-static-{minmax,percentile,
mse}.onnx). Prints a table per activation role and writes WORK_DIR/entropy-ranges.json. Exits 1 if
ONNX Runtime's entropy calibrator with TensorRT's histogram (the recipe qaforge's removed entropy
method followed) does not clip what qaforge's minmax ranges hold (the README's explanation would
then be wrong).
"""

import argparse
import collections
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.calibrate import create_calibrator
from tokenizers import Tokenizer

FIXTURE = Path("golden/minilm-l6-squad2")
CALIBRATION = Path("golden/squad/calibration.json")
MAX_LENGTH, DOC_STRIDE = 384, 128


def calibration_features(samples):
    """The first `samples` run_qa.py features of calibration.json, as qaforge builds them for
    `--samples` (tests/features.rs proves those equal run_qa.py's): question left-stripped first,
    truncation only_second with a 128 stride, overflowing windows in order, padded to 384."""
    tokenizer = Tokenizer.from_file(str(FIXTURE / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_LENGTH, stride=DOC_STRIDE, strategy="only_second")
    tokenizer.enable_padding(length=MAX_LENGTH, pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    squad = json.loads(CALIBRATION.read_text())
    rows = []
    for article in squad["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                encoding = tokenizer.encode(qa["question"].lstrip(), paragraph["context"])
                for window in [encoding] + encoding.overflowing:
                    rows.append((window.ids, window.attention_mask, window.type_ids))
                    if len(rows) == samples:
                        return [np.array(column, dtype=np.int64) for column in zip(*rows)]
    return [np.array(column, dtype=np.int64) for column in zip(*rows)]


class Reader(CalibrationDataReader):
    def __init__(self, features, batch=8):
        self.batches = [{"input_ids": features[0][s:s + batch], "attention_mask": features[1][s:s + batch],
                         "token_type_ids": features[2][s:s + batch]} for s in range(0, len(features[0]), batch)]
        self.next = 0

    def get_next(self):
        if self.next == len(self.batches):
            return None
        self.next += 1
        return self.batches[self.next - 1]

    def rewind(self):
        self.next = 0


def qdq_ranges(path):
    """The activation range each QuantizeLinear of a QDQ artifact encodes (uint8 or int8)."""
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    ranges = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits:
            scale, zero = float(inits[n.input[1]]), inits[n.input[2]]
            lo, hi = (0, 255) if zero.dtype == np.uint8 else (-128, 127)
            ranges[n.input[0]] = ((lo - int(zero)) * scale, (hi - int(zero)) * scale)
    return ranges


def role(tensor):
    """The activation's place in a layer, from qaforge's node names (fp32 graph of the fixture)."""
    t = re.sub(r"layer\.\d+\.", "layer.N.", tensor)
    return t.replace(".add_bias", "")


def verify(qaforge, ort, artifact, work):
    report = work / (artifact.stem + ".report.json")
    subprocess.run([qaforge, "verify", str(artifact), "--golden", str(FIXTURE), "--engine", "ort", "--ort-library", ort,
                    "--report", str(report)], capture_output=True, check=False)
    data = json.loads(report.read_text())
    return data["squad"]["f1_drop"], data["logits"]["cosine"], data["squad"]["identical_predictions"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("qaforge")
    parser.add_argument("ort_library")
    parser.add_argument("work", type=Path)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--peers", action="store_true",
                        help="also quantize with ONNX Runtime's quantize_static and score its artifacts (minutes; not in make test)")
    args = parser.parse_args()
    work = args.work
    fp32 = work / "fp32.onnx"
    features = calibration_features(args.samples)

    ours = {m: qdq_ranges(work / f"int8-static-{m}.onnx") for m in ("minmax", "percentile", "mse")}
    tensors = sorted(ours["minmax"])
    # ONNX Runtime's entropy calibrator as quantize_static runs it (128 histogram bins, 128
    # quantized bins) and with TensorRT's recipe (2048 bins), which qaforge's removed entropy
    # method followed. Fed 16 features at a time: the histograms merge, memory stays bounded.
    entropy = {}
    for label, bins in (("default", 128), ("tensorrt", 2048)):
        calibrator = create_calibrator(str(fp32), op_types_to_calibrate=["MatMul"], augmented_model_path=str(work / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.Entropy, extra_options={"num_bins": bins, "num_quantized_bins": 128})
        # Histograms (and the KL search, a Python loop per tensor) only for the activations qaforge
        # calibrates, not every MatMul input and output the augmented graph returns.
        calibrator.tensors_to_calibrate = set(tensors)
        for s in range(0, len(features[0]), 16):
            calibrator.collect_data(Reader([f[s:s + 16] for f in features]))
        entropy[label] = {name: tuple(float(v) for v in value.range_value) for name, value in calibrator.compute_data().data.items()}
        missing = [t for t in tensors if t not in entropy[label]]
        if missing:
            raise SystemExit(f"ONNX Runtime's calibrator did not calibrate {missing[:3]}")
        del calibrator

    by_role = collections.defaultdict(list)
    for t in tensors:
        by_role[role(t)].append({
            "tensor": t,
            "qaforge minmax": ours["minmax"][t], "qaforge percentile": ours["percentile"][t], "qaforge mse": ours["mse"][t],
            "onnxruntime entropy default": entropy["default"][t], "onnxruntime entropy tensorrt": entropy["tensorrt"][t],
        })
    columns = ["onnxruntime entropy default", "onnxruntime entropy tensorrt", "qaforge mse", "qaforge percentile"]
    reach = lambda r, m: max(abs(r[m][0]), abs(r[m][1])) / max(abs(r["qaforge minmax"][0]), abs(r["qaforge minmax"][1]))
    print(f"ranges on {len(features[0])} calibration features: each range's reach as a share of the largest |x| "
          "(qaforge minmax), per activation (input of the node named), lowest–highest over layers")
    print("| activation | layers | ORT entropy (128 bins, as quantize_static) | ORT entropy (2048 bins, TensorRT's) | qaforge mse | qaforge percentile 99.999 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rows in sorted(by_role.items()):
        cells = [f"{min(reach(r, m) for r in rows):.3f}–{max(reach(r, m) for r in rows):.3f}" for m in columns]
        print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")

    results = {}
    if args.peers:
        results = peer_artifacts(args, fp32, features, work)
    (work / "entropy-ranges.json").write_text(json.dumps({"roles": by_role, "onnxruntime_quantize_static": results}, indent=1) + "\n")
    clipped = [r for rows in by_role.values() for r in rows if reach(r, "onnxruntime entropy tensorrt") < 0.5]
    print(f"{len(clipped)} of {len(tensors)} activations: ONNX Runtime's entropy with TensorRT's 2048 bins reaches less "
          "than half of the largest |x|")
    sys.exit(0 if clipped else 1)


def peer_artifacts(args, fp32, features, work):
    """ONNX Runtime's quantize_static artifacts, scored by qaforge verify in ONNX Runtime."""
    # ONNX Runtime's own quantizer on the same features, exact on every x86 CPU (uint8 weights),
    # MatMuls only, keeping float what qaforge keeps float by default; then attention int8 too.
    graph = onnx.load(str(fp32)).graph
    inits = {t.name for t in graph.initializer}
    attention = [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] not in inits]
    head = ["qa_outputs"]
    results = {}
    # (Entropy in quantize_static is the 128-bin calibrator above: its ranges are minmax's, so its
    # artifact is not built again; it needs over 24 GB here, as it holds every batch's activations.)
    for method, excluded, label in [
        (CalibrationMethod.MinMax, head + attention, "minmax"),
        (CalibrationMethod.MinMax, head, "minmax, attention int8"),
    ]:
        out = work / f"ort-{label.replace(', ', '-').replace(' ', '-')}.onnx"
        quantize_static(str(fp32), str(out), Reader(features), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8,
                        calibrate_method=method, nodes_to_exclude=excluded)
        results[label] = verify(args.qaforge, args.ort_library, out, work)
        drop, cosine, identical = results[label]
        print(f"onnxruntime quantize_static {label}: ΔF1 {-drop:+.2f}, cosine {cosine:.6f}, {identical}/251 answers identical")
    return results


if __name__ == "__main__":
    main()
