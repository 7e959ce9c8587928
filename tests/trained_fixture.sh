#!/usr/bin/env bash
# Real numerics in `make test`: the trained fixture golden/minilm-l6-squad2 (MiniLM-L6 fine-tuned on
# SQuAD v2 by golden/train.py, stored in MobileBERT's format) through every precision and every
# calibration method `quantize --method` offers, each artifact verified against the PyTorch goldens
# with these bounds on the F1 change (artifact minus PyTorch, 251 questions):
#   fp32          tract: max |Δ| ≤ 1e-4 and every prediction identical (verify's fp32 default)
#   fp16          ΔF1 ≥ -0.1 and at most 1% of the answers changed
#   int8-dynamic  ΔF1 ≥ -0.3
#   int8-static   ΔF1 ≥ -0.5 for minmax, percentile and mse
# (and verify's cosine floors: 0.999 fp16, 0.99 int8). The quantized artifacts run in ONNX Runtime,
# fast and exact on every CPU for the x86-avx2 target; every target stores the same 255 weight levels,
# so tract computes the same logits for the arm64 artifact (tests/quantize.rs checks that).
#
#   tests/trained_fixture.sh QAFORGE WORK_DIR LIBONNXRUNTIME PYTHON
set -euo pipefail
qaforge=$1 dir=$2 ort=$3 python=$4
fixture=golden/minilm-l6-squad2
calibrate=(--calibration golden/squad/calibration.json --tokenizer "$fixture" --samples 128)
mkdir -p "$dir"
"$qaforge" convert "$fixture" -o "$dir/fp32.onnx" > /dev/null
"$qaforge" verify "$dir/fp32.onnx" --golden "$fixture" --report "$dir/fp32.report.json" | tail -1 | sed "s|^|$fixture fp32 (tract): |"
"$qaforge" quantize "$dir/fp32.onnx" -o "$dir/fp16.onnx" --precision fp16 > /dev/null
"$qaforge" quantize "$dir/fp32.onnx" -o "$dir/int8-dynamic.onnx" --precision int8-dynamic --target x86-avx2 > /dev/null
for m in minmax percentile mse; do
  "$qaforge" quantize "$dir/fp32.onnx" -o "$dir/int8-static-$m.onnx" --precision int8-static --method $m --target x86-avx2 "${calibrate[@]}" > /dev/null
done
status=0
for a in fp16:0.1 int8-dynamic:0.3 int8-static-minmax:0.5 int8-static-percentile:0.5 int8-static-mse:0.5; do
  name=${a%%:*} bound=${a##*:}
  if "$qaforge" verify "$dir/$name.onnx" --golden "$fixture" --engine ort --ort-library "$ort" --max-f1-drop "$bound" \
      --report "$dir/$name.report.json" > "$dir/$name.log" 2>&1; then
    echo "$fixture $name (onnxruntime, ΔF1 ≥ -$bound): $(tail -1 "$dir/$name.log")"
  else
    echo "$fixture $name (onnxruntime, ΔF1 ≥ -$bound): FAIL"; cat "$dir/$name.log"; status=1
  fi
done
# fp16 must keep the answers, not only F1: at most 1% of them may change.
"$python" - "$dir/fp16.report.json" <<'PY' || status=1
import json, sys
squad = json.load(open(sys.argv[1]))["squad"]
changed = squad["questions"] - squad["identical_predictions"]
ok = changed <= 0.01 * squad["questions"]
print(f"golden/minilm-l6-squad2 fp16: {changed} of {squad['questions']} answers changed (at most 1%): {'ok' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
"$qaforge" table "$dir"/fp32.report.json "$dir"/fp16.report.json "$dir"/int8-dynamic.report.json "$dir"/int8-static-{minmax,percentile,mse}.report.json
exit $status
