//! The parameters of a question-answering model for a given config: names as transformers writes
//! them and the shapes the config implies (each architecture's table is in its own module).

use crate::config::ModelConfig;

/// Every parameter of the QA model, in transformers' module order, with its shape
/// (`nn.Linear` weights are `[out, in]`).
pub fn parameter_shapes(config: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    match config {
        ModelConfig::MobileBert(c) => crate::mobilebert::parameter_shapes(c),
        ModelConfig::Bert(c) => crate::bert_family::parameter_shapes(c),
    }
}

/// Total parameter count of the QA model.
pub fn parameter_count(c: &ModelConfig) -> usize {
    parameter_shapes(c).iter().map(|(_, s)| s.iter().product::<usize>()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn google_mobilebert_uncased_has_24_582_914_parameters() {
        let c =
            ModelConfig::from_json_bytes(br#"{"model_type": "mobilebert"}"#, Path::new("config.json")).unwrap().config;
        assert_eq!(parameter_count(&c), 24_582_914);
    }
}
