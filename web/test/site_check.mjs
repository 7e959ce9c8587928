#!/usr/bin/env node
// Checks a web package against a golden bundle outside the browser, in Node with the same
// onnxruntime-web WebAssembly build the page carries:
//  1. the page's features (qa.js: ids from @huggingface/tokenizers with the site's tokenizer.json,
//     windows and character offsets of its own) equal the bundle's features, which the Python
//     reference wrote with transformers' fast tokenizer: ids, token types and offsets;
//  2. with --logits OUT: the logits of the bundle's features as the page computes them (batch 1,
//     one padding token), written for `qaforge verify --logits`.
// usage: node web/test/site_check.mjs SITE BUNDLE [--logits OUT]
import assert from "node:assert/strict";
import { join } from "node:path";
import * as ort from "onnxruntime-web";
import { runWindows } from "../../crates/qaforge-web/page/qa.js";
import { bundleWindows, writeSafetensors } from "./safetensors.mjs";
import { loadSite, loadBundle, sha256File } from "./site.mjs";

const [site, bundleDir, flag, out] = process.argv.slice(2);
if (!site || !bundleDir || (flag && (flag !== "--logits" || !out))) {
  console.error("usage: node web/test/site_check.mjs SITE BUNDLE [--logits OUT]");
  process.exit(2);
}
const s = loadSite(site);
const bundle = loadBundle(bundleDir);
const { windows: golden, maxLength } = bundleWindows(bundle.featuresPath);

const ours = bundle.examples.flatMap((e, index) => s.tokenizer.features(e.question, e.context, s.config.options).map((w) => ({ ...w, example: index, id: e.id })));
assert.equal(ours.length, golden.length, `${site}: ${ours.length} features, the bundle has ${golden.length}`);
let contextTokens = 0;
ours.forEach((w, i) => {
  const g = golden[i];
  const where = `${site}: feature ${i} (question ${w.id})`;
  assert.equal(w.example, g.example, `${where}: question index`);
  assert.deepEqual(w.ids, g.ids, `${where}: token ids`);
  assert.deepEqual(w.typeIds, g.typeIds, `${where}: token types`);
  assert.deepEqual(w.offsets, g.offsets, `${where}: character offsets`);
  contextTokens += g.offsets.filter(Boolean).length;
});
console.log(`features  ${ours.length} features of ${bundle.examples.length} questions equal the bundle's (${contextTokens} context tokens' offsets)`);

if (out) {
  ort.env.wasm.numThreads = 1;
  const started = performance.now();
  const session = await ort.InferenceSession.create(join(site, s.config.model.file), { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  const logits = await runWindows(ort, session, { io: s.io, padId: s.tokenizer.padId, maxLength }, golden);
  const start = new Float32Array(golden.length * maxLength);
  const end = new Float32Array(golden.length * maxLength);
  logits.forEach((l, i) => {
    start.set(l.start, i * maxLength);
    end.set(l.end, i * maxLength);
  });
  writeSafetensors(out, { start_logits: { shape: [golden.length, maxLength], data: start }, end_logits: { shape: [golden.length, maxLength], data: end } }, {
    "qaforge.logits.features_sha256": sha256File(bundle.featuresPath),
    "qaforge.logits.artifact_sha256": sha256File(join(site, s.config.model.file)),
    "qaforge.logits.runtime": `onnxruntime-web ${s.config.runtime["onnxruntime-web"]} (WebAssembly, 1 thread) in Node.js ${process.versions.node}`,
    "qaforge.logits.device": `${process.arch} (V8 ${process.versions.v8})`,
    "qaforge.logits.batch_size": "1",
  });
  console.log(`logits    ${golden.length} features in ${((performance.now() - started) / 1000).toFixed(1)} s -> ${out}`);
}
