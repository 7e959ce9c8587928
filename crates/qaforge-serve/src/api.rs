//! The request and answer shapes of Hugging Face's inference API and transformers'
//! question-answering pipeline, read strictly: every problem is a message naming the field.

use serde::Serialize;
use serde_json::Value;

/// One question about one context.
#[derive(Debug, Clone, PartialEq)]
pub struct QaInput {
    /// The question.
    pub question: String,
    /// The context paragraph.
    pub context: String,
}

/// The pipeline's parameters; each absent one takes the verified default (the settings
/// `qaforge verify` judged the artifact with), not the pipeline's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Parameters {
    /// Answers per question.
    pub top_k: usize,
    /// `None`: abstain as the verified model does (its null score against its best span); `Some(true)`:
    /// the same; `Some(false)`: never abstain, answer with the best span.
    pub handle_impossible_answer: Option<bool>,
    /// Longest answer, in tokens (verified default 30; the pipeline's is 15).
    pub max_answer_len: usize,
    /// Overlap of consecutive windows of a long context.
    pub doc_stride: usize,
    /// Tokens per window.
    pub max_seq_len: usize,
}

impl Default for Parameters {
    fn default() -> Self {
        Parameters { top_k: 1, handle_impossible_answer: None, max_answer_len: 30, doc_stride: 128, max_seq_len: 384 }
    }
}

/// A parsed `/predict` body.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictRequest {
    /// The questions.
    pub inputs: Vec<QaInput>,
    /// Whether `inputs` was a list (the answer is then a list too).
    pub listed: bool,
    /// The parameters.
    pub parameters: Parameters,
}

/// The bounds a request's parameters must keep.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most inputs in one request.
    pub max_inputs: usize,
    /// Longest window the artifact accepts (its position table).
    pub max_seq_len: usize,
}

/// The largest `top_k`: run_qa.py's n-best, from which answers are drawn.
pub const MAX_TOP_K: usize = 20;

fn string_field(object: &serde_json::Map<String, Value>, key: &str, at: &str) -> Result<String, String> {
    match object.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("{at}.{key} is empty")),
        Some(other) => Err(format!("{at}.{key} must be a string, not {}", kind(other))),
        None => Err(format!("{at} has no `{key}`")),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn input(value: &Value, at: &str) -> Result<QaInput, String> {
    let Value::Object(object) = value else {
        return Err(format!("{at} must be an object with `question` and `context`, not {}", kind(value)));
    };
    if let Some(other) = object.keys().find(|k| *k != "question" && *k != "context") {
        return Err(format!("{at} has an unknown field `{other}` (it takes `question` and `context`)"));
    }
    Ok(QaInput { question: string_field(object, "question", at)?, context: string_field(object, "context", at)? })
}

fn whole(
    parameters: &serde_json::Map<String, Value>,
    key: &str,
    low: usize,
    high: usize,
) -> Result<Option<usize>, String> {
    match parameters.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if (low as u64..=high as u64).contains(&v) => Ok(Some(v as usize)),
            _ => Err(format!("parameters.{key} = {n}: a whole number from {low} to {high}")),
        },
        Some(other) => Err(format!("parameters.{key} must be a number, not {}", kind(other))),
    }
}

impl PredictRequest {
    /// Reads a `/predict` body: `{"inputs": {"question", "context"} or a list of them,
    /// "parameters": {top_k, handle_impossible_answer, max_answer_len, doc_stride, max_seq_len}}`.
    pub fn parse(body: &[u8], bounds: Bounds) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let Value::Object(object) = value else {
            return Err(format!("the body must be a JSON object with `inputs`, not {}", kind(&value)));
        };
        if let Some(other) = object.keys().find(|k| *k != "inputs" && *k != "parameters") {
            return Err(format!("unknown field `{other}` (the body takes `inputs` and `parameters`)"));
        }
        let (inputs, listed) = match object.get("inputs") {
            Some(Value::Array(list)) => {
                if list.is_empty() {
                    return Err("inputs is an empty list".into());
                }
                if list.len() > bounds.max_inputs {
                    return Err(format!(
                        "inputs holds {} questions; at most {} a request (--max-client-batch-size)",
                        list.len(),
                        bounds.max_inputs
                    ));
                }
                (
                    list.iter()
                        .enumerate()
                        .map(|(i, v)| input(v, &format!("inputs[{i}]")))
                        .collect::<Result<Vec<_>, _>>()?,
                    true,
                )
            }
            Some(v) => (vec![input(v, "inputs")?], false),
            None => return Err("the body has no `inputs`".into()),
        };
        let mut parameters = Parameters::default();
        match object.get("parameters") {
            None | Some(Value::Null) => {}
            Some(Value::Object(p)) => {
                const KNOWN: [&str; 5] =
                    ["top_k", "handle_impossible_answer", "max_answer_len", "doc_stride", "max_seq_len"];
                if let Some(other) = p.keys().find(|k| !KNOWN.contains(&k.as_str())) {
                    return Err(format!("unknown parameter `{other}` (known: {})", KNOWN.join(", ")));
                }
                parameters.top_k = whole(p, "top_k", 1, MAX_TOP_K)?.unwrap_or(parameters.top_k);
                parameters.max_answer_len =
                    whole(p, "max_answer_len", 1, bounds.max_seq_len)?.unwrap_or(parameters.max_answer_len);
                parameters.max_seq_len = whole(p, "max_seq_len", 16, bounds.max_seq_len)?
                    .unwrap_or(parameters.max_seq_len.min(bounds.max_seq_len));
                parameters.doc_stride = whole(p, "doc_stride", 0, bounds.max_seq_len)?.unwrap_or(parameters.doc_stride);
                parameters.handle_impossible_answer = match p.get("handle_impossible_answer") {
                    None | Some(Value::Null) => None,
                    Some(Value::Bool(b)) => Some(*b),
                    Some(other) => {
                        return Err(format!(
                            "parameters.handle_impossible_answer must be a boolean, not {}",
                            kind(other)
                        ))
                    }
                };
            }
            Some(other) => return Err(format!("parameters must be an object, not {}", kind(other))),
        }
        if parameters.doc_stride >= parameters.max_seq_len {
            return Err(format!(
                "parameters.doc_stride {} must be below max_seq_len {}",
                parameters.doc_stride, parameters.max_seq_len
            ));
        }
        Ok(PredictRequest { inputs, listed, parameters })
    }
}

