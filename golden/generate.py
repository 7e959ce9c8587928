#!/usr/bin/env python3
"""Builds qaforge's fixtures and goldens with the PyTorch reference (transformers).

Everything under golden/ except README.md, LICENSE-SQuAD.md and this script's inputs is written
here, deterministically: the same versions (golden/requirements.txt) give byte-identical files.

  python golden/generate.py --shared ../shared/data --out golden

What it writes (see golden/README.md for the why):
  squad/eval.json          SQuAD v2 evaluation slice (first paragraph of every dev article plus the
                           longest paragraphs, so that some examples overflow into several features)
  squad/calibration.json   disjoint calibration slice (second paragraph of every dev article)
  squad/predictions/*.json the three public systems' predictions for the evaluation slice
  squad/predictions/metrics.json  official SQuAD v2 metrics of those predictions on eval.json
  squad/features.safetensors      run_qa.py features of eval.json (max length 384, stride 128)
  squad/features.json      feature -> example id, and the tokenizer settings used
  <fixture>/               config.json, vocab.txt, tokenizer.json, tokenizer_config.json,
                           special_tokens_map.json, weights (model.safetensors or pytorch_model.bin)
  <fixture>/golden/logits.safetensors    PyTorch start/end logits (float32) for every feature
  <fixture>/golden/predictions.json      run_qa.py post-processing of those logits
  <fixture>/golden/metrics.json          official SQuAD v2 metrics of those predictions
  <fixture>/golden/metrics-na-probs.json the same with null_odds as no-answer probabilities
                                         (best_exact / best_f1 thresholds)
  squad/predictions/bert-large-single.na-probs*.json  a tie-heavy no-answer probability file and
                                         its metrics (see write_system_threshold_metrics)

  <fixture>/golden/manifest.json         the golden bundle's manifest (qaforge-golden-bundle/1): the
                                         checkpoint's and tokenizer's sha256, the data, the settings,
                                         and every file's size and sha256 (features and data are
                                         golden/squad's, named by relative path)

The metric itself is restated in squad_v2_eval.py (pure Python). `--metrics-only` rewrites just the
metric files from the committed predictions, without running a model; `--manifests-only` just the
bundle manifests.

A golden bundle of any checkpoint, made with PyTorch (qaforge golden makes the same with candle):

  python golden/generate.py --model <MODEL_DIR> --data <SQUAD.json> --out <BUNDLE_DIR> [--limit N]
"""

import argparse
import collections
import hashlib
import json
import os
import re
import shutil
import string

import numpy as np
import torch
from safetensors.numpy import save_file as save_numpy
from transformers import (BertConfig, BertForQuestionAnswering, BertTokenizerFast, DistilBertConfig,
                          DistilBertForQuestionAnswering, ElectraConfig, ElectraForQuestionAnswering,
                          MobileBertConfig, MobileBertForQuestionAnswering, RobertaConfig,
                          RobertaForQuestionAnswering, RobertaTokenizerFast)

# The official SQuAD v2 metric, restated in a module of its own (no torch needed to run it).
from squad_v2_eval import evaluate as squad_v2_evaluate

MAX_LENGTH = 384
DOC_STRIDE = 128
N_BEST = 20
MAX_ANSWER_LENGTH = 30
NULL_SCORE_DIFF_THRESHOLD = 0.0
# The evaluation slice takes the first paragraph of this many dev articles (plus the two longest
# paragraphs of the whole set, which overflow into several features): about 200 questions, so that
# golden/ stays small.
EVAL_ARTICLES = 18

# The fixtures: the real MobileBERT architecture at small sizes. Fixture names are directory names.
FIXTURES = {
    # google/mobilebert-uncased's switches: NoNorm, trigram embeddings, bottleneck with shared
    # key/query bottleneck, 4 stacked FFNs, relu. Saved as model.safetensors (float32).
    "mobilebert-tiny": dict(
        config=dict(
            num_hidden_layers=4, hidden_size=64, embedding_size=32, intra_bottleneck_size=32,
            intermediate_size=64, num_attention_heads=4, num_feedforward_networks=4,
            hidden_act="relu", normalization_type="no_norm", trigram_input=True, use_bottleneck=True,
            use_bottleneck_attention=False, key_query_shared_bottleneck=True,
        ),
        weights="safetensors", dtype="float32", seed=1, tokenizer=("vocab.txt", "tokenizer.json"),
    ),
    # Every switch flipped: LayerNorm, gelu, no trigram (embedding_size == hidden_size, so no
    # embedding transformation), bottleneck attention without key/query sharing, one FFN.
    # Saved as pytorch_model.bin in torch's zip format with float16 tensors and the legacy
    # `embeddings.position_ids` buffer that older checkpoints carry.
    "mobilebert-flipped": dict(
        config=dict(
            num_hidden_layers=2, hidden_size=32, embedding_size=32, intra_bottleneck_size=16,
            intermediate_size=48, num_attention_heads=2, num_feedforward_networks=1,
            hidden_act="gelu", normalization_type="layer_norm", trigram_input=False,
            use_bottleneck=True, use_bottleneck_attention=True, key_query_shared_bottleneck=False,
        ),
        weights="pytorch_model.bin", dtype="float16", seed=2, tokenizer=("vocab.txt",),
    ),
    # No bottleneck at all (true_hidden_size == hidden_size), trigram input, NoNorm, two FFNs.
    # Saved as model.safetensors with bfloat16 tensors.
    "mobilebert-nobottleneck": dict(
        config=dict(
            num_hidden_layers=2, hidden_size=32, embedding_size=16, intra_bottleneck_size=16,
            intermediate_size=48, num_attention_heads=4, num_feedforward_networks=2,
            hidden_act="relu", normalization_type="no_norm", trigram_input=True, use_bottleneck=False,
            use_bottleneck_attention=False, key_query_shared_bottleneck=False,
        ),
        weights="safetensors", dtype="bfloat16", seed=3, tokenizer=("tokenizer.json",),
    ),
}


