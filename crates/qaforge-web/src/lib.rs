//! `qaforge package --format web`: a static folder a person serves from any web server and opens
//! in a browser to ask questions of the artifact, all in the browser (WebAssembly), nothing
//! fetched from elsewhere at run time.
//!
//! The site holds:
//! - `model.onnx`, the artifact, unchanged;
//! - `tokenizer.json` and `tokenizer_config.json`, the model's tokenizer;
//! - `qaforge-site.json`, what the page needs to know about the graph (its inputs and outputs, by
//!   role) and the feature and post-processing settings qaforge verifies with;
//! - the page: `index.html`, `style.css`, `app.js` (the interface) and `qa.js` (features,
//!   character offsets, windows, post-processing; imported by the node tests as well);
//! - the runtime, copied from the pinned npm packages the project installs (web/package.json):
//!   onnxruntime-web's WebAssembly build (`ort.wasm.min.mjs` and the SIMD `.wasm` it loads) and
//!   @huggingface/tokenizers, with their licences (THIRD-PARTY.txt).
//!
//! The site is written into a temporary folder beside the output and renamed into place, so a
//! failure never leaves half a site.

use std::path::{Path, PathBuf};

use qaforge_provenance::sha256_hex;

/// The page's own files, compiled into the binary so that the site matches the qaforge that wrote it.
pub const PAGE_FILES: [(&str, &str); 4] = [
    ("index.html", include_str!("../page/index.html")),
    ("style.css", include_str!("../page/style.css")),
    ("app.js", include_str!("../page/app.js")),
    ("qa.js", include_str!("../page/qa.js")),
];

/// The runtime files a site copies: (npm package, file inside it, name in the site).
const RUNTIME_FILES: [(&str, &str, &str); 5] = [
    ("onnxruntime-web", "dist/ort.wasm.min.mjs", "ort/ort.wasm.min.mjs"),
    ("onnxruntime-web", "dist/ort-wasm-simd-threaded.mjs", "ort/ort-wasm-simd-threaded.mjs"),
    ("onnxruntime-web", "dist/ort-wasm-simd-threaded.wasm", "ort/ort-wasm-simd-threaded.wasm"),
    ("@huggingface/tokenizers", "dist/tokenizers.min.mjs", "tokenizers/tokenizers.min.mjs"),
    ("@huggingface/tokenizers", "LICENSE", "tokenizers/LICENSE"),
];

/// The npm packages a site carries code of.
const RUNTIME_PACKAGES: [&str; 2] = ["onnxruntime-web", "@huggingface/tokenizers"];

/// Largest runtime file copied (onnxruntime-web's SIMD .wasm is about 12 MB).
const MAX_RUNTIME_FILE_BYTES: u64 = 256 << 20;

/// Errors of writing a site.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The runtime packages are missing or not what the site needs.
    #[error("{path}: {message}")]
    Runtime {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong, and what to do.
        message: String,
    },
    /// The output cannot be written where asked.
    #[error("{path}: {message}")]
    Output {
        /// The output folder.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// What the page feeds a graph input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputRole {
    /// Token ids.
    Ids,
    /// The attention mask.
    Mask,
    /// Token types.
    Types,
}

/// One graph input as the page feeds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteInput {
    /// The input's name in the graph.
    pub name: String,
    /// What it is fed.
    pub role: InputRole,
    /// Whether it takes int32 (else int64).
    pub int32: bool,
}

/// Everything a site is made of, gathered by the pipeline.
#[derive(Debug, Clone)]
pub struct SiteSpec<'a> {
    /// The artifact's bytes (an ONNX model without external data).
    pub artifact: &'a [u8],
    /// Where the artifact came from (recorded in qaforge-site.json).
    pub artifact_name: String,
    /// The graph's inputs.
    pub inputs: Vec<SiteInput>,
    /// The start-logits and end-logits outputs, in that order.
    pub outputs: [String; 2],
    /// The model's tokenizer.json.
    pub tokenizer_json: String,
    /// Its tokenizer_config.json (`{}` when the model has none).
    pub tokenizer_config: String,
    /// The folder holding the npm packages (`web/node_modules` after `npm ci --prefix web`).
    pub node_modules: &'a Path,
    /// Tokens per window, window overlap, candidates per end, longest answer, null threshold.
    pub max_length: usize,
    /// Overlap of consecutive windows, in tokens.
    pub doc_stride: usize,
    /// Candidates per start and end position.
    pub n_best: usize,
    /// Longest answer in tokens.
    pub max_answer_length: usize,
    /// No answer when the null score beats the best span by more than this.
    pub null_score_diff_threshold: f32,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct SiteOutcome {
    /// The site folder.
    pub dir: PathBuf,
    /// (file in the site, bytes), in the order written.
    pub files: Vec<(String, u64)>,
    /// onnxruntime-web's version.
    pub onnxruntime_web: String,
    /// @huggingface/tokenizers' version.
    pub tokenizers: String,
    /// The artifact's sha256.
    pub artifact_sha256: String,
}

