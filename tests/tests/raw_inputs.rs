//! Raw little-endian inputs reach ONNX Runtime in place when the buffer is
//! aligned, and through one copy when it is not: the outputs are the same
//! either way (the golden ones).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use modelgate_runtime::{LoadedModel, ModelOptions, Runtime, Tensor, TensorData};
use modelgate_tests::*;

#[test]
fn aligned_and_unaligned_raw_inputs_give_the_golden_outputs() {
    let runtime = Runtime::init(None).unwrap();
    let model = LoadedModel::load(&runtime, &model_file(V1), &ModelOptions::default()).unwrap();
    let g = golden(1);
    let raw: Vec<u8> = g.rows.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    let shape = vec![g.rows.len() as i64, 30];
    // A buffer one byte into an allocation: misaligned for f32.
    let mut padded = vec![0u8; raw.len() + 1];
    padded[1..].copy_from_slice(&raw);
    let unaligned = bytes::Bytes::from(padded).slice(1..);
    let aligned = bytes::Bytes::from(raw);
    assert_eq!(aligned.as_ptr() as usize % 4, 0, "a fresh Vec<u8> of this size is 4-aligned");
    assert_ne!(unaligned.as_ptr() as usize % 4, 0);
    let elements = g.rows.len() * 30;
    for bytes in [aligned, unaligned] {
        let data = TensorData::from_raw_bytes(modelgate_runtime::DataType::Float32, bytes, elements).unwrap();
        assert!(matches!(data, TensorData::Raw { .. }), "numeric raw bytes are kept, not decoded");
        let input = Tensor::new("input", shape.clone(), data);
        let out = model.run(0, &[input], &["probabilities".into()]).unwrap();
        let TensorData::Float32(probs) = &out[0].data else { panic!("{:?}", out[0].data) };
        let want: Vec<f32> = g.probabilities.iter().flatten().copied().collect();
        for (a, b) in probs.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
    // Equality looks through the representation.
    let raw = TensorData::from_raw_bytes(modelgate_runtime::DataType::Float32, vec![0, 0, 128, 63].into(), 1)
        .unwrap();
    assert_eq!(raw, TensorData::Float32(vec![1.0]));
}