# The BERT family at small sizes, random weights: one fixture per architecture `convert` takes
# besides MobileBERT, each in another weights format. BERT, DistilBERT and ELECTRA read the BERT
# vocabulary (the shared features); RoBERTa has a byte-level BPE tokenizer of its own, trained on
# the calibration slice, and features of its own (`<s> question </s></s> context </s>`, no token
# types).
FAMILY_FIXTURES = {
    "bert-tiny": dict(
        model=(BertConfig, BertForQuestionAnswering),
        config=dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=48,
                    hidden_act="gelu", vocab_size=30522, max_position_embeddings=512, type_vocab_size=2,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        weights="safetensors", dtype="float32", seed=11, tokenizer=("vocab.txt", "tokenizer.json"),
        tokenizer_class="BertTokenizer",
    ),
    "distilbert-tiny": dict(
        model=(DistilBertConfig, DistilBertForQuestionAnswering),
        config=dict(n_layers=2, dim=32, n_heads=2, hidden_dim=64, activation="gelu", vocab_size=30522,
                    max_position_embeddings=512, dropout=0.0, attention_dropout=0.0, qa_dropout=0.0),
        weights="safetensors", dtype="float16", seed=12, tokenizer=("vocab.txt",),
        tokenizer_class="DistilBertTokenizer",
    ),
    "roberta-tiny": dict(
        model=(RobertaConfig, RobertaForQuestionAnswering),
        config=dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                    hidden_act="gelu", max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                    bos_token_id=0, eos_token_id=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        weights="safetensors", dtype="float32", seed=13, tokenizer="byte-level-bpe",
    ),
    "electra-tiny": dict(
        model=(ElectraConfig, ElectraForQuestionAnswering),
        config=dict(embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, hidden_act="gelu", vocab_size=30522, max_position_embeddings=512,
                    type_vocab_size=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        weights="pytorch_model.bin", dtype="float32", seed=14, tokenizer=("vocab.txt", "tokenizer.json"),
        tokenizer_class="ElectraTokenizer",
    ),
}
# The byte-level BPE vocabulary of the RoBERTa fixture (trained on the calibration slice's text).
BPE_VOCAB_SIZE = 2000


# The trained fixture: MiniLM-L6-H384 (a pretrained BERT) fine-tuned on SQuAD v2 by golden/train.py,
# stored in MobileBERT's format. MobileBERT with LayerNorm, gelu, no bottleneck, one FFN and no
# trigram input (embedding size = hidden size) computes BERT's layers; only the tensor names
# differ, and transformers' MobileBERT builds two of its LayerNorms with epsilon 1e-5 where BERT
# uses 1e-12 (the embeddings' and each layer's output LayerNorm), which generate.py measures.
TRAINED_FIXTURE = "minilm-l6-squad2"

# golden/fixtures.txt is the one list of random fixtures the Makefile and the Rust tests read.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures.txt")) as _f:
    _LISTED = [l.strip() for l in _f if l.strip() and not l.startswith("#")]
assert _LISTED == [*FIXTURES, *FAMILY_FIXTURES], f"golden/fixtures.txt lists {_LISTED}, generate.py specifies {[*FIXTURES, *FAMILY_FIXTURES]}"
TRAINED_CONFIG = dict(
    num_hidden_layers=6, hidden_size=384, embedding_size=384, intra_bottleneck_size=384,
    intermediate_size=1536, num_attention_heads=12, num_feedforward_networks=1, hidden_act="gelu",
    normalization_type="layer_norm", trigram_input=False, use_bottleneck=False,
    use_bottleneck_attention=False, key_query_shared_bottleneck=False, layer_norm_eps=1e-12,
)


def mobilebert_name(bert_name):
    """BertForQuestionAnswering's tensor name → MobileBertForQuestionAnswering's (the layers' module
    paths are the same; only the model prefix differs)."""
    if bert_name.startswith("bert."):
        return "mobilebert." + bert_name[len("bert."):]
    return bert_name


# ---------------------------------------------------------------------------------------------
# SQuAD slices
# ---------------------------------------------------------------------------------------------

def squad_slice(dev, pick):
    """A SQuAD v2 file holding, for every article, the paragraphs `pick(article_index, paragraphs)`."""
    data = []
    for index, article in enumerate(dev["data"]):
        paragraphs = pick(index, article["paragraphs"])
        if paragraphs:
            data.append({"title": article["title"], "paragraphs": paragraphs})
    return {"version": "v2.0", "data": data}


def longest_paragraphs(dev, count):
    """(article index, paragraph index) of the `count` longest contexts outside paragraphs 0 and 1."""
    sized = []
    for a, article in enumerate(dev["data"]):
        for p, paragraph in enumerate(article["paragraphs"]):
            if p >= 2:
                sized.append((len(paragraph["context"]), a, p))
    sized.sort(key=lambda t: (-t[0], t[1], t[2]))
    return {(a, p) for _, a, p in sized[:count]}


def examples_of(squad):
    """Flattens a SQuAD file into run_qa.py's examples (id, question, context, answers)."""
    out = []
    for article in squad["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                out.append({
                    "id": qa["id"],
                    "question": qa["question"],
                    "context": paragraph["context"],
                    "answers": [a["text"] for a in qa["answers"]],
                })
    return out


# ---------------------------------------------------------------------------------------------
# Features, exactly as run_qa.py's prepare_validation_features (pad_to_max_length=True)
# ---------------------------------------------------------------------------------------------