impl SiteOutcome {
    /// Bytes of the whole site.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|(_, b)| b).sum()
    }
}

/// The version and licence an npm package's package.json states.
fn package_version(node_modules: &Path, package: &str) -> Result<(String, String), WebError> {
    let path = node_modules.join(package).join("package.json");
    let missing = || {
        WebError::Runtime {
        path: path.clone(),
        message: format!("npm package {package} is not installed there; install the pinned runtime with `npm ci --prefix web` (make web-deps), or give its node_modules with --web-runtime"),
    }
    };
    let bytes = std::fs::read(&path).map_err(|_| missing())?;
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| WebError::Runtime { path: path.clone(), message: format!("not a package.json: {e}") })?;
    let field = |name: &str| json.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let version =
        field("version").ok_or_else(|| WebError::Runtime { path: path.clone(), message: "no version".into() })?;
    Ok((version, field("license").unwrap_or_else(|| "not stated in its package.json".into())))
}

fn site_config(spec: &SiteSpec<'_>, sha256: &str, onnxruntime_web: &str, tokenizers: &str) -> serde_json::Value {
    let role = |r: InputRole| match r {
        InputRole::Ids => "ids",
        InputRole::Mask => "mask",
        InputRole::Types => "types",
    };
    serde_json::json!({
        "format": "qaforge-web-site/1",
        "model": {
            "file": "model.onnx",
            "source": spec.artifact_name,
            "sha256": sha256,
            "bytes": spec.artifact.len(),
            "inputs": spec.inputs.iter().map(|i| serde_json::json!({"name": i.name, "role": role(i.role), "int32": i.int32})).collect::<Vec<_>>(),
            "outputs": {"start": spec.outputs[0], "end": spec.outputs[1]},
        },
        "options": {
            "maxLength": spec.max_length,
            "docStride": spec.doc_stride,
            "nBest": spec.n_best,
            "maxAnswerLength": spec.max_answer_length,
            "nullScoreDiffThreshold": spec.null_score_diff_threshold,
        },
        "runtime": {"onnxruntime-web": onnxruntime_web, "@huggingface/tokenizers": tokenizers},
    })
}

