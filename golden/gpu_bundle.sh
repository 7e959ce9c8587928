#!/usr/bin/env bash
# A folder that trains the stronger trained fixture (TRAIN_RECIPE=squad-v1) on a GPU machine that has
# Python with torch, transformers, tokenizers, safetensors and numpy but no network and no checkout
# (a rented or leased GPU): the pretrained MiniLM-L6 rounded to float16 (45 MB, as train.py reads it),
# SQuAD v1.1 train xz-compressed, the dev set, the tokenizer and the scripts; about 56 MB in all.
#
#   golden/gpu_bundle.sh BASE_DIR OUT_DIR      (BASE_DIR: make trained-fixture's golden/.train/base)
#
# There:  bash OUT_DIR/run.sh RESULT_DIR [DEADLINE_SECONDS]   (the search, then the winner in 15 MiB
#         parts model.part00.. for transfers with a file size limit)
# Back here: cat RESULT_DIR/model.part* > DIR/model.safetensors, copy RESULT_DIR/config.json,
#         train-report.json and search.json into DIR, then golden/generate.py --trained DIR.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BASE_DIR OUT_DIR" >&2; exit 2; }
base=$1 out=$2 here=$(cd "$(dirname "$0")" && pwd) shared=$(cd "$(dirname "$0")/../.." && pwd)/shared/data
[ -f "$shared/squad-v1.1/train-v1.1.json" ] || { echo "needs ../shared/data/squad-v1.1/train-v1.1.json" >&2; exit 1; }
mkdir -p "$out/base" "$out/shared/squad-v2" "$out/shared/vocab/bert-base-uncased" "$out/golden/squad"
python3 - "$base" "$out/base" <<'PY'
import json, shutil, sys
import numpy as np
from safetensors.numpy import load_file, save_file
base, out = sys.argv[1:]
tensors = load_file(f"{base}/model.safetensors")
save_file({k: v.astype(np.float16) for k, v in tensors.items() if k != "embeddings.position_ids" and not k.startswith("pooler.")},
          f"{out}/model.safetensors", metadata={"format": "pt"})
shutil.copy(f"{base}/config.json", f"{out}/config.json")
PY
cp "$shared/squad-v2/dev-v2.0.json" "$out/shared/squad-v2/"
cp "$shared/vocab/bert-base-uncased/tokenizer.json" "$out/shared/vocab/bert-base-uncased/"
xz -T0 -c "$shared/squad-v1.1/train-v1.1.json" > "$out/train-v1.1.json.xz"
cp "$here/train.py" "$here/squad_v2_eval.py" "$here/train_search.sh" "$out/golden/"
cp "$here/squad/eval.json" "$out/golden/squad/"
cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs the recipe search on this machine's GPU and leaves the winner in RESULT_DIR (see gpu_bundle.sh).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd) result=${1:?usage: run.sh RESULT_DIR [DEADLINE_SECONDS]} deadline=${2:-0}
mkdir -p "$result"
export PYTHONUNBUFFERED=1
bash "$here/golden/train_search.sh" python3 "$here/base" "$here/shared" "$here/train-v1.1.json.xz" /tmp/qaforge-search "$deadline" \
  2>&1 | tee "$result/search.log"
cp /tmp/qaforge-search/search.json "$result/" 2>/dev/null
best=/tmp/qaforge-search/best
[ -f "$best/model.safetensors" ] || { echo "no candidate finished" >&2; exit 1; }
cp "$best/config.json" "$best/train-report.json" "$result/"
split -b 15M -d "$best/model.safetensors" "$result/model.part"
sha256sum "$best/model.safetensors" | tee "$result/model.sha256"
RUN
du -sh "$out"
