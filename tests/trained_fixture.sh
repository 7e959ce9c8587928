#!/usr/bin/env bash
# Real numerics in `make test`: the trained fixture golden/minilm-l6-squad2 (MiniLM-L6 fine-tuned on
# SQuAD v2 by golden/train.py, stored in MobileBERT's format) through every precision and every
# calibration method `quantize --method` offers, each artifact verified against the PyTorch goldens
# in ONNX Runtime. The bounds judge how closely each artifact follows the float model (agreement F1
# of its answers with PyTorch's, 251 questions) and its F1 change against the gold answers:
#
#   artifact                agreement F1 ≥   ΔF1 ≥   measured agreement, ΔF1: Xeon AVX-512 VNNI | EPYC AVX2
#   fp32 (tract)            every prediction identical, max |Δ| ≤ 1e-4 (verify's fp32 default)
#   fp16                    99               -1.0    100.00, 0.00 | 100.00, 0.00
#   int8-dynamic (batch 1)  86.5             -2.5    88.82, +1.99 | 90.46, +1.63 (the same bytes; **)
#   int8-static minmax      89.5             -2.5    91.68, +1.71 | 92.77, +2.69 (*)
#   int8-static percentile  88               -2.5    90.33, +1.64 | 90.61, +2.84 (*)
#   int8-static mse         82               -2.5    84.52, -0.21 | 84.40, -0.35 (*)
#   int4 (blocks of 32)     84.5             -2.5    86.99, +0.63 | (not measured there)
#   int4 GPTQ (blocks of 128, 32 features) 86  -2.5    88.12, +0.37 | (not measured there)
#
# Measured with ONNX Runtime 1.23.2; with 1.32.0 (the pin since 2026-12-01) the Xeon reads fp16
# 100.00, int8-dynamic 89.52 (+2.78), minmax 91.98, percentile 90.61, mse 84.43, int4 86.99: the
# bounds keep their margins.
# (**) verify runs int8-dynamic at batch size 1 (as an app does; its activation scales span the
# batch). AVX2 measured as a Haswell under qemu (2026-11-30), which reproduced the EPYC exactly
# before. At batch 8 the same file read 90.83, +2.58 | 91.23, +3.37.
# (*) calibrated on that CPU before calibration was made CPU-independent; an AVX-512 VNNI EPYC
# measured mse at ΔF1 -0.55 then. int8-static artifacts are now the same bytes everywhere
# (tests/cross_cpu.sh), but ONNX Runtime runs each with its CPU's float kernels, and this model's
# answers sit near its no-answer threshold: the same int8-dynamic file reads ΔF1 +2.58 on one CPU
# and +3.37 on another (0.79 apart), the static ones up to 1.2 apart. One answer moves either
# measure by up to 0.4 of 251. Each bound therefore sits 2.0 points (five answers) below the lowest
# value measured on any CPU, further than the largest spread between CPUs; the ΔF1 floor is 2.0
# below the worst ΔF1 ever measured (-0.55). A bound on ΔF1 alone cannot see a real regression that
# moves answers both ways: per-tensor int8 weights raise ΔF1 to +4.39 here while only 188 of 251
# answers stay the float model's (agreement 78.05), so the last check quantizes exactly that and
# expects minmax's bounds to FAIL it (the removed entropy calibration, agreement 44.53 and ΔF1
# -19.44, would fail them by far). Verify's cosine floors (0.999 fp16, 0.99 int8) apply too. The
# int8 artifacts are for `--target x86-avx2`, which ONNX Runtime computes exactly on every x86 CPU;
# every target stores the same 255 weight levels, so tract computes the same logits for the arm64
# artifact (tests/quantize.rs checks that).
#
#   tests/trained_fixture.sh QAFORGE WORK_DIR LIBONNXRUNTIME PYTHON
set -euo pipefail
qaforge=$1 dir=$2 ort=$3
fixture=golden/minilm-l6-squad2
calibrate=(--calibration golden/squad/calibration.json --tokenizer "$fixture" --samples 128)
mkdir -p "$dir"
"$qaforge" convert "$fixture" -o "$dir/fp32.onnx" > /dev/null
"$qaforge" verify "$dir/fp32.onnx" --golden "$fixture" --report "$dir/fp32.report.json" | tail -1 | sed "s|^|$fixture fp32 (tract): |"
"$qaforge" quantize "$dir/fp32.onnx" -o "$dir/fp16.onnx" --precision fp16 > /dev/null
"$qaforge" quantize "$dir/fp32.onnx" -o "$dir/int8-dynamic.onnx" --precision int8-dynamic --target x86-avx2 > /dev/null
"$qaforge" quantize "$dir/fp32.onnx" -o "$dir/int4.onnx" --precision int4 > /dev/null
# GPTQ rounding with blocks of 128 (2 MB smaller than blocks of 32; round to nearest there: 84.26),
# statistics of 32 features to keep make test short (128 features: 90.86, README).
"$qaforge" quantize "$dir/fp32.onnx" -o "$dir/int4-gptq.onnx" --precision int4 --block-size 128 --rounding gptq \
  --calibration golden/squad/calibration.json --tokenizer "$fixture" --samples 32 > /dev/null
