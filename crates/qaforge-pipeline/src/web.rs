//! `qaforge package --format web`: an artifact and its tokenizer → a static site that answers
//! questions in the browser (qaforge-web writes it; this gathers and checks what goes in).

use std::path::PathBuf;
use std::time::Instant;

use crate::PipelineError;

/// What to package for the web.
#[derive(Debug, Clone)]
pub struct WebPackageRequest {
    /// The ONNX artifact (any precision onnxruntime-web runs).
    pub artifact: PathBuf,
    /// The model directory whose tokenizer.json or vocab.txt the page tokenizes with.
    pub tokenizer: PathBuf,
    /// The site folder to write.
    pub output: PathBuf,
    /// The npm packages' folder (onnxruntime-web and @huggingface/tokenizers).
    pub node_modules: PathBuf,
    /// The graph's inputs, when its names do not say.
    pub input_names: Option<Vec<String>>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct WebPackageOutcome {
    /// The artifact packaged.
    pub artifact: PathBuf,
    /// The site.
    pub site: qaforge_web::SiteOutcome,
    /// Wall time.
    pub seconds: f64,
}

/// Writes the web package of `request.artifact`.
pub fn package_web(request: &WebPackageRequest) -> Result<WebPackageOutcome, PipelineError> {
    let started = Instant::now();
    let path = &request.artifact;
    let bytes = std::fs::read(path).map_err(|source| PipelineError::Io { path: path.clone(), source })?;
    if qaforge_runtime::is_ort_format(&bytes) {
        return Err(PipelineError::Request(format!(
            "{}: an ORT-format model; the web package takes the ONNX artifact it was made from",
            path.display()
        )));
    }
    let (model, external) = qaforge_onnx::decode_model_with_data(&bytes, path)?;
    if !external.is_empty() {
        return Err(PipelineError::Request(format!(
            "{}: its weights are in external data files ({}); the web package takes a self-contained ONNX file",
            path.display(),
            external.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    let layout = qaforge_runtime::check_inputs(&model, path, request.input_names.as_deref())?;
    let inputs = layout
        .inputs()
        .iter()
        .map(|i| qaforge_web::SiteInput {
            name: i.name.clone(),
            role: match i.role {
                qaforge_runtime::InputRole::Ids => qaforge_web::InputRole::Ids,
                qaforge_runtime::InputRole::Mask => qaforge_web::InputRole::Mask,
                qaforge_runtime::InputRole::Types => qaforge_web::InputRole::Types,
            },
            int32: i.int32,
        })
        .collect();
    let outputs = float_outputs(&model, path)?;
    // The page checks its token ids against the tables as verify does: a tokenizer of another
    // model gives ids past the embedding table, which the page would answer with garbage.
    let tokenizer = qaforge_squad::QaTokenizer::from_model_dir(&request.tokenizer)?;
    let probe = qaforge_squad::Example {
        id: "probe".into(),
        title: String::new(),
        question: "What is tokenized?".into(),
        context: "Every token of the vocabulary's common words.".into(),
        answers: vec![],
    };
    let options = qaforge_squad::FeatureOptions::default();
    let features = tokenizer.features(std::slice::from_ref(&probe), &options)?;
    qaforge_runtime::check_token_ids(&model, &layout, &features, path)?;
    let json_path = request.tokenizer.join("tokenizer.json");
    let tokenizer_json = if json_path.is_file() {
        std::fs::read_to_string(&json_path).map_err(|source| PipelineError::Io { path: json_path.clone(), source })?
    } else {
        tokenizer.to_tokenizer_json()?
    };
    let config_path = request.tokenizer.join("tokenizer_config.json");
    let tokenizer_config = if config_path.is_file() {
        std::fs::read_to_string(&config_path)
            .map_err(|source| PipelineError::Io { path: config_path.clone(), source })?
    } else {
        "{}\n".into()
    };
    let post = qaforge_squad::PostprocessOptions::default();
    let spec = qaforge_web::SiteSpec {
        artifact: &bytes,
        artifact_name: path
            .file_name()
            .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned()),
        inputs,
        outputs,
        tokenizer_json,
        tokenizer_config,
        node_modules: &request.node_modules,
        max_length: options.max_length,
        doc_stride: options.doc_stride,
        n_best: post.n_best,
        max_answer_length: post.max_answer_length,
        null_score_diff_threshold: post.null_score_diff_threshold,
    };
    let site = qaforge_web::write_site(&spec, &request.output)?;
    Ok(WebPackageOutcome { artifact: path.clone(), site, seconds: started.elapsed().as_secs_f64() })
}

/// The graph's two outputs (start logits, end logits), which the page reads as float32.
fn float_outputs(model: &qaforge_onnx::pb::ModelProto, path: &std::path::Path) -> Result<[String; 2], PipelineError> {
    use qaforge_onnx::pb::tensor_proto::DataType;
    let outputs = model.graph.as_ref().map(|g| g.output.as_slice()).unwrap_or_default();
    let [start, end] = outputs else {
        return Err(PipelineError::Request(format!(
            "{}: {} outputs; a question-answering graph has two (start and end logits)",
            path.display(),
            outputs.len()
        )));
    };
    for output in [start, end] {
        let element = qaforge_onnx::declared_elem_type(output).unwrap_or(DataType::Undefined as i32);
        if element != DataType::Float as i32 {
            return Err(PipelineError::Request(format!(
                "{}: output `{}` is not float32 (element type {element}); the page reads float32 logits",
                path.display(),
                output.name
            )));
        }
    }
    Ok([start.name.clone(), end.name.clone()])
}

impl std::fmt::Display for WebPackageOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let site = &self.site;
        writeln!(
            f,
            "packaged {} -> {}/ (a static site: serve the folder and open index.html)",
            self.artifact.display(),
            site.dir.display()
        )?;
        writeln!(
            f,
            "  runtime       onnxruntime-web {} (WebAssembly), @huggingface/tokenizers {}",
            site.onnxruntime_web, site.tokenizers
        )?;
        writeln!(f, "  files         {} ({} bytes in all)", site.files.len(), site.total_bytes())?;
        writeln!(f, "  model sha256  {}", site.artifact_sha256)?;
        write!(f, "  time          {:.3} s", self.seconds)
    }
}
