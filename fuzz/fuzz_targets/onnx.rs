//! ONNX files given to quantize, verify and answer: decoding (prost, size-checked) and
//! qaforge's own graph passes (fp16 and int8-dynamic) on whatever graph decodes. tract's loading
//! of such graphs is tract's parser, not fuzzed here.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use qaforge_quantize::{CalibrationMethod, Precision, QuantizeOptions, Target, WeightOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(model) = qaforge_onnx::decode_model(data, Path::new("model.onnx")) else { return };
    for precision in [Precision::Fp16, Precision::Int8Dynamic] {
        let options = QuantizeOptions {
            precision,
            exclude: vec!["layer.1.*".into()],
            float_activations: vec![],
            int8_qa_head: false,
            target: Target::default(),
            weights: WeightOptions::default(),
            method: CalibrationMethod::MinMax,
            activation_scales: qaforge_quantize::ActivationScales::Tensor,
            batch_size: 1,
            threads: 1,
            input_names: None,
            calibration_engine: qaforge_quantize::EngineChoice::Tract,
        };
        let _ = qaforge_quantize::quantize(&model, &options, None, "fuzz", &|_| {});
    }
});
