//! The report of one verification: its types (JSON for machines, through serde), its Markdown for
//! people, and the [`Verdict`] the binary turns into an exit code.

use std::collections::BTreeMap;
use std::path::PathBuf;

use qaforge_provenance::Precision;
use qaforge_squad::Metrics;
use serde::{Deserialize, Serialize};

use crate::stats::{FeatureAgreement, LogitStats};
use crate::tolerances::Tolerances;

/// SQuAD v2 scores of the artifact and the reference on the golden evaluation slice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SquadScores {
    /// The artifact's predictions against the gold answers.
    pub artifact: Metrics,
    /// The reference predictions (the bundle's reference logits, post-processed like the artifact's) against the gold answers.
    pub reference: Metrics,
    /// reference F1 − artifact F1, in points (positive: the artifact is worse).
    pub f1_drop: f64,
    /// Exact match of the artifact's predictions with the reference predictions, in percent.
    pub agreement_exact: f64,
    /// F1 of the artifact's predictions against the reference predictions, in percent.
    pub agreement_f1: f64,
    /// Predictions identical to the reference's.
    pub identical_predictions: usize,
    /// Questions.
    pub questions: usize,
    /// Question ids whose prediction differs from the reference's (first 20).
    pub differing: Vec<String>,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Every tolerance met, by an engine that computes the artifact as its target does.
    #[serde(rename = "PASS")]
    Pass,
    /// One shard of a run, judged: merge every shard's report (`qaforge merge`) for the verdict.
    #[serde(rename = "PARTIAL")]
    Partial,
    /// Outside a tolerance.
    #[serde(rename = "FAIL")]
    Fail,
    /// The engine does not compute this artifact as its target does on this machine: the
    /// figures are not the artifact's, so it is neither passed nor failed.
    #[serde(rename = "NOT VERIFIED")]
    NotVerified,
}

impl Verdict {
    /// The word reports and tables print.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Partial => "PARTIAL",
            Verdict::Fail => "FAIL",
            Verdict::NotVerified => "NOT VERIFIED",
        }
    }

    /// The process exit code: 0 for PASS and PARTIAL, 1 for FAIL, 3 for NOT VERIFIED (2 is every
    /// other error: bad input or usage).
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass | Verdict::Partial => 0,
            Verdict::Fail => 1,
            Verdict::NotVerified => 3,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The artifact's identity and the run's settings: what every shard of a run shares, built once
/// per run ([`crate::judge`](fn@crate::judge)) and carried whole from the shards' reports into their merge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunHeader {
    /// The artifact.
    pub artifact: PathBuf,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Its sha256.
    pub sha256: String,
    /// Its precision (metadata `qaforge.precision`, else inferred from its operators, or given).
    pub precision: Precision,
    /// Where the precision comes from: its metadata, its operators (with the evidence), or `--precision`.
    #[serde(default)]
    pub precision_source: String,
    /// Its provenance metadata.
    pub metadata: BTreeMap<String, String>,
    /// The golden bundle it was compared with.
    pub golden: PathBuf,
    /// What computed the bundle's reference logits.
    pub reference: String,
    /// Provenance notes: what could not be checked, and mismatches allowed by
    /// `--allow-other-checkpoint`.
    pub provenance: Vec<String>,
    /// Engine and CPU the figures were measured with.
    pub engine: String,
    /// CPU features relevant to int8 kernels.
    pub cpu: String,
    /// Whether the engine computes this artifact's integer products exactly on this CPU, as its
    /// target does. When false the figures are not the artifact's: it is neither passed nor failed.
    pub engine_exact: bool,
    /// Why the engine is not exact here, and what to do instead.
    pub engine_note: Option<String>,
    /// Wall time of loading and running the artifact.
    pub seconds: f64,
    /// Features per batch the logits were computed at (int8-dynamic's depend on it), where known.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// The tolerances applied.
    pub tolerances: Tolerances,
}

