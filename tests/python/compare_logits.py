"""Where the logits of one artifact computed on two devices are the same bits, and where not.

    python compare_logits.py DIR BASE TAG...

For every `DIR/*.BASE.logits` (tools/run_on_device.py's output) with a `*.TAG.logits` beside it,
prints per artifact how many features' logits are bit-identical to BASE's and the largest |Δ|
elsewhere, then a summary per TAG. Informational: verify --logits is what passes or fails.
"""
import glob
import os
import sys

import numpy as np
from safetensors.numpy import load_file


def logits(path):
    tensors = load_file(path)
    return {name: tensors[name] for name in ("start_logits", "end_logits")}


def main():
    folder, base, tags = sys.argv[1], sys.argv[2], sys.argv[3:]
    suffix = f".{base}.logits"
    print(f"| artifact | {' | '.join(f'{t}: features bit-identical to {base}, max abs diff' for t in tags)} |")
    print("|---|" + "---|" * len(tags))
    totals = {t: [0, 0, 0.0] for t in tags}
    for path in sorted(glob.glob(os.path.join(folder, "*" + suffix))):
        stem = path[: -len(suffix)]
        a = logits(path)
        cells = []
        for t in tags:
            other = f"{stem}.{t}.logits"
            if not os.path.exists(other):
                cells.append("-")
                continue
            b = logits(other)
            same = np.all(a["start_logits"].view(np.uint32) == b["start_logits"].view(np.uint32), axis=1) & np.all(a["end_logits"].view(np.uint32) == b["end_logits"].view(np.uint32), axis=1)
            diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
            cells.append(f"{int(same.sum())}/{len(same)}, {diff:.2e}")
            totals[t][0] += int(same.sum())
            totals[t][1] += len(same)
            totals[t][2] = max(totals[t][2], diff)
        if any(c != "-" for c in cells):
            print(f"| {os.path.basename(stem)} | {' | '.join(cells)} |")
    for t, (same, count, diff) in totals.items():
        print(f"{t}: {same} of {count} features bit-identical to {base}; largest |diff| {diff:.3e}")


if __name__ == "__main__":
    main()
