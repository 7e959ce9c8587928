//! Tokenization and features exactly as run_qa.py's `prepare_validation_features` builds them with
//! `BertTokenizerFast`: question first, context second, truncation `only_second` with a doc stride,
//! overflowing windows as extra features, offsets kept only on context tokens.
//!
//! The tokenizer is the `tokenizers` crate (the same Rust code BertTokenizerFast calls), loaded from
//! the model directory's tokenizer.json, or built from vocab.txt the way transformers' BertConverter
//! builds it when there is no tokenizer.json.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use safetensors::{Dtype, SafeTensors};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::data::{Example, SquadError};

/// Largest tokenizer file read (the BERT vocabulary is 0.2 MB, its tokenizer.json 0.7 MB).
const MAX_TOKENIZER_FILE_BYTES: u64 = 64 << 20;

/// How features are cut (run_qa.py's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureOptions {
    /// Tokens per feature, special tokens included; features are padded to this length.
    pub max_length: usize,
    /// Overlap in tokens between consecutive windows of a long context.
    pub doc_stride: usize,
    /// Strip leading whitespace from questions (run_qa.py does: some SQuAD questions start with
    /// spaces that waste the token budget).
    pub lstrip_question: bool,
}

impl Default for FeatureOptions {
    fn default() -> Self {
        FeatureOptions { max_length: 384, doc_stride: 128, lstrip_question: true }
    }
}

/// Model inputs for a set of examples, every feature padded to `max_length`.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Number of features.
    pub count: usize,
    /// Padded length of every feature.
    pub max_length: usize,
    /// `[count, max_length]` token ids.
    pub input_ids: Vec<i64>,
    /// `[count, max_length]` 1 for tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// `[count, max_length]` 0 for the question, 1 for the context.
    pub token_type_ids: Vec<i64>,
    /// `[count, max_length, 2]` character offsets into the context, -1 where the token is not context.
    pub offsets: Vec<i32>,
    /// Example (question) index of each feature.
    pub example_index: Vec<usize>,
    /// Question id of each feature.
    pub example_ids: Vec<String>,
}

impl Features {
    /// Number of real (unpadded) tokens of feature `i`.
    pub fn length(&self, i: usize) -> usize {
        self.attention_mask[i * self.max_length..(i + 1) * self.max_length].iter().filter(|&&m| m != 0).count()
    }

    /// Context offsets of feature `i`, `None` where the token is not part of the context.
    pub fn context_offsets(&self, i: usize) -> Vec<Option<(usize, usize)>> {
        let m = self.max_length;
        self.offsets[i * m * 2..(i + 1) * m * 2]
            .chunks_exact(2)
            .map(|o| (o[0] >= 0 && o[1] >= 0).then(|| (o[0] as usize, o[1] as usize)))
            .collect()
    }

    /// The first `n` features (all if fewer), e.g. to calibrate on a fixed number of them.
    pub fn truncated(mut self, n: usize) -> Self {
        let n = n.min(self.count);
        let m = self.max_length;
        self.count = n;
        self.input_ids.truncate(n * m);
        self.attention_mask.truncate(n * m);
        self.token_type_ids.truncate(n * m);
        self.offsets.truncate(n * m * 2);
        self.example_index.truncate(n);
        self.example_ids.truncate(n);
        self
    }

    /// The features at `rows`, in that order (example indices kept): a batch of any features.
    pub fn gather(&self, rows: &[usize]) -> Self {
        let m = self.max_length;
        let take = |v: &[i64]| rows.iter().flat_map(|&i| v[i * m..(i + 1) * m].iter().copied()).collect();
        Features {
            count: rows.len(),
            max_length: m,
            input_ids: take(&self.input_ids),
            attention_mask: take(&self.attention_mask),
            token_type_ids: take(&self.token_type_ids),
            offsets: rows.iter().flat_map(|&i| self.offsets[i * m * 2..(i + 1) * m * 2].iter().copied()).collect(),
            example_index: rows.iter().map(|&i| self.example_index[i]).collect(),
            example_ids: rows.iter().map(|&i| self.example_ids[i].clone()).collect(),
        }
    }

    /// Features `start..end` whose questions are `first_example..`: example indices are
    /// renumbered from 0, so the result goes with a [`crate::SquadFile::questions`] subset.
    pub fn select(&self, start: usize, end: usize, first_example: usize) -> Self {
        let m = self.max_length;
        let rows = |v: &[i64]| v[start * m..end * m].to_vec();
        Features {
            count: end - start,
            max_length: m,
            input_ids: rows(&self.input_ids),
            attention_mask: rows(&self.attention_mask),
            token_type_ids: rows(&self.token_type_ids),
            offsets: self.offsets[start * m * 2..end * m * 2].to_vec(),
            example_index: self.example_index[start..end].iter().map(|&e| e - first_example).collect(),
            example_ids: self.example_ids[start..end].to_vec(),
        }
    }