/// The result of verifying one artifact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The artifact and the run (every shard of a run shares these).
    #[serde(flatten)]
    pub run: RunHeader,
    /// The bundle's SQuAD data in words (articles, questions, answerable / unanswerable), or a
    /// shard's slice of it.
    pub data: String,
    /// Features run.
    pub features: usize,
    /// Logit agreement with the reference.
    pub logits: LogitStats,
    /// Share of features whose start and end argmax equal the reference's.
    pub argmax_agreement: f64,
    /// SQuAD scores.
    pub squad: SquadScores,
    /// Every tolerance the artifact misses, in words.
    pub failures: Vec<String>,
    /// No failures, and an exact engine.
    pub pass: bool,
    /// PASS, PARTIAL, FAIL or NOT VERIFIED.
    pub verdict: Verdict,
    /// This report's row of the Markdown comparison table (under [`MARKDOWN_HEADER`]).
    pub table_row: String,
    /// Questions whose prediction differs from the reference's where the reference's own margin
    /// is within 4 × max |Δ| (near ties: excused for fp32).
    #[serde(default)]
    pub near_ties: Vec<String>,
    /// A shard's data for `qaforge merge` (partial reports only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub part: Option<ShardPart>,
}

/// A file size for people: MiB with two decimals, or KiB with one (every summary and report
/// prints sizes this way).
pub fn human_bytes(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// The header of the Markdown table of [`Report::markdown_row`].
pub const MARKDOWN_HEADER: &str = "| artifact | precision | size | max abs Δ | cosine | argmax agree | EM | F1 | ΔF1 | agreement F1 | time | verdict |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|";

impl Report {
    /// One row of the Markdown comparison table.
    pub fn markdown_row(&self) -> String {
        let run = &self.run;
        format!(
            "| {} | {} | {} | {:.2e} | {:.6} | {:.1}% | {:.2} | {:.2} | {:+.2} | {:.2} | {:.2} s | {} |",
            run.artifact
                .file_name()
                .map_or_else(|| run.artifact.display().to_string(), |n| n.to_string_lossy().into_owned()),
            run.precision,
            human_bytes(run.size_bytes),
            self.logits.max_abs_diff,
            self.logits.cosine,
            100.0 * self.argmax_agreement,
            self.squad.artifact.exact,
            self.squad.artifact.f1,
            -self.squad.f1_drop,
            self.squad.agreement_f1,
            run.seconds,
            self.verdict,
        )
    }

    /// Where the logits were computed: the engine, the CPU and the batch size, as the summary
    /// line and the Markdown report say it.
    pub fn computed_on(&self) -> String {
        let run = &self.run;
        format!(
            "{} on {}{}",
            run.engine,
            run.cpu,
            run.batch_size.map_or_else(String::new, |b| format!(", batch size {b}"))
        )
    }

    /// The one-line summary printed under the table row: the data, the run, the reference's F1
    /// and how many predictions are the reference's.
    pub fn summary(&self) -> String {
        format!(
            "{}: {}; {} features in {:.2} s ({}); reference F1 {:.2}; {} of {} predictions identical",
            self.run.artifact.display(),
            self.data,
            self.features,
            self.run.seconds,
            self.computed_on(),
            self.squad.reference.f1,
            self.squad.identical_predictions,
            self.squad.questions
        )
    }

    /// The verdict in words, as the last line a command prints: why it failed, why it is not
    /// verified, what to do with a partial report, or which tolerances it passed.
    pub fn conclusion(&self) -> String {
        match self.verdict {
            Verdict::Pass => {
                format!("PASS ({} tolerances; precision {})", self.run.precision, self.run.precision_source)
            }
            Verdict::Partial => {
                let shard = self
                    .part
                    .as_ref()
                    .map_or_else(String::new, |p| format!(" (shard {}/{})", p.shard.index + 1, p.shard.count));
                format!("PARTIAL{shard}: merge every shard's report with `qaforge merge`")
            }
            Verdict::Fail => self.failures.join("; "),
            Verdict::NotVerified => self.run.engine_note.clone().unwrap_or_default(),
        }
    }

    /// The report for people: the table, the reference's scores, tolerances and failures.
    pub fn markdown(&self) -> String {
        let run = &self.run;
        let mut s =
            format!("# qaforge verify: {}\n\n{MARKDOWN_HEADER}\n{}\n\n", run.artifact.display(), self.markdown_row());
        s += &format!(
            "Reference ({}) on the same {} questions: EM {:.2}, F1 {:.2}. Golden bundle `{}`, {} features, engine {}.\n\n",
            run.reference,
            self.squad.questions,
            self.squad.reference.exact,
            self.squad.reference.f1,
            run.golden.display(),
            self.features,
            self.computed_on()
        );
        s += &format!(
            "Tolerances ({}, {}): {}\n\n",
            run.precision,
            run.precision_source,
            serde_json::to_string(&run.tolerances).unwrap_or_default()
        );
        if !self.near_ties.is_empty() {
            s += &format!(
                "Near ties (predictions that differ where the reference's own margin is within 4 × max |Δ|): {}.\n\n",
                self.near_ties.join(", ")
            );
        }
        for note in &run.provenance {
            s += &format!("Provenance: {note}.\n\n");
        }
        if let Some(note) = &run.engine_note {
            s += &format!("**Not verified on this machine.** {note}.\n\n");
        }
        if self.failures.is_empty() {
            s += "All tolerances met.\n";
        } else {
            s += "Failures:\n";
            for f in &self.failures {
                s += &format!("- {f}\n");
            }
        }
        s
    }
}

/// A deterministic slice of a verification run: shard `index` (0-based) of `count`. Shards split
/// the bundle's questions into contiguous runs; each shard runs the global batches its features
/// fall in, so every feature's logits are computed exactly as in an unsharded run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based.
    pub index: usize,
    /// Shards in all (≥ 1).
    pub count: usize,
}

