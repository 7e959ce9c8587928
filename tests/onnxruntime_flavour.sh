#!/usr/bin/env bash
# The ONNX Runtime flavour (--for onnxruntime) and the mobile package, run by `make test-onnx`:
# - every fixture converted and quantized (int8-dynamic; int8-static for MobileBERT and the trained
#   fixture) with the flavour, each verified in ONNX Runtime against its golden bundle (int8 for
#   x86-avx2, exact in ONNX Runtime on every x86 CPU);
# - two users' exports (torch dynamo and optimum) quantized with the flavour and verified;
# - tract refuses a flavoured artifact, naming the engine to use;
# - int8-static of a graph tract cannot run calibrates in ONNX Runtime by itself where it is at hand;
# - `qaforge package --format ort` of the int8-dynamic artifacts, the .ort verified in ONNX Runtime;
# - tests/python/ort_op_counts.py: ONNX Runtime's optimized op counts beside quantize_dynamic's and
#   quantize_static's, and the package's required_operators.config against ONNX Runtime's own tool.
#
#   tests/onnxruntime_flavour.sh QAFORGE DIR GOLDEN_DIR LIBONNXRUNTIME PYTHON FIXTURE...
set -uo pipefail
qaforge=$1 dir=$2 golden=$3 ort=$4 python=$5
shift 5
rm -rf "$dir" && mkdir -p "$dir"
status=0
# 32 features: the fused structure does not depend on them, and F1 is still checked.
calibrate=(--calibration "$golden/squad/calibration.json" --samples 32)
check() { # label, command...
  local label=$1 out rc
  shift
  out=$("$@" 2>&1)
  rc=$?
  if [ $rc -ne 0 ]; then
    echo "FAIL $label (exit $rc):"
    echo "$out"
    status=1
  else
    echo "$label: $(tail -1 <<<"$out")"
  fi
}
for f in "$@"; do
  a=$dir/$f
  "$qaforge" convert "$golden/$f" -o "$a.onnx" > /dev/null || exit 1
  check "$f fp32 --for onnxruntime (convert)" "$qaforge" convert "$golden/$f" -o "$a.ort.onnx" --for onnxruntime --ort-library "$ort"
  modes=(int8-dynamic)
  [[ $f == mobilebert-tiny || $f == minilm-l6-squad2 ]] && modes+=(int8-static)
  for m in "${modes[@]}"; do
    extra=()
    [ "$m" = int8-static ] && extra=("${calibrate[@]}" --tokenizer "$golden/$f")
    "$qaforge" quantize "$a.onnx" -o "$a.$m.onnx" --precision "$m" --target x86-avx2 "${extra[@]}" > /dev/null || exit 1
    check "$f $m --for onnxruntime (quantize)" "$qaforge" quantize "$a.onnx" -o "$a.$m.ort.onnx" --precision "$m" --target x86-avx2 --for onnxruntime --ort-library "$ort" "${extra[@]}"
  done
  for art in "$a.ort.onnx" "$a".int8-*.ort.onnx; do
    check "$(basename "$art") (onnxruntime)" "$qaforge" verify "$art" --golden "$golden/$f" --engine ort --ort-library "$ort"
  done
  check "$f package --format ort" "$qaforge" package "$a.int8-dynamic.ort.onnx" --format ort -o "$a.ort" --operators-config "$a.required_operators.config" --ort-library "$ort"
  check "$f.ort (onnxruntime)" "$qaforge" verify "$a.ort" --golden "$golden/$f" --engine ort --ort-library "$ort"
done
# Users' exports: the passes find roles by structure in graphs qaforge did not write.
for e in mobilebert-tiny.optimum-opset18 bert-tiny.dynamo-opset18; do
  check "$e int8-dynamic --for onnxruntime (quantize)" "$qaforge" quantize "$golden/exports/$e.onnx" -o "$dir/$e.int8-dynamic.ort.onnx" --precision int8-dynamic --target x86-avx2 --for onnxruntime --ort-library "$ort"
  check "$e.int8-dynamic.ort.onnx (onnxruntime)" "$qaforge" verify "$dir/$e.int8-dynamic.ort.onnx" --golden "$golden/${e%%.*}" --engine ort --ort-library "$ort"
