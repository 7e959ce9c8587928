//! What identifies a model directory: the sha256 of its checkpoint (config and weights) and of its
//! tokenizer. Artifacts record both in their provenance and golden bundles in their manifest, so
//! verification can refuse to compare an artifact with another model's reference.

use std::path::Path;

use qaforge_provenance::{sha256_finish, Digest, Sha256Hasher as Sha256};

use crate::error::{CheckpointError, Result};
use crate::Checkpoint;

/// The tokenizer files whose bytes identify a tokenizer, in hashing order.
pub const TOKENIZER_FILES: &[&str] =
    &["tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"];

fn hash_file(hasher: &mut Sha256, path: &Path) -> Result<()> {
    let io = |source| CheckpointError::Io { path: path.to_owned(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    std::io::copy(&mut file, hasher).map_err(io)?;
    Ok(())
}

impl Checkpoint {
    /// Hex sha256 over config.json and the weight files, in that order (golden/generate.py
    /// computes the same).
    pub fn source_sha256(&self) -> Result<String> {
        let mut hasher = Sha256::new();
        hash_file(&mut hasher, &self.dir.join("config.json"))?;
        for path in self.weights.files() {
            hash_file(&mut hasher, path)?;
        }
        Ok(sha256_finish(hasher))
    }
}

/// Hex sha256 over the tokenizer files of `dir` that exist, each as its name, a NUL byte and its
/// bytes, in [`TOKENIZER_FILES`] order; `None` when there is none.
pub fn tokenizer_sha256(dir: &Path) -> Result<Option<String>> {
    let mut hasher = Sha256::new();
    let mut any = false;
    for name in TOKENIZER_FILES {
        let path = dir.join(name);
        if path.is_file() {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hash_file(&mut hasher, &path)?;
            any = true;
        }
    }
    Ok(any.then(|| sha256_finish(hasher)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_hash_covers_names_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(tokenizer_sha256(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join("vocab.txt"), "[PAD]\n").unwrap();
        let one = tokenizer_sha256(dir.path()).unwrap().unwrap();
        std::fs::write(dir.path().join("vocab.txt"), "[PAD]\n[UNK]\n").unwrap();
        let two = tokenizer_sha256(dir.path()).unwrap().unwrap();
        assert_ne!(one, two);
        // The same bytes under another name are another tokenizer.
        std::fs::remove_file(dir.path().join("vocab.txt")).unwrap();
        std::fs::write(dir.path().join("merges.txt"), "[PAD]\n[UNK]\n").unwrap();
        assert_ne!(tokenizer_sha256(dir.path()).unwrap().unwrap(), two);
    }
}