for m in minmax percentile mse; do
  "$qaforge" quantize "$dir/fp32.onnx" -o "$dir/int8-static-$m.onnx" --precision int8-static --method $m --target x86-avx2 "${calibrate[@]}" > /dev/null
done
# A regression the bounds must catch: per-tensor weights, judged by minmax's bounds.
"$qaforge" quantize "$dir/fp32.onnx" -o "$dir/regression-per-tensor.onnx" --precision int8-static --method minmax --per-tensor \
  --target x86-avx2 "${calibrate[@]}" > /dev/null

bounds() { # ARTIFACT -> "MIN_AGREEMENT_F1 MAX_F1_DROP"
  case $1 in
    fp16) echo 99 1.0 ;;
    int8-dynamic) echo 86.5 2.5 ;;
    int8-static-minmax | regression-per-tensor) echo 89.5 2.5 ;;
    int8-static-percentile) echo 88 2.5 ;;
    int8-static-mse) echo 82 2.5 ;;
    # Measured on one CPU only (AVX-512 VNNI); ONNX Runtime computes int4 in float32, so the spread
    # between CPUs is fp32-kernel-sized, but the margin is int8's (2.5 points).
    int4) echo 84.5 2.5 ;;
    int4-gptq) echo 86 2.5 ;;
  esac
}
judge() { # ARTIFACT -> verify's exit status; the log in $dir/ARTIFACT.log
  local agreement drop
  read -r agreement drop <<<"$(bounds "$1")"
  "$qaforge" verify "$dir/$1.onnx" --golden "$fixture" --engine ort --ort-library "$ort" \
    --min-agreement-f1 "$agreement" --max-f1-drop "$drop" --report "$dir/$1.report.json" > "$dir/$1.log" 2>&1
}
status=0
for name in fp16 int8-dynamic int8-static-minmax int8-static-percentile int8-static-mse int4 int4-gptq; do
  read -r agreement drop <<<"$(bounds "$name")"
  label="$fixture $name (onnxruntime, agreement F1 ≥ $agreement, ΔF1 ≥ -$drop)"
  if judge "$name"; then
    echo "$label: $(tail -1 "$dir/$name.log")"
  else
    echo "$label: FAIL"; cat "$dir/$name.log"; status=1
  fi
done
if judge regression-per-tensor; then
  echo "$fixture per-tensor weights PASSED minmax's bounds, which must catch this regression:"; cat "$dir/regression-per-tensor.log"; status=1
elif grep -q "agreement F1 with the reference" "$dir/regression-per-tensor.log"; then
  echo "$fixture per-tensor weights (a regression): FAIL as it must: $(grep -o 'agreement F1 with the reference[^)]*)' "$dir/regression-per-tensor.log" | head -1)"
else
  echo "$fixture per-tensor weights failed, but not on agreement:"; cat "$dir/regression-per-tensor.log"; status=1
fi
"$qaforge" table "$dir"/fp32.report.json "$dir"/fp16.report.json "$dir"/int8-dynamic.report.json "$dir"/int8-static-{minmax,percentile,mse}.report.json "$dir"/int4.report.json "$dir"/int4-gptq.report.json "$dir"/regression-per-tensor.report.json
exit $status
