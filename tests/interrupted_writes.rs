//! No command leaves a partial artifact: convert and quantize of a full-size MobileBERT are
//! killed (SIGKILL, which no cleanup code can intercept) at several moments while they run, and
//! the target must then hold exactly the previous file, or, when the kill came after the rename,
//! exactly the complete artifact (outputs are byte-identical across runs, so "complete" is exact).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{full_size_checkpoint, qaforge, text};

const PREVIOUS: &[u8] = b"the previous artifact, which an interrupted run must leave intact";

/// When to kill a run.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// This long after the start.
    Delay(Duration),
    /// This long after the run is first seen writing: a new file appears beside the target or
    /// the target itself changes size (what a non-atomic writer would do).
    AfterWriteStarts(Duration),
}

/// Starts `args`, kills it at `at` (if still running) and returns whether it had finished.
fn run_and_kill(args: &[&str], target: &Path, at: KillAt) -> bool {
    let dir = target.parent().unwrap();
    let names = |dir: &Path| {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect::<std::collections::BTreeSet<_>>()
    };
    let before = names(dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_qaforge"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut deadline = match at {
        KillAt::Delay(d) => Some(started + d),
        KillAt::AfterWriteStarts(_) => None,
    };
    loop {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        if let (None, KillAt::AfterWriteStarts(extra)) = (deadline, at) {
            let target_changed = std::fs::metadata(target).map_or(true, |m| m.len() != PREVIOUS.len() as u64);
            if target_changed || names(dir) != before {
                deadline = Some(Instant::now() + extra);
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    false
}

/// Runs `args` (which write `target`) once to completion for the expected bytes, then kills it
/// at growing delays and at moments inside its write, then lets one run finish; after every
/// killed run the target holds PREVIOUS or the expected bytes. Returns how many runs were killed
/// before the rename.
fn interrupt_until_done(args: &[&str], target: &Path) -> usize {
    let output = qaforge(args);
    assert!(output.status.success(), "{}", text(&output));
    let expected = std::fs::read(target).unwrap();
    std::fs::write(target, PREVIOUS).unwrap();
    let mut moments: Vec<KillAt> =
        [50u64, 300, 1000].iter().map(|&ms| KillAt::Delay(Duration::from_millis(ms))).collect();
    moments.extend([0u64, 1, 3, 10, 30].iter().map(|&ms| KillAt::AfterWriteStarts(Duration::from_millis(ms))));
    let mut killed_before_rename = 0;
    for at in moments {
        if run_and_kill(args, target, at) {
            continue;
        }
        let now = std::fs::read(target).unwrap();
        if now == PREVIOUS {
            killed_before_rename += 1;
        } else {
            assert!(now == expected, "{args:?} killed at {at:?} left a target that is neither the previous file nor the complete artifact ({} bytes)", now.len());
            std::fs::write(target, PREVIOUS).unwrap();
        }
    }
    let output = qaforge(args);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(std::fs::read(target).unwrap(), expected, "an uninterrupted run did not write the complete artifact");
    killed_before_rename
}

#[test]
fn killed_convert_and_quantize_leave_the_previous_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = full_size_checkpoint(dir.path(), 3);

    let fp32 = dir.path().join("full.onnx");
    let convert = ["convert", model_dir.to_str().unwrap(), "-o", fp32.to_str().unwrap()];
    let killed = interrupt_until_done(&convert, &fp32);
    assert!(killed >= 2, "convert finished before it could be interrupted twice ({killed})");
    let model = qaforge_onnx::read_model(&fp32).unwrap();
    assert_eq!(model.graph.unwrap().output.len(), 2);

    let fp16 = dir.path().join("full.fp16.onnx");
    let quantize = ["quantize", fp32.to_str().unwrap(), "-o", fp16.to_str().unwrap(), "--precision", "fp16"];
    let killed = interrupt_until_done(&quantize, &fp16);
    assert!(killed >= 2, "quantize finished before it could be interrupted twice ({killed})");
    assert!(qaforge_onnx::read_model(&fp16).is_ok());
}
