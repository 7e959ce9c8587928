#!/usr/bin/env bash
# Sets up ONNX Runtime's real aarch64 build (the PyPI manylinux wheel, the kernels phones run) to
# run on this x86-64 Debian machine under qemu user-mode emulation, in DIR:
#   DIR/sysroot        Debian arm64 python3.11 and its libraries, unpacked with dpkg-deb -x (not
#                      installed: python3:arm64 conflicts with the amd64 python)
#   DIR/site-aarch64   the aarch64 onnxruntime and numpy wheels, installed with the x86 pip
#   DIR/python         runs the aarch64 python: python CPU SCRIPT ARGS... (CPU: a qemu -cpu model)
# Usage: setup.sh DIR PIP ORT_VERSION NUMPY_VERSION   (root on Debian 12, or everything present;
# Debian's apt and PyPI only). Idempotent: a finished DIR is left as it is.
set -euo pipefail
DIR=$1 PIP=$2 ORT_VERSION=$3 NUMPY_VERSION=$4
[ -f "$DIR/.ready-$ORT_VERSION" ] && exit 0
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
export DEBIAN_FRONTEND=noninteractive
need_root() { [ "$(id -u)" = 0 ] || { echo "tests/arm64/setup.sh: $1 (needs root and apt-get)" >&2; exit 1; }; }

command -v qemu-aarch64-static > /dev/null || { need_root "installing qemu-user-static"; apt-get update -qq && apt-get install -y -qq qemu-user-static > /dev/null; }

# The sysroot: Debian bookworm's arm64 python3.11 and the libraries it and onnxruntime load.
if [ ! -x "$DIR/sysroot/usr/bin/python3.11" ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    need_root "adding Debian's arm64 architecture"
    dpkg --add-architecture arm64
    apt-get update -qq
  fi
  PKGS="libc6 libgcc-s1 libstdc++6 gcc-12-base zlib1g libexpat1 libffi8 libbz2-1.0 liblzma5 libcrypt1
        libuuid1 libssl3 libsqlite3-0 libncursesw6 libtinfo6 libreadline8 libdb5.3 libnsl2 libtirpc3
        libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1
        python3.11-minimal libpython3.11-minimal libpython3.11-stdlib"
  rm -rf "$DIR/debs" "$DIR/sysroot" && mkdir -p "$DIR/debs"
  (cd "$DIR/debs" && apt-get download -qq $(for p in $PKGS; do printf '%s:arm64 ' "$p"; done) 2> /dev/null) \
    || { need_root "downloading Debian's arm64 packages"; apt-get update -qq; (cd "$DIR/debs" && apt-get download -qq $(for p in $PKGS; do printf '%s:arm64 ' "$p"; done)); }
  for d in "$DIR"/debs/*.deb; do dpkg-deb -x "$d" "$DIR/sysroot"; done
  rm -rf "$DIR/debs"
fi

# The aarch64 wheels (cp311: bookworm's python3.11), unpacked by the x86 pip into a folder.
rm -rf "$DIR/wheels" "$DIR/site-aarch64"
"$PIP" download -q --disable-pip-version-check --only-binary=:all: \
  --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
  --python-version 3.11 --implementation cp --abi cp311 -d "$DIR/wheels" "onnxruntime==$ORT_VERSION" "numpy==$NUMPY_VERSION"
"$PIP" install -q --disable-pip-version-check --no-deps --no-index --target "$DIR/site-aarch64" \
  --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
  --python-version 3.11 --implementation cp --abi cp311 --only-binary=:all: "$DIR"/wheels/*.whl
rm -rf "$DIR/wheels"

# qemu passes the x86 host's /proc/cpuinfo through, and the cpuinfo library inside onnxruntime
# crashes on it at import (signal 11). qemu -L finds absolute paths in the sysroot first, so
# DIR/python writes sysroot/proc/cpuinfo in ARM64 format for the CPU model it runs: onnxruntime
# reads features from it too, and a file claiming a feature the model lacks ends in SIGILL.
cat > "$DIR/python" <<'RUN'
#!/usr/bin/env bash
# python CPU SCRIPT ARGS...: the aarch64 python with onnxruntime, as qemu's CPU model CPU.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CPU=$1; shift
case "${CPU%%,*}" in
  cortex-a72)  PART=0xd08 VARIANT=0x0 FEATURES="fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid" ;;
  neoverse-n1) PART=0xd0c VARIANT=0x3 FEATURES="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs" ;;
  max)         PART=0xd40 VARIANT=0x1 FEATURES="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svebf16 i8mm bf16 dgh rng bti" ;;
  *) echo "$0: no cpuinfo for CPU model $CPU" >&2; exit 2 ;;
esac
# Each CPU model gets its own sysroot view (a folder of links plus its cpuinfo), so that models
# can run at the same time.
VIEW="$HERE/views/$CPU"
if [ ! -f "$VIEW/proc/cpuinfo" ]; then
  mkdir -p "$VIEW/proc"
  for entry in "$HERE"/sysroot/*; do ln -sfn "$entry" "$VIEW/$(basename "$entry")"; done
  for i in $(seq 0 $(( $(nproc) - 1 ))); do
    printf 'processor\t: %d\nBogoMIPS\t: 50.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: 1\n\n' "$i" "$FEATURES" "$VARIANT" "$PART"
  done > "$VIEW/proc/cpuinfo"
fi
PYTHONPATH="$HERE/site-aarch64" exec qemu-aarch64-static -cpu "$CPU" -L "$VIEW" "$HERE/sysroot/usr/bin/python3.11" "$@"
RUN
chmod +x "$DIR/python"
touch "$DIR/.ready-$ORT_VERSION"
