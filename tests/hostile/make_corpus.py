#!/usr/bin/env python3
"""Writes the committed corpus of hostile inputs in tests/hostile/ (stdlib only; re-run to
regenerate: the output is deterministic). Files that fuzzing found (tokenizer/) are committed as
found and not written here. tests/hostile_corpus.rs holds one test per file, each
asserting the specific error qaforge must give.

  python3 tests/hostile/make_corpus.py
"""

import io
import json
import os
import struct
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def write(relative, data):
    path = os.path.join(HERE, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def safetensors(header, data=b"", raw_header=None):
    text = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + data


F32x4 = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
GOOD = safetensors({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, F32x4)


def checkpoints():
    write("safetensors/valid-2x2.safetensors", GOOD)  # the control: this one loads
    # Truncated at every section boundary of a valid file.
    header_len = 8 + struct.unpack("<Q", GOOD[:8])[0]
    write("safetensors/truncated-in-length.safetensors", GOOD[:5])
    write("safetensors/truncated-in-header.safetensors", GOOD[:header_len - 3])
    write("safetensors/truncated-after-header.safetensors", GOOD[:header_len])
    write("safetensors/truncated-in-data.safetensors", GOOD[:header_len + 7])
    write("safetensors/header-length-beyond-file.safetensors", struct.pack("<Q", 1 << 40) + GOOD[8:])
    write("safetensors/header-not-json.safetensors", safetensors(None, F32x4, raw_header=b"{not json at all}   "))
    write("safetensors/offsets-out-of-range.safetensors",
          safetensors({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 1 << 20]}}, F32x4))
    write("safetensors/offsets-overlap.safetensors",
          safetensors({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                       "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, F32x4))
    write("safetensors/byte-count-mismatch.safetensors",
          safetensors({"w": {"dtype": "F32", "shape": [3, 3], "data_offsets": [0, 16]}}, F32x4))
    write("safetensors/shape-product-overflows.safetensors",
          safetensors({"w": {"dtype": "F32", "shape": [1 << 32, 1 << 32, 16], "data_offsets": [0, 16]}}, F32x4))
    write("safetensors/trillion-elements.safetensors",
          safetensors({"w": {"dtype": "F32", "shape": [1000000, 1000000], "data_offsets": [0, 4 * 10**12]}}, F32x4))
    write("safetensors/unknown-dtype.safetensors",
          safetensors({"w": {"dtype": "F7", "shape": [2, 2], "data_offsets": [0, 16]}}, F32x4))
    dup = b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}'
    write("safetensors/duplicate-keys.safetensors", safetensors(None, F32x4, raw_header=dup))


def torch_zip(members, compress=None):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = compress.get(name, zipfile.ZIP_STORED) if compress else zipfile.ZIP_STORED
            z.writestr(info, data)
    return buffer.getvalue()


# A valid state-dict pickle (protocol 2) of {"w": FloatStorage "0" of 4 elements as [2, 2]}.
def state_dict_pickle(elements=4, shape=(2, 2), strides=(2, 1), key="0"):
    def binunicode(s):
        b = s.encode()
        return b"X" + struct.pack("<I", len(b)) + b
    def int_(i):
        return b"J" + struct.pack("<i", i)
    tup = lambda items: b"(" + b"".join(items) + b"t"
    return (b"\x80\x02}(" + binunicode("w") + b"ctorch._utils\n_rebuild_tensor_v2\n(" +
            tup([binunicode("storage"), b"ctorch\nFloatStorage\n", binunicode(key), binunicode("cpu"), int_(elements)]) +
            b"Q" + int_(0) + tup([int_(d) for d in shape]) + tup([int_(s) for s in strides]) + b"\x89" +
            b"ccollections\nOrderedDict\n)R" + b"tR" + b"u.")


def torch_archives():
    good = torch_zip([("archive/data.pkl", state_dict_pickle()), ("archive/data/0", F32x4), ("archive/version", b"3\n")])
    write("torch/valid-2x2.bin", good)  # the control: this one loads
    write("torch/not-a-zip.bin", b"this is not a zip archive, nor a pickle")
    write("torch/truncated-central-directory.bin", good[:len(good) - 30])
    write("torch/truncated-in-storage.bin", good[:60])
    write("torch/path-traversal.bin", torch_zip([("archive/data.pkl", state_dict_pickle()), ("archive/data/0", F32x4),
                                                   ("../../../etc/cron.d/evil", b"* * * * * root sh")]))
    # A zip bomb: data.pkl deflates from ~100 KiB to 100 MiB of zeros (over the 64 MiB pickle cap).
    bomb = torch_zip([("archive/data.pkl", b"\0" * (100 << 20)), ("archive/data/0", F32x4)],
                     compress={"archive/data.pkl": zipfile.ZIP_DEFLATED})
    write("torch/zip-bomb.bin", bomb)
    system = b"\x80\x02cposix\nsystem\nX\x0c\x00\x00\x00touch /tmp/x\x85R."
    write("torch/pickle-os-system.bin", torch_zip([("archive/data.pkl", system)]))
    evil = b"\x80\x02cbuiltins\neval\nX\x0a\x00\x00\x00__import__\x85R."
    write("torch/pickle-builtins-eval.bin", torch_zip([("archive/data.pkl", evil)]))
    claim = b"\x80\x02X\xff\xff\xff\xffshort."
    write("torch/pickle-string-claims-4gib.bin", torch_zip([("archive/data.pkl", claim)]))
    write("torch/pickle-truncated.bin", torch_zip([("archive/data.pkl", state_dict_pickle()[:40])]))
    write("torch/storage-smaller-than-tensor.bin",
          torch_zip([("archive/data.pkl", state_dict_pickle(elements=1000, shape=(10, 100), strides=(100, 1))),
                     ("archive/data/0", F32x4)]))
    write("torch/storage-missing.bin", torch_zip([("archive/data.pkl", state_dict_pickle(key="7")), ("archive/data/0", F32x4)]))
    write("torch/compressed-storage.bin", torch_zip([("archive/data.pkl", state_dict_pickle()), ("archive/data/0", F32x4)],
                                                    compress={"archive/data/0": zipfile.ZIP_DEFLATED}))
    write("torch/view-past-storage.bin",
          torch_zip([("archive/data.pkl", state_dict_pickle(shape=(2, 2), strides=(3, 1))), ("archive/data/0", F32x4)]))


def configs():
    with open(os.path.join(HERE, "..", "..", "golden", "mobilebert-tiny", "config.json")) as f:
        base = f.read()
    def edited(old, new):
        assert old in base, old
        return base.replace(old, new).encode()
    write("config/zero-heads.json", edited('"num_attention_heads": 4', '"num_attention_heads": 0'))
    write("config/hidden-not-divisible-by-heads.json", edited('"num_attention_heads": 4', '"num_attention_heads": 3'))
    write("config/negative-size.json", edited('"intermediate_size": 64', '"intermediate_size": -64'))
    write("config/huge-layers.json", edited('"num_hidden_layers": 4', '"num_hidden_layers": 1000000000000'))
    write("config/wrong-type.json", edited('"hidden_size": 64', '"hidden_size": "64"'))
    write("config/duplicate-keys.json", edited('"hidden_size": 64', '"hidden_size": 64, "hidden_size": 128'))
    write("config/not-an-object.json", b"[1, 2, 3]\n")


def squad():
    ok = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "The red fox.", "qas": [
        {"id": "q1", "question": "What colour?", "answers": [{"text": "red", "answer_start": 4}], "is_impossible": False}]}]}]}
    def variant(edit):
        d = json.loads(json.dumps(ok))
        edit(d)
        return json.dumps(d, indent=1).encode()
    para = lambda d: d["data"][0]["paragraphs"][0]
    write("squad/missing-context.json", variant(lambda d: para(d).pop("context")))
    write("squad/missing-id.json", variant(lambda d: para(d)["qas"][0].pop("id")))
    write("squad/qas-wrong-type.json", variant(lambda d: para(d).__setitem__("qas", "q1")))
    write("squad/answer-start-string.json", variant(lambda d: para(d)["qas"][0]["answers"][0].__setitem__("answer_start", "4")))
    write("squad/answer-outside-context.json", variant(lambda d: para(d)["qas"][0]["answers"][0].__setitem__("answer_start", 400)))
    write("squad/answer-negative-offset.json", variant(lambda d: para(d)["qas"][0]["answers"][0].__setitem__("answer_start", -1)))
    write("squad/empty-context.json", variant(lambda d: para(d).__setitem__("context", "")))
    write("squad/duplicate-ids.json", variant(lambda d: para(d)["qas"].append(dict(para(d)["qas"][0]))))
    write("squad/no-questions.json", b'{"version": "v2.0", "data": []}\n')
    write("squad/empty-file.json", b"")
    write("squad/non-utf8.json", variant(lambda d: None).replace(b"The red fox.", b"The r\xff\xfed fox."))
    write("squad/truncated.json", variant(lambda d: None)[:60])
    write("predictions/not-an-object.json", b'["q1", "red"]\n')
    write("predictions/answer-not-text.json", b'{"q1": 7}\n')
    write("predictions/na-prob-not-number.json", b'{"q1": "high"}\n')