/// Writes the site of `spec` to `out` (a folder: created, or replaced when it holds an earlier site).
pub fn write_site(spec: &SiteSpec<'_>, out: &Path) -> Result<SiteOutcome, WebError> {
    let packages =
        RUNTIME_PACKAGES.iter().map(|p| package_version(spec.node_modules, p)).collect::<Result<Vec<_>, _>>()?;
    let (onnxruntime_web, tokenizers) = (packages[0].0.clone(), packages[1].0.clone());
    if out.exists()
        && !(out.join("qaforge-site.json").is_file() || out.read_dir().map(|mut d| d.next().is_none()).unwrap_or(false))
    {
        return Err(WebError::Output {
            path: out.to_owned(),
            message: "exists and is not an empty folder or an earlier qaforge site; choose another output".into(),
        });
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|source| WebError::Io { path: parent.clone(), source })?;
    let staging = tempfile::Builder::new()
        .prefix(".qaforge-site-")
        .tempdir_in(&parent)
        .map_err(|source| WebError::Io { path: parent.clone(), source })?;
    let mut files = Vec::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<(), WebError> {
        let path = staging.path().join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| WebError::Io { path: dir.to_owned(), source })?;
        }
        std::fs::write(&path, bytes).map_err(|source| WebError::Io { path: path.clone(), source })?;
        files.push((name.to_string(), bytes.len() as u64));
        Ok(())
    };
    let sha256 = sha256_hex(spec.artifact);
    put("model.onnx", spec.artifact)?;
    put("tokenizer.json", spec.tokenizer_json.as_bytes())?;
    put("tokenizer_config.json", spec.tokenizer_config.as_bytes())?;
    let config = site_config(spec, &sha256, &onnxruntime_web, &tokenizers);
    let config_text = serde_json::to_string_pretty(&config).unwrap_or_default() + "\n";
    put("qaforge-site.json", config_text.as_bytes())?;
    for (name, text) in PAGE_FILES {
        put(name, text.as_bytes())?;
    }
    for (package, file, name) in RUNTIME_FILES {
        let path = spec.node_modules.join(package).join(file);
        let size = std::fs::metadata(&path).map_err(|_| WebError::Runtime { path: path.clone(), message: format!("missing from npm package {package}; the site needs it (is the installed version the pinned one? `npm ci --prefix web`)") })?.len();
        if size > MAX_RUNTIME_FILE_BYTES {
            return Err(WebError::Runtime {
                path,
                message: format!("{size} bytes, more than a runtime file can be ({MAX_RUNTIME_FILE_BYTES})"),
            });
        }
        let bytes = std::fs::read(&path).map_err(|source| WebError::Io { path: path.clone(), source })?;
        put(name, &bytes)?;
    }
    // onnxruntime-web's npm package ships no LICENSE file, so the site states each package's
    // licence as its package.json gives it.
    let notice: String = RUNTIME_PACKAGES
        .iter()
        .zip(&packages)
        .map(|(name, (version, license))| format!("{name} {version} (npm), licence: {license}\n"))
        .collect();
    put("THIRD-PARTY.txt", format!("This site carries code of these npm packages:\n{notice}").as_bytes())?;
    // An earlier site is replaced only once the new one is complete.
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|source| WebError::Io { path: out.to_owned(), source })?;
    }
    // tempfile makes its folder private (0700); a site is for a web server to read.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|source| WebError::Io { path: staging.path().to_owned(), source })?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, out).map_err(|source| WebError::Io { path: out.to_owned(), source })?;
    Ok(SiteOutcome { dir: out.to_owned(), files, onnxruntime_web, tokenizers, artifact_sha256: sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_node_modules(dir: &Path) {
        for (package, file, _) in RUNTIME_FILES {
            let path = dir.join(package).join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("{package}/{file}")).unwrap();
            std::fs::write(dir.join(package).join("package.json"), r#"{"version": "9.9.9", "license": "MIT"}"#)
                .unwrap();
        }
    }

    fn spec<'a>(node_modules: &'a Path) -> SiteSpec<'a> {
        SiteSpec {
            artifact: b"onnx bytes",
            artifact_name: "model.int8.onnx".into(),
            inputs: vec![SiteInput { name: "input_ids".into(), role: InputRole::Ids, int32: false }],
            outputs: ["start_logits".into(), "end_logits".into()],
            tokenizer_json: "{}".into(),
            tokenizer_config: "{}".into(),
            node_modules,
            max_length: 384,
            doc_stride: 128,
            n_best: 20,
            max_answer_length: 30,
            null_score_diff_threshold: 0.0,
        }
    }

    #[test]
    fn writes_every_file_and_replaces_an_earlier_site() {
        let dir = tempfile::tempdir().unwrap();
        fake_node_modules(&dir.path().join("nm"));
        let out = dir.path().join("site");
        let done = write_site(&spec(&dir.path().join("nm")), &out).unwrap();
        assert_eq!(done.files.len(), 5 + PAGE_FILES.len() + RUNTIME_FILES.len());
        for (name, bytes) in &done.files {
            assert_eq!(std::fs::metadata(out.join(name)).unwrap().len(), *bytes, "{name}");
        }
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("qaforge-site.json")).unwrap()).unwrap();
        assert_eq!(config["model"]["sha256"], sha256_hex(b"onnx bytes"));
        assert_eq!(config["runtime"]["onnxruntime-web"], "9.9.9");
        // Again over the first: replaced, and no staging folder left behind.
        write_site(&spec(&dir.path().join("nm")), &out).unwrap();
        let left: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn refuses_a_missing_runtime_and_a_foreign_folder_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("site");
        let error = write_site(&spec(&dir.path().join("nowhere")), &out).unwrap_err().to_string();
        assert!(error.contains("npm ci --prefix web"), "{error}");
        assert!(!out.exists());
        fake_node_modules(&dir.path().join("nm"));
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        let error = write_site(&spec(&dir.path().join("nm")), &out).unwrap_err().to_string();
        assert!(error.contains("not an empty folder"), "{error}");
        assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
    }
}