def prepare_validation_features(tokenizer, examples):
    questions = [e["question"].lstrip() for e in examples]
    contexts = [e["context"] for e in examples]
    tokenized = tokenizer(
        questions, contexts, truncation="only_second", max_length=MAX_LENGTH, stride=DOC_STRIDE,
        return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length",
    )
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    n = len(tokenized["input_ids"])
    offsets = np.full((n, MAX_LENGTH, 2), -1, dtype=np.int32)
    example_ids = []
    for i in range(n):
        sequence_ids = tokenized.sequence_ids(i)
        example_ids.append(examples[sample_mapping[i]]["id"])
        for k, o in enumerate(tokenized["offset_mapping"][i]):
            if sequence_ids[k] == 1:
                offsets[i, k] = o
    return {
        "input_ids": np.array(tokenized["input_ids"], dtype=np.int64),
        "attention_mask": np.array(tokenized["attention_mask"], dtype=np.int64),
        # RoBERTa's tokenizer returns no token types: zeros, which is what RoBERTa uses.
        "token_type_ids": np.array(tokenized["token_type_ids"] if "token_type_ids" in tokenized
                                   else np.zeros_like(tokenized["input_ids"]), dtype=np.int64),
        "offsets": offsets,
        "example_ids": example_ids,
        "example_index": np.array(sample_mapping, dtype=np.int64),
    }


# ---------------------------------------------------------------------------------------------
# Post-processing, as run_qa.py's utils_qa.postprocess_qa_predictions(version_2_with_negative)
# ---------------------------------------------------------------------------------------------

def postprocess(examples, features, start_all, end_all):
    features_per_example = collections.defaultdict(list)
    for i, e in enumerate(features["example_index"].tolist()):
        features_per_example[e].append(i)
    predictions, null_odds = {}, {}
    for example_index, example in enumerate(examples):
        min_null = None
        prelim = []
        for fi in features_per_example[example_index]:
            start_logits, end_logits = start_all[fi], end_all[fi]
            offsets = features["offsets"][fi]
            null_score = start_logits[0] + end_logits[0]
            if min_null is None or min_null["score"] > null_score:
                min_null = {"offsets": (0, 0), "score": null_score,
                            "start_logit": start_logits[0], "end_logit": end_logits[0]}
            start_indexes = np.argsort(start_logits)[-1:-N_BEST - 1:-1].tolist()
            end_indexes = np.argsort(end_logits)[-1:-N_BEST - 1:-1].tolist()
            for s in start_indexes:
                for e in end_indexes:
                    if offsets[s][0] < 0 or offsets[e][0] < 0:
                        continue
                    if e < s or e - s + 1 > MAX_ANSWER_LENGTH:
                        continue
                    prelim.append({"offsets": (int(offsets[s][0]), int(offsets[e][1])),
                                   "score": start_logits[s] + end_logits[e],
                                   "start_logit": start_logits[s], "end_logit": end_logits[e]})
        prelim.append(min_null)
        null_score = min_null["score"]
        preds = sorted(prelim, key=lambda x: x["score"], reverse=True)[:N_BEST]
        if not any(p["offsets"] == (0, 0) for p in preds):
            preds.append(min_null)
        context = example["context"]
        for p in preds:
            p["text"] = context[p["offsets"][0]:p["offsets"][1]]
        if len(preds) == 0 or (len(preds) == 1 and preds[0]["text"] == ""):
            preds.insert(0, {"text": "empty", "start_logit": np.float32(0.0),
                             "end_logit": np.float32(0.0), "score": np.float32(0.0)})
        i = 0
        while preds[i]["text"] == "":
            i += 1
        best = preds[i]
        score_diff = null_score - best["start_logit"] - best["end_logit"]
        null_odds[example["id"]] = float(score_diff)
        predictions[example["id"]] = "" if score_diff > NULL_SCORE_DIFF_THRESHOLD else best["text"]
    return predictions, null_odds


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------

def randomise(model, seed):
    """O(1) activations instead of transformers' init (std 0.02, NoNorm at 1/0), which gives
    near-constant logits that test nothing: fan-in-scaled dense weights, unit-scale embeddings,
    random NoNorm/LayerNorm scales around 1 and shifts around 0. numpy's PCG64 so the weights do
    not depend on torch's RNG."""
    rng = np.random.Generator(np.random.PCG64(seed))
    for name, param in model.named_parameters():
        shape = tuple(param.shape)
        if len(shape) == 1 and name.endswith(".weight"):  # LayerNorm / NoNorm scales
            value = rng.uniform(0.6, 1.4, size=shape)
        elif "LayerNorm.bias" in name or name.endswith(".bias"):
            value = rng.normal(0.0, 0.1, size=shape)
        elif "embeddings" in name and "transformation" not in name and "project" not in name:
            value = rng.normal(0.0, 1.0, size=shape)
        elif len(shape) == 2:
            value = rng.normal(0.0, 1.0 / np.sqrt(shape[1]), size=shape)
        else:
            raise SystemExit(f"unexpected parameter {name} {shape}")
        with torch.no_grad():
            param.copy_(torch.from_numpy(value.astype(np.float32)))


