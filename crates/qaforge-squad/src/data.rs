//! SQuAD v2 JSON files (`{"version", "data": [{"title", "paragraphs": [{"context", "qas"}]}]}`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors reading SQuAD data or predictions.
#[derive(Debug, thiserror::Error)]
pub enum SquadError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid SQuAD JSON, or breaks one of its rules.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (serde's message carries line and column).
        message: String,
    },
}

#[derive(Debug, Deserialize)]
struct RawFile {
    data: Vec<RawArticle>,
}

#[derive(Debug, Deserialize)]
struct RawArticle {
    #[serde(default)]
    title: String,
    paragraphs: Vec<RawParagraph>,
}

#[derive(Debug, Deserialize)]
struct RawParagraph {
    context: String,
    qas: Vec<RawQuestion>,
}

#[derive(Debug, Deserialize)]
struct RawQuestion {
    id: String,
    question: String,
    #[serde(default)]
    answers: Vec<RawAnswer>,
    #[serde(default)]
    is_impossible: bool,
}

#[derive(Debug, Deserialize)]
struct RawAnswer {
    text: String,
    answer_start: i64,
}

/// One question with its context and gold answers.
#[derive(Debug, Clone)]
pub struct Example {
    /// The question id.
    pub id: String,
    /// The article title.
    pub title: String,
    /// The question.
    pub question: String,
    /// The paragraph.
    pub context: String,
    /// Gold answer texts; empty for unanswerable questions.
    pub answers: Vec<String>,
}

/// A validated SQuAD v2 file, flattened into examples in file order.
#[derive(Debug, Clone)]
pub struct SquadFile {
    /// The examples.
    pub examples: Vec<Example>,
    /// Number of articles.
    pub articles: usize,
    /// Number of paragraphs (contexts).
    pub paragraphs: usize,
}

impl SquadFile {
    /// Reads and validates a SQuAD v2 JSON file.
    pub fn load(path: &Path) -> Result<Self, SquadError> {
        let bytes = std::fs::read(path).map_err(|source| SquadError::Io { path: path.to_owned(), source })?;
        Self::parse(&bytes, path)
    }

    /// Parses SQuAD v2 JSON; `path` is used in messages only.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, SquadError> {
        let invalid = |message: String| SquadError::Invalid { path: path.to_owned(), message };
        let raw: RawFile = serde_json::from_slice(bytes).map_err(|e| invalid(format!("not SQuAD JSON: {e}")))?;
        let mut ids = BTreeSet::new();
        let mut examples = Vec::new();
        for article in &raw.data {
            for paragraph in &article.paragraphs {
                if paragraph.context.is_empty() {
                    return Err(invalid(format!("article `{}` has an empty context", article.title)));
                }
                for qa in &paragraph.qas {
                    if !ids.insert(qa.id.clone()) {
                        return Err(invalid(format!("duplicate question id `{}`", qa.id)));
                    }
                    if qa.is_impossible && !qa.answers.is_empty() {
                        return Err(invalid(format!("question `{}` is impossible but has answers", qa.id)));
                    }
                    for answer in &qa.answers {
                        let start = usize::try_from(answer.answer_start).ok();
                        let fits = start
                            .and_then(|s| paragraph.context.get(char_to_byte(&paragraph.context, s)?..))
                            .is_some_and(|rest| rest.chars().take(answer.text.chars().count()).eq(answer.text.chars()));
                        if !fits {
                            return Err(invalid(format!(
                                "question `{}`: answer `{}` is not at character {} of its context",
                                qa.id, answer.text, answer.answer_start
                            )));
                        }
                    }
                    examples.push(Example {
                        id: qa.id.clone(),
                        title: article.title.clone(),
                        question: qa.question.clone(),
                        context: paragraph.context.clone(),
                        answers: qa.answers.iter().map(|a| a.text.clone()).collect(),
                    });
                }
            }
        }
        if examples.is_empty() {
            return Err(invalid("no questions".into()));
        }
        let paragraphs = raw.data.iter().map(|a| a.paragraphs.len()).sum();
        Ok(SquadFile { examples, articles: raw.data.len(), paragraphs })
    }

    /// Questions `range` only (for a shard of a verification run); article and paragraph counts
    /// are those of the questions kept.
    pub fn questions(&self, range: std::ops::Range<usize>) -> SquadFile {
        let examples = self.examples[range].to_vec();
        let distinct = |key: fn(&Example) -> (&str, &str)| examples.iter().map(key).collect::<BTreeSet<_>>().len();
        SquadFile { articles: distinct(|e| (&e.title, "")), paragraphs: distinct(|e| (&e.title, &e.context)), examples }
    }

    /// The first `limit` questions of SQuAD JSON `bytes`, as SQuAD JSON (paragraphs and articles
    /// left without questions are dropped; every other field is kept).
    pub fn first_questions_json(bytes: &[u8], limit: usize, path: &Path) -> Result<Vec<u8>, SquadError> {
        let invalid = |message: String| SquadError::Invalid { path: path.to_owned(), message };
        let mut raw: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("not SQuAD JSON: {e}")))?;
        let mut left = limit;
        let articles =
            raw.get_mut("data").and_then(|d| d.as_array_mut()).ok_or_else(|| invalid("no `data` list".into()))?;
        for article in articles.iter_mut() {
            if let Some(paragraphs) = article.get_mut("paragraphs").and_then(|p| p.as_array_mut()) {
                for paragraph in paragraphs.iter_mut() {
                    if let Some(qas) = paragraph.get_mut("qas").and_then(|q| q.as_array_mut()) {
                        let keep = qas.len().min(left);
                        qas.truncate(keep);
                        left -= keep;
                    }
                }
                paragraphs.retain(|p| p.get("qas").and_then(|q| q.as_array()).is_some_and(|q| !q.is_empty()));
            }
        }
        articles.retain(|a| a.get("paragraphs").and_then(|p| p.as_array()).is_some_and(|p| !p.is_empty()));
        serde_json::to_vec(&raw).map_err(|e| invalid(e.to_string()))
    }

    /// Number of answerable questions.
    pub fn answerable(&self) -> usize {
        self.examples.iter().filter(|e| !e.answers.is_empty()).count()
    }

    /// One line for people: articles, paragraphs, questions, answerable / unanswerable.
    pub fn summary(&self) -> String {
        let answerable = self.answerable();
        format!(
            "{} articles, {} paragraphs, {} questions ({} answerable, {} unanswerable)",
            self.articles,
            self.paragraphs,
            self.examples.len(),
            answerable,
            self.examples.len() - answerable
        )
    }
}

