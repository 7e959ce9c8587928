#!/usr/bin/env python3
"""Compute an artifact's logits on the device itself, for `qaforge verify --logits`.

Carry this file, the artifact (.onnx or .ort) and a golden bundle's features to the device (a
phone's Python, an ARM64 board, an emulator, a device farm host) and run

    python3 run_on_device.py ARTIFACT BUNDLE -o logits.safetensors [--batch-size 1] [--device TEXT]
                             [--also ARTIFACT2 BUNDLE2 OUT2 ...]   (more runs in one process)

It needs only numpy and onnxruntime. BUNDLE is a bundle directory (`qaforge golden`'s output) or a
shipped fixture golden/<fixture>; only its manifest.json and the features it names are read. The
artifact runs at the batch size the app uses (1 by default: int8-dynamic quantizes activations
over the whole batch, so batch composition changes its logits), each batch padded to one [PAD]
token more than its longest feature (an app must pad so too, or to max_length). The output holds start_logits and end_logits, float32 [features, max_length] in the
bundle's feature order (positions past a feature's length are 0), and metadata naming the
features' and the artifact's sha256, the runtime and the device, which `qaforge verify --logits`
checks. Back on the build machine:

    qaforge verify ARTIFACT --golden BUNDLE --logits logits.safetensors --report device.json
"""
import argparse
import hashlib
import json
import os
import platform
import struct
import sys
import time

import numpy as np

# safetensors dtypes of integer feature tensors (the format is small enough to read and write by
# hand, and a device's Python should not need the safetensors package).
DTYPES = {"I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[begin:end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    os.replace(tmp, path)


def bundle_features(bundle):
    """(features path, its sha256 as the manifest records it) of a bundle or fixture directory."""
    for manifest in (os.path.join(bundle, "manifest.json"), os.path.join(bundle, "golden", "manifest.json")):
        if os.path.isfile(manifest):
            with open(manifest) as f:
                entry = json.load(f)["files"]["features"]
            path = os.path.normpath(os.path.join(os.path.dirname(manifest), entry["path"]))
            return path, entry["sha256"]
    sys.exit(f"{bundle}: no manifest.json (a golden bundle, or a fixture directory golden/<fixture>)")


# The CPU features that decide ONNX Runtime's int8 and float kernels (x86: FMA, AVX2, AVX-512,
# VNNI; ARM64: NEON, dot product, i8mm, SVE, SME): the device description names only these.
KERNEL_FEATURES = {"fma", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm", "sve", "sve2", "svei8mm", "sme", "bf16"}


def cpu_description():
    model, features = platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key in ("model name", "CPU part") and model == platform.machine():
                    model = f"{platform.machine()} {key} {value}"
                if key in ("flags", "Features") and not features:
                    features = " ".join(f for f in value.split() if f in KERNEL_FEATURES)
    except OSError:
        pass
    return model, features


def role_of(name):
    name = name.split(":")[0].lower()
    for role, names in (("ids", ("input_ids", "input_word_ids")), ("mask", ("attention_mask", "input_mask")), ("types", ("token_type_ids", "segment_ids", "input_type_ids"))):
        if name in names:
            return role
    return None


def run(ort, artifact, bundle, output, batch_size, device_words, threads):
    """Runs `artifact` over the features of `bundle` and writes the logits file `output`."""
    started = time.perf_counter()
    features_path, features_sha256 = bundle_features(bundle)
    if sha256_file(features_path) != features_sha256:
        sys.exit(f"{features_path}: does not match the bundle's manifest (sha256)")
    features = read_safetensors(features_path)
    ids, mask, types = (features[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids"))
    count, max_length = ids.shape
    lengths = mask.sum(axis=1)

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    roles = [role_of(i.name) for i in inputs]
    if None in roles:
        roles = ["ids", "mask", "types"][: len(inputs)]
    outputs = [o.name for o in session.get_outputs()]
    names = [n for n in ("start_logits", "end_logits") if n in outputs] or outputs[:2]
    by_role = {"ids": ids, "mask": mask, "types": types}

    start = np.zeros((count, max_length), np.float32)
    end = np.zeros((count, max_length), np.float32)
    for first in range(0, count, batch_size):
        rows = slice(first, min(first + batch_size, count))
        # One padding token more than the longest feature, as qaforge runs them: MobileBERT's
        # trigram embedding lets the last real token see the token after it, which is [PAD] in
        # features padded to max_length (as run_qa.py pads them) and zero if cut at the feature.
        width = min(int(lengths[rows].max()) + 1, max_length)
        feed = {}
        for i, role in zip(inputs, roles):
            dtype = np.int32 if i.type == "tensor(int32)" else np.int64
            feed[i.name] = by_role[role][rows, :width].astype(dtype)
        s, e = session.run(names, feed)
        start[rows, :width], end[rows, :width] = s, e
        # Positions past each feature's own length were computed as padding: left at 0.
        for k in range(rows.start, rows.stop):
            start[k, lengths[k]:] = 0
            end[k, lengths[k]:] = 0

    model, cpu_features = cpu_description()
    device = " ".join(x for x in (model, device_words, f"({cpu_features})" if cpu_features else "") if x)
    metadata = {
        "qaforge.logits.features_sha256": features_sha256,
        "qaforge.logits.artifact_sha256": sha256_file(artifact),
        "qaforge.logits.runtime": f"onnxruntime {ort.__version__} ({session.get_providers()[0]}, python {platform.python_version()})",
        "qaforge.logits.device": device,
        "qaforge.logits.batch_size": str(batch_size),
    }
    write_safetensors(output, {"start_logits": start, "end_logits": end}, metadata)
    print(f"{output}: {count} features of {artifact} in {time.perf_counter() - started:.1f} s; {metadata['qaforge.logits.runtime']} on {device}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact")
    parser.add_argument("bundle")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--also", nargs=3, action="append", default=[], metavar=("ARTIFACT", "BUNDLE", "OUTPUT"), help="another run in the same process")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="", help="words added to the device description (e.g. the emulated CPU model)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    args = parser.parse_args()
    if args.batch_size < 1:
        sys.exit("--batch-size must be at least 1")
    import onnxruntime as ort

    for artifact, bundle, output in [(args.artifact, args.bundle, args.output), *args.also]:
        run(ort, artifact, bundle, output, args.batch_size, args.device, args.threads)


if __name__ == "__main__":
    main()
