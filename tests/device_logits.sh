#!/usr/bin/env bash
# The phone's kernels in make test: every fixture's arm64 int8-dynamic and int8-static artifacts, its int4 artifact
# and their .ort packages run in ONNX Runtime's real aarch64 build under qemu as three CPU models
# (cortex-a72: NEON; neoverse-n1: dot product; max,sme=off: SVE and i8mm), through
# tools/run_on_device.py, and each logits file is verified with `qaforge verify --logits`: all must
# PASS. Then ONNX Runtime's x86 build as a Haswell (AVX2, no VNNI) under qemu-x86_64: the x86-avx2
# artifacts' logits must PASS and equal what the exactness check predicts, the full-range ones must
# be what integer_kernels calls inexact there. Emulation is slow (about half a second a feature for
# a tiny fixture), so each fixture runs on a bundle of its first QUESTIONS questions.
# Usage: device_logits.sh QAFORGE DIR ORT_LIBRARY PYTHON FIXTURE...
set -euo pipefail
QAFORGE=$1 DIR=$2 ORT=$3 PYTHON=$4; shift 4
QUESTIONS=${QUESTIONS:-8}
ARM_CPUS=${ARM_CPUS:-cortex-a72 neoverse-n1 max,sme=off}
HERE=$(cd "$(dirname "$0")" && pwd)
version() { sed -n "s/^$1==//p" "$HERE/python/requirements.txt"; }
ARM=target/arm64
started=$SECONDS
bash "$HERE/arm64/setup.sh" "$ARM" "$(dirname "$PYTHON")/pip" "$(version onnxruntime)" "$(version numpy)"
echo "aarch64 ONNX Runtime $(version onnxruntime) under $(qemu-aarch64-static --version | head -1) ready in $((SECONDS - started)) s"
rm -rf "$DIR" && mkdir -p "$DIR"

# Artifacts, packages and small bundles (reference logits by qaforge-reference, which equals
# PyTorch on every fixture: tests/reference.rs).
artifacts=()
for f in "$@"; do
  a=$DIR/$f
  "$QAFORGE" golden "golden/$f" --data golden/squad/eval.json --limit "$QUESTIONS" -o "$a.bundle" > /dev/null
  "$QAFORGE" convert "golden/$f" -o "$a.onnx" > /dev/null
  "$QAFORGE" quantize "$a.onnx" -o "$a.int8-dynamic.onnx" --precision int8-dynamic > /dev/null
  "$QAFORGE" quantize "$a.onnx" -o "$a.int8-static.onnx" --precision int8-static --calibration golden/squad/calibration.json --samples 16 --tokenizer "golden/$f" > /dev/null
  "$QAFORGE" quantize "$a.onnx" -o "$a.int8-dynamic.x86-avx2.onnx" --precision int8-dynamic --target x86-avx2 > /dev/null
  "$QAFORGE" quantize "$a.onnx" -o "$a.int8-int4.onnx" --precision int4 > /dev/null
  # Per-token activation scales (ReduceMin/ReduceMax, MatMulInteger with its zero point taken out
  # in int32): the ARM kernels' u8 x s8 products, as the per-tensor artifact's.
  "$QAFORGE" quantize "$a.onnx" -o "$a.int8-dynamic-token.onnx" --precision int8-dynamic --activation-scales token > /dev/null
  for p in int8-dynamic int8-static; do
    "$QAFORGE" package "$a.$p.onnx" --format ort -o "$a.$p.ort" --operators-config "$a.$p.config" --ort-library "$ORT" > /dev/null
    artifacts+=("$a.$p.onnx" "$a.$p.ort")
  done
  # int4 (MatMulNBits, GatherBlockQuantized): ONNX Runtime's float kernels on the phone. Named
  # int8-int4 so that ${x%%.int8-*} finds its bundle like the others.
  artifacts+=("$a.int8-int4.onnx" "$a.int8-dynamic-token.onnx")
done

