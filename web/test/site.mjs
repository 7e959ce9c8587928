// A web package (`qaforge package --format web`) loaded outside the browser, as its page loads it:
// its settings, tokenizer and model. Shared by the node checks and the browser test.
import { readFileSync, existsSync } from "node:fs";
import { join, dirname } from "node:path";
import { createHash } from "node:crypto";
import { Tokenizer } from "@huggingface/tokenizers";
import { QaTokenizer } from "../../crates/qaforge-web/page/qa.js";

export function loadSite(site) {
  const read = (file) => JSON.parse(readFileSync(join(site, file), "utf8"));
  const config = read("qaforge-site.json");
  const tokenizer = new QaTokenizer(read("tokenizer.json"), read("tokenizer_config.json"), Tokenizer);
  return { dir: site, config, tokenizer, io: { inputs: config.model.inputs, start: config.model.outputs.start, end: config.model.outputs.end } };
}

export function sha256File(path) {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** A golden bundle (or fixture golden/ folder): its manifest, data and features paths. */
export function loadBundle(bundle) {
  const manifestPath = join(bundle, "manifest.json");
  if (!existsSync(manifestPath)) throw new Error(`${bundle}: no manifest.json (a golden bundle)`);
  const manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
  const at = (entry) => join(dirname(manifestPath), manifest.files[entry].path);
  const data = JSON.parse(readFileSync(at("data"), "utf8"));
  const examples = data.data.flatMap((a) => a.paragraphs.flatMap((p) => p.qas.map((q) => ({ id: q.id, question: q.question, context: p.context }))));
  return { manifest, examples, featuresPath: at("features"), featuresSha256: manifest.files.features.sha256 };
}
