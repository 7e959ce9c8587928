#!/usr/bin/env bash
# The web package (`qaforge package --format web`) in make test.
#  1. Node.js, with the onnxruntime-web WebAssembly build the page carries: every fixture's site (every
#     architecture) and every precision make test-onnx wrote: the page's features of every golden
#     question (ids from @huggingface/tokenizers, windows and character offsets of qa.js) equal the
#     Python reference's, and the page's logits of the bundle's features PASS `qaforge verify --logits`.
#  2. Headless Chromium (Debian's, driven by puppeteer-core) on sites served from 127.0.0.1: the trained
#     fixture answers its first questions through the page's form as `qaforge answer` does, with a
#     screenshot; a tiny fixture's page computes the logits of its bundle, which verify judges; bad
#     input (empty and huge contexts, a damaged model file) gets the page's messages.
# Usage: web.sh QAFORGE ARTIFACT_DIR OUT_DIR FIXTURE...   (ARTIFACT_DIR: make test-onnx's artifacts)
set -euo pipefail
QAFORGE=$1 ARTIFACTS=$2 OUT=$3; shift 3
NODE_MODULES=web/node_modules
rm -rf "$OUT" && mkdir -p "$OUT"
started=$SECONDS
verify() { # artifact fixture logits extra...
  local a=$1 f=$2 l=$3; shift 3
  "$QAFORGE" verify "$a" --golden "golden/$f" --logits "$l" --report "${l%.safetensors}.json" "$@" 2>&1 | tail -1
}

# 1. Node.js: every fixture and precision, one job per core (each runs one WebAssembly thread).
# Tolerances as tests/verify_in_onnxruntime.sh gives them on the random-weight fixtures (one flipped
# answer of 251 moves F1 by 0.4): fp16 an F1 drop of 1.0, int4 a cosine floor of 0.94.
check() { # fixture precision-suffix: every step must succeed (explicit returns: this runs in a condition)
  local f=$1 p=$2 a=$ARTIFACTS/$1$2.onnx site=$OUT/site-$1$2 checked verdict extra=()
  "$QAFORGE" package "$a" --format web -o "$site" --tokenizer "golden/$f" --web-runtime "$NODE_MODULES" > /dev/null || return 1
  [ "$p" = .fp16 ] && extra=(--max-f1-drop 1.0)
  [ "$p" = .int4 ] && extra=(--min-cosine 0.94)
  checked=$(node web/test/site_check.mjs "$site" "golden/$f/golden" --logits "$OUT/$f$p.node.logits.safetensors") || { echo "$checked"; return 1; }
  verdict=$(verify "$a" "$f" "$OUT/$f$p.node.logits.safetensors" "${extra[@]}") || { echo "$verdict"; return 1; }
  echo "$f$p (node): $(head -1 <<<"$checked" | sed 's/^features *//'); $verdict"
}
JOBS=${JOBS:-$(nproc)}
names=()
for f in "$@"; do
  for p in "" .fp16 .int8-dynamic .int8-static .int4; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
    names+=("$f$p")
    { if check "$f" "$p" > "$OUT/$f$p.log" 2>&1; then echo 0; else echo 1; fi > "$OUT/$f$p.rc"; } &
  done
done
wait
failed=0
for n in "${names[@]}"; do
  cat "$OUT/$n.log"
  if [ "$(cat "$OUT/$n.rc")" != 0 ]; then echo "$n (node): FAILED"; failed=1; fi
done
[ $failed = 0 ] || exit 1
echo "every site checked in Node.js in $((SECONDS - started)) s"

# 2. Chromium. A copy of a site with its model file cut short, for the page's message.
trained=minilm-l6-squad2
"$QAFORGE" convert "golden/$trained" -o "$OUT/$trained.onnx" > /dev/null
"$QAFORGE" package "$OUT/$trained.onnx" --format web -o "$OUT/site-$trained" --tokenizer "golden/$trained" --web-runtime "$NODE_MODULES" > /dev/null
tiny=$1.int8-dynamic
cp -r "$OUT/site-$tiny" "$OUT/site-damaged"
head -c 100000 "$OUT/site-$tiny/model.onnx" > "$OUT/site-damaged/model.onnx"
node web/test/browser.mjs "$OUT/site-$trained" "golden/$trained/golden" "$QAFORGE" "$OUT/$trained.onnx" "golden/$trained" "$OUT/chromium-$trained" --questions 12 --no-logits --broken-site "$OUT/site-damaged"
node web/test/browser.mjs "$OUT/site-$tiny" "golden/$1/golden" "$QAFORGE" "$ARTIFACTS/$tiny.onnx" "golden/$1" "$OUT/chromium-$tiny" --questions 0
verdict=$(verify "$ARTIFACTS/$tiny.onnx" "$1" "$OUT/chromium-$tiny/page.logits.safetensors")
echo "$tiny (chromium): $verdict"
mkdir -p target/web && cp "$OUT/chromium-$trained/answered.png" target/web/answered.png
echo "web package checks done in $((SECONDS - started)) s; screenshot of the answered page: target/web/answered.png"