def normalise_no_norm(model, features, seed):
    """NoNorm is a plain scale and shift, so random weights let residual sums grow layer after layer
    (logits in the hundreds). Rescale each NoNorm, in forward order, so that its output has unit
    spread on a few real features, like a trained model's: a data-dependent init (as LSUV)."""
    rng = np.random.Generator(np.random.PCG64(seed + 1000))
    done = set()

    def pre_hook(module, inputs):
        if id(module) in done:
            return
        done.add(id(module))
        spread = inputs[0].detach().std(dim=(0, 1))
        gain = torch.from_numpy(rng.uniform(0.6, 1.4, size=spread.shape).astype(np.float32))
        with torch.no_grad():
            module.weight.copy_(gain / spread.clamp_min(1e-3))

    no_norms = [m for m in model.modules() if type(m).__name__ == "NoNorm"]
    handles = [m.register_forward_pre_hook(pre_hook) for m in no_norms]
    with torch.no_grad():
        model(input_ids=torch.from_numpy(features["input_ids"][:8]),
              attention_mask=torch.from_numpy(features["attention_mask"][:8]),
              token_type_ids=torch.from_numpy(features["token_type_ids"][:8]))
    for h in handles:
        h.remove()


def round_to(model, dtype):
    """Rounds every parameter to the stored dtype so the float32 reference computes with exactly the
    weights the checkpoint holds."""
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.to(torch_dtype).to(torch.float32))
    return torch_dtype


def write_tokenizer_files(vocab_dir, out_dir, files, tokenizer_class="BertTokenizer"):
    for name in files + ("special_tokens_map.json",):
        shutil.copyfile(os.path.join(vocab_dir, name), os.path.join(out_dir, name))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "tokenizer_class": tokenizer_class, "model_max_length": 512,
                   "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                   "cls_token": "[CLS]", "mask_token": "[MASK]", "strip_accents": None,
                   "tokenize_chinese_chars": True}, f, indent=2, sort_keys=True)
        f.write("\n")


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def write_fixture_threshold_metrics(fixture_dir, eval_squad):
    """evaluate-v2.0.py with run_qa.py's null_odds as the no-answer probability file (as run_qa.py
    hands them to the metric): best_exact/best_f1 and their thresholds, at the default threshold
    and at -2.0 (questions whose null score comes within 2 of the best span answered with "")."""
    with open(os.path.join(fixture_dir, "golden", "predictions.json")) as f:
        golden = json.load(f)
    write_json(os.path.join(fixture_dir, "golden", "metrics-na-probs.json"), collections.OrderedDict(
        (f"thresh={t}", squad_v2_evaluate(eval_squad, golden["predictions"], golden["null_odds"], t))
        for t in (1.0, -2.0)))


def write_system_threshold_metrics(squad_dir, eval_squad):
    """A tie-heavy no-answer probability file for bert-large-single (1.0 where it answered "",
    0.5 for one-word answers, 0.0 otherwise), so that the best-threshold search's stable order of
    equal probabilities (the file's order) is exercised, and its metrics."""
    with open(os.path.join(squad_dir, "predictions", "bert-large-single.json")) as f:
        preds = json.load(f, object_pairs_hook=collections.OrderedDict)
    na_probs = collections.OrderedDict(
        (qid, 1.0 if not text else 0.5 if len(text.split()) == 1 else 0.0) for qid, text in reversed(preds.items()))
    write_json(os.path.join(squad_dir, "predictions", "bert-large-single.na-probs.json"), na_probs)
    write_json(os.path.join(squad_dir, "predictions", "bert-large-single.na-probs.metrics.json"), collections.OrderedDict(
        (f"thresh={t}", squad_v2_evaluate(eval_squad, preds, na_probs, t)) for t in (1.0, 0.4)))


def write_config(fixture_dir, config, model_type, dtype):
    """config.json as save_pretrained writes it (diff from the class defaults), without the
    transformers version, so that regenerating with another release keeps the bytes."""
    config_dict = config.to_diff_dict()
    config_dict["model_type"] = model_type
    config_dict.pop("_attn_implementation_autoset", None)
    config_dict.pop("transformers_version", None)
    config_dict["torch_dtype"] = dtype
    with open(os.path.join(fixture_dir, "config.json"), "w") as f:
        json.dump(config_dict, f, indent=2, sort_keys=True)
        f.write("\n")


def write_goldens(fixture_dir, eval_examples, eval_squad, features, start_all, end_all):
    """golden/: the logits, run_qa.py's predictions of them, their metrics (also with null_odds as
    no-answer probabilities). Returns (predictions, metrics)."""
    save_numpy({"start_logits": start_all, "end_logits": end_all},
               os.path.join(fixture_dir, "golden", "logits.safetensors"))
    predictions, null_odds = postprocess(eval_examples, features, start_all, end_all)
    write_json(os.path.join(fixture_dir, "golden", "predictions.json"),
               {"predictions": predictions, "null_odds": null_odds})
    metrics = squad_v2_evaluate(eval_squad, predictions)
    write_json(os.path.join(fixture_dir, "golden", "metrics.json"), metrics)
    write_fixture_threshold_metrics(fixture_dir, eval_squad)
    write_fixture_manifest(fixture_dir)
    return predictions, metrics