impl Shard {
    /// The whole run.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Parses `K/N` (1-based K, as the CLI and CI matrices write it).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (k, n) = text.split_once('/').ok_or_else(|| format!("`{text}`: expected K/N, e.g. 2/4"))?;
        let (k, n): (usize, usize) = (
            k.trim().parse().map_err(|_| format!("`{text}`: K is not a number"))?,
            n.trim().parse().map_err(|_| format!("`{text}`: N is not a number"))?,
        );
        if n == 0 || k == 0 || k > n {
            return Err(format!("`{text}`: need 1 ≤ K ≤ N"));
        }
        Ok(Shard { index: k - 1, count: n })
    }

    /// This shard's questions out of `questions`.
    pub fn questions(self, questions: usize) -> std::ops::Range<usize> {
        let at = |k: usize| k * questions / self.count;
        at(self.index)..at(self.index + 1)
    }
}

/// What a shard's partial report carries for `qaforge merge`: its per-feature agreements and its
/// questions' predictions (the artifact's and the reference's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardPart {
    /// Which shard.
    pub shard: Shard,
    /// sha256 of the bundle's manifest (every shard must have read the same bundle).
    pub bundle_manifest_sha256: String,
    /// Questions of the bundle this shard verified.
    pub questions: (usize, usize),
    /// Features of those questions.
    pub features: (usize, usize),
    /// One agreement per feature, in feature order.
    pub feature_agreements: Vec<FeatureAgreement>,
    /// The artifact's predictions.
    pub predictions: BTreeMap<String, String>,
    /// The reference's predictions.
    pub reference_predictions: BTreeMap<String, String>,
    /// The reference's decision margin ([`qaforge_squad::Prediction::margin`]) of every question
    /// whose prediction differs, as f32 bits.
    pub differing_margins: BTreeMap<String, u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_keep_their_words_in_json_and_map_to_exit_codes() {
        for (verdict, word, code) in [
            (Verdict::Pass, "PASS", 0),
            (Verdict::Partial, "PARTIAL", 0),
            (Verdict::Fail, "FAIL", 1),
            (Verdict::NotVerified, "NOT VERIFIED", 3),
        ] {
            assert_eq!(serde_json::to_string(&verdict).unwrap(), format!("\"{word}\""));
            assert_eq!(serde_json::from_str::<Verdict>(&format!("\"{word}\"")).unwrap(), verdict);
            assert_eq!((verdict.to_string(), verdict.exit_code()), (word.to_string(), code));
        }
    }
}
