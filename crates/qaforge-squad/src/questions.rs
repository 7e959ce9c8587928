//! Questions to answer (`answer --batch`): a SQuAD-format file, or JSON Lines with one
//! `{"id", "question", "context"}` object a line, told apart by their first character.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use crate::data::{Example, SquadError, SquadFile};

/// The largest questions file read (the SQuAD v2 dev set is 4.2 MB, its training set 40 MB).
const MAX_QUESTIONS_FILE_BYTES: u64 = 1 << 30;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    id: String,
    question: String,
    context: String,
}

/// Reads the questions of `path`, in file order: a SQuAD v2-format JSON file (validated as
/// [`SquadFile::load`] validates it; gold answers are kept), or JSON Lines of
/// `{"id", "question", "context"}` (blank lines skipped). Ids must be unique and questions and
/// contexts not empty; any problem is an error naming the file and the line.
pub fn load_questions(path: &Path) -> Result<Vec<Example>, SquadError> {
    let io = |source| SquadError::Io { path: path.to_owned(), source };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_QUESTIONS_FILE_BYTES {
        return Err(SquadError::Invalid {
            path: path.to_owned(),
            message: format!("{len} bytes is more than the {MAX_QUESTIONS_FILE_BYTES} bytes allowed"),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| SquadError::Invalid { path: path.to_owned(), message: format!("not UTF-8: {e}") })?;
    let is_squad = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => value.get("data").is_some(),
        Err(_) => false,
    };
    if is_squad {
        return Ok(SquadFile::parse(&bytes, path)?.examples);
    }
    parse_lines(text, path)
}

fn parse_lines(text: &str, path: &Path) -> Result<Vec<Example>, SquadError> {
    let invalid = |line: usize, message: String| SquadError::Invalid {
        path: path.to_owned(),
        message: format!("line {line}: {message}"),
    };
    let mut ids = BTreeSet::new();
    let mut examples = Vec::new();
    for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() {
            continue;
        }
        let Line { id, question, context } = serde_json::from_str(line)
            .map_err(|e| invalid(n, format!("not a {{\"id\", \"question\", \"context\"}} object: {e}")))?;
        if question.trim().is_empty() || context.trim().is_empty() {
            return Err(invalid(n, format!("question `{id}` has an empty question or context")));
        }
        if !ids.insert(id.clone()) {
            return Err(invalid(n, format!("duplicate question id `{id}`")));
        }
        examples.push(Example { id, title: String::new(), question, context, answers: vec![] });
    }
    if examples.is_empty() {
        return Err(SquadError::Invalid {
            path: path.to_owned(),
            message: "no questions (neither SQuAD JSON nor JSON Lines of {\"id\", \"question\", \"context\"})".into(),
        });
    }
    Ok(examples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_read_in_order_and_their_problems_named_by_line() {
        let path = Path::new("q.jsonl");
        let ok = parse_lines("{\"id\": \"b\", \"question\": \"Who?\", \"context\": \"Ann.\"}\n\n{\"id\": \"a\", \"question\": \"Why?\", \"context\": \"So.\"}\n", path).unwrap();
        assert_eq!(ok.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        for (text, needle) in [
            ("{\"id\": \"a\", \"question\": \"Q\", \"context\": \"C\"}\n{\"id\": \"a\", \"question\": \"Q\", \"context\": \"C\"}", "line 2: duplicate question id `a`"),
            ("{\"id\": \"a\", \"question\": \" \", \"context\": \"C\"}", "line 1: question `a` has an empty question or context"),
            ("{\"id\": \"a\", \"question\": \"Q\"}", "line 1: not a"),
            ("[1, 2]", "line 1: not a"),
            ("\n\n", "no questions"),
        ] {
            let err = parse_lines(text, path).unwrap_err().to_string();
            assert!(err.contains(needle) && err.starts_with("q.jsonl: "), "{text}: {err}");
        }
    }
}