    /// The features of questions `questions` (contiguous in feature order), as a feature range.
    pub fn range_of_questions(&self, questions: std::ops::Range<usize>) -> std::ops::Range<usize> {
        let start = self.example_index.partition_point(|&e| e < questions.start);
        let end = self.example_index.partition_point(|&e| e < questions.end);
        start..end
    }

    /// Writes `features.safetensors` (ids int32, mask and types uint8, offsets int32) and
    /// `features.json` (counts, question ids and `settings`) into `dir`, the layout
    /// [`Features::load`] reads.
    pub fn write(&self, dir: &Path, settings: serde_json::Map<String, serde_json::Value>) -> Result<(), SquadError> {
        use safetensors::tensor::TensorView;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SquadError::Io { path, source }
        };
        let invalid = |path: &Path, message: String| SquadError::Invalid { path: path.to_owned(), message };
        let (n, m) = (self.count, self.max_length);
        let narrow_i32 = |v: &[i64]| -> Vec<u8> {
            v.iter().flat_map(|&x| (x.clamp(i32::MIN as i64, i32::MAX as i64) as i32).to_le_bytes()).collect()
        };
        let narrow_u8 = |v: &[i64]| -> Vec<u8> { v.iter().map(|&x| x.clamp(0, 255) as u8).collect() };
        let tensors = [
            ("input_ids", Dtype::I32, vec![n, m], narrow_i32(&self.input_ids)),
            ("attention_mask", Dtype::U8, vec![n, m], narrow_u8(&self.attention_mask)),
            ("token_type_ids", Dtype::U8, vec![n, m], narrow_u8(&self.token_type_ids)),
            ("offsets", Dtype::I32, vec![n, m, 2], self.offsets.iter().flat_map(|x| x.to_le_bytes()).collect()),
            (
                "example_index",
                Dtype::I32,
                vec![n],
                self.example_index.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
            ),
        ];
        let path = dir.join("features.safetensors");
        let views = tensors
            .iter()
            .map(|(name, dtype, shape, data)| {
                TensorView::new(*dtype, shape.clone(), data).map(|v| (name.to_string(), v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&path, e.to_string()))?;
        let bytes = safetensors::serialize(views, None).map_err(|e| invalid(&path, e.to_string()))?;
        std::fs::write(&path, bytes).map_err(io(&path))?;
        let mut meta = settings;
        meta.insert("features".into(), n.into());
        meta.insert("max_length".into(), m.into());
        meta.insert("examples".into(), (self.example_index.last().map_or(0, |&e| e + 1)).into());
        meta.insert("example_ids".into(), self.example_ids.clone().into());
        let path = dir.join("features.json");
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| invalid(&path, e.to_string()))?;
        std::fs::write(&path, json).map_err(io(&path))
    }

    /// Reads features written by golden/generate.py or [`Features::write`]: `features.safetensors`
    /// (input_ids, attention_mask, token_type_ids, offsets, example_index) and `features.json`
    /// (counts, ids).
    pub fn load(dir: &Path) -> Result<Self, SquadError> {
        Self::load_files(&dir.join("features.safetensors"), &dir.join("features.json"))
    }

