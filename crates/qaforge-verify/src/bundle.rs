//! Golden bundles: one directory format for every reference, whoever computed it (PyTorch through
//! golden/generate.py, or `qaforge golden` with the candle reference). A bundle holds the SQuAD data
//! it was made from, run_qa.py features, the reference start/end logits, their predictions and
//! metrics, and `manifest.json`, which names the model (sha256 of checkpoint and tokenizer), the
//! data, the settings and the reference, and gives every file's size and sha256. Verification reads
//! nothing that the manifest does not vouch for.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use qaforge_provenance::{sha256_finish, Digest, Sha256Hasher as Sha256};
use qaforge_squad::{Features, SquadFile};
use serde::{Deserialize, Serialize};

use crate::golden::GoldenLogits;
use crate::VerifyError;

/// `manifest.json`'s `format`.
pub const BUNDLE_FORMAT: &str = "qaforge-golden-bundle/1";
/// The manifest's file name inside a bundle.
pub const MANIFEST: &str = "manifest.json";
/// Every file a bundle has, by role.
pub const ROLES: [&str; 6] = ["data", "features", "feature_index", "logits", "predictions", "metrics"];
/// Largest manifest read.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Which model a reference belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelIdentity {
    /// The transformers class (`MobileBertForQuestionAnswering`, …).
    pub architecture: String,
    /// sha256 over config.json and the weight files: artifacts record the same value as
    /// `qaforge.source_sha256`.
    pub source_sha256: String,
    /// sha256 of the tokenizer files (artifacts: `qaforge.tokenizer_sha256`).
    pub tokenizer_sha256: Option<String>,
}

/// Which data the features were built from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataIdentity {
    /// The data file's name as given.
    pub name: String,
    /// sha256 of the whole data file (before `limit`).
    pub source_sha256: String,
    /// Questions in the bundle.
    pub questions: usize,
    /// The first `limit` questions were kept, if given.
    pub limit: Option<usize>,
}

/// How features were built and logits post-processed (run_qa.py's names).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BundleSettings {
    /// Tokens per feature.
    pub max_length: usize,
    /// Overlap of consecutive windows.
    pub doc_stride: usize,
    /// Candidates per end kept in post-processing.
    pub n_best: usize,
    /// Longest answer in tokens.
    pub max_answer_length: usize,
    /// Null-score threshold.
    pub null_score_diff_threshold: f64,
    /// Which positions the bundle's predictions ranked: `real tokens` (`qaforge golden`) or
    /// `all max_length positions` (run_qa.py's own post-processing, golden/generate.py).
    pub postprocess: String,
}

/// One file of a bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BundleFile {
    /// Relative to the bundle directory (shipped fixtures share golden/squad's files: `../..`).
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Hex sha256.
    pub sha256: String,
}

/// The reference's own scores.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReferenceScores {
    /// Exact match, percent.
    pub exact: f64,
    /// F1, percent.
    pub f1: f64,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// What wrote the bundle (`qaforge golden 0.1.0`, `golden/generate.py`).
    pub generator: String,
    /// What computed the logits (`PyTorch 2.9.1, transformers 4.57.6`, `qaforge-reference …`).
    pub reference: String,
    /// The model.
    pub model: ModelIdentity,
    /// The data.
    pub data: DataIdentity,
    /// Feature and post-processing settings.
    pub settings: BundleSettings,
    /// Number of features.
    pub features: usize,
    /// The reference's scores against the gold answers.
    pub scores: ReferenceScores,
    /// Every file, by role ([`ROLES`]).
    pub files: BTreeMap<String, BundleFile>,
}

/// A bundle read and checked: every file matches its manifest entry and the parts agree.
#[derive(Debug)]
pub struct Bundle {
    /// The bundle directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// sha256 of manifest.json (it names every file's sha256, so it identifies the whole bundle).
    pub manifest_sha256: String,
    /// The SQuAD data.
    pub data: SquadFile,
    /// The features.
    pub features: Features,
    /// The reference logits.
    pub logits: GoldenLogits,
}

fn bundle_error(path: &Path, message: impl Into<String>) -> VerifyError {
    VerifyError::Bundle { path: path.to_owned(), message: message.into() }
}

/// Hex sha256 of a file, read in blocks, with its size.
pub fn file_sha256(path: &Path) -> Result<(u64, String), VerifyError> {
    let io = |source| VerifyError::Io { path: path.to_owned(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(io)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buffer[..n]);
    }
    Ok((total, sha256_finish(hasher)))
}

impl Bundle {
    /// Where the bundle of `path` is: `path` itself, or `path/golden` for a shipped fixture
    /// directory (golden/FIXTURE).
    pub fn locate(path: &Path) -> PathBuf {
        if !path.join(MANIFEST).is_file() && path.join("golden").join(MANIFEST).is_file() {
            path.join("golden")
        } else {
            path.to_owned()
        }
    }