def build_fixture(name, spec, out, vocab_dir, eval_examples, eval_squad, features):
    fixture_dir = os.path.join(out, name)
    os.makedirs(os.path.join(fixture_dir, "golden"), exist_ok=True)
    torch.manual_seed(spec["seed"])
    config = MobileBertConfig(vocab_size=30522, max_position_embeddings=512, type_vocab_size=2,
                              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                              architectures=["MobileBertForQuestionAnswering"], **spec["config"])
    config._attn_implementation = "eager"
    model = MobileBertForQuestionAnswering(config).eval()
    randomise(model, spec["seed"])
    if config.normalization_type == "no_norm":
        normalise_no_norm(model, features, spec["seed"])
    torch_dtype = round_to(model, spec["dtype"])

    # Config and weights, as save_pretrained writes them.
    write_config(fixture_dir, config, "mobilebert", spec["dtype"])
    state = {k: v.detach().to(torch_dtype).contiguous() for k, v in model.state_dict().items()}
    for stale in ("model.safetensors", "pytorch_model.bin"):
        if os.path.exists(os.path.join(fixture_dir, stale)):
            os.remove(os.path.join(fixture_dir, stale))
    if spec["weights"] == "safetensors":
        from safetensors.torch import save_file
        save_file(state, os.path.join(fixture_dir, "model.safetensors"), metadata={"format": "pt"})
    else:
        state["mobilebert.embeddings.position_ids"] = torch.arange(512, dtype=torch.int64).unsqueeze(0)
        torch.save(state, os.path.join(fixture_dir, "pytorch_model.bin"))
    write_tokenizer_files(vocab_dir, fixture_dir, spec["tokenizer"])

    start_all, end_all = reference_logits(model, features)
    predictions, metrics = write_goldens(fixture_dir, eval_examples, eval_squad, features, start_all, end_all)
    params = sum(p.numel() for p in model.parameters())
    answered = sum(1 for v in predictions.values() if v)
    print(f"{name}: {params} parameters, logit std {start_all.std():.3f}/{end_all.std():.3f}, "
          f"answered {answered}/{len(predictions)}, EM {metrics['exact']:.2f} F1 {metrics['f1']:.2f}")


def reference_logits(model, features, token_types=True):
    """Start/end logits of every feature, one at a time in float32 on one thread; without token type
    ids where the model is fed none (DistilBERT, RoBERTa)."""
    starts, ends = [], []
    with torch.no_grad():
        for i in range(features["input_ids"].shape[0]):
            types = {"token_type_ids": torch.from_numpy(features["token_type_ids"][i:i + 1])} if token_types else {}
            out_ = model(input_ids=torch.from_numpy(features["input_ids"][i:i + 1]),
                         attention_mask=torch.from_numpy(features["attention_mask"][i:i + 1]), **types)
            starts.append(out_.start_logits[0].numpy().astype(np.float32))
            ends.append(out_.end_logits[0].numpy().astype(np.float32))
    return np.stack(starts), np.stack(ends)


def train_byte_level_bpe(out_dir, texts):
    """A RoBERTa tokenizer as users have it (vocab.json, merges.txt, tokenizer.json with RoBERTa's
    post-processor): a byte-level BPE trained on `texts`, converted by RobertaTokenizerFast."""
    from tokenizers import ByteLevelBPETokenizer
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=BPE_VOCAB_SIZE, min_frequency=2, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(out_dir)
    tokenizer = RobertaTokenizerFast(vocab_file=os.path.join(out_dir, "vocab.json"),
                                     merges_file=os.path.join(out_dir, "merges.txt"), model_max_length=512)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def save_features(directory, features, eval_examples, extra=None):
    """features.safetensors and features.json (the layout Features::load reads)."""
    # ids fit int32 and masks fit uint8: stored narrow to keep golden/ small; Rust widens them.
    save_numpy({
        "input_ids": features["input_ids"].astype(np.int32),
        "attention_mask": features["attention_mask"].astype(np.uint8),
        "token_type_ids": features["token_type_ids"].astype(np.uint8),
        "offsets": features["offsets"],
        "example_index": features["example_index"].astype(np.int32),
    }, os.path.join(directory, "features.safetensors"))
    write_json(os.path.join(directory, "features.json"), {
        "max_length": MAX_LENGTH, "doc_stride": DOC_STRIDE, "padding": "max_length",
        "truncation": "only_second", "question_lstrip": True, "n_best": N_BEST,
        "max_answer_length": MAX_ANSWER_LENGTH, "null_score_diff_threshold": NULL_SCORE_DIFF_THRESHOLD,
        "features": int(features["input_ids"].shape[0]), "examples": len(eval_examples),
        "example_ids": features["example_ids"], **(extra or {}),
    })


def build_family_fixture(name, spec, out, vocab_dir, eval_examples, eval_squad, features, calibration_texts):
    """A BERT-family fixture: random weights, its tokenizer, and (RoBERTa) its own features."""
    fixture_dir = os.path.join(out, name)
    if os.path.isdir(fixture_dir):
        shutil.rmtree(fixture_dir)
    os.makedirs(os.path.join(fixture_dir, "golden"))
    config_class, model_class = spec["model"]
    if spec["tokenizer"] == "byte-level-bpe":
        tokenizer = train_byte_level_bpe(fixture_dir, calibration_texts)
        features = prepare_validation_features(tokenizer, eval_examples)
        save_features(os.path.join(fixture_dir, "golden"), features, eval_examples, {"tokenizer": "byte-level BPE (roberta-tiny)"})
        config = config_class(vocab_size=len(tokenizer), architectures=[model_class.__name__], **spec["config"])
    else:
        write_tokenizer_files(vocab_dir, fixture_dir, spec["tokenizer"], spec["tokenizer_class"])
        config = config_class(architectures=[model_class.__name__], **spec["config"])
    config._attn_implementation = "eager"
    torch.manual_seed(spec["seed"])
    model = model_class(config).eval()
    randomise(model, spec["seed"])
    torch_dtype = round_to(model, spec["dtype"])

    write_config(fixture_dir, config, config_class.model_type, spec["dtype"])
    state = {k: v.detach().to(torch_dtype).contiguous() for k, v in model.state_dict().items()}
    if spec["weights"] == "safetensors":
        from safetensors.torch import save_file
        save_file(state, os.path.join(fixture_dir, "model.safetensors"), metadata={"format": "pt"})
    else:
        torch.save(state, os.path.join(fixture_dir, "pytorch_model.bin"))

    token_types = config_class.model_type in ("bert", "electra")
    start_all, end_all = reference_logits(model, features, token_types)
    predictions, metrics = write_goldens(fixture_dir, eval_examples, eval_squad, features, start_all, end_all)
    params = sum(p.numel() for p in model.parameters())
    answered = sum(1 for v in predictions.values() if v)
    print(f"{name}: {params} parameters, {features['input_ids'].shape[0]} features, logit std "
          f"{start_all.std():.3f}/{end_all.std():.3f}, answered {answered}/{len(predictions)}, "
          f"EM {metrics['exact']:.2f} F1 {metrics['f1']:.2f}")


