#!/usr/bin/env bash
# Same inputs, same bytes, on every CPU: the int8-static artifacts of the fixtures, each calibration
# method, quantized by the same binary natively and under qemu's user-mode emulation of two other
# x86-64 CPUs (`-cpu Haswell`: AVX2 and FMA, no AVX-512; `-cpu Nehalem`: SSE4.2, no AVX at all),
# must have the same sha256. Calibration runs tract's generic kernels (qaforge_runtime::kernels),
# whose arithmetic does not depend on the CPU; before them the same command wrote three different
# files on these three CPUs. int8-dynamic, fp16 and int4 (no float forward pass) are checked on one fixture,
# and so is int4 under a size budget (`--max-size` at 99% of the int4 artifact's size) with GPTQ
# rounding: one run that sums input statistics over the features, factors matrices in float64 and
# plans the bit widths from them (GPTQ alone is the same path without the plan); and int8-dynamic
# with scale migration (--smooth: channel maxima and simulated int8 products decide the scales).
#
# Emulation costs 15 to 30x, so this calibrates on 4 features: the ranges still come from every
# activation of those features, through every kernel, and without the generic kernels 4 features
# were enough for three different files (checked once by removing
# qaforge_runtime::kernels::use_portable_kernels from calibration). Every native quantization runs
# first (the budget run needs the plain int4 artifact's size), then the emulated ones from one
# queue, two at a time, the slowest (the trained fixture, named last) first.
#
# A FIXTURE may name its methods and its calibration features (minilm-l6-squad2:minmax:1): the
# trained fixture under emulation took 4.5 minutes of both cores on 4 features (natively 1.2 s of
# one core a feature, 2 s besides), so make test runs it with minmax on 1 feature, every method
# on two tiny fixtures and minmax on the others (the Makefile's CROSS_CPU_FIXTURES says why). A
# fixture run with every method is also run as a Nehalem; one that names its methods, as a Haswell
# only. The two tiny fixtures cover both activation families (MobileBERT's ReLU, BERT's GELU
# through Erf), so the tier without FMA or AVX meets every element-wise kernel there.
#
#   tests/cross_cpu.sh QAFORGE QEMU WORK_DIR FIXTURE[:METHOD,...[:FEATURES]]...
set -uo pipefail
qaforge=$1 qemu=$2 dir=$3
shift 3
mkdir -p "$dir"
calibrate=(--calibration golden/squad/calibration.json)
status=0
digest() { sha256sum "$1" | cut -c1-16; }
first_fixture=${1%%:*}
# Every run as "FIXTURE|NAME|CPUS|ARGS", the fixtures converted on the way.
runs=()
for spec in "$@"; do
  IFS=: read -r f methods samples <<<"$spec"
  cpus=Haswell
  [ -z "$methods" ] && methods=minmax,percentile,mse cpus=Haswell,Nehalem
  calibrate[2]=--samples calibrate[3]=${samples:-4}
  "$qaforge" convert "golden/$f" -o "$dir/$f.onnx" > /dev/null || { echo "$f: convert failed"; status=1; continue; }
  for m in ${methods//,/ }; do runs+=("$f|int8-static-$m|$cpus|--precision int8-static --method $m ${calibrate[*]} --tokenizer golden/$f"); done
  [ "$f" = "$first_fixture" ] && runs+=("$f|int8-dynamic|$cpus|--precision int8-dynamic" "$f|fp16|$cpus|--precision fp16" "$f|int4|$cpus|--precision int4"
    "$f|int4-budget-gptq|$cpus|--precision int4 --max-size @INT4_99@ --rounding gptq ${calibrate[*]} --tokenizer golden/$f"
    "$f|int8-dynamic-smooth|$cpus|--precision int8-dynamic --smooth ${calibrate[*]} --tokenizer golden/$f")
done
# quantize FIXTURE NAME CPU ARGS: one run, its output and log named by the CPU.
quantize() {
  local f=$1 name=$2 cpu=$3 args=$4
  # The budget: 99% of the plain int4 artifact written natively before (some products go to 2 bits).
  [[ $args == *@INT4_99@* ]] && args=${args//@INT4_99@/$(( $(stat -c %s "$dir/$f.int4.native.onnx") * 99 / 100 ))}
  local emulate=(); [ "$cpu" = native ] || emulate=("$qemu" -cpu "$cpu")
  # shellcheck disable=SC2086
  "${emulate[@]}" "$qaforge" quantize "$dir/$f.onnx" -o "$dir/$f.$name.$cpu.onnx" $args > "$dir/$f.$name.$cpu.log" 2>&1
}
for run in "${runs[@]}"; do
  IFS='|' read -r f name cpus args <<<"$run"
  quantize "$f" "$name" native "$args"
done
# The emulated runs, two at a time, the slowest fixture (the last one named) first.
for ((i = ${#runs[@]} - 1; i >= 0; i--)); do
  IFS='|' read -r f name cpus args <<<"${runs[i]}"
  for cpu in ${cpus//,/ }; do
    quantize "$f" "$name" "$cpu" "$args" &
    while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n; done
  done
done
wait
for run in "${runs[@]}"; do
  IFS='|' read -r f name cpus args <<<"$run"
  line="$f $name:"
  same=1 first=
  for cpu in native ${cpus//,/ }; do
    out=$dir/$f.$name.$cpu.onnx
    if ! grep -q '^quantized' "$dir/$f.$name.$cpu.log" || [ ! -f "$out" ]; then
      echo "$line quantize on $cpu failed:"; grep -v "TCG doesn't support" "$dir/$f.$name.$cpu.log"; status=1; same=0; break
    fi
    d=$(digest "$out")
    line="$line $cpu $d"
    [ -z "$first" ] && first=$d
    [ "$d" = "$first" ] || same=0
  done
  if [ $same = 1 ]; then echo "$line: same bytes"; else echo "$line: DIFFER"; status=1; fi
done
exit $status
