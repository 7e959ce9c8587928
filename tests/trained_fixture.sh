#!/usr/bin/env bash
# Real numerics in `make test`: the trained fixture golden/minilm-l6-squad2 (MiniLM-L6 fine-tuned on
# SQuAD v2 by golden/train.py, stored in MobileBERT's format) through every precision and every
# calibration method `quantize --method` offers, each artifact verified against the PyTorch goldens
# in ONNX Runtime. The bounds judge how closely each artifact follows the float model (agreement F1
# of its answers with PyTorch's, 251 questions) and its F1 change against the gold answers:
#
#   artifact                agreement F1 ≥   ΔF1 ≥   measured agreement, ΔF1 (EPYC Zen 3, AVX2)
#   fp32 (tract)            every prediction identical, max |Δ| ≤ 1e-4 (verify's fp32 default)
#   fp16                    97.5             -1.0    99.87, 0.00
#   int8-dynamic (batch 1)  95               -3.8    97.13, -1.80 (**)
#   int8-static minmax      92               -3.8    94.43, +0.21
#   int8-static percentile  92.5             -3.8    94.51, -0.14
#   int8-static mse         92               -3.8    94.39, +0.64
#   int8-dynamic --smooth   92.5             -3.8    94.97, -0.66 (mean |Δ| 0.077 against 0.100 without)
#   int8-static minmax --smooth  95          -3.8    97.10, +0.27 (mean |Δ| 0.060 against 0.104 without)
#   int8-dynamic --activation-scales token  96.5  -3.8  98.52, -0.12 (mean |Δ| 0.035 against 0.100 per tensor; batch 8)
#   int8-static minmax --smooth, FFN output products of layers 0-3 with float activations
#                           97               -3.8    99.11, +0.27 (mean |Δ| 0.035 against 0.060 without; Xeon, below)
#   int4 (blocks of 32)     88.5             -3.8    90.64, +0.22
#   int4 GPTQ (blocks of 128, 32 features) 91  -3.8    93.06, +0.38
#
# Measured again 2026-12-05 on a 2-core Intel Xeon (Sapphire Rapids, AVX-512 VNNI), ONNX Runtime
# 1.32.0: every bound holds there; agreement moved by at most 0.47 (one answer or two: int8-dynamic
# 96.74, minmax 94.90, int8-dynamic --smooth 95.14, per token 98.09; the rest equal), and the
# float-activations row was measured there.
# The fixture is the one golden/train.py trained on 2 CPU cores (2026-12-04: held-out F1 52.4,
# golden/README.md); measured 2026-12-05 with ONNX Runtime 1.32.0. Bounds of the fixture before it
# (a weaker model whose answers sat nearer its no-answer threshold) were 2.5-8.5 points lower.
# (**) verify runs int8-dynamic at batch size 1, as an app does (its activation scales span the
# batch); with per-token scales nothing spans the batch, and verify runs it in batches of 8 (the same
# 98.52 at batch 1; per tensor, batches of 8 give 95.09). The int8 artifacts are for `--target x86-avx2`, which ONNX Runtime computes exactly on
# every x86 CPU and whose bytes are the same everywhere (tests/cross_cpu.sh); what differs between
# CPUs is ONNX Runtime's float kernels around them. On the fixture before this one the same file's
# agreement and ΔF1 were up to 1.2 points apart between an AVX-512 VNNI Xeon and an AVX2 EPYC, and
# one answer moves either measure by up to 0.4 of 251. Each bound therefore sits 2.0 points (five
# answers) below the value measured, further than that spread; the ΔF1 floor is 2.0 below the worst
# ΔF1 measured (-1.80); fp16 keeps 1.0. A bound on ΔF1 alone cannot see a real regression that moves
# answers both ways: per-tensor int8 weights raise ΔF1 to +0.55 here while only 214 of 251 answers
# stay the float model's (agreement 89.94), so the last check quantizes exactly that and expects
# minmax's bounds to FAIL it. Verify's cosine floors (0.999 fp16, 0.99 int8) apply too. Every
# target stores the same 255 weight levels, so tract computes the same logits for the arm64
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
# Scale migration (--smooth): each product group's activation range partly moved into its weights.
"$qaforge" quantize "$dir/fp32.onnx" -o "$dir/int8-dynamic-smooth.onnx" --precision int8-dynamic --target x86-avx2 --smooth \
  "${calibrate[@]}" > /dev/null
"$qaforge" quantize "$dir/fp32.onnx" -o "$dir/int8-static-minmax-smooth.onnx" --precision int8-static --method minmax \
  --target x86-avx2 --smooth "${calibrate[@]}" > /dev/null