def protobuf_varint(n):
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def protobuf_field(number, value):
    """One protobuf field: an int as a varint, bytes as a length-delimited value."""
    if isinstance(value, int):
        return protobuf_varint(number << 3) + protobuf_varint(value)
    return protobuf_varint(number << 3 | 2) + protobuf_varint(len(value)) + value


def onnx_model_with_initializer(*tensor_fields):
    """ModelProto(ir_version 8, opset 17, graph(initializer = TensorProto(fields)))."""
    tensor = b"".join(protobuf_field(n, v) for n, v in tensor_fields)
    graph = protobuf_field(5, tensor) + protobuf_field(2, b"hostile")
    opset = protobuf_field(1, b"") + protobuf_field(2, 17)
    return protobuf_field(1, 8) + protobuf_field(8, opset) + protobuf_field(7, graph)


def onnx_graph(nodes, opset=17, table_rows=100):
    """ModelProto(ir 8, `opset`) of a QA-shaped graph: int64 inputs input_ids, attention_mask,
    token_type_ids, float outputs start_logits, end_logits, a `table_rows` x 4 embedding table E,
    a 4 x 2 weight W, scalar indices zero and one, and `nodes` as (name, op, inputs, output[, axis])."""
    def value_info(name, elem_type):
        dims = b"".join(protobuf_field(1, protobuf_field(2, d)) for d in (b"batch", b"sequence"))
        tensor_type = protobuf_field(1, elem_type) + protobuf_field(2, dims)
        return protobuf_field(1, name) + protobuf_field(2, protobuf_field(1, tensor_type))

    def tensor(name, dims, data_type, raw):
        return b"".join(protobuf_field(1, d) for d in dims) + protobuf_field(2, data_type) + protobuf_field(8, name) + protobuf_field(9, raw)

    graph = b""
    for name, op, inputs, output, *axis in nodes:
        node = b"".join(protobuf_field(1, i) for i in inputs) + protobuf_field(2, output) + protobuf_field(3, name) + protobuf_field(4, op)
        for a in axis:  # AttributeProto(name "axis", i, type INT)
            node += protobuf_field(5, protobuf_field(1, b"axis") + protobuf_field(3, a) + protobuf_field(20, 2))
        graph += protobuf_field(1, node)
    graph += protobuf_field(2, b"hostile")
    graph += protobuf_field(5, tensor(b"E", (table_rows, 4), 1, struct.pack(f"<{table_rows * 4}f", *([0.5] * table_rows * 4))))
    graph += protobuf_field(5, tensor(b"W", (4, 2), 1, struct.pack("<8f", *([0.25] * 8))))
    graph += protobuf_field(5, tensor(b"zero", (), 7, struct.pack("<q", 0)))
    graph += protobuf_field(5, tensor(b"one", (), 7, struct.pack("<q", 1)))
    for name in (b"input_ids", b"attention_mask", b"token_type_ids"):
        graph += protobuf_field(11, value_info(name, 7))
    for name in (b"start_logits", b"end_logits"):
        graph += protobuf_field(12, value_info(name, 1))
    opset_import = protobuf_field(1, b"") + protobuf_field(2, opset)
    return protobuf_field(1, 8) + protobuf_field(8, opset_import) + protobuf_field(7, graph)