    /// [`Features::load`] from the two files' paths.
    pub fn load_files(tensors_path: &Path, json_path: &Path) -> Result<Self, SquadError> {
        let json_path = json_path.to_owned();
        let invalid = |path: &Path, message: String| SquadError::Invalid { path: path.to_owned(), message };
        let bytes = read_bounded(&json_path, MAX_FEATURE_FILE_BYTES)?;
        let meta: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| invalid(&json_path, e.to_string()))?;
        let count =
            meta["features"].as_u64().ok_or_else(|| invalid(&json_path, "no `features` count".into()))? as usize;
        let max_length =
            meta["max_length"].as_u64().ok_or_else(|| invalid(&json_path, "no `max_length`".into()))? as usize;
        let example_ids: Vec<String> = meta["example_ids"]
            .as_array()
            .ok_or_else(|| invalid(&json_path, "no `example_ids`".into()))?
            .iter()
            .map(|v| {
                v.as_str().map(String::from).ok_or_else(|| invalid(&json_path, "example id is not a string".into()))
            })
            .collect::<Result<_, _>>()?;
        if example_ids.len() != count {
            return Err(invalid(&json_path, format!("{} example ids for {count} features", example_ids.len())));
        }
        let path: PathBuf = tensors_path.to_owned();
        let bytes = read_bounded(&path, MAX_FEATURE_FILE_BYTES)?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| invalid(&path, e.to_string()))?;
        let int = |name: &str, shape: &[usize]| -> Result<Vec<i64>, SquadError> {
            let view = st.tensor(name).map_err(|e| invalid(&path, format!("{name}: {e}")))?;
            if view.shape() != shape {
                return Err(invalid(&path, format!("{name} has shape {:?}, expected {shape:?}", view.shape())));
            }
            let data = view.data();
            Ok(match view.dtype() {
                Dtype::U8 => data.iter().map(|&b| b as i64).collect(),
                Dtype::I32 => {
                    data.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect()
                }
                Dtype::I64 => data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
                other => return Err(invalid(&path, format!("{name} has dtype {other:?}, expected an integer dtype"))),
            })
        };
        let shape = [count, max_length];
        let example_index = int("example_index", &[count])?;
        if let Some(bad) = example_index.iter().find(|&&e| e < 0) {
            return Err(invalid(&path, format!("negative example index {bad}")));
        }
        // Features come in question order (run_qa.py's overflow windows follow their question).
        if let Some(w) = example_index.windows(2).find(|w| w[1] < w[0]) {
            return Err(invalid(
                &path,
                format!("example_index goes back from {} to {}: features are not in question order", w[0], w[1]),
            ));
        }
        Ok(Features {
            count,
            max_length,
            input_ids: int("input_ids", &shape)?,
            attention_mask: int("attention_mask", &shape)?,
            token_type_ids: int("token_type_ids", &shape)?,
            offsets: int("offsets", &[count, max_length, 2])?
                .into_iter()
                .map(|v| v.clamp(-1, i32::MAX as i64) as i32)
                .collect(),
            example_index: example_index.into_iter().map(|v| v as usize).collect(),
            example_ids,
        })
    }
}

/// Largest feature file read (the golden ones are 0.6 MB).
const MAX_FEATURE_FILE_BYTES: u64 = 1 << 30;

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, SquadError> {
    let io = |source| SquadError::Io { path: path.to_owned(), source };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > limit {
        return Err(SquadError::Invalid {
            path: path.to_owned(),
            message: format!("{len} bytes is more than the {limit} bytes allowed"),
        });
    }
    std::fs::read(path).map_err(io)
}

/// `pad_token` of a tokenizer_config.json, if the file exists and names one (a string, or an
/// AddedToken object's `content`).
fn configured_pad_token(path: &Path) -> Result<Option<String>, SquadError> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = read_bounded(path, MAX_TOKENIZER_FILE_BYTES)?;
    let config: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| SquadError::Invalid { path: path.to_owned(), message: e.to_string() })?;
    Ok(match &config["pad_token"] {
        serde_json::Value::String(token) => Some(token.clone()),
        serde_json::Value::Object(token) => token.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    })
}

/// A tokenizer for question/context pairs (WordPiece, or whatever tokenizer.json describes:
/// RoBERTa's byte-level BPE with `<s> A </s></s> B </s>`).
pub struct QaTokenizer {
    tokenizer: Tokenizer,
    source: PathBuf,
    pad_id: u32,
    pad_token: String,
    /// The tokenizer set up for a window length and stride, for the last few asked for. The
    /// tokenizers crate keeps truncation and padding inside the tokenizer, so a new setting is a
    /// clone of the whole vocabulary: 10-15 ms a call for BERT's 30,522 tokens, measured as most
    /// of `serve`'s tokenization time before this cache.
    configured: Mutex<Vec<((usize, usize), Arc<Tokenizer>)>>,
}

/// Window settings whose set-up tokenizers [`QaTokenizer`] keeps (a server's clients may ask for
/// any: beyond these, each call sets up its own).
const CONFIGURED_TOKENIZERS_KEPT: usize = 4;

impl std::fmt::Debug for QaTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QaTokenizer").field("source", &self.source).field("pad_id", &self.pad_id).finish()
    }
}

/// `tokenizer_config.json` settings that change how vocab.txt is tokenized (transformers' defaults
/// for BertTokenizer where absent).
#[derive(Debug, serde::Deserialize)]
struct TokenizerConfig {
    #[serde(default = "yes")]
    do_lower_case: bool,
    #[serde(default)]
    strip_accents: Option<bool>,
    #[serde(default = "yes")]
    tokenize_chinese_chars: bool,
}