# The FFN output products of layers 0-3 (the first the sensitivity ranking names, their inputs
# GELU outputs with outlier tokens) with float activations and int8 weights: the plain int8 size.
"$qaforge" quantize "$dir/fp32.onnx" -o "$dir/int8-static-minmax-smooth-fa.onnx" --precision int8-static --method minmax \
  --target x86-avx2 --smooth --float-activations layer.0.output --float-activations layer.1.output \
  --float-activations layer.2.output --float-activations layer.3.output "${calibrate[@]}" > /dev/null
# One activation range per token instead of per tensor (int8-dynamic).
"$qaforge" quantize "$dir/fp32.onnx" -o "$dir/int8-dynamic-token.onnx" --precision int8-dynamic --target x86-avx2 \
  --activation-scales token > /dev/null
# A regression the bounds must catch: per-tensor weights, judged by minmax's bounds.
"$qaforge" quantize "$dir/fp32.onnx" -o "$dir/regression-per-tensor.onnx" --precision int8-static --method minmax --per-tensor \
  --target x86-avx2 "${calibrate[@]}" > /dev/null

bounds() { # ARTIFACT -> "MIN_AGREEMENT_F1 MAX_F1_DROP" (MEASURE=1: bounds wide open, to re-base them)
  if [ -n "${MEASURE:-}" ]; then echo 0 100; return; fi
  case $1 in
    fp16) echo 97.5 1.0 ;;
    int8-dynamic) echo 95 3.8 ;;
    int8-static-minmax | regression-per-tensor) echo 92 3.8 ;;
    int8-static-percentile) echo 92.5 3.8 ;;
    int8-static-mse) echo 92 3.8 ;;
    int8-dynamic-smooth) echo 92.5 3.8 ;;
    int8-static-minmax-smooth) echo 95 3.8 ;;
    int8-static-minmax-smooth-fa) echo 97 3.8 ;;
    int8-dynamic-token) echo 96.5 3.8 ;;
    int4) echo 88.5 3.8 ;;
    int4-gptq) echo 91 3.8 ;;
  esac
}
judge() { # ARTIFACT -> verify's exit status; the log in $dir/ARTIFACT.log
  local agreement drop
  read -r agreement drop <<<"$(bounds "$1")"
  "$qaforge" verify "$dir/$1.onnx" --golden "$fixture" --engine ort --ort-library "$ort" \
    --min-agreement-f1 "$agreement" --max-f1-drop "$drop" --report "$dir/$1.report.json" > "$dir/$1.log" 2>&1
}
status=0
for name in fp16 int8-dynamic int8-static-minmax int8-static-percentile int8-static-mse int8-dynamic-smooth \
  int8-static-minmax-smooth int8-static-minmax-smooth-fa int8-dynamic-token int4 int4-gptq; do
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
# What migration and per-token scales are for: logits nearer the float model's than the same
# precision's without them, by a margin far outside what CPUs move them (mean |Δ| 0.077 against 0.100,
# 0.060 against 0.104 and 0.035 against 0.100 in the table above; x86 and ARM kernels move int8 logits
# by ~0.04 on average, but both artifacts alike).
mean_abs_diff() { python3 -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['logits']['mean_abs_diff']:.4f}\")" "$dir/$1.report.json"; }
for pair in int8-dynamic:int8-dynamic-smooth int8-static-minmax:int8-static-minmax-smooth int8-dynamic:int8-dynamic-token \
  int8-static-minmax-smooth:int8-static-minmax-smooth-fa; do
  plain=${pair%%:*} smooth=${pair##*:}
  if [ -f "$dir/$plain.report.json" ] && [ -f "$dir/$smooth.report.json" ]; then
    a=$(mean_abs_diff "$plain") b=$(mean_abs_diff "$smooth")
    if python3 -c "import sys; sys.exit(0 if float(sys.argv[2]) < 0.85 * float(sys.argv[1]) else 1)" "$a" "$b"; then
      echo "$fixture $smooth: logits mean |Δ| $b against $a for $plain (< 85% of it)"
    else
      echo "$fixture $smooth: logits mean |Δ| $b, not below 85% of $plain's $a: FAIL"; status=1
    fi
  else
    echo "$fixture $smooth: no report to compare with $plain: FAIL"; status=1
  fi
done
"$qaforge" table "$dir"/fp32.report.json "$dir"/fp16.report.json "$dir"/int8-dynamic.report.json "$dir"/int8-static-{minmax,percentile,mse}.report.json \
  "$dir"/int8-{dynamic,static-minmax}-smooth.report.json "$dir"/int8-static-minmax-smooth-fa.report.json "$dir"/int8-dynamic-token.report.json "$dir"/int4.report.json "$dir"/int4-gptq.report.json "$dir"/regression-per-tensor.report.json
exit $status