def build_trained_fixture(out, vocab_dir, eval_examples, eval_squad, features, trained_dir):
    """The trained fixture in MobileBERT's format and its goldens. `trained_dir` is golden/train.py's
    output (BertForQuestionAnswering names, float16); without it the committed fixture's weights
    are read back, so its goldens can be regenerated without training again."""
    from safetensors.torch import load_file, save_file
    fixture_dir = os.path.join(out, TRAINED_FIXTURE)
    os.makedirs(os.path.join(fixture_dir, "golden"), exist_ok=True)
    if trained_dir:
        weights = {mobilebert_name(k): v for k, v in load_file(os.path.join(trained_dir, "model.safetensors")).items()}
        shutil.copyfile(os.path.join(trained_dir, "train-report.json"), os.path.join(fixture_dir, "golden", "train-report.json"))
    else:
        weights = load_file(os.path.join(fixture_dir, "model.safetensors"))
    config = MobileBertConfig(vocab_size=30522, max_position_embeddings=512, type_vocab_size=2,
                              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                              architectures=["MobileBertForQuestionAnswering"], **TRAINED_CONFIG)
    config._attn_implementation = "eager"
    model = MobileBertForQuestionAnswering(config).eval()
    # The embedding transformation exists in MobileBERT's module but is unused when embedding size
    # equals hidden size without trigram input: stored as zeros so that nothing random is shipped.
    transformation = {k: torch.zeros_like(v) for k, v in model.state_dict().items() if "embedding_transformation" in k}
    weights = {**transformation, **{k: v for k, v in weights.items() if "embedding_transformation" not in k}}
    missing, unexpected = model.load_state_dict({k: v.to(torch.float32) for k, v in weights.items()}, strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise SystemExit(f"trained weights do not fit MobileBERT: missing {missing}, unexpected {unexpected}")

    write_config(fixture_dir, config, "mobilebert", "float16")
    state = {k: v.to(torch.float16).contiguous() for k, v in sorted(weights.items())}
    save_file(state, os.path.join(fixture_dir, "model.safetensors"), metadata={"format": "pt"})
    write_tokenizer_files(vocab_dir, fixture_dir, ("vocab.txt", "tokenizer.json"))

    start_all, end_all = reference_logits(model, features)
    predictions, metrics = write_goldens(fixture_dir, eval_examples, eval_squad, features, start_all, end_all)

    # The same weights under BERT's own module (epsilon 1e-12 everywhere): how far MobileBERT's
    # format moves the logits and the answers.
    bert_config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                             intermediate_size=1536, hidden_act="gelu", max_position_embeddings=512,
                             type_vocab_size=2, layer_norm_eps=1e-12, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0)
    bert_config._attn_implementation = "eager"
    bert = BertForQuestionAnswering(bert_config).eval()
    bert_state = {("bert." + k[len("mobilebert."):] if k.startswith("mobilebert.") else k): v.to(torch.float32)
                  for k, v in weights.items() if "embedding_transformation" not in k}
    missing, unexpected = bert.load_state_dict(bert_state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise SystemExit(f"trained weights do not fit BERT: missing {missing}, unexpected {unexpected}")
    bert_start, bert_end = reference_logits(bert, features)
    bert_predictions, _ = postprocess(eval_examples, features, bert_start, bert_end)
    bert_metrics = squad_v2_evaluate(eval_squad, bert_predictions)
    valid = features["attention_mask"] == 1
    write_json(os.path.join(fixture_dir, "golden", "bert-format.json"), {
        "max_abs_logit_diff": float(max(np.abs(bert_start - start_all)[valid].max(), np.abs(bert_end - end_all)[valid].max())),
        "identical_predictions": sum(bert_predictions[k] == predictions[k] for k in predictions),
        "questions": len(predictions),
        "bert_metrics": bert_metrics,
    })
    params = sum(p.numel() for p in model.parameters())
    answered = sum(1 for v in predictions.values() if v)
    print(f"{TRAINED_FIXTURE}: {params} parameters, answered {answered}/{len(predictions)}, "
          f"EM {metrics['exact']:.2f} F1 {metrics['f1']:.2f} (BERT's module: F1 {bert_metrics['f1']:.2f})")


# ---------------------------------------------------------------------------------------------
# Golden bundles (the format `qaforge verify --golden` reads; see crates/qaforge-verify/src/bundle.rs)
# ---------------------------------------------------------------------------------------------

BUNDLE_FORMAT = "qaforge-golden-bundle/1"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pt", "pytorch_model.pt")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json")


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_sha256(model_dir):
    """sha256 over config.json and the weights file, as qaforge's provenance (qaforge.source_sha256)."""
    if os.path.exists(os.path.join(model_dir, "model.safetensors.index.json")) and \
            not os.path.exists(os.path.join(model_dir, "model.safetensors")):
        raise SystemExit(f"{model_dir}: sharded checkpoints: make the bundle with `qaforge golden`")
    weights = next((os.path.join(model_dir, w) for w in WEIGHT_FILES if os.path.exists(os.path.join(model_dir, w))), None)
    if weights is None:
        raise SystemExit(f"{model_dir}: no weights file ({', '.join(WEIGHT_FILES)})")
    h = hashlib.sha256()
    for path in (os.path.join(model_dir, "config.json"), weights):
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def tokenizer_sha256(model_dir):
    """sha256 over the tokenizer files present, each as name, NUL, bytes (qaforge.tokenizer_sha256)."""
    h = hashlib.sha256()
    found = False
    for name in TOKENIZER_FILES:
        path = os.path.join(model_dir, name)
        if os.path.exists(path):
            h.update(name.encode() + b"\0")
            with open(path, "rb") as f:
                h.update(f.read())
            found = True
    return h.hexdigest() if found else None


