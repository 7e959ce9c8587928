#!/usr/bin/env python3
"""What each cost lever of golden/train.py's recipe buys on this machine, measured: training steps of
the same model on the same SQuAD v1.1 windows (with the made unanswerables), one variant at a time,
each for --seconds after two untimed steps.

  python golden/train_costs.py --base DIR --shared ../shared/data [--seconds 90] [--out FILE.json]

Variants: run_qa.py's features (384 tokens, every batch padded to 384, random order) in float32;
the same with bfloat16 autocast; 256-token windows padded to each batch's longest, sorted by length
within a look-ahead (the recipe's), in float32 and with bfloat16 autocast. Prints windows/s and
real (unpadded) tokens/s of each, and the ratio of real tokens/s to the first; --out writes them as
JSON. The weights are updated as in training (AdamW), so the timings include the optimizer.
"""

import argparse
import json
import os
import time

import numpy as np
import torch

import train


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--shared", required=True)
    p.add_argument("--seconds", type=float, default=90)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--articles", type=int, default=20, help="SQuAD v1.1 articles whose windows are drawn from")
    p.add_argument("--variants", default="padded-384-fp32,padded-384-bf16,sorted-256-fp32,sorted-256-bf16")
    p.add_argument("--out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.shared, "squad-v1.1", "train-v1.1.json")) as f:
        v1 = json.load(f)["data"][:args.articles]
    v1, _ = train.with_unanswerable(v1, 0.5, 0)
    vocab_dir = os.path.join(args.shared, "vocab", "bert-base-uncased")
    rows = []
    for variant in args.variants.split(","):
        layout, length, precision = variant.split("-")
        length = int(length)
        windows, _ = train.train_windows(train.tokenizer_for(vocab_dir, length, 128), v1)
        if layout == "sorted":
            stream = train.Stream(windows, [], args.batch, 0.0, 2048, 0)
            batches = (stream.batch_at(k) for k in range(10 ** 9))
        else:
            rng = np.random.default_rng(0)
            batches = ([windows[i] for i in rng.integers(len(windows), size=args.batch)] for _ in range(10 ** 9))
        torch.manual_seed(0)
        model, optimizer = fresh_model(args.base)
        bf16 = precision == "bf16"
        count = tokens = steps = 0
        t0 = None
        for k, batch in enumerate(batches):
            if k == 2:
                t0 = time.time()
            (ids, mask, types, starts, ends), real, _ = train.collate(batch)
            if layout == "padded":
                pad = length - ids.shape[1]
                ids, mask, types = (torch.nn.functional.pad(t, (0, pad)) for t in (ids, mask, types))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, start_positions=starts, end_positions=ends)
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if t0 is not None:
                count += len(ids)
                tokens += real
                steps += 1
                if time.time() - t0 >= args.seconds:
                    break
        seconds = time.time() - t0
        rows.append({"variant": variant, "steps": steps, "seconds": round(seconds, 1), "windows_per_second": round(count / seconds, 3),
                     "real_tokens_per_second": round(tokens / seconds, 1)})
        print(json.dumps(rows[-1]), flush=True)
        if args.out:
            write(args, rows)
    first = rows[0]["real_tokens_per_second"]
    print(f"\n| variant | windows/s | real tokens/s | × {rows[0]['variant']} |\n|---|---:|---:|---:|")
    for r in rows:
        r["ratio"] = round(r["real_tokens_per_second"] / first, 2)
        print(f"| {r['variant']} | {r['windows_per_second']:.2f} | {r['real_tokens_per_second']:.0f} | {r['ratio']:.2f} |")
    if args.out:
        write(args, rows)


def write(args, rows):
    """--out: the rows measured so far, with the machine (written after every variant)."""
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    with open(args.out, "w") as f:
        json.dump({"cpu": cpu, "bf16_instructions": train.cpu_has_bf16(), "threads": args.threads, "batch": args.batch,
                   "torch": torch.__version__, "rows": rows}, f, indent=1)
        f.write("\n")


def fresh_model(base_dir):
    from safetensors.numpy import load_file
    from transformers import BertConfig, BertForQuestionAnswering
    with open(os.path.join(base_dir, "config.json")) as f:
        base_config = json.load(f)
    keep = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
            "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id")
    config = BertConfig(**{k: base_config[k] for k in keep})
    config._attn_implementation = "sdpa"
    model = BertForQuestionAnswering(config)
    base = {k: torch.from_numpy(v) for k, v in load_file(os.path.join(base_dir, "model.safetensors")).items()
            if k != "embeddings.position_ids" and not k.startswith("pooler.")}
    model.bert.load_state_dict(base, strict=False)
    model.train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


if __name__ == "__main__":
    main()