    /// Reads and checks the bundle at `path` (or golden/FIXTURE).
    pub fn open(path: &Path) -> Result<Self, VerifyError> {
        let dir = Self::locate(path);
        let manifest_path = dir.join(MANIFEST);
        if !manifest_path.is_file() {
            return Err(bundle_error(&dir, format!("not a golden bundle: no {MANIFEST} (make one with `qaforge golden <MODEL_DIR> --data <SQUAD.json> -o {}`)", dir.display())));
        }
        let (size, manifest_sha256) = file_sha256(&manifest_path)?;
        if size > MAX_MANIFEST_BYTES {
            return Err(bundle_error(
                &manifest_path,
                format!("{size} bytes is more than a manifest's {MAX_MANIFEST_BYTES}"),
            ));
        }
        let bytes =
            std::fs::read(&manifest_path).map_err(|source| VerifyError::Io { path: manifest_path.clone(), source })?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| bundle_error(&manifest_path, format!("invalid manifest: {e}")))?;
        if manifest.format != BUNDLE_FORMAT {
            return Err(bundle_error(
                &manifest_path,
                format!("format `{}`; this qaforge reads `{BUNDLE_FORMAT}`", manifest.format),
            ));
        }
        let mut paths = BTreeMap::new();
        for role in ROLES {
            let entry = manifest
                .files
                .get(role)
                .ok_or_else(|| bundle_error(&manifest_path, format!("no `{role}` file in `files`")))?;
            paths.insert(role, checked_file(&dir, &manifest_path, role, entry)?);
        }
        let data = SquadFile::load(&paths["data"])?;
        let features = Features::load_files(&paths["features"], &paths["feature_index"])?;
        let logits = GoldenLogits::load_file(&paths["logits"], &features)?;
        let bundle = Bundle { dir, manifest, manifest_sha256, data, features, logits };
        bundle.check_consistency(&manifest_path, &paths["feature_index"])?;
        Ok(bundle)
    }

    /// The reference's predictions over real tokens (as verify and the sensitivity search
    /// post-process artifacts), question id → text.
    pub fn reference_predictions(&self) -> BTreeMap<String, String> {
        qaforge_squad::predict_all(
            &self.data,
            &self.features,
            &self.logits.start,
            &self.logits.end,
            &qaforge_squad::PostprocessOptions::default(),
            true,
        )
        .into_iter()
        .map(|(id, p)| (id, p.text))
        .collect()
    }

    /// The F1 of [`Bundle::reference_predictions`] against the gold answers.
    pub fn reference_f1(&self) -> f64 {
        qaforge_squad::evaluate(&self.data, &self.reference_predictions()).f1
    }

    /// The manifest's counts and settings against the files, and every feature's question id
    /// against the data.
    fn check_consistency(&self, manifest_path: &Path, index_path: &Path) -> Result<(), VerifyError> {
        let (m, f, d) = (&self.manifest, &self.features, &self.data);
        if m.features != f.count {
            return Err(bundle_error(
                manifest_path,
                format!("says {} features; the feature files hold {}", m.features, f.count),
            ));
        }
        if m.settings.max_length != f.max_length {
            return Err(bundle_error(
                manifest_path,
                format!("says max_length {}; the features are {} long", m.settings.max_length, f.max_length),
            ));
        }
        if m.data.questions != d.examples.len() {
            return Err(bundle_error(
                manifest_path,
                format!("says {} questions; the data holds {}", m.data.questions, d.examples.len()),
            ));
        }
        for (i, (&e, id)) in f.example_index.iter().zip(&f.example_ids).enumerate() {
            match d.examples.get(e) {
                Some(example) if &example.id == id => {}
                Some(example) => {
                    return Err(bundle_error(
                        index_path,
                        format!("feature {i} belongs to question {id}, but question {e} of the data is {}", example.id),
                    ))
                }
                None => {
                    return Err(bundle_error(
                        index_path,
                        format!("feature {i} belongs to question {e}; the data has {}", d.examples.len()),
                    ))
                }
            }
        }
        if f.example_index.last().map_or(0, |&e| e + 1) != d.examples.len() || f.count == 0 {
            return Err(bundle_error(
                index_path,
                format!(
                    "the features cover {} of the data's {} questions",
                    f.example_index.last().map_or(0, |&e| e + 1),
                    d.examples.len()
                ),
            ));
        }
        Ok(())
    }
}

/// The file of `role`, resolved inside the bundle and checked against its size and sha256.
fn checked_file(dir: &Path, manifest_path: &Path, role: &str, entry: &BundleFile) -> Result<PathBuf, VerifyError> {
    let relative = Path::new(&entry.path);
    // Relative paths only: a manifest names files beside it (or, for the shipped fixtures, the
    // shared golden/squad files two levels up), never an absolute path.
    if entry.path.is_empty() || relative.components().any(|c| matches!(c, Component::RootDir | Component::Prefix(_))) {
        return Err(bundle_error(
            manifest_path,
            format!("`{role}` path `{}` is not relative to the bundle", entry.path),
        ));
    }
    let path = dir.join(relative);
    let size = std::fs::metadata(&path).map_err(|source| VerifyError::Io { path: path.clone(), source })?.len();
    if size != entry.bytes {
        return Err(bundle_error(
            &path,
            format!("{size} bytes; the manifest says {} (truncated or replaced)", entry.bytes),
        ));
    }
    let (_, sha256) = file_sha256(&path)?;
    if sha256 != entry.sha256 {
        return Err(bundle_error(&path, format!("sha256 {sha256}; the manifest says {}", entry.sha256)));
    }
    Ok(path)
}