fn yes() -> bool {
    true
}

/// Runs `f`, a call into the tokenizers crate, turning a panic into `Err(message)`. The crate
/// panics on some malformed tokenizer.json files, both while reading them (its decoder
/// deserializer calls `expect("Helper")`) and later while encoding (a post-processor template
/// naming a special token it does not define is indexed unchecked); both were found by
/// `fuzz/` target tokenizer and are kept in tests/hostile/tokenizer/. The panic hook is silenced
/// for the call so that nothing is printed; tokenization runs on one thread.
fn without_panics<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// tokenizer.json through the tokenizers crate, guarded by [`without_panics`].
fn parse_tokenizer_json(bytes: &[u8], path: &Path) -> Result<Tokenizer, SquadError> {
    match without_panics(|| Tokenizer::from_bytes(bytes)) {
        Ok(result) => result.map_err(|e| tokenizer_error(path, e)),
        Err(what) => Err(SquadError::Invalid {
            path: path.to_owned(),
            message: format!("malformed tokenizer.json (the tokenizers crate gave up: {what})"),
        }),
    }
}

impl QaTokenizer {
    /// Loads the tokenizer of a model directory: tokenizer.json if present (as AutoTokenizer
    /// prefers the fast tokenizer), else vocab.txt with tokenizer_config.json's casing.
    pub fn from_model_dir(dir: &Path) -> Result<Self, SquadError> {
        let json = dir.join("tokenizer.json");
        let vocab = dir.join("vocab.txt");
        if json.is_file() {
            let bytes = read_bounded(&json, MAX_TOKENIZER_FILE_BYTES)?;
            let tokenizer = parse_tokenizer_json(&bytes, &json)?;
            let pad_token = configured_pad_token(&dir.join("tokenizer_config.json"))?;
            Self::with_settings(tokenizer, json, pad_token)
        } else if vocab.is_file() {
            Self::from_vocab(&vocab, &dir.join("tokenizer_config.json"))
        } else {
            Err(SquadError::Invalid {
                path: dir.to_owned(),
                message: "no tokenizer.json or vocab.txt in the model directory".into(),
            })
        }
    }

