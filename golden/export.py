#!/usr/bin/env python3
"""ONNX exports of the fixtures as users make them, for `make test` to quantize and verify
(issue: the ONNX that users bring). Run by `make golden` with torch:

  python golden/export.py --out golden/exports

Each file is torch.onnx.export's TorchScript exporter (dynamo=False) at the opset in its name, with
dynamic batch and sequence axes and run_qa.py's input names, of a fixture loaded by transformers'
AutoModelForQuestionAnswering: <fixture>.torchscript-opset<N>.onnx. Opset 14 exports decompose
LayerNorm (ReduceMean/Sub/Pow/Sqrt/Div); opset 17 ones use LayerNormalization.
"""

import argparse
import os

import torch
from transformers import AutoModelForQuestionAnswering

EXPORTS = [
    ("mobilebert-tiny", 17),
    ("bert-tiny", 14),
    ("distilbert-tiny", 17),
    ("roberta-tiny", 17),
    ("electra-tiny", 14),
]


def export(fixture_dir, out, opset):
    model = AutoModelForQuestionAnswering.from_pretrained(fixture_dir, attn_implementation="eager").float().eval()
    model_type = model.config.model_type
    # Any ids inside the vocabulary trace the same graph; padding shows the mask path.
    ids = torch.tensor([[0, 50, 60, 2, 2, 70, 2, 1]]) if model_type == "roberta" else torch.tensor([[101, 2054, 2003, 102, 1996, 3437, 102, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0]])
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 0]])
    args = (ids, mask, types) if model_type in ("bert", "electra", "mobilebert") else (ids, mask)
    names = ["input_ids", "attention_mask", "token_type_ids"][:len(args)]
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["start_logits", "end_logits"]}
    torch.onnx.export(model, args, out, opset_version=opset, input_names=names,
                      output_names=["start_logits", "end_logits"], dynamic_axes=axes, dynamo=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "exports"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    for fixture, opset in EXPORTS:
        out = os.path.join(args.out, f"{fixture}.torchscript-opset{opset}.onnx")
        export(os.path.join(here, fixture), out, opset)
        print(f"{out}: {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