def write_manifest(bundle_dir, model_dir, files, data, settings, features_count, metrics):
    """manifest.json of a bundle: `files` maps each role to a path; paths are stored relative to the
    bundle directory with their size and sha256."""
    with open(os.path.join(model_dir, "config.json")) as f:
        architecture = json.load(f)["architectures"][0]
    import transformers
    write_json(os.path.join(bundle_dir, "manifest.json"), {
        "format": BUNDLE_FORMAT,
        "generator": "golden/generate.py",
        "reference": f"PyTorch {torch.__version__.split('+')[0]}, transformers {transformers.__version__}",
        "model": {"architecture": architecture, "source_sha256": checkpoint_sha256(model_dir),
                  "tokenizer_sha256": tokenizer_sha256(model_dir)},
        "data": data,
        "settings": settings,
        "features": features_count,
        "scores": {"exact": metrics["exact"], "f1": metrics["f1"]},
        "files": {role: {"path": os.path.relpath(path, bundle_dir).replace(os.sep, "/"),
                         "bytes": os.path.getsize(path), "sha256": file_sha256(path)}
                  for role, path in sorted(files.items())},
    })


RUN_QA_SETTINGS = {"max_length": MAX_LENGTH, "doc_stride": DOC_STRIDE, "n_best": N_BEST,
                   "max_answer_length": MAX_ANSWER_LENGTH,
                   "null_score_diff_threshold": NULL_SCORE_DIFF_THRESHOLD,
                   "postprocess": "all max_length positions"}


def write_fixture_manifest(fixture_dir):
    """The manifest of a shipped fixture's golden/ bundle, from the files on disk: its own features
    where its tokenizer is its own (roberta-tiny), golden/squad's otherwise."""
    bundle = os.path.join(fixture_dir, "golden")
    squad = os.path.join(os.path.dirname(os.path.abspath(fixture_dir)), "squad")
    features_dir = bundle if os.path.exists(os.path.join(bundle, "features.json")) else squad
    with open(os.path.join(features_dir, "features.json")) as f:
        index = json.load(f)
    with open(os.path.join(bundle, "metrics.json")) as f:
        metrics = json.load(f)
    eval_path = os.path.join(squad, "eval.json")
    write_manifest(bundle, fixture_dir, {
        "data": eval_path,
        "features": os.path.join(features_dir, "features.safetensors"),
        "feature_index": os.path.join(features_dir, "features.json"),
        "logits": os.path.join(bundle, "logits.safetensors"),
        "predictions": os.path.join(bundle, "predictions.json"),
        "metrics": os.path.join(bundle, "metrics.json"),
    }, {"name": "eval.json", "source_sha256": file_sha256(eval_path), "questions": index["examples"], "limit": None},
        RUN_QA_SETTINGS, index["features"], metrics)


def first_questions(squad, limit):
    """The first `limit` questions of a SQuAD file (emptied paragraphs and articles dropped)."""
    out = json.loads(json.dumps(squad))
    left = limit
    for article in out["data"]:
        for paragraph in article["paragraphs"]:
            keep = min(len(paragraph["qas"]), left)
            paragraph["qas"] = paragraph["qas"][:keep]
            left -= keep
        article["paragraphs"] = [p for p in article["paragraphs"] if p["qas"]]
    out["data"] = [a for a in out["data"] if a["paragraphs"]]
    return out


