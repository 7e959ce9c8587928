#!/usr/bin/env bash
# The ONNX that users bring: every committed export of golden/exports (torch.onnx.export, see
# golden/export.py) is verified as it is and quantized in every mode; each artifact must pass
# onnx.checker full_check and `qaforge verify` against its fixture's golden bundle, in tract and in
# ONNX Runtime (int8 for arm64 in tract only: ONNX Runtime on x86 without VNNI saturates
# full-range int8, see verify_in_onnxruntime.sh; its x86-avx2 twin runs in ONNX Runtime).
#
#   tests/exports.sh QAFORGE ARTIFACT_DIR GOLDEN_DIR LIBONNXRUNTIME PYTHON
set -uo pipefail
qaforge=$1 dir=$2 golden=$3 ort=$4 python=$5
mkdir -p "$dir"
status=0
fail() { echo "FAIL: $*"; status=1; }
calibrate=(--calibration "$golden/squad/calibration.json" --samples 64)
for export in "$golden"/exports/*.onnx; do
  name=$(basename "$export" .onnx)
  fixture=${name%%.*}
  for mode in fp32 fp16 int8-dynamic int8-dynamic.x86-avx2 int8-static.x86-avx2; do
    artifact=$export
    if [ "$mode" != fp32 ]; then
      artifact=$dir/$name.$mode.onnx
      precision=${mode%%.*}
      args=(--precision "$precision")
      [[ $mode == *x86-avx2 ]] && args+=(--target x86-avx2)
      [ "$precision" = int8-static ] && args+=("${calibrate[@]}" --tokenizer "$golden/$fixture")
      out=$("$qaforge" quantize "$export" -o "$artifact" "${args[@]}" 2>&1) || { fail "$name $mode: quantize"; echo "$out"; continue; }
      "$python" -c "import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)" "$artifact" \
        || { fail "$name $mode: onnx.checker"; continue; }
    fi
    engines=(tract ort)
    [ "$mode" = int8-dynamic ] && engines=(tract)
    for engine in "${engines[@]}"; do
      extra=()
      # As in verify_in_onnxruntime.sh: ONNX Runtime computes some fp16 ops in fp32.
      [ "$mode" = fp16 ] && [ "$engine" = ort ] && extra=(--max-f1-drop 0.5)
      out=$("$qaforge" verify "$artifact" --golden "$golden/$fixture" --engine "$engine" --ort-library "$ort" "${extra[@]}" 2>&1) \
        && echo "$name $mode ($engine): $(tail -1 <<<"$out")" \
        || { fail "$name $mode ($engine)"; echo "$out"; }
    done
  done
done
exit $status
