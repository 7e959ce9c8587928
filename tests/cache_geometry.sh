#!/usr/bin/env bash
# Same inputs, same bytes, whatever the CPU's caches: `qaforge golden` of the trained fixture on one
# question, natively and with the L1 data cache the OS reports replaced by those of other CPUs,
# must write the same logits.
#
# The reference's matrix products (candle-core, through the gemm crate) cut long sums into blocks
# sized from the L1 data cache that gemm reads from /sys/devices/system/cpu/cpu0/cache, so the
# trained fixture's 1,536-term products were summed in blocks of 768 on a 48 KiB 12-way L1 and of
# 512 on a 32 KiB 8-way one, and its logits differed (cd7fb3c5… against 564d8da8… on 2 questions).
# qemu's user-mode emulation (tests/cross_cpu.sh) cannot show this: the emulated program reads the
# host's sysfs. Here a private mount namespace (unshare, root) lays a copy of that directory with
# other sizes over it, for the one command.
#
#   tests/cache_geometry.sh QAFORGE WORK_DIR
set -uo pipefail
qaforge=$1 dir=$2
cache=/sys/devices/system/cpu/cpu0/cache
if ! unshare -m true 2> /dev/null || [ ! -r "$cache/index0/size" ]; then
  echo "cache_geometry: SKIPPED: needs root for a private mount namespace (unshare -m) and $cache"
  exit 0
fi
rm -rf "$dir" && mkdir -p "$dir"
# The one command, run natively and (exported) inside each private mount namespace.
run_golden() { "$qaforge" golden golden/minilm-l6-squad2 --data golden/squad/eval.json --limit 1 -o "$1" > "$1.log" 2>&1; }
export qaforge && export -f run_golden
run_golden "$dir/native" || { cat "$dir/native.log"; exit 1; }
want=$(sha256sum "$dir/native/logits.safetensors" | cut -c1-16)
echo "native (L1d $(cat $cache/index0/size) $(cat $cache/index0/ways_of_associativity)-way): $want"
status=0
# L1 data caches of other CPUs: Haswell's and Zen's, an Apple-like large one, a small old one.
for geometry in 32K:8 48K:12 64K:16 128K:8 16K:4; do
  size=${geometry%:*} ways=${geometry#*:}
  fake="$dir/cache-$size-$ways"
  for index in "$cache"/index*; do
    mkdir -p "$fake/${index##*/}"
    for file in "$index"/*; do [ -f "$file" ] && cat "$file" > "$fake/${index##*/}/${file##*/}" 2> /dev/null; done
  done
  # Only the L1 data entry changes: its size and associativity decide gemm's blocks.
  for index in "$fake"/index*; do
    if [ "$(cat "$index/level")" = 1 ] && [ "$(cat "$index/type")" = Data ]; then
      echo "$size" > "$index/size" && echo "$ways" > "$index/ways_of_associativity"
    fi
  done
  unshare -m bash -c "mount --bind '$fake' $cache && run_golden '$dir/$size-$ways'" || { cat "$dir/$size-$ways.log"; status=1; continue; }
  got=$(sha256sum "$dir/$size-$ways/logits.safetensors" | cut -c1-16)
  if [ "$got" = "$want" ]; then
    echo "L1d $size $ways-way: $got, the same"
  else
    echo "L1d $size $ways-way: $got, NOT the native $want"
    status=1
  fi
done
exit $status
