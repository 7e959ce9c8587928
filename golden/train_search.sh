#!/usr/bin/env bash
# The trained fixture's recipe search (make trained-fixture): trains the candidate recipes of
# golden/train.py side by side on one GPU and keeps the one with the best F1 on the validation
# articles, 3 SQuAD v2 dev articles that no candidate trains on and that are not the held-out ones.
# The winner is the fixture as trained (no rerun: it is the same run that was measured).
#
#   golden/train_search.sh PYTHON BASE_DIR SHARED_DATA SQUAD_V1_TRAIN OUT_DIR [DEADLINE_SECONDS]
#
# OUT_DIR/<candidate>/ holds each candidate's model and train-report.json; OUT_DIR/best is the
# winner's folder and OUT_DIR/search.json the comparison. DEADLINE_SECONDS bounds each candidate's
# training (a leased GPU's time; the report says where it stopped). TRAIN_EXTRA adds arguments to
# every train.py call (a smoke test: "--device cpu --limit-v1-articles 2 --max-steps 2 --epochs 1").
set -euo pipefail
[ $# -ge 5 ] || { echo "usage: $0 PYTHON BASE_DIR SHARED_DATA SQUAD_V1_TRAIN OUT_DIR [DEADLINE_SECONDS]" >&2; exit 2; }
py=$1 base=$2 shared=$3 squad_v1=$4 out=$5 deadline=${6:-0}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC2206
extra=(${TRAIN_EXTRA:-})
common=(--base "$base" --shared "$shared" --squad-v1 "$squad_v1" --validation-articles 3 --dev-repeat 3
        --unanswerable-fraction 0.5 --bf16 --batch 64 --epochs 2 "${extra[@]}")
# name: recipe
candidates=("lr1e-4-overlap:--lr 1e-4 --pairing overlap"
            "lr2e-4-overlap:--lr 2e-4 --pairing overlap"
            "lr1e-4-random:--lr 1e-4 --pairing random")
export TOKENIZERS_PARALLELISM=false  # the feature workers are processes; no thread pools inside them
mkdir -p "$out"

# The training features, once per pairing (the candidates that share one share the file).
for pairing in overlap random; do
  "$py" "$here/train.py" "${common[@]}" --pairing $pairing --features-cache "$out/features-$pairing.pt" \
    --prepare-only --out "$out/unused" &
done
wait

pids=()
for candidate in "${candidates[@]}"; do
  name=${candidate%%:*}
  # shellcheck disable=SC2206
  recipe=(${candidate#*:})
  pairing=${recipe[3]}
  "$py" "$here/train.py" "${common[@]}" "${recipe[@]}" --features-cache "$out/features-$pairing.pt" \
    --deadline "$deadline" --workers 1 --out "$out/$name" > "$out/$name.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || true; done
for candidate in "${candidates[@]}"; do echo "== ${candidate%%:*}"; cat "$out/${candidate%%:*}.log"; done

# The choice among the candidates that finished (a failed one is named, not fatal).
"$py" - "$out" "${candidates[@]%%:*}" <<'PY'
import json, os, shutil, sys
out, names = sys.argv[1], sys.argv[2:]
failed = [n for n in names if not os.path.exists(os.path.join(out, n, "train-report.json"))]
names = [n for n in names if n not in failed]
if failed:
    print(f"failed (see their logs): {', '.join(failed)}", file=sys.stderr)
if not names:
    sys.exit("no candidate finished")
reports = {n: json.load(open(os.path.join(out, n, "train-report.json"))) for n in names}
rows = {n: {k: r[k]["f1"] for k in ("validation articles", "held-out articles", "eval.json")} | {"stopped_at": r.get("stopped_at")}
        for n, r in reports.items()}
best = max(names, key=lambda n: rows[n]["validation articles"])
for n in names:
    print(f"{'*' if n == best else ' '} {n}: F1 validation {rows[n]['validation articles']:.2f}, held-out "
          f"{rows[n]['held-out articles']:.2f}, eval.json {rows[n]['eval.json']:.2f}"
          + (f", stopped at {rows[n]['stopped_at']}" if rows[n]["stopped_at"] else ""))
shutil.rmtree(os.path.join(out, "best"), ignore_errors=True)
shutil.copytree(os.path.join(out, best), os.path.join(out, "best"))
with open(os.path.join(out, "search.json"), "w") as f:
    json.dump({"chosen_by": "F1 on the validation articles", "best": best, "candidates": rows, "failed": failed}, f, indent=1)
    f.write("\n")
PY