done
# tract has no com.microsoft kernels: a clear error (exit 2), never a wrong answer.
out=$("$qaforge" verify "$dir/$1.ort.onnx" --golden "$golden/$1" 2>&1)
rc=$?
if [ $rc -ne 2 ] || ! grep -q "use --engine ort" <<<"$out"; then
  echo "FAIL tract on an ONNX Runtime-flavour artifact should exit 2 naming --engine ort (exit $rc): $out"
  status=1
else
  echo "tract refuses the flavour: $(tail -1 <<<"$out")"
fi
# int8-static of a graph tract cannot run (the fused fp32 artifact), without --calibration-engine:
# calibrated in ONNX Runtime where its library is at hand ($ORT_DYLIB_PATH here), with a note on
# stderr and the reason in the provenance, and it verifies; without the library, a clear error.
fused=$dir/$1.ort.onnx fallback=$dir/$1.int8-static.fallback.onnx
out=$(ORT_DYLIB_PATH=$ort "$qaforge" quantize "$fused" -o "$fallback" --precision int8-static --target x86-avx2 "${calibrate[@]}" --tokenizer "$golden/$1" 2>&1)
rc=$?
engine=$("$python" -c 'import onnx, sys; p = {e.key: e.value for e in onnx.load(sys.argv[1]).metadata_props}; print(p["qaforge.quantize.calibration_engine"], "qaforge.quantize.calibration_fallback" in p)' "$fallback" 2>&1)
if [ $rc -ne 0 ] || ! grep -q "note: calibrated in ONNX Runtime, because tract cannot run the float graph" <<<"$out" || [ "$engine" != "onnxruntime True" ]; then
  echo "FAIL int8-static of a graph tract cannot run should calibrate in ONNX Runtime (exit $rc, provenance: $engine): $out"
  status=1
else
  echo "calibration fell back to ONNX Runtime: $(grep '^note:' <<<"$out" | cut -c1-120)…"
  check "$(basename "$fallback") (onnxruntime)" "$qaforge" verify "$fallback" --golden "$golden/$1" --engine ort --ort-library "$ort"
fi
# int4 with GPTQ rounding needs input statistics, a float pass as calibration is: the same fallback,
# the note naming input statistics, the engine in the provenance, and the artifact verifies.
fallback4=$dir/$1.int4-gptq.fallback.onnx
out=$(ORT_DYLIB_PATH=$ort "$qaforge" quantize "$fused" -o "$fallback4" --precision int4 --rounding gptq "${calibrate[@]}" --tokenizer "$golden/$1" 2>&1)
rc=$?
engine=$("$python" -c 'import onnx, sys; p = {e.key: e.value for e in onnx.load(sys.argv[1]).metadata_props}; print(p["qaforge.quantize.calibration_engine"], "qaforge.quantize.calibration_fallback" in p)' "$fallback4" 2>&1)
if [ $rc -ne 0 ] || ! grep -q "note: input statistics collected in ONNX Runtime, because tract cannot run the float graph" <<<"$out" || [ "$engine" != "onnxruntime True" ]; then
  echo "FAIL int4 --rounding gptq of a graph tract cannot run should collect its input statistics in ONNX Runtime (exit $rc, provenance: $engine): $out"
  status=1
else
  echo "input statistics fell back to ONNX Runtime: $(grep '^note:' <<<"$out" | cut -c1-120)…"
  # int4 on random weights: the cosine floor of tests/verify_in_onnxruntime.sh (0.94; measured 0.978).
  check "$(basename "$fallback4") (onnxruntime)" "$qaforge" verify "$fallback4" --golden "$golden/$1" --engine ort --ort-library "$ort" --min-cosine 0.94
fi
out=$(env -u ORT_DYLIB_PATH "$qaforge" quantize "$fused" -o "$dir/refused.onnx" --precision int8-static "${calibrate[@]}" --tokenizer "$golden/$1" 2>&1)
rc=$?
if [ $rc -ne 2 ] || [ -e "$dir/refused.onnx" ] || ! grep -q "ONNX Runtime can calibrate it" <<<"$out"; then
  echo "FAIL without ONNX Runtime, calibrating a graph tract cannot run should exit 2 naming the way (exit $rc): $out"
  status=1
else
  echo "without ONNX Runtime: $(tail -1 <<<"$out" | cut -c1-160)…"
fi
for f in mobilebert-tiny minilm-l6-squad2; do
  [ -f "$dir/$f.int8-static.ort.onnx" ] || continue
  "$python" tests/python/ort_op_counts.py "$dir" "$f" 2> >(grep -v "WARNING\|Please consider\|INFO" >&2) || status=1
done
exit $status