# One process per CPU model runs every artifact (importing onnxruntime takes seconds emulated).
# qemu emulates SVE about three times slower than NEON (max,sme=off took 392 s against 124 s for
# neoverse-n1), so the SVE model runs the .onnx artifacts and not their .ort packages, which hold
# the same graphs for the same kernels and are run on the two NEON models, and only of the
# fixtures in SVE_FIXTURES: its i8mm and SVE kernels are the same for every fixture, the fixtures
# differ in their shapes, and the two NEON models run every fixture. Two MobileBERTs (flipped
# switches, no bottleneck) and BERT, the quick ones: emulated SVE took 46 to 74 s an artifact of
# mobilebert-tiny against 12 to 15 s for these (2.3 to 10.4 s on neoverse-n1), and with every
# fixture it ran 301 s while the NEON models took 125 s and left the second core idle.
SVE_FIXTURES=${SVE_FIXTURES:-mobilebert-flipped mobilebert-nobottleneck bert-tiny}
runs_on() { # runs_on TAG ARTIFACT: whether CPU model TAG runs ARTIFACT
  local tag=$1 x=$2
  [[ $tag == max* ]] || return 0
  [[ $x == *.ort ]] && return 1
  [[ " $SVE_FIXTURES " == *" $(basename "${x%%.int8-*}") "* ]]
}
artifacts_for() { local tag=$1; for x in "${artifacts[@]}"; do runs_on "$tag" "$x" && echo "$x"; done; return 0; }
jobs_for() { local tag=$1; for x in $(artifacts_for "$tag"); do echo "--also $x ${x%%.int8-*}.bundle $x.$tag.logits"; done; }
run_all() { # run_all TAG COMMAND...: every artifact's logits as TAG
  local tag=$1; shift
  local runs first; mapfile -t runs < <(artifacts_for "$tag"); first=${runs[0]}
  "$@" "$HERE/../tools/run_on_device.py" "$first" "${first%%.int8-*}.bundle" -o "$first.$tag.logits" --device "$tag" $(jobs_for "$tag" | tail -n +2) > "$DIR/$tag.log" 2>&1 \
    || { grep -v "TCG doesn't support" "$DIR/$tag.log" >&2; echo "device run $tag failed" >&2; return 1; }
}
run_all x86 "$PYTHON"
pids=()
for cpu in $ARM_CPUS; do
  ( t=$SECONDS; run_all "$cpu" "$ARM/python" "$cpu" && echo "$cpu: $(artifacts_for "$cpu" | wc -l) artifacts in $((SECONDS - t)) s emulated" ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done

# Every logits file verified; .ort packages are read through ONNX Runtime. This machine's own x86
# run is judged only where its ONNX Runtime computes the arm64 (full-range int8) artifacts
# exactly, i.e. with VNNI: without it the u8 x s8 kernel saturates (measured as a Haswell: 3 of 7
# fixtures' int8-dynamic logits FAIL), which is the Haswell check's subject below, not a defect.
if grep -qwE 'avx512_vnni|avx_vnni' /proc/cpuinfo && [ -z "${QAFORGE_ASSUME_NO_VNNI:-}" ]; then judged=(x86 $ARM_CPUS); else
  judged=($ARM_CPUS); echo "this x86 CPU has no VNNI: its own ONNX Runtime logits are compared below, not verified"; fi
verified=0
for x in "${artifacts[@]}"; do
  engine=(); [[ $x == *.ort ]] && engine=(--engine ort --ort-library "$ORT")
  # int4 on random weights: cosine 0.948 to 0.994 (see verify_in_onnxruntime.sh). On a bundle of 8
  # questions one answer moves F1 by 12.5 points, so the cosine judges int4 here, not ΔF1.
  [[ $x == *.int8-int4.onnx ]] && engine+=(--min-cosine 0.94 --max-f1-drop 100)
  # Per-token int8-dynamic: the same. distilbert-tiny's changes one answer of 8 (F1 4.98 -> 3.59, a
  # near tie of the random model) in tract on x86 exactly as on every ARM model, at cosine 0.99996:
  # the quantization's flip, not the kernels'. int8's cosine floor (0.99) still applies.
  [[ $x == *.int8-dynamic-token.onnx ]] && engine+=(--max-f1-drop 100)
  for cpu in "${judged[@]}"; do
    runs_on "$cpu" "$x" || continue
    if ! out=$("$QAFORGE" verify "$x" --golden "${x%%.int8-*}.bundle" --logits "$x.$cpu.logits" "${engine[@]}" --report "$x.$cpu.json" 2>&1); then
      echo "$out" >&2; echo "FAILED: $x on $cpu" >&2; exit 1
    fi
    verified=$((verified + 1))
  done
done
echo "verify --logits: $verified logits files PASS (${#artifacts[@]} artifacts x ${judged[*]})"
"$PYTHON" "$HERE/python/compare_logits.py" "$DIR" x86 $ARM_CPUS
"$PYTHON" "$HERE/python/compare_logits.py" "$DIR" cortex-a72 $(echo $ARM_CPUS | tr ' ' '\n' | grep -v '^cortex-a72$')

# x86 without VNNI: ONNX Runtime's x86 build as a Haswell. The x86-avx2 artifacts (u8 x u8) are
# computed exactly there and PASS; the full-range ones meet the saturating u8 x s8 kernel, which
# is why `verify --engine ort` refuses to judge them on such a CPU (exit 3, NOT VERIFIED).
haswell=()
for f in "$@"; do haswell+=("$DIR/$f.int8-dynamic.x86-avx2.onnx" "$DIR/$f.int8-dynamic.onnx"); done
avx2=()
for f in "$@"; do avx2+=("$DIR/$f.int8-dynamic.x86-avx2.onnx"); done
"$PYTHON" "$HERE/../tools/run_on_device.py" "${avx2[0]}" "${avx2[0]%%.int8-*}.bundle" -o "${avx2[0]}.x86.logits" --device x86 \
  $(for x in "${avx2[@]:1}"; do echo "--also $x ${x%%.int8-*}.bundle $x.x86.logits"; done) > "$DIR/x86-avx2.log" 2>&1 || { cat "$DIR/x86-avx2.log" >&2; exit 1; }
first=${haswell[0]}
QAFORGE_HASWELL_JOBS=$(for x in "${haswell[@]:1}"; do echo "--also $x ${x%%.int8-*}.bundle $x.haswell.logits"; done)
qemu-x86_64-static -cpu Haswell "$PYTHON" "$HERE/../tools/run_on_device.py" "$first" "${first%%.int8-*}.bundle" -o "$first.haswell.logits" --device "qemu -cpu Haswell" $QAFORGE_HASWELL_JOBS > "$DIR/haswell.log" 2>&1 \
  || { cat "$DIR/haswell.log" >&2; exit 1; }
for f in "$@"; do
  a=$DIR/$f
  "$QAFORGE" verify "$a.int8-dynamic.x86-avx2.onnx" --golden "$a.bundle" --logits "$a.int8-dynamic.x86-avx2.onnx.haswell.logits" > /dev/null \
    || { echo "FAILED: the x86-avx2 artifact of $f on Haswell" >&2; exit 1; }
  set +e
  QAFORGE_CPU=Haswell QAFORGE_BINARY="$QAFORGE" "$HERE/qaforge-as-cpu" verify "$a.int8-dynamic.onnx" --golden "$a.bundle" --engine ort --ort-library "$ORT" > /dev/null 2>&1
  code=$?
  set -e
  [ $code = 3 ] || { echo "FAILED: verify --engine ort as a Haswell should refuse to judge $f's full-range artifact (exit 3), got $code" >&2; exit 1; }
done
# --engine auto (verify's default) as a Haswell: the full-range artifact goes to tract, which is
# exact there, and the report says why; the x86-avx2 one stays in ONNX Runtime (exact on every x86).
. "$HERE/lib/verify_output.sh"
a=$DIR/$1
for p in int8-dynamic int8-dynamic.x86-avx2; do
  out=$(QAFORGE_CPU=Haswell QAFORGE_BINARY="$QAFORGE" "$HERE/qaforge-as-cpu" verify "$a.$p.onnx" --golden "$a.bundle" --engine auto --ort-library "$ORT" 2>&1) \
    || { echo "$out" >&2; echo "FAILED: verify --engine auto as a Haswell on $1's $p artifact" >&2; exit 1; }
  want=onnxruntime
  [ $p = int8-dynamic ] && want=tract
  auto_ran_in $want "$out" || { echo "$out" >&2; echo "FAILED: verify --engine auto as a Haswell on $1's $p artifact should run in $want" >&2; exit 1; }
  echo "verify --engine auto as a Haswell, $1 $p: ran in $(ran_in "$out")"
done
"$PYTHON" "$HERE/python/compare_logits.py" "$DIR" x86 haswell

# int4 under a size budget (2-bit MatMulNBits with zero points, make test-onnx's *.budget.onnx) on
# the phone's kernels: each ARM model must compute it as it computes the float twin that
# tests/python/check_nbits.py decoded from the operator's specification (the same ONNX Runtime
# float kernels then multiply the same weights).
check=$(dirname "$DIR")/check
budgets=("$check"/*.budget.onnx)
first=$(basename "${budgets[0]}" .budget.onnx)
# One emulated process per CPU model runs every budget artifact and its twin (importing onnxruntime
# is the slow part), the two CPU models side by side.
pids=()
for cpu in cortex-a72 neoverse-n1; do
  also=()
  for budget in "${budgets[@]}"; do
    f=$(basename "$budget" .budget.onnx)
    [ "$f" = "$first" ] || also+=(--also "$budget" "$DIR/$f.bundle" "$DIR/$f.budget.$cpu.logits")
    also+=(--also "$check/$f.budget.dequantized.onnx" "$DIR/$f.bundle" "$DIR/$f.budget-twin.$cpu.logits")
  done
  ( "$ARM/python" "$cpu" "$HERE/../tools/run_on_device.py" "${budgets[0]}" "$DIR/$first.bundle" -o "$DIR/$first.budget.$cpu.logits" --device "$cpu" "${also[@]}" > "$DIR/budget.$cpu.log" 2>&1 \
      || { grep -v "TCG doesn't support" "$DIR/budget.$cpu.log" >&2; echo "FAILED: the budget artifacts on $cpu" >&2; exit 1; } ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for budget in "$check"/*.budget.onnx; do
  f=$(basename "$budget" .budget.onnx)
  for cpu in cortex-a72 neoverse-n1; do
    "$PYTHON" - "$DIR/$f.budget.$cpu.logits" "$DIR/$f.budget-twin.$cpu.logits" "$f on $cpu" <<'PY' || exit 1
import sys
sys.path.insert(0, "tests/python")
import numpy as np
from compare_logits import logits
got, want = logits(sys.argv[1]), logits(sys.argv[2])
worst = max(float(np.abs(got[k] - want[k]).max()) for k in ("start_logits", "end_logits"))
print(f"{sys.argv[3]}: 2-bit budget artifact against its decoded float twin, max |diff| {worst:.3e}")
sys.exit(0 if worst <= 1e-4 else 1)
PY
  done
done
echo "device logits checked in $((SECONDS - started)) s"
