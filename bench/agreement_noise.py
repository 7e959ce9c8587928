#!/usr/bin/env python3
"""How much answer agreement a fixture's decisions leave to luck: bench section 7's companion.

Answer agreement F1 with the float model (what `qaforge verify` and bench section 7 report) counts
how many answers a quantized artifact changes. On a weak model many decisions are near ties, so
the figure depends on which near ties a given error happens to tip, not only on the error's size.
This script measures both halves on a golden bundle, from its PyTorch reference logits alone:

1. Decision margins: for each question, how far the reference's decision (its answer's text, or
   no answer) is ahead of the best different decision, in logit units (start + end logit sums, as
   SQuAD's post-processing ranks them). Beside it, the share the training report calls near ties,
   |null score - best span score| < 1, which ignores ties between two spans.
2. Agreement under noise: the reference logits plus independent Gaussian noise of a given mean
   |delta| on every real token, post-processed, and scored against the reference's own answers;
   mean, standard deviation, minimum and maximum over --draws draws. The standard deviation is the
   luck of the draw: two quantizers whose agreement differs by less than about twice it are not
   told apart by this question set.
3. With --reports: the reference margins of the questions each `qaforge verify --report` lists as
   differing (at most 20 are listed), beside the report's mean |delta|.

Usage (needs numpy and safetensors):
    golden/.venv/bin/python bench/agreement_noise.py golden/minilm-l6-squad2 [--noise 0.02,0.05] [--reports R.json ...]
"""
import argparse
import collections
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file

# SQuAD v2's official token F1, as the goldens are scored.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden"))
from squad_v2_eval import compute_f1  # noqa: E402

N_BEST, MAX_ANSWER_LENGTH = 20, 30


def load_bundle(fixture):
    """The golden bundle's examples, features and reference logits (paths from its manifest)."""
    bundle = os.path.join(fixture, "golden")
    with open(os.path.join(bundle, "manifest.json")) as f:
        files = json.load(f)["files"]
    path = lambda key: os.path.normpath(os.path.join(bundle, files[key]["path"]))
    with open(path("data")) as f:
        data = json.load(f)
    examples = [(qa["id"], p["context"]) for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]]
    return examples, load_file(path("features")), load_file(path("logits"))


def candidates(examples, features, start, end):
    """Per question: the null score (its lowest over the question's features) and each answer
    text's best span score, from the top N_BEST starts and ends of each feature."""
    per_example = collections.defaultdict(list)
    for i, e in enumerate(features["example_index"].tolist()):
        per_example[e].append(i)
    out = []
    for ei, (_, context) in enumerate(examples):
        null, texts = None, {}
        for fi in per_example[ei]:
            s, e, offsets = start[fi], end[fi], features["offsets"][fi]
            null = float(s[0] + e[0]) if null is None else min(null, float(s[0] + e[0]))
            for a in np.argsort(s)[-1:-N_BEST - 1:-1]:
                for b in np.argsort(e)[-1:-N_BEST - 1:-1]:
                    if offsets[a][0] < 0 or offsets[b][0] < 0 or b < a or b - a + 1 > MAX_ANSWER_LENGTH:
                        continue
                    text, score = context[offsets[a][0]:offsets[b][1]], float(s[a] + e[b])
                    if text and score > texts.get(text, -np.inf):
                        texts[text] = score
        out.append((null, texts))
    return out


def decide(null, texts):
    """SQuAD v2's decision at threshold 0: the best span's text unless the null score is higher."""
    if not texts:
        return ""
    text = max(texts, key=texts.get)
    return "" if null - texts[text] > 0 else text


def margin(null, texts):
    """How far the decision is ahead of the best different one."""
    ranked = sorted(texts.values(), reverse=True)
    if not ranked:
        return np.inf
    best, second = ranked[0], ranked[1] if len(ranked) > 1 else -np.inf
    return null - best if null - best > 0 else min(best - null, best - second)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("fixture", help="golden/FIXTURE (its golden/ bundle is read)")
    parser.add_argument("--noise", default="0.02,0.05,0.07,0.1", help="mean |delta| levels, comma-separated")
    parser.add_argument("--draws", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reports", nargs="*", default=[], help="qaforge verify --report JSON files")
    args = parser.parse_args()

    examples, features, logits = load_bundle(args.fixture)
    start, end = logits["start_logits"], logits["end_logits"]
    reference = candidates(examples, features, start, end)
    answers = [decide(n, t) for n, t in reference]
    margins = np.array([margin(n, t) for n, t in reference])
    ids = [q for q, _ in examples]
    null_gap = np.array([abs(n - max(t.values())) if t else np.inf for n, t in reference])
    print(f"{args.fixture}: {len(ids)} questions")
    print("reference decision margins: " + ", ".join(f"< {t}: {int((margins < t).sum())}" for t in (0.01, 0.1, 0.25, 0.5, 1.0))
          + f"; |null - best span| < 1 (the training report's near ties): {int((null_gap < 1).sum())}")

    real = features["attention_mask"].astype(bool)
    rng = np.random.default_rng(args.seed)
    for level in [float(x) for x in args.noise.split(",")]:
        sigma = level / np.sqrt(2 / np.pi)  # E|N(0, sigma)| = sigma * sqrt(2 / pi)
        scores = []
        for _ in range(args.draws):
            noisy_start = start + (rng.normal(0, sigma, start.shape) * real).astype(np.float32)
            noisy_end = end + (rng.normal(0, sigma, end.shape) * real).astype(np.float32)
            noisy = candidates(examples, features, noisy_start, noisy_end)
            scores.append(100 * np.mean([compute_f1(a, decide(n, t)) for (n, t), a in zip(noisy, answers)]))
        print(f"noise mean |delta| {level:.3f}: agreement F1 {np.mean(scores):.2f} (std {np.std(scores):.2f}, "
              f"min {min(scores):.2f}, max {max(scores):.2f}, {args.draws} draws)", flush=True)

    by_id = dict(zip(ids, margins))
    for path in args.reports:
        with open(path) as f:
            report = json.load(f)
        differing = report["squad"]["differing"]
        print(f"{os.path.basename(path)}: agreement F1 {report['squad']['agreement_f1']:.2f}, mean |delta| "
              f"{report['logits']['mean_abs_diff']:.3f}, reference margins of the differing questions: "
              + ", ".join(f"{by_id[q]:.2f}" for q in sorted(differing, key=by_id.get)))


if __name__ == "__main__":
    main()
