// The safetensors format, read and written by hand for the tests: an 8-byte header length, a JSON
// header, then the tensors' bytes (small enough that a dependency would be more code to trust).
import { readFileSync, writeFileSync, renameSync } from "node:fs";

const ARRAYS = { I32: Int32Array, U8: Uint8Array, F32: Float32Array, I64: BigInt64Array };

/** name → { dtype, shape, data (a typed array) }, and `metadata`. */
export function readSafetensors(path) {
  const bytes = readFileSync(path);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString("utf8"));
  const body = bytes.subarray(8 + n);
  const tensors = { metadata: header.__metadata__ ?? {} };
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const Array = ARRAYS[info.dtype];
    if (!Array) throw new Error(`${path}: tensor ${name} has dtype ${info.dtype}, which this reader does not know`);
    const [begin, end] = info.data_offsets;
    const copy = body.subarray(begin, end);
    const aligned = new Uint8Array(copy.length);
    aligned.set(copy);
    tensors[name] = { dtype: info.dtype, shape: info.shape, data: new Array(aligned.buffer) };
  }
  return tensors;
}

/** Writes float32 tensors { name: { shape, data } } with string metadata, atomically. */
export function writeSafetensors(path, tensors, metadata) {
  const header = { __metadata__: metadata };
  const blobs = [];
  let offset = 0;
  for (const [name, { shape, data }] of Object.entries(tensors)) {
    const blob = Buffer.from(Float32Array.from(data).buffer);
    header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + blob.length] };
    blobs.push(blob);
    offset += blob.length;
  }
  let text = JSON.stringify(header);
  text += " ".repeat((8 - (text.length % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
  writeFileSync(`${path}.partial`, Buffer.concat([length, Buffer.from(text), ...blobs]));
  renameSync(`${path}.partial`, path);
}

/** A bundle's features as windows ({ ids, typeIds, offsets }, real tokens only) with their question index. */
export function bundleWindows(featuresPath) {
  const t = readSafetensors(featuresPath);
  const [count, m] = t.input_ids.shape;
  const windows = [];
  for (let i = 0; i < count; i++) {
    let n = 0;
    while (n < m && t.attention_mask.data[i * m + n]) n++;
    const ids = Array.from(t.input_ids.data.subarray(i * m, i * m + n));
    const typeIds = Array.from(t.token_type_ids.data.subarray(i * m, i * m + n));
    const offsets = [];
    for (let k = 0; k < n; k++) {
      const b = t.offsets.data[(i * m + k) * 2];
      const e = t.offsets.data[(i * m + k) * 2 + 1];
      offsets.push(b >= 0 && e >= 0 ? [b, e] : null);
    }
    windows.push({ ids, typeIds, offsets, example: t.example_index.data[i] });
  }
  return { windows, maxLength: m };
}