def bundle_from_model(model_dir, data_path, out, limit):
    """A PyTorch golden bundle of any checkpoint transformers loads: the user's own reference."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer
    with open(data_path) as f:
        squad = json.load(f)
    if limit is not None:
        squad = first_questions(squad, limit)
    examples = examples_of(squad)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    features = prepare_validation_features(tokenizer, examples)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir, attn_implementation="eager").float().eval()
    token_types = "token_type_ids" in tokenizer.model_input_names and model.config.model_type not in ("distilbert", "roberta")
    start_all, end_all = reference_logits(model, features, token_types)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "data.json"), squad)
    save_features(out, features, examples)
    save_numpy({"start_logits": start_all, "end_logits": end_all}, os.path.join(out, "logits.safetensors"))
    predictions, null_odds = postprocess(examples, features, start_all, end_all)
    write_json(os.path.join(out, "predictions.json"), {"predictions": predictions, "null_odds": null_odds})
    metrics = squad_v2_evaluate(squad, predictions)
    write_json(os.path.join(out, "metrics.json"), metrics)
    write_manifest(out, model_dir, {role: os.path.join(out, name) for role, name in (
        ("data", "data.json"), ("features", "features.safetensors"), ("feature_index", "features.json"),
        ("logits", "logits.safetensors"), ("predictions", "predictions.json"), ("metrics", "metrics.json"))},
        {"name": os.path.basename(data_path), "source_sha256": file_sha256(data_path),
         "questions": len(examples), "limit": limit},
        RUN_QA_SETTINGS, int(features["input_ids"].shape[0]), metrics)
    print(f"bundle {out}: {len(examples)} questions, {features['input_ids'].shape[0]} features, "
          f"reference EM {metrics['exact']:.2f} F1 {metrics['f1']:.2f}")



def rewrite_metrics(out):
    """The metric files of every fixture and system from the committed eval slice and predictions."""
    squad_dir = os.path.join(out, "squad")
    with open(os.path.join(squad_dir, "eval.json")) as f:
        eval_squad = json.load(f)
    system_metrics = collections.OrderedDict()
    for system in ("bert-large-single", "nlnet-single", "bidaf-sa-elmo"):
        with open(os.path.join(squad_dir, "predictions", system + ".json")) as f:
            system_metrics[system] = squad_v2_evaluate(eval_squad, json.load(f))
    write_json(os.path.join(squad_dir, "predictions", "metrics.json"), system_metrics)
    write_system_threshold_metrics(squad_dir, eval_squad)
    for name in (*FIXTURES, *FAMILY_FIXTURES, TRAINED_FIXTURE):
        fixture_dir = os.path.join(out, name)
        with open(os.path.join(fixture_dir, "golden", "predictions.json")) as f:
            predictions = json.load(f)["predictions"]
        write_json(os.path.join(fixture_dir, "golden", "metrics.json"), squad_v2_evaluate(eval_squad, predictions))
        write_fixture_threshold_metrics(fixture_dir, eval_squad)
        write_fixture_manifest(fixture_dir)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--trained", help="golden/train.py's output directory: (re)builds the trained fixture from it "
                        "(without it, the committed trained fixture's weights are reused)")
    parser.add_argument("--only", help="comma-separated fixture names: build just these (the other files are "
                        "left as they are)")
    parser.add_argument("--metrics-only", action="store_true",
                        help="only rewrite the metric files from the committed predictions (no model runs)")
    parser.add_argument("--manifests-only", action="store_true",
                        help="only rewrite the fixtures' bundle manifests from the committed files (no model runs)")
    parser.add_argument("--model", help="a model directory: write a PyTorch golden bundle of it (with --data, --out)")
    parser.add_argument("--data", help="with --model: the SQuAD v2-format file")
    parser.add_argument("--limit", type=int, help="with --model: keep the data's first N questions")
    args = parser.parse_args()
    if args.model:
        if not args.data or args.out == parser.get_default("out"):
            raise SystemExit("--model needs --data <SQUAD.json> and --out <BUNDLE_DIR>")
        torch.set_num_threads(1)
        bundle_from_model(args.model, args.data, args.out, args.limit)
        return
    if args.metrics_only:
        rewrite_metrics(args.out)
        return
    if args.manifests_only:
        for name in (*FIXTURES, *FAMILY_FIXTURES, TRAINED_FIXTURE):
            write_fixture_manifest(os.path.join(args.out, name))
        return
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    with open(os.path.join(args.shared, "squad-v2", "dev-v2.0.json")) as f:
        dev = json.load(f)
    longest = longest_paragraphs(dev, 2)
    eval_squad = squad_slice(
        dev, lambda a, ps: [p for i, p in enumerate(ps) if (i == 0 and a < EVAL_ARTICLES) or (a, i) in longest])
    calibration_squad = squad_slice(dev, lambda a, ps: ps[1:2])
    squad_dir = os.path.join(args.out, "squad")
    eval_examples = examples_of(eval_squad)
    vocab_dir = os.path.join(args.shared, "vocab", "bert-base-uncased")
    tokenizer = BertTokenizerFast(vocab_file=os.path.join(vocab_dir, "vocab.txt"),
                                  tokenizer_file=os.path.join(vocab_dir, "tokenizer.json"),
                                  do_lower_case=True)
    features = prepare_validation_features(tokenizer, eval_examples)
    calibration_examples = examples_of(calibration_squad)
    calibration_texts = [e["question"] for e in calibration_examples] + sorted({e["context"] for e in calibration_examples})
    only = set(args.only.split(",")) if args.only else None
    known = {*FIXTURES, *FAMILY_FIXTURES, TRAINED_FIXTURE}
    if only and not only <= known:
        raise SystemExit(f"--only: unknown fixture(s) {sorted(only - known)}; fixtures: {sorted(known)}")
    wanted = lambda name: only is None or name in only

    if only is None:
        os.makedirs(os.path.join(squad_dir, "predictions"), exist_ok=True)
        write_json(os.path.join(squad_dir, "eval.json"), eval_squad)
        write_json(os.path.join(squad_dir, "calibration.json"), calibration_squad)
        eval_ids = [e["id"] for e in eval_examples]
        system_metrics = collections.OrderedDict()
        for system in ("bert-large-single", "nlnet-single", "bidaf-sa-elmo"):
            with open(os.path.join(args.shared, "squad-v2", "predictions", system + ".json")) as f:
                all_preds = json.load(f)
            sliced = collections.OrderedDict((k, all_preds[k]) for k in eval_ids)
            write_json(os.path.join(squad_dir, "predictions", system + ".json"), sliced)
            system_metrics[system] = squad_v2_evaluate(eval_squad, sliced)
        write_json(os.path.join(squad_dir, "predictions", "metrics.json"), system_metrics)
        write_system_threshold_metrics(squad_dir, eval_squad)
        save_features(squad_dir, features, eval_examples)
    print(f"eval slice: {len(eval_examples)} questions, {features['input_ids'].shape[0]} features; "
          f"calibration slice: {len(calibration_examples)} questions")

    for name, spec in FIXTURES.items():
        if wanted(name):
            build_fixture(name, spec, args.out, vocab_dir, eval_examples, eval_squad, features)
    for name, spec in FAMILY_FIXTURES.items():
        if wanted(name):
            build_family_fixture(name, spec, args.out, vocab_dir, eval_examples, eval_squad, features, calibration_texts)
    if wanted(TRAINED_FIXTURE) and (args.trained or os.path.exists(os.path.join(args.out, TRAINED_FIXTURE, "model.safetensors"))):
        build_trained_fixture(args.out, vocab_dir, eval_examples, eval_squad, features, args.trained)


if __name__ == "__main__":
    main()
