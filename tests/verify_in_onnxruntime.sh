#!/usr/bin/env bash
# `qaforge verify --engine ort` on every artifact `make test-onnx` wrote, with the wheel's
# libonnxruntime. Where ONNX Runtime cannot compute an artifact exactly on this CPU (full-range
# int8 weights meet a saturating u8 x s8 kernel: x86 without VNNI), verify exits 3 (NOT VERIFIED);
# the artifact is then verified in tract, whose integer arithmetic is exact, and its x86-avx2 twin
# (uint8 weights, exact u8 x u8 kernels) is verified in ONNX Runtime on every CPU. Each line says
# which engine verified what.
#
#   tests/verify_in_onnxruntime.sh QAFORGE ARTIFACT_DIR GOLDEN_DIR LIBONNXRUNTIME FIXTURE...
set -uo pipefail
qaforge=$1 dir=$2 golden=$3 ort=$4
shift 4
status=0
for f in "$@"; do
  for p in "" .fp16 .int8-dynamic .int8-static .int8-dynamic.x86-avx2 .int8-dynamic.token.x86-avx2 .int8-static.x86-avx2 .int4; do
    a=$dir/$f$p.onnx
    # Random-weight fixtures (F1 about 6) flip answers under any perturbation, and one changed answer
    # of 251 moves F1 by up to 0.4. Measured here and under qemu as Haswell (tests/qaforge-as-cpu),
    # every fixture: fp16 ΔF1 -0.11 at worst (ONNX Runtime computes some fp16 ops in fp32, tract
    # rounds every op), int8 -0.50 at worst, within 0.02 of each other on the two CPUs. So fp16 gets
    # an F1-drop tolerance of 1.0 here (0.89 of margin, over two answers) and int8 keeps verify's 1.0
    # (0.5 of margin); the cosine floors (0.999 fp16, 0.99 int8) are the sharp checks on these.
    extra=()
    [ "$p" = .fp16 ] && extra=(--max-f1-drop 1.0)
    # int4 on random weights is 4-bit rounding's worst case (i.i.d. weights, no outlier structure
    # for the scale search to use): measured logit cosine 0.948 (mobilebert-tiny) to 0.994, the
    # same in tract and ONNX Runtime, against 0.9991 on the trained fixture, which keeps int4's
    # default floor of 0.98 (tests/trained_fixture.sh). These get 0.94.
    [ "$p" = .int4 ] && extra=(--min-cosine 0.94)
    out=$("$qaforge" verify "$a" --golden "$golden/$f" --engine ort --ort-library "$ort" "${extra[@]}" 2>&1)
    rc=$?
    case $rc in
      0) echo "$f$p (onnxruntime): $(tail -1 <<<"$out")" ;;
      3)
        if [[ $p == *x86-avx2 ]]; then
          echo "$f$p: an x86-avx2 artifact must be exact in ONNX Runtime on every CPU:"
          echo "$out"
          status=1
          continue
        fi
        echo "$f$p (onnxruntime): NOT VERIFIED here: $(grep -o 'ONNX Runtime on this CPU ([^)]*)' <<<"$out" | head -1) saturates its full-range int8 weights"
        out=$("$qaforge" verify "$a" --golden "$golden/$f" 2>&1) || { echo "$out"; status=1; continue; }
        echo "$f$p (tract instead, exact): $(tail -1 <<<"$out")"
        ;;
      *)
        echo "$f$p (onnxruntime): exit $rc"
        echo "$out"
        status=1
        ;;
    esac
  done
done
# --engine auto (verify's default) with the library: ONNX Runtime where it is exact on this CPU
# (every artifact on a VNNI CPU), tract for the full-range int8 artifact where it is not.
# tests/device_logits.sh checks the other side as a Haswell.
. "$(dirname "$0")/lib/verify_output.sh"
a=$dir/$1.int8-dynamic.onnx want=onnxruntime
grep -qwE 'avx512_vnni|avx_vnni' /proc/cpuinfo || want=tract
out=$("$qaforge" verify "$a" --golden "$golden/$1" --engine auto --ort-library "$ort" 2>&1)
if [ $? -ne 0 ] || ! auto_ran_in $want "$out"; then
  echo "FAIL: verify --engine auto on $1.int8-dynamic should run in $want here:"; echo "$out"; status=1
else
  echo "$1.int8-dynamic (--engine auto): ran in $(ran_in "$out")"
fi
exit $status
