# qaforge: `make test` runs everything CI runs; `make demo` shows the main job on a shipped fixture.
SHELL := /bin/bash
FIXTURES := mobilebert-tiny mobilebert-flipped mobilebert-nobottleneck
PYTHON ?= python3
CHECK_VENV := .venv/check
GOLDEN_VENV := golden/.venv
ARTIFACTS := target/artifacts
QAFORGE := target/debug/qaforge

.PHONY: all build test test-rust test-onnx demo golden bench clean

all: build

build:
	cargo build --workspace

## Everything CI runs: Rust unit and end-to-end tests, then onnx.checker and ONNX Runtime on every artifact.
test: test-rust test-onnx

test-rust:
	cargo test --workspace

$(CHECK_VENV)/.installed: tests/python/requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "make test needs $(PYTHON) (with venv and pip) for the ONNX Runtime check" >&2; exit 1; }
	$(PYTHON) -m venv $(CHECK_VENV)
	$(CHECK_VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

test-onnx: $(CHECK_VENV)/.installed build
	@mkdir -p $(ARTIFACTS)
	@for f in $(FIXTURES); do $(QAFORGE) convert golden/$$f -o $(ARTIFACTS)/$$f.onnx > /dev/null || exit 1; done
	$(CHECK_VENV)/bin/python tests/python/check_onnx.py $(ARTIFACTS) golden

## The main job on the shipped fixture: convert, then verify against the PyTorch goldens.
demo: build
	@mkdir -p $(ARTIFACTS)/demo
	$(QAFORGE) convert golden/mobilebert-tiny -o $(ARTIFACTS)/demo/mobilebert-tiny.onnx
	$(QAFORGE) verify $(ARTIFACTS)/demo/mobilebert-tiny.onnx --golden golden/mobilebert-tiny --report $(ARTIFACTS)/demo/report.json

## Regenerates golden/ with the PyTorch reference (downloads torch: ~3 GB; never run by CI).
golden:
	@test -d ../shared/data || { echo "make golden needs ../shared/data (SQuAD v2 dev set and BERT vocabulary)" >&2; exit 1; }
	test -x $(GOLDEN_VENV)/bin/python || $(PYTHON) -m venv $(GOLDEN_VENV)
	$(GOLDEN_VENV)/bin/pip install --quiet --disable-pip-version-check -r golden/requirements.txt
	$(GOLDEN_VENV)/bin/python golden/generate.py --shared ../shared/data --out golden

## Benchmarks (never part of make test): conversion of a full-size MobileBERT and verify throughput.
bench:
	cargo run --release -p qaforge --example bench

clean:
	cargo clean
	rm -rf .venv $(GOLDEN_VENV)
