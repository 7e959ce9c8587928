//! The end-to-end tests of the qaforge binary, one module per subject (tests/<subject>.rs), in one
//! test binary: each integration-test file used to be a binary of its own, and make test linked
//! seventeen of them against tract, candle, tokenizers and ort on a 2-core machine, then ran them
//! one after another, so one long test held the machine while the other core waited. One binary
//! links once and its harness runs every test on both cores.
//!
//! `cargo test --test cli quantize::` runs one subject; `cargo test --test cli NAME` one test.

mod common;

mod answer;
mod batch;
mod bert_family;
mod bounded_memory;
mod bundle;
mod convert;
mod device_logits;
mod eval;
mod features;
mod golden;
mod hostile_checkpoints;
mod hostile_corpus;
mod interrupted_writes;
mod package_web;
mod pipeline;
mod postprocess;
mod quantize;
mod reference;
mod serve;
