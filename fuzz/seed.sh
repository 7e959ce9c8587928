#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the project's fixtures and its hostile corpus (tests/hostile/).
# Large fixture files are cut down (a 1000-word vocabulary, one SQuAD article) so that libFuzzer
# mutates small inputs quickly. Needs python3 (stdlib) and the release builds of qaforge and examples/bench (make fuzz builds them).
set -euo pipefail
cd "$(dirname "$0")/.."
C=fuzz/corpus
mkdir -p $C/{safetensors,torch_zip,config,tokenizer,squad,predictions,onnx}
cp tests/hostile/safetensors/*.safetensors $C/safetensors/
cp tests/hostile/torch/*.bin $C/torch_zip/
for f in golden/mobilebert-*/config.json; do cp "$f" "$C/config/$(basename "$(dirname "$f")").json"; done
cp tests/hostile/config/*.json $C/config/
cp tests/hostile/squad/*.json $C/squad/
cp tests/hostile/predictions/*.json $C/predictions/
cp tests/hostile/onnx/*.onnx $C/onnx/
python3 - <<'PY'
import json
C = "fuzz/corpus"
vocab = open("golden/mobilebert-tiny/vocab.txt", encoding="utf-8").read().splitlines()[:1000]
# The tokenizer target's first byte picks the layout: odd = vocab.txt, even = tokenizer.json.
open(f"{C}/tokenizer/vocab-1000.bin", "wb").write(b"\x01" + ("\n".join(vocab) + "\n").encode())
tok = json.load(open("golden/mobilebert-tiny/tokenizer.json", encoding="utf-8"))
tok["model"]["vocab"] = {w: i for w, i in tok["model"]["vocab"].items() if i < 1000}
open(f"{C}/tokenizer/tokenizer-1000.bin", "wb").write(b"\x00" + json.dumps(tok).encode())
squad = json.load(open("golden/squad/eval.json", encoding="utf-8"))
one = {"version": squad.get("version", "v2.0"), "data": squad["data"][:1]}
open(f"{C}/squad/eval-first-article.json", "w").write(json.dumps(one))
ids = [q["id"] for p in one["data"][0]["paragraphs"] for q in p["qas"]]
preds = json.load(open("golden/squad/predictions/nlnet-single.json"))
open(f"{C}/predictions/nlnet-first-article.json", "w").write(json.dumps({i: preds[i] for i in ids}))
open(f"{C}/predictions/na-probs.json", "w").write(json.dumps({i: k / 10 for k, i in enumerate(ids)}))
PY
# A micro MobileBERT (vocabulary 64, hidden 16, 2 layers) converted by qaforge: a small valid ONNX.
micro=$(mktemp -d)
target/release/examples/bench micro "$micro"  # built by make fuzz
target/release/qaforge convert "$micro" -o $C/onnx/micro-mobilebert.onnx > /dev/null
rm -rf "$micro"
echo "seeded $(find $C -type f | wc -l) files under $C"
