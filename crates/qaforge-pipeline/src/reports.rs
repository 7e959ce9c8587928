//! Verify reports on disk: writing one (JSON for machines, Markdown beside it for people),
//! reading them back for `table` and `merge`, and scoring predictions for `eval`.

use std::path::Path;

use qaforge_verify::Report;

use crate::PipelineError;

fn read(path: &Path) -> Result<Vec<u8>, PipelineError> {
    std::fs::read(path).map_err(|source| PipelineError::Io { path: path.to_owned(), source })
}

/// Writes `report` as JSON to `path` and as Markdown beside it (same name, .md), each atomically.
pub fn write_report(report: &Report, path: &Path) -> Result<(), PipelineError> {
    let json =
        serde_json::to_string_pretty(report).map_err(|e| PipelineError::Request(format!("{}: {e}", path.display())))?;
    qaforge_onnx::write_atomically(path, format!("{json}\n").as_bytes())?;
    qaforge_onnx::write_atomically(&path.with_extension("md"), report.markdown().as_bytes())?;
    Ok(())
}

/// The Markdown table rows of verify reports (under [`qaforge_verify::MARKDOWN_HEADER`]).
pub fn table_rows(paths: &[impl AsRef<Path>]) -> Result<Vec<String>, PipelineError> {
    paths
        .iter()
        .map(|path| {
            let path = path.as_ref();
            let report: serde_json::Value = serde_json::from_slice(&read(path)?)
                .map_err(|e| PipelineError::Request(format!("{}: not JSON: {e}", path.display())))?;
            report["table_row"].as_str().map(str::to_string).ok_or_else(|| {
                PipelineError::Request(format!("{}: not a qaforge verify report (no table_row)", path.display()))
            })
        })
        .collect()
}

/// Merges the partial reports of `verify --shard K/N` against `golden` (default: the bundle
/// the reports name) into the report one unsharded run gives.
pub fn merge(paths: &[impl AsRef<Path>], golden: Option<&Path>) -> Result<Report, PipelineError> {
    let mut parts = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let part: Report = serde_json::from_slice(&read(path)?)
            .map_err(|e| PipelineError::Request(format!("{}: not a qaforge verify report: {e}", path.display())))?;
        parts.push(part);
    }
    let bundle_dir = match golden {
        Some(dir) => dir.to_owned(),
        None => {
            parts.first().map(|p| p.run.golden.clone()).ok_or_else(|| PipelineError::Request("no reports".into()))?
        }
    };
    let bundle = qaforge_verify::Bundle::open(&bundle_dir)?;
    Ok(qaforge_verify::merge(&parts, &bundle)?)
}

/// Predictions scored like the official evaluate-v2.0.py.
#[derive(Debug)]
pub struct Evaluation {
    /// The data in words and how many questions were predicted.
    pub summary: String,
    /// Questions without a prediction (left out of the totals), if any.
    pub unpredicted: usize,
    /// The official script's JSON.
    pub json: String,
}

/// Scores `predictions` (question id → answer text) on `data`, with optional no-answer
/// probabilities and threshold, as evaluate-v2.0.py does, and writes the JSON to `out_file` too.
pub fn evaluate(
    data: &Path,
    predictions: &Path,
    na_prob_file: Option<&Path>,
    na_prob_thresh: f64,
    out_file: Option<&Path>,
) -> Result<Evaluation, PipelineError> {
    let squad = qaforge_squad::SquadFile::load(data)?;
    let predicted = qaforge_squad::load_predictions(predictions)?;
    let scored = squad.examples.iter().filter(|e| predicted.contains_key(&e.id)).count();
    if scored == 0 {
        return Err(PipelineError::Request(format!(
            "{}: none of its {} predictions is a question of {}",
            predictions.display(),
            predicted.len(),
            data.display()
        )));
    }
    let na_probs = na_prob_file.map(qaforge_squad::NoAnswerProbabilities::load).transpose()?;
    let metrics = qaforge_squad::evaluate_with_thresholds(&squad, &predicted, na_probs.as_ref(), na_prob_thresh)?;
    let json = serde_json::to_string_pretty(&metrics).map_err(|e| PipelineError::Request(e.to_string()))?;
    if let Some(path) = out_file {
        qaforge_onnx::write_atomically(path, format!("{json}\n").as_bytes())?;
    }
    Ok(Evaluation {
        summary: format!("{}: {}; {} predicted", data.display(), squad.summary(), scored),
        unpredicted: squad.examples.len() - scored,
        json,
    })
}