/// Reads a predictions file: a JSON object from question id to answer text ("" for no answer).
pub fn load_predictions(path: &Path) -> Result<std::collections::BTreeMap<String, String>, SquadError> {
    let bytes = std::fs::read(path).map_err(|source| SquadError::Io { path: path.to_owned(), source })?;
    serde_json::from_slice(&bytes).map_err(|e| SquadError::Invalid {
        path: path.to_owned(),
        message: format!("expected a JSON object from question id to answer text: {e}"),
    })
}

/// Byte offset of character `index` (SQuAD offsets count Python characters), if in range.
fn char_to_byte(text: &str, index: usize) -> Option<usize> {
    if index == text.chars().count() {
        return Some(text.len());
    }
    text.char_indices().nth(index).map(|(b, _)| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<SquadFile, SquadError> {
        SquadFile::parse(json.as_bytes(), Path::new("dev.json"))
    }

    #[test]
    fn reads_a_small_file() {
        let f = parse(
            r#"{"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "Paris is in France.",
            "qas": [{"id": "1", "question": "Where?", "answers": [{"text": "France", "answer_start": 12}]},
                    {"id": "2", "question": "Why?", "answers": [], "is_impossible": true}]}]}]}"#,
        )
        .unwrap();
        assert_eq!((f.examples.len(), f.answerable(), f.articles), (2, 1, 1));
    }

    #[test]
    fn malformed_files_name_the_problem() {
        for (json, needle) in [
            ("", "not SQuAD JSON"),
            (r#"{"data": 3}"#, "not SQuAD JSON"),
            (r#"{"data": [{"paragraphs": [{"qas": []}]}]}"#, "missing field `context`"),
            (r#"{"data": []}"#, "no questions"),
            (r#"{"data": [{"title": "T", "paragraphs": [{"context": "", "qas": []}]}]}"#, "empty context"),
            (
                r#"{"data": [{"paragraphs": [{"context": "abc", "qas": [{"id": "1", "question": "q", "answers": [{"text": "b", "answer_start": 7}]}]}]}]}"#,
                "not at character 7",
            ),
            (
                r#"{"data": [{"paragraphs": [{"context": "abc", "qas": [{"id": "1", "question": "q"}, {"id": "1", "question": "q"}]}]}]}"#,
                "duplicate question id `1`",
            ),
        ] {
            let err = parse(json).unwrap_err().to_string();
            assert!(err.starts_with("dev.json: ") && err.contains(needle), "{json}: {err}");
        }
    }
}
