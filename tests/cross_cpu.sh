#!/usr/bin/env bash
# Same inputs, same bytes, on every CPU: the int8-static artifacts of the fixtures, each calibration
# method, quantized by the same binary natively and under qemu's user-mode emulation of two other
# x86-64 CPUs (`-cpu Haswell`: AVX2 and FMA, no AVX-512; `-cpu Nehalem`: SSE4.2, no AVX at all),
# must have the same sha256. Calibration runs tract's generic kernels (qaforge_runtime::kernels),
# whose arithmetic does not depend on the CPU; before them the same command wrote three different
# files on these three CPUs. int8-dynamic, fp16 and int4 (no float forward pass) are checked on one fixture,
# and so is int4 under a size budget (`--max-size` at 99% of the int4 artifact's size) with GPTQ
# rounding: one run that sums input statistics over the features, factors matrices in float64 and
# plans the bit widths from them (GPTQ alone is the same path without the plan).
#
# Emulation costs about 15x, so this calibrates on 4 features and runs the two emulated CPUs side by
# side; the ranges still come from every activation of those features, through every kernel, and
# without the generic kernels 4 features were enough for three different files (checked once by
# removing qaforge_runtime::kernels::use_portable_kernels from calibration).
#
# A FIXTURE may name its methods (minilm-l6-squad2:minmax): the trained fixture takes 2.5 minutes
# a method under emulation, so make test runs minmax there, every method on two tiny fixtures and
# minmax on the others (the Makefile's CROSS_CPU_FIXTURES says why). A fixture run with every
# method is also run as a Nehalem; one that names its methods, as a Haswell only. The two tiny
# fixtures cover both activation families (MobileBERT's ReLU, BERT's GELU through Erf), so the
# tier without FMA or AVX meets every element-wise kernel there, and the third process of each
# run was a third of the step's time on two cores.
#
#   tests/cross_cpu.sh QAFORGE QEMU WORK_DIR FIXTURE[:METHOD,...]...
set -uo pipefail
qaforge=$1 qemu=$2 dir=$3
shift 3
mkdir -p "$dir"
calibrate=(--calibration golden/squad/calibration.json --samples 4)
status=0
digest() { sha256sum "$1" | cut -c1-16; }
first_fixture=${1%%:*}
for spec in "$@"; do
  f=${spec%%:*} methods=minmax,percentile,mse cpus=(Haswell Nehalem)
  [[ $spec == *:* ]] && methods=${spec#*:} cpus=(Haswell)
  "$qaforge" convert "golden/$f" -o "$dir/$f.onnx" > /dev/null || { echo "$f: convert failed"; status=1; continue; }
  runs=()
  for m in ${methods//,/ }; do runs+=("int8-static-$m:--precision int8-static --method $m ${calibrate[*]} --tokenizer golden/$f"); done
  [ "$f" = "$first_fixture" ] && runs+=("int8-dynamic:--precision int8-dynamic" "fp16:--precision fp16" "int4:--precision int4"
    "int4-budget-gptq:--precision int4 --max-size @INT4_99@ --rounding gptq ${calibrate[*]} --tokenizer golden/$f")
  for run in "${runs[@]}"; do
    name=${run%%:*} args=${run#*:}
    # The budget: 99% of the plain int4 artifact written just before (some products go to 2 bits).
    [[ $args == *@INT4_99@* ]] && args=${args//@INT4_99@/$(( $(stat -c %s "$dir/$f.int4.native.onnx") * 99 / 100 ))}
    line="$f $name:"
    same=1 first=
    # shellcheck disable=SC2086
    "$qaforge" quantize "$dir/$f.onnx" -o "$dir/$f.$name.native.onnx" $args > "$dir/$f.$name.native.log" 2>&1 &
    for cpu in "${cpus[@]}"; do
      # shellcheck disable=SC2086
      "$qemu" -cpu $cpu "$qaforge" quantize "$dir/$f.onnx" -o "$dir/$f.$name.$cpu.onnx" $args > "$dir/$f.$name.$cpu.log" 2>&1 &
    done
    wait
    for cpu in native "${cpus[@]}"; do
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
done
exit $status