/// One answer, as the pipeline writes it: character (Unicode scalar) offsets into the context,
/// `start = end = 0` and `answer` "" for no answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// The pipeline's score: the start probability times the end probability, or for no answer
    /// the `[CLS]` probability.
    pub score: f64,
    /// First character of the answer in the context.
    pub start: usize,
    /// One past its last character.
    pub end: usize,
    /// The answer text.
    pub answer: String,
}

/// An error as the server answers it: `{"error", "error_type"}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    /// What went wrong, in words.
    pub error: String,
    /// Its kind: `validation`, `payload_too_large`, `overloaded`, `timeout`, `unauthorized`,
    /// `backend`, `unavailable`, `internal`.
    pub error_type: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds { max_inputs: 4, max_seq_len: 512 };

    #[test]
    fn the_pipeline_shapes_are_read() {
        let one = PredictRequest::parse(br#"{"inputs": {"question": "Who?", "context": "Ann did."}}"#, BOUNDS).unwrap();
        assert_eq!((one.inputs.len(), one.listed, one.parameters), (1, false, Parameters::default()));
        let many = PredictRequest::parse(br#"{"inputs": [{"question": "Who?", "context": "Ann."}, {"question": "Why?", "context": "So."}], "parameters": {"top_k": 3, "handle_impossible_answer": false, "max_seq_len": 256, "doc_stride": 64}}"#, BOUNDS).unwrap();
        assert_eq!(
            (many.inputs.len(), many.listed, many.parameters.top_k, many.parameters.handle_impossible_answer),
            (2, true, 3, Some(false))
        );
        assert_eq!(
            (many.parameters.max_seq_len, many.parameters.doc_stride, many.parameters.max_answer_len),
            (256, 64, 30)
        );
    }

    #[test]
    fn every_problem_is_named() {
        for (body, needle) in [
            (&b"not json"[..], "not JSON"),
            (br#"[1]"#, "JSON object"),
            (br#"{"question": "Who?"}"#, "unknown field `question`"),
            (br#"{"inputs": {"question": "", "context": "C"}}"#, "inputs.question is empty"),
            (br#"{"inputs": {"question": "Q"}}"#, "inputs has no `context`"),
            (br#"{"inputs": {"question": 3, "context": "C"}}"#, "inputs.question must be a string"),
            (br#"{"inputs": []}"#, "empty list"),
            (br#"{"inputs": [{"question": "Q", "context": "C"}, {"question": "Q", "context": "C"}, {"question": "Q", "context": "C"}, {"question": "Q", "context": "C"}, {"question": "Q", "context": "C"}]}"#, "at most 4"),
            (br#"{"inputs": {"question": "Q", "context": "C"}, "parameters": {"top_k": 0}}"#, "parameters.top_k = 0"),
            (br#"{"inputs": {"question": "Q", "context": "C"}, "parameters": {"max_seq_len": 4096}}"#, "parameters.max_seq_len = 4096"),
            (br#"{"inputs": {"question": "Q", "context": "C"}, "parameters": {"doc_stride": 400}}"#, "doc_stride 400 must be below"),
            (br#"{"inputs": {"question": "Q", "context": "C"}, "parameters": {"topk": 2}}"#, "unknown parameter `topk`"),
        ] {
            let err = PredictRequest::parse(body, BOUNDS).unwrap_err();
            assert!(err.contains(needle), "{}: {err}", String::from_utf8_lossy(body));
        }
    }
}
