#!/usr/bin/env python3
"""Checks qaforge artifacts with the ONNX reference tools: onnx.checker (full_check=True) and
ONNX Runtime, whose start/end logits on every golden feature must match the PyTorch goldens.

  python tests/python/check_onnx.py ARTIFACT_DIR GOLDEN_DIR

ARTIFACT_DIR holds <fixture>.onnx for each fixture directory of GOLDEN_DIR, and optionally quantized
artifacts <fixture>.<precision>.onnx (fp16, int8-dynamic, int8-static...). float32 artifacts must match
PyTorch within 1e-4; quantized ones must run, give finite logits, and keep the logit cosine above
their precision's floor (the floors qaforge verify applies). Exits 1 on any failure.

ONNX Runtime's u8 x s8 kernels on x86 without VNNI (AVX2, or AVX-512 without VNNI) add pairs of
products into int16 with saturation, so int8 weights beyond |64| give wrong sums there. On such a
CPU an artifact with such weights is loaded and checked for finite logits, but its cosine is not
checked here: the output says so, and `make test` verifies it in tract (exact) and verifies its
x86-avx2 twin (uint8 weights, exact u8 x u8 kernels) in ONNX Runtime. This decision is restated
here from MLAS's platform.cpp on its own, sharing no code with qaforge's.
"""

import platform
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file

TOLERANCE = 1e-4
# int4 on these random-weight fixtures: 0.948 to 0.994 measured (see verify_in_onnxruntime.sh).
COSINE_FLOOR = {"fp16": 0.999, "int8": 0.99, "int4": 0.94}


def cpu_flags():
    """The CPU's feature flags as Linux names them (empty where /proc/cpuinfo is absent)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def onnxruntime_u8s8_saturates(machine, flags):
    """MLAS's u8 x s8 kernel choice: vpmaddubsw (saturating) on AVX2 or AVX-512 core without the
    matching VNNI; VNNI, SSE, ARM64 and portable kernels accumulate exactly."""
    if machine not in ("x86_64", "AMD64") or "avx2" not in flags:
        return False
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return "avx512_vnni" not in flags
    return "avx_vnni" not in flags


def largest_int8_weight(model):
    """The largest |value| of int8 initializers that feed integer products: MatMulInteger's B, or a
    DequantizeLinear whose output a MatMul multiplies with a dequantized activation."""
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}

    def dq_input(name):
        n = producer.get(name)
        return n.input[0] if n is not None and n.op_type == "DequantizeLinear" else None

    weights = []
    for n in model.graph.node:
        if n.op_type == "MatMulInteger":
            weights.append(n.input[1])
        elif n.op_type == "MatMul" and dq_input(n.input[0]) not in (None, *inits) and dq_input(n.input[1]) in inits:
            weights.append(dq_input(n.input[1]))
    largest = 0
    for w in weights:
        t = inits.get(w)
        if t is not None and t.data_type == onnx.TensorProto.INT8:
            largest = max(largest, int(np.abs(onnx.numpy_helper.to_array(t).astype(np.int32)).max()))
    return largest


def main():
    artifacts, golden = Path(sys.argv[1]), Path(sys.argv[2])
    fixtures = sorted(p.name for p in golden.iterdir() if (p / "golden" / "logits.safetensors").exists())
    failures = 0
    saturating = onnxruntime_u8s8_saturates(platform.machine(), cpu_flags())
    for fixture in fixtures:
        reference = load_file(golden / fixture / "golden" / "logits.safetensors")
        # A fixture with a tokenizer of its own (RoBERTa's byte-level BPE) has features of its own.
        own = golden / fixture / "golden" / "features.safetensors"
        features = load_file(own if own.exists() else golden / "squad" / "features.safetensors")
        mask = features["attention_mask"].astype(np.int64)
        feeds = [features["input_ids"].astype(np.int64), mask, features["token_type_ids"].astype(np.int64)]
        for path in sorted(artifacts.glob(f"{fixture}*.onnx")):
            variant = path.name[len(fixture):-len(".onnx")].lstrip(".")
            if variant and not variant.startswith(("fp16", "int8", "int4")):
                continue
            onnx.checker.check_model(str(path), full_check=True)
            inexact = saturating and largest_int8_weight(onnx.load(str(path))) > 64
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            # By position, as qaforge feeds them: input_ids, attention_mask[, token_type_ids].
            inputs = {i.name: v for i, v in zip(session.get_inputs(), feeds)}
            worst, dot, n_got, n_want = 0.0, 0.0, 0.0, 0.0
            for s in range(0, mask.shape[0], 32):
                # Each batch cut one position past its longest feature: the logits of real tokens do
                # not depend on the padding after them, except that MobileBERT's trigram embedding
                # lets the last real token see the token after it ([PAD] in the 384-wide features).
                width = min(mask.shape[1], int(mask[s:s + 32].sum(axis=1).max()) + 1)
                batch = {k: v[s:s + 32, :width] for k, v in inputs.items()}
                start, end = session.run(["start_logits", "end_logits"], batch)
                valid = mask[s:s + 32, :width] == 1
                for got, want in ((start, reference["start_logits"][s:s + 32, :width]), (end, reference["end_logits"][s:s + 32, :width])):
                    got, want = got[valid].astype(np.float64), want[valid].astype(np.float64)
                    if not np.isfinite(got).all():
                        raise SystemExit(f"{path}: non-finite logits in ONNX Runtime")
                    worst = max(worst, float(np.abs(got - want).max()))
                    dot, n_got, n_want = dot + float(got @ want), n_got + float(got @ got), n_want + float(want @ want)
            cosine = dot / (n_got ** 0.5 * n_want ** 0.5)
            if not variant:
                ok = worst <= TOLERANCE
            elif inexact:
                ok = True
            else:
                ok = cosine >= COSINE_FLOOR[variant[:4]]
            failures += not ok
            verdict = "ok" if ok else "FAIL"
            if inexact:
                verdict = ("loads and runs, finite; cosine not checked: this CPU's u8 x s8 kernel saturates "
                           "full-range int8 weights (tract verifies this artifact, ONNX Runtime its x86-avx2 twin)")
            print(f"{path}: onnx.checker full_check ok; ONNX Runtime {ort.__version__} max |Δ| {worst:.3e}, "
                  f"cosine {cosine:.6f} on {mask.shape[0]} features: {verdict}")
    if not fixtures:
        raise SystemExit(f"{golden}: no fixtures found")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
