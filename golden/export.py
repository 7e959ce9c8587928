#!/usr/bin/env python3
"""ONNX exports of the fixtures as users make them, for `make test` to quantize and verify
(issue: the ONNX that users bring). Run by `make golden` with torch, onnxscript and optimum-onnx:

  python golden/export.py --out golden/exports

Every fixture, loaded by transformers' AutoModelForQuestionAnswering, is exported three ways, with
dynamic batch and sequence and run_qa.py's input names, to <fixture>.<exporter>-opset<N>.onnx:
- torchscript: torch.onnx.export(dynamo=False) at opset 14 (LayerNorm decomposed into
  ReduceMean/Sub/Pow/Sqrt/Div) or 17 (LayerNormalization), eager attention;
- dynamo: torch.onnx.export(dynamo=True) with torch.export dynamic shapes at opset 18. It writes
  the weights as external data (<file>.data beside the model) by default; mobilebert-tiny's export
  keeps them so, to test reading them, and the others are saved whole;
- optimum: `optimum-cli export onnx --task question-answering` (optimum-onnx, its default opset
  and attention implementation), model.onnx renamed.

Run with transformers 5 (golden/requirements-transformers5.txt, a venv of its own: make golden),
it writes <fixture>.transformers5-torchscript-opset<N>.onnx and
<fixture>.transformers5-dynamo-opset18.onnx (weights inline) beside the transformers 4 exports:
transformers 5 builds the attention mask differently (flat-index Gather of the flattened mask in
TorchScript, GatherND and an all-true And in dynamo), which tract needed rewrites to run
(qaforge_runtime's tract session). optimum-onnx 0.1 requires transformers 4, so it is not run then.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import transformers
from transformers import AutoModelForQuestionAnswering

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])

# (fixture, TorchScript opset)
FIXTURES = [
    ("mobilebert-tiny", 17),
    ("bert-tiny", 14),
    ("distilbert-tiny", 17),
    ("roberta-tiny", 17),
    ("electra-tiny", 14),
]
DYNAMO_OPSET = 18
# The one dynamo export that keeps its weights in external data.
EXTERNAL_DATA = "mobilebert-tiny"


def load(fixture_dir):
    model = AutoModelForQuestionAnswering.from_pretrained(fixture_dir, attn_implementation="eager").float().eval()
    model_type = model.config.model_type
    # Any ids inside the vocabulary trace the same graph; padding shows the mask path. Two rows,
    # so that torch.export does not specialise the batch dimension to 1.
    ids = torch.tensor([[0, 50, 60, 2, 2, 70, 2, 1]] * 2) if model_type == "roberta" else torch.tensor([[101, 2054, 2003, 102, 1996, 3437, 102, 0]] * 2)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0]] * 2)
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 0]] * 2)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if model_type in ("bert", "electra", "mobilebert"):
        inputs["token_type_ids"] = types
    return model, inputs


def export_torchscript(fixture_dir, out, opset):
    model, inputs = load(fixture_dir)
    names = list(inputs)
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["start_logits", "end_logits"]}
    torch.onnx.export(model, tuple(inputs.values()), out, opset_version=opset, input_names=names,
                      output_names=["start_logits", "end_logits"], dynamic_axes=axes, dynamo=False)


def export_dynamo(fixture_dir, out, external_data):
    model, inputs = load(fixture_dir)
    batch = torch.export.Dim("batch", min=1, max=1024)
    sequence = torch.export.Dim("sequence", min=2, max=512)
    shapes = {n: {0: batch, 1: sequence} for n in inputs}
    torch.onnx.export(model, (), out, kwargs=inputs, opset_version=DYNAMO_OPSET, input_names=list(inputs),
                      output_names=["start_logits", "end_logits"], dynamic_shapes=shapes, dynamo=True,
                      external_data=external_data)


def export_optimum(fixture_dir, out):
    with tempfile.TemporaryDirectory() as work:
        subprocess.run([os.path.join(os.path.dirname(sys.executable), "optimum-cli"), "export", "onnx", "--model", fixture_dir,
                        "--task", "question-answering", work], check=True)
        shutil.copyfile(os.path.join(work, "model.onnx"), out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "exports"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    if TRANSFORMERS_MAJOR >= 5:
        for fixture, opset in FIXTURES:
            fixture_dir = os.path.join(here, fixture)
            outs = [os.path.join(args.out, f"{fixture}.transformers{TRANSFORMERS_MAJOR}-torchscript-opset{opset}.onnx"),
                    os.path.join(args.out, f"{fixture}.transformers{TRANSFORMERS_MAJOR}-dynamo-opset{DYNAMO_OPSET}.onnx")]
            export_torchscript(fixture_dir, outs[0], opset)
            export_dynamo(fixture_dir, outs[1], False)
            for out in outs:
                print(f"{out}: {os.path.getsize(out)} bytes")
        return
    for fixture, opset in FIXTURES:
        fixture_dir = os.path.join(here, fixture)
        outs = []
        out = os.path.join(args.out, f"{fixture}.torchscript-opset{opset}.onnx")
        export_torchscript(fixture_dir, out, opset)
        outs.append(out)
        out = os.path.join(args.out, f"{fixture}.dynamo-opset{DYNAMO_OPSET}.onnx")
        export_dynamo(fixture_dir, out, fixture == EXTERNAL_DATA)
        outs += [out] + ([out + ".data"] if fixture == EXTERNAL_DATA else [])
        out = os.path.join(args.out, f"{fixture}.optimum-opset18.onnx")
        export_optimum(fixture_dir, out)
        outs.append(out)
        for out in outs:
            print(f"{out}: {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