    /// Builds BertTokenizerFast from a vocab.txt as transformers' BertConverter does: BertNormalizer,
    /// BertPreTokenizer, WordPiece (`##` continuation, 100 characters per word), `[CLS] A `[SEP]` B [SEP]`.
    fn from_vocab(vocab_path: &Path, config_path: &Path) -> Result<Self, SquadError> {
        let bytes = read_bounded(vocab_path, MAX_TOKENIZER_FILE_BYTES)?;
        // One token per line, the line's index is its id (transformers' load_vocab).
        let vocab = WordPiece::read_bytes(&bytes).map_err(|e| tokenizer_error(vocab_path, e))?;
        let config: TokenizerConfig = if config_path.is_file() {
            let bytes = read_bounded(config_path, MAX_TOKENIZER_FILE_BYTES)?;
            serde_json::from_slice(&bytes)
                .map_err(|e| SquadError::Invalid { path: config_path.to_owned(), message: e.to_string() })?
        } else {
            TokenizerConfig { do_lower_case: true, strip_accents: None, tokenize_chinese_chars: true }
        };
        let id = |token: &str| {
            vocab.get(token).copied().ok_or_else(|| SquadError::Invalid {
                path: vocab_path.to_owned(),
                message: format!("no `{token}` token"),
            })
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        id("[UNK]")?;
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(100)
            .build()
            .map_err(|e| tokenizer_error(vocab_path, e))?;
        let mut tokenizer = Tokenizer::new(model);
        tokenizer.with_normalizer(Some(BertNormalizer::new(
            true,
            config.tokenize_chinese_chars,
            config.strip_accents,
            config.do_lower_case,
        )));
        tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
        tokenizer.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
        Self::with_settings(tokenizer, vocab_path.to_owned(), None)
    }

    /// The padding token: `pad_token` from tokenizer_config.json where given, else the first of
    /// WordPiece's `[PAD]` and byte-level BPE's `<pad>` (RoBERTa) that the vocabulary holds.
    fn with_settings(tokenizer: Tokenizer, source: PathBuf, pad_token: Option<String>) -> Result<Self, SquadError> {
        let candidates: Vec<String> = match pad_token {
            Some(token) => vec![token],
            None => vec!["[PAD]".into(), "<pad>".into()],
        };
        let found = candidates.iter().find_map(|t| tokenizer.token_to_id(t).map(|id| (id, t.clone())));
        let (pad_id, pad_token) = found.ok_or_else(|| SquadError::Invalid {
            path: source.clone(),
            message: format!("no padding token (looked for {})", candidates.join(", ")),
        })?;
        Ok(QaTokenizer { tokenizer, source, pad_id, pad_token, configured: Mutex::new(Vec::new()) })
    }

    /// The tokenizer as a tokenizer.json text (for a tokenizer built from vocab.txt, the
    /// tokenizer.json transformers' converter would write), e.g. for the web package's page.
    pub fn to_tokenizer_json(&self) -> Result<String, SquadError> {
        self.tokenizer.to_string(false).map_err(|e| tokenizer_error(&self.source, e))
    }

    /// Where the tokenizer was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The tokenizer truncating and padding windows as `options` say, from the cache or set up
    /// now (and kept, while fewer than [`CONFIGURED_TOKENIZERS_KEPT`] settings are).
    fn configured(&self, options: &FeatureOptions) -> Result<Arc<Tokenizer>, tokenizers::Error> {
        let setting = (options.max_length, options.doc_stride);
        let mut kept = self.configured.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, tokenizer)) = kept.iter().find(|(s, _)| *s == setting) {
            return Ok(tokenizer.clone());
        }
        drop(kept);
        let mut tokenizer = self.tokenizer.clone();
        tokenizer.with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length: options.max_length,
            strategy: TruncationStrategy::OnlySecond,
            stride: options.doc_stride,
        }))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(options.max_length),
            pad_id: self.pad_id,
            pad_token: self.pad_token.clone(),
            ..Default::default()
        }));
        let tokenizer = Arc::new(tokenizer);
        kept = self.configured.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < CONFIGURED_TOKENIZERS_KEPT {
            kept.push((setting, tokenizer.clone()));
        }
        Ok(tokenizer)
    }

    /// Builds the features of `examples` like run_qa.py's `prepare_validation_features`.
    pub fn features(&self, examples: &[Example], options: &FeatureOptions) -> Result<Features, SquadError> {
        let error = |message: String| SquadError::Invalid { path: self.source.clone(), message };
        if options.max_length < 8 || options.doc_stride >= options.max_length {
            return Err(error(format!(
                "max length {} with doc stride {} cannot hold a window",
                options.max_length, options.doc_stride
            )));
        }
        let tokenizer = self.configured(options).map_err(|e| error(e.to_string()))?;
        let m = options.max_length;
        let mut f = Features {
            count: 0,
            max_length: m,
            input_ids: vec![],
            attention_mask: vec![],
            token_type_ids: vec![],
            offsets: vec![],
            example_index: vec![],
            example_ids: vec![],
        };
        for (e, example) in examples.iter().enumerate() {
            let question =
                if options.lstrip_question { example.question.trim_start() } else { example.question.as_str() };
            let mut encoding =
                without_panics(|| tokenizer.encode_char_offsets((question, example.context.as_str()), true))
                    .map_err(|what| {
                        error(format!(
                            "question `{}`: malformed tokenizer (the tokenizers crate gave up: {what})",
                            example.id
                        ))
                    })?
                    .map_err(|err| error(format!("question `{}`: {err}", example.id)))?;
            // BertTokenizerFast returns the first window followed by its overflowing windows.
            let overflowing = encoding.take_overflowing();
            for window in std::iter::once(encoding).chain(overflowing) {
                if window.get_ids().len() != m {
                    return Err(error(format!(
                        "question `{}`: a window of {} tokens (the question alone may not fit in {m})",
                        example.id,
                        window.get_ids().len()
                    )));
                }
                f.input_ids.extend(window.get_ids().iter().map(|&v| v as i64));
                f.attention_mask.extend(window.get_attention_mask().iter().map(|&v| v as i64));
                f.token_type_ids.extend(window.get_type_ids().iter().map(|&v| v as i64));
                for (sequence, &(begin, end)) in window.get_sequence_ids().iter().zip(window.get_offsets()) {
                    let context = *sequence == Some(1);
                    f.offsets.push(if context { begin as i32 } else { -1 });
                    f.offsets.push(if context { end as i32 } else { -1 });
                }
                f.example_index.push(e);
                f.example_ids.push(example.id.clone());
                f.count += 1;
            }
        }
        Ok(f)
    }
}

fn tokenizer_error(path: &Path, e: impl std::fmt::Display) -> SquadError {
    SquadError::Invalid { path: path.to_owned(), message: format!("not a usable tokenizer: {e}") }
}