# The QA head of onnx_graph: logits = h W, split into start and end along axis 2.
HEAD = [(b"head", b"MatMul", (b"h", b"W"), b"logits"),
        (b"start", b"Gather", (b"logits", b"zero"), b"start_logits", 2),
        (b"end", b"Gather", (b"logits", b"one"), b"end_logits", 2)]
EMBED = [(b"embed", b"Gather", (b"E", b"input_ids"), b"x")]


def onnx():
    write("onnx/garbage.onnx", b"\x08\x07\x12\x04junk" + bytes(range(256)) * 4)
    write("onnx/empty.onnx", b"")
    # A protobuf field 7 (graph) claiming 2 GiB of bytes in a 20-byte file.
    write("onnx/length-claims-2gib.onnx", b"\x08\x07\x3a\xff\xff\xff\xff\x07" + b"\0" * 12)
    # An initializer whose dims claim 10^18 float32 values (4 EB) backed by 64 bytes.
    write("onnx/initializer-claims-1e18-floats.onnx", onnx_model_with_initializer(
        (1, 10**9), (1, 10**9), (2, 1), (8, b"huge"), (9, b"\0" * 64)))
    # An initializer whose data lives in an external file outside the model's folder.
    write("onnx/external-data-outside.onnx", onnx_model_with_initializer(
        (1, 4), (2, 1), (8, b"weights"), (14, 1),
        (13, protobuf_field(1, b"location") + protobuf_field(2, b"../../../../etc/passwd"))))
    # Graphs that break what every pass assumes (ONNX requires nodes in topological order).
    write("onnx/cycle.onnx", onnx_graph(EMBED + [(b"a", b"Add", (b"x", b"h"), b"a.out"), (b"b", b"Relu", (b"a.out",), b"h")] + HEAD))
    write("onnx/dangling-input.onnx", onnx_graph(EMBED + [(b"a", b"Add", (b"x", b"nowhere"), b"h")] + HEAD))
    write("onnx/unknown-operator.onnx", onnx_graph(EMBED + [(b"a", b"FooBar", (b"x",), b"h")] + HEAD))
    write("onnx/opset-7.onnx", onnx_graph(EMBED + [(b"a", b"Relu", (b"x",), b"h")] + HEAD, opset=7))
    # Type constraints ONNX Runtime enforces at load: a float activation added to an int64 scalar,
    # and a MatMul whose weight is an int64 tensor (quantize used to pass both through, exit 0).
    write("onnx/mixed-types.onnx", onnx_graph(EMBED + [(b"a", b"Add", (b"x", b"one"), b"h")] + HEAD))
    write("onnx/integer-matmul-weight.onnx", onnx_graph(EMBED + [(b"a", b"Relu", (b"x",), b"h"),
                                                                 (b"head", b"MatMul", (b"h", b"one"), b"logits")] + HEAD[1:]))
    # A well-formed graph whose vocabulary (100 rows) is smaller than the tokenizer's ids: tract
    # panicked on the first id past the table.
    write("onnx/vocabulary-of-100.onnx", onnx_graph(EMBED + [(b"a", b"Relu", (b"x",), b"h")] + HEAD))


if __name__ == "__main__":
    checkpoints()
    torch_archives()
    configs()
    squad()
    onnx()
