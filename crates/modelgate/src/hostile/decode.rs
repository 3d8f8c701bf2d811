//! Targets `predict_decode` and `kserve_decode`: a Predict or KServe
//! ModelInfer request's bytes through the server's decoding and signature
//! check, with the invariants every accepted tensor satisfies (element
//! counts, raw layout round trips, batching with itself).

use std::sync::OnceLock;

use modelgate_proto::{inference as kpb, v1 as pb};
use modelgate_runtime::tensor::element_count;
use modelgate_runtime::{DataType, Dim, Signature, Tensor, TensorData, TensorSpec};
use prost::Message;

use crate::api::kserve;
use crate::serving::convert;

fn spec(name: &str, dtype: DataType, dims: &[Dim]) -> TensorSpec {
    TensorSpec { name: name.into(), dtype, dims: dims.to_vec() }
}

fn n() -> Dim {
    Dim::Dynamic(Some("N".into()))
}

/// The signatures requests are checked against: the bundled models'
/// (breast-cancer, cnn, the fault models' other signature) and one with every
/// dtype, a shared named dimension, an anonymous dynamic one and a scalar.
pub fn signatures() -> &'static [Signature] {
    static SIGNATURES: OnceLock<Vec<Signature>> = OnceLock::new();
    SIGNATURES.get_or_init(|| {
        use DataType::*;
        vec![
            Signature {
                inputs: vec![spec("input", Float32, &[n(), Dim::Fixed(30)])],
                outputs: vec![
                    spec("label", Int64, &[n()]),
                    spec("probabilities", Float32, &[n(), Dim::Fixed(2)]),
                ],
            },
            Signature {
                inputs: vec![spec("input", Float32, &[n(), Dim::Fixed(3), Dim::Fixed(48), Dim::Fixed(48)])],
                outputs: vec![spec("logits", Float32, &[n(), Dim::Fixed(10)])],
            },
            Signature {
                inputs: vec![spec("x", Float32, &[n(), Dim::Fixed(4)])],
                outputs: vec![spec("y", Float32, &[n(), Dim::Fixed(1)])],
            },
            Signature {
                inputs: vec![
                    spec("f64", Float64, &[n(), Dim::Fixed(2)]),
                    spec("i32", Int32, &[n()]),
                    spec("i64", Int64, &[n(), Dim::Dynamic(None)]),
                    spec("b", Bool, &[n()]),
                    spec("u8", Uint8, &[n(), Dim::Fixed(1)]),
                    spec("i8", Int8, &[n()]),
                    spec("s", String, &[n()]),
                    spec("f16", Float16, &[n(), Dim::Fixed(2)]),
                    spec("bf16", Bfloat16, &[n()]),
                    spec("i16", Int16, &[n()]),
                    spec("u16", Uint16, &[n()]),
                    spec("u32", Uint32, &[n()]),
                    spec("u64", Uint64, &[n()]),
                ],
                outputs: vec![spec("out", Float32, &[n()])],
            },
            Signature {
                inputs: vec![spec("scalar", Float32, &[]), spec("v", Int64, &[Dim::Dynamic(None)])],
                outputs: vec![spec("out", Float32, &[])],
            },
        ]
    })
}

/// What every accepted tensor satisfies: as many elements as its shape
/// holds, raw bytes exactly elements × element size, and the raw layout a
/// response carries decodes back to the same elements.
fn check_decoded(t: &Tensor) {
    let elements = element_count(&t.shape).expect("an accepted shape has an element count");
    assert_eq!(t.data.len(), elements, "input '{}' shape {:?}: element count", t.name, t.shape);
    if let TensorData::Raw { dtype, bytes } = &t.data {
        let size = dtype.element_size().expect("only numeric elements stay raw");
        assert_eq!(bytes.len(), elements * size, "input '{}': raw byte length", t.name);
    }
    let raw = t.data.to_raw();
    let back =
        TensorData::from_raw(t.dtype(), &raw, elements).expect("an accepted tensor's raw layout decodes");
    assert_eq!(back.dtype(), t.dtype());
    assert_eq!(back.to_raw(), raw, "input '{}': raw round trip", t.name);
    assert_eq!(t.data.clone().into_raw_bytes().as_ref(), raw.as_slice(), "into_raw_bytes == to_raw");
}

