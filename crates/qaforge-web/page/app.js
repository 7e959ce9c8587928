// The page: loads the site's model and tokenizer, asks questions, shows the answer in its context.
// All of the model's work is in qa.js; this file only talks to the person (and to tests, through
// window.qaforge).
import * as ort from "./ort/ort.wasm.min.mjs";
import { Tokenizer } from "./tokenizers/tokenizers.min.mjs";
import { QaTokenizer, QaError, predict, runWindows } from "./qa.js";

// Longest context accepted: about 25,000 tokens, some 100 windows of 384, a few seconds of the
// full-size model per question; longer texts get a message rather than a tab busy for minutes.
const MAX_CONTEXT_CHARS = 100_000;
const MAX_QUESTION_CHARS = 1_000;

const $ = (id) => document.getElementById(id);
// onnxruntime-web loads its .wasm from beside this page, never from a CDN. One thread: several
// need SharedArrayBuffer, which browsers give only to cross-origin-isolated pages, and a site
// that any plain web server serves cannot count on the headers that takes.
ort.env.wasm.wasmPaths = new URL("./ort/", import.meta.url).href;
ort.env.wasm.numThreads = 1;

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function fetchOk(file, as) {
  const response = await fetch(file);
  if (!response.ok) throw new QaError(`${file} could not be fetched (HTTP ${response.status})`);
  return as === "json" ? response.json() : response.arrayBuffer();
}

/** Everything loaded once: the site's settings, tokenizer and model session. */
async function load() {
  const started = performance.now();
  const site = await fetchOk("qaforge-site.json", "json");
  const [tokenizerJson, tokenizerConfig] = await Promise.all([fetchOk("tokenizer.json", "json"), fetchOk("tokenizer_config.json", "json")]);
  const tokenizer = new QaTokenizer(tokenizerJson, tokenizerConfig, Tokenizer);
  const bytes = await fetchOk(site.model.file);
  let session;
  try {
    session = await ort.InferenceSession.create(new Uint8Array(bytes), { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  } catch (e) {
    throw new QaError(`The model file ${site.model.file} did not load in onnxruntime-web: ${e.message ?? e}`);
  }
  const io = { inputs: site.model.inputs, start: site.model.outputs.start, end: site.model.outputs.end };
  const model = { io, padId: tokenizer.padId, maxLength: site.options.maxLength };
  const loadMs = performance.now() - started;
  return { site, tokenizer, session, model, loadMs, modelBytes: bytes.byteLength };
}

const yieldToBrowser = () => new Promise((resolve) => setTimeout(resolve, 0));

/** Answers one question; throws QaError with a message for the person. */
async function answer(state, question, context, progress = () => {}) {
  if (!context.trim()) throw new QaError("Paste a text to ask about first: the context is empty.");
  if (!question.trim()) throw new QaError("Type a question.");
  const length = Array.from(context).length;
  if (length > MAX_CONTEXT_CHARS) throw new QaError(`The text is too long: ${length.toLocaleString()} characters, and this page takes at most ${MAX_CONTEXT_CHARS.toLocaleString()}. Paste the part that holds the answer.`);
  if (question.length > MAX_QUESTION_CHARS) throw new QaError(`The question is too long: ${question.length} characters (at most ${MAX_QUESTION_CHARS}).`);
  const started = performance.now();
  const windows = state.tokenizer.features(question, context, state.site.options);
  const logits = await runWindows(ort, state.session, state.model, windows, async () => {
    progress(windows.length);
    await yieldToBrowser();
  });
  const prediction = predict(context, windows, logits, state.site.options);
  return { ...prediction, windows: windows.length, ms: performance.now() - started };
}

function render(context, result) {
  const answerEl = $("answer");
  const marked = $("highlighted");
  marked.replaceChildren();
  if (result.text) {
    answerEl.textContent = result.text;
    answerEl.classList.remove("none");
    const chars = Array.from(context);
    const mark = document.createElement("mark");
    mark.textContent = chars.slice(result.begin, result.end).join("");
    marked.append(chars.slice(0, result.begin).join(""), mark, chars.slice(result.end).join(""));
  } else {
    answerEl.textContent = "No answer: the model abstains (the text does not seem to say).";
    answerEl.classList.add("none");
    marked.append(context);
  }
  const lead = -result.nullOdds;
  $("scores").textContent =
    `Best span score ${result.score.toFixed(2)}, no-answer score ${result.nullScore.toFixed(2)} ` +
    `(${lead >= 0 ? "the span leads by" : "no answer leads by"} ${Math.abs(lead).toFixed(2)}); ` +
    `${result.windows} window${result.windows === 1 ? "" : "s"}, answered in ${result.ms.toFixed(0)} ms.`;
  $("result").hidden = false;
  if (result.text) marked.querySelector("mark").scrollIntoView({ block: "nearest" });
}

async function main() {
  let state;
  let readyResolve;
  const ready = new Promise((resolve) => (readyResolve = resolve));
  window.qaforge = {
    ready,
    /** For tests and apps: answers without the form. */
    ask: (question, context) => answer(state, question, context),
    /** For verification: start/end logits of pre-built windows ({ids, typeIds}). */
    logitsOf: async (windows) => (await runWindows(ort, state.session, state.model, windows)).map((l) => ({ start: Array.from(l.start), end: Array.from(l.end) })),
  };
  try {
    state = await load();
  } catch (e) {
    $("status").textContent = "The model is not available.";
    showError(e instanceof QaError ? e.message : `Loading failed: ${e.message ?? e}`);
    readyResolve({ ok: false, error: $("error").textContent });
    return;
  }
  const mb = (state.modelBytes / 1e6).toFixed(1);
  $("status").textContent = `Model loaded in ${state.loadMs.toFixed(0)} ms. Ask away.`;
  $("model-info").textContent =
    `${state.site.model.source} (${mb} MB, sha256 ${state.site.model.sha256.slice(0, 12)}…), run in this browser by onnxruntime-web ` +
    `${state.site.runtime["onnxruntime-web"]} (WebAssembly); windows of ${state.site.options.maxLength} tokens overlapping by ${state.site.options.docStride}.`;
  $("ask").disabled = false;
  $("ask-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    const context = $("context").value;
    const question = $("question").value;
    $("ask").disabled = true;
    $("status").textContent = "Thinking…";
    try {
      const result = await answer(state, question, context, (n) => ($("status").textContent = `Reading the text (${n} window${n === 1 ? "" : "s"})…`));
      render(context, result);
      $("status").textContent = `Answered in ${result.ms.toFixed(0)} ms (model loaded in ${state.loadMs.toFixed(0)} ms).`;
    } catch (e) {
      $("status").textContent = "";
      showError(e instanceof QaError ? e.message : `Something went wrong: ${e.message ?? e}`);
    } finally {
      $("ask").disabled = false;
    }
  });
  readyResolve({ ok: true, loadMs: state.loadMs });
}

main();