/// Same name, shape, dtype and element bytes (NaN-safe, unlike `==`).
fn same_tensor(a: &Tensor, b: &Tensor) -> bool {
    a.name == b.name && a.shape == b.shape && a.dtype() == b.dtype() && a.data.to_raw() == b.data.to_raw()
}

/// Checks decoded inputs against every signature the way the gateway does;
/// what passes fits the signature exactly and survives being batched with
/// itself and split back.
fn check_against_signatures(inputs: &[Tensor], outputs: &[String]) {
    for signature in signatures() {
        let mut inputs = inputs.to_vec();
        let Ok(()) = crate::serving::request::check_request(signature, &mut inputs, outputs) else {
            continue;
        };
        assert_eq!(inputs.len(), signature.inputs.len());
        for spec in &signature.inputs {
            let t = inputs.iter().find(|t| t.name == spec.name).expect("every declared input is given");
            assert_eq!(t.dtype(), spec.dtype);
            assert_eq!(t.shape.len(), spec.dims.len());
            for (&got, dim) in t.shape.iter().zip(&spec.dims) {
                assert!(got > 0, "an accepted dimension is positive");
                if let Dim::Fixed(want) = dim {
                    assert_eq!(got, *want);
                }
            }
            assert_eq!(Some(t.data.len()), element_count(&t.shape));
        }
        if signature.batchable() {
            for t in &inputs {
                let rows = t.rows();
                let both = Tensor::concat_rows(&[t, t]).expect("a request stacks with itself");
                assert_eq!(both.data.len(), 2 * t.data.len());
                let parts = both.split_rows(&[rows, rows]).expect("a batch splits back");
                assert!(parts.iter().all(|p| same_tensor(p, t)), "batch round trip of '{}'", t.name);
            }
        }
    }
}

/// Target `predict_decode`: a `modelgate.v1.PredictRequest` as Predict
/// decodes and checks it.
pub fn fuzz_predict_decode(data: &[u8]) {
    let Ok(req) = pb::PredictRequest::decode(data) else {
        return;
    };
    let _ = crate::api::inference::request_id_or_new(req.request_id.clone());
    let inputs = match convert::inputs_from_pb(req.inputs) {
        Ok(inputs) => inputs,
        Err(e) => {
            assert!(e.0.starts_with("input "), "a decoding mistake names the input: {}", e.0);
            return;
        }
    };
    for t in &inputs {
        check_decoded(t);
        // What a response carries, raw or typed, decodes back the same.
        for typed in [false, true] {
            let back = convert::output_from_pb(convert::tensor_to_pb(t.clone(), typed))
                .unwrap_or_else(|e| panic!("an accepted tensor's encoding decodes (typed {typed}): {}", e.0));
            assert!(same_tensor(&back, t), "encode/decode round trip of '{}' (typed {typed})", t.name);
        }
    }
    check_against_signatures(&inputs, &req.output_names);
}

/// Target `kserve_decode`: a KServe v2 `ModelInferRequest` as ModelInfer
/// decodes and checks it, typed `contents` or `raw_input_contents`.
pub fn fuzz_kserve_decode(data: &[u8]) {
    let Ok(req) = kpb::ModelInferRequest::decode(data) else {
        return;
    };
    let inputs = match kserve::inputs_from_request(req.inputs, req.raw_input_contents) {
        Ok(inputs) => inputs,
        Err(e) => {
            assert!(
                e.0.starts_with("input '") || e.0.starts_with("raw_input_contents "),
                "a decoding mistake names the input: {}",
                e.0
            );
            return;
        }
    };
    for t in &inputs {
        check_decoded(t);
    }
    // The raw bytes a response carries, sent back as a request, decode the same.
    let echo: Vec<_> = inputs
        .iter()
        .map(|t| kpb::model_infer_request::InferInputTensor {
            name: t.name.clone(),
            datatype: kserve::datatype_name(t.dtype()).into(),
            shape: t.shape.clone(),
            parameters: Default::default(),
            contents: None,
        })
        .collect();
    let raw = inputs.iter().map(|t| t.data.clone().into_raw_bytes()).collect();
    let back = kserve::inputs_from_request(echo, raw).expect("raw contents of accepted inputs decode");
    assert!(back.iter().zip(&inputs).all(|(a, b)| same_tensor(a, b)), "raw round trip");
    let outputs: Vec<String> = req.outputs.iter().map(|o| o.name.clone()).collect();
    check_against_signatures(&inputs, &outputs);
}
