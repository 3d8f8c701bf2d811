//! The codec of every generated service: prost's, except that a Predict or
//! ModelInfer request is scanned on the wire before it is decoded, and
//! refused when it repeats a structure more often than any model needs.
//!
//! Why before decoding: prost turns each repeated entry into a Rust value
//! however little of the wire it took. An empty `Tensor` is 2 bytes on the
//! wire and 232 in memory, an empty KServe input 312, an empty output name
//! 24, a shape dimension 8 from 1. So a 16 MiB Predict of empty inputs
//! peaked at 1.9 GB, and one at the 64 MiB request limit would take ~7.5 GB,
//! all before any handler could look at it. The scan reads only field
//! headers (no allocation) and stops at the first count over its cap.

use std::any::TypeId;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Inputs, outputs, output names or raw contents in one request.
pub const MAX_TENSORS: usize = 1024;
/// Dimensions of one tensor's shape.
pub const MAX_DIMS: usize = 64;
/// Parameters of a request or of one of its tensors (KServe).
pub const MAX_PARAMETERS: usize = 64;

/// prost's codec with the scan (see the module docs).
#[derive(Debug)]
pub struct BoundedCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder(self.0.decoder())
    }
}

/// prost's decoder after the scan.
#[derive(Debug)]
pub struct BoundedDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default + 'static> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        use prost::bytes::Buf;
        let id = TypeId::of::<U>();
        let scan = if id == TypeId::of::<crate::v1::PredictRequest>() {
            Some(predict_request as fn(&[u8]) -> Result<(), String>)
        } else if id == TypeId::of::<crate::inference::ModelInferRequest>() {
            Some(model_infer_request as fn(&[u8]) -> Result<(), String>)
        } else {
            None
        };
        // tonic hands over the whole message as one chunk.
        if let Some(scan) = scan
            && buf.chunk().len() == buf.remaining()
        {
            scan(buf.chunk()).map_err(Status::invalid_argument)?;
        }
        self.0.decode(buf)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// One field of a message on the wire.
enum Value<'a> {
    Varint,
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of a message, in order; stops at anything malformed (prost
/// then reports it).
struct Fields<'a>(&'a [u8]);

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u64, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let key = varint(&mut self.0)?;
        let value = match key & 7 {
            0 => {
                varint(&mut self.0)?;
                Value::Varint
            }
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                self.0 = self.0.get(n..)?;
                Value::Fixed
            }
            2 => {
                let len = usize::try_from(varint(&mut self.0)?).ok()?;
                let (bytes, rest) = (self.0.get(..len)?, self.0.get(len..)?);
                self.0 = rest;
                Value::Bytes(bytes)
            }
            _ => return None,
        };
        Some((key >> 3, value))
    }
}

/// Counts one more of `what`, refusing past `cap`.
fn count(n: &mut usize, cap: usize, what: &str) -> Result<(), String> {
    *n += 1;
    if *n > cap {
        return Err(format!("request has more than {cap} {what}"));
    }
    Ok(())
}

/// Dimensions in a `repeated int64 shape` field (packed or not).
fn dims(value: &Value<'_>) -> usize {
    match value {
        Value::Bytes(b) => b.iter().filter(|&&x| x & 0x80 == 0).count(),
        _ => 1,
    }
}

/// One tensor (or requested output): its shape's dimensions and its
/// parameters, in the fields given.
fn tensor(fields: Fields<'_>, shape_field: Option<u64>, params_field: Option<u64>) -> Result<(), String> {
    let (mut n, mut params) = (0usize, 0usize);
    for (field, value) in fields {
        if Some(field) == shape_field {
            n += dims(&value);
            if n > MAX_DIMS {
                return Err(format!("a tensor's shape has more than {MAX_DIMS} dimensions"));
            }
        } else if Some(field) == params_field {
            count(&mut params, MAX_PARAMETERS, "parameters on one tensor")?;
        }
    }
    Ok(())
}

/// modelgate.v1.PredictRequest: inputs (5, each a Tensor whose shape is 3),
/// output_names (6).
fn predict_request(buf: &[u8]) -> Result<(), String> {
    let (mut inputs, mut outputs) = (0usize, 0usize);
    for (field, value) in Fields(buf) {
        match (field, value) {
            (5, Value::Bytes(input)) => {
                count(&mut inputs, MAX_TENSORS, "inputs")?;
                tensor(Fields(input), Some(3), None)?;
            }
            (6, _) => count(&mut outputs, MAX_TENSORS, "output names")?,
            _ => {}
        }
    }
    Ok(())
}

/// inference.ModelInferRequest: parameters (4), inputs (5: shape 3,
/// parameters 4), outputs (6: parameters 2), raw_input_contents (7).
fn model_infer_request(buf: &[u8]) -> Result<(), String> {
    let (mut params, mut inputs, mut outputs, mut raw) = (0usize, 0usize, 0usize, 0usize);
    for (field, value) in Fields(buf) {
        match (field, value) {
            (4, _) => count(&mut params, MAX_PARAMETERS, "parameters")?,
            (5, Value::Bytes(input)) => {
                count(&mut inputs, MAX_TENSORS, "inputs")?;
                tensor(Fields(input), Some(3), Some(4))?;
            }
            (6, Value::Bytes(output)) => {
                count(&mut outputs, MAX_TENSORS, "outputs")?;
                tensor(Fields(output), None, Some(2))?;
            }
            (7, _) => count(&mut raw, MAX_TENSORS, "raw_input_contents")?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference as kpb;
    use crate::v1 as pb;
    use prost::Message;

    #[test]
    fn ordinary_requests_pass_and_repeated_structures_are_refused() {
        let tensor =
            pb::Tensor { name: "x".into(), shape: vec![2, 30], raw: vec![0; 8].into(), ..Default::default() };
        let ok = pb::PredictRequest {
            model: "m".into(),
            inputs: vec![tensor.clone(); 3],
            output_names: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        assert_eq!(predict_request(&ok.encode_to_vec()), Ok(()));
        let many = pb::PredictRequest { inputs: vec![pb::Tensor::default(); 1025], ..ok.clone() };
        assert_eq!(predict_request(&many.encode_to_vec()).unwrap_err(), "request has more than 1024 inputs");
        let names = pb::PredictRequest { output_names: vec![String::new(); 5000], ..ok.clone() };
        assert_eq!(
            predict_request(&names.encode_to_vec()).unwrap_err(),
            "request has more than 1024 output names"
        );
        let deep = pb::Tensor { shape: vec![0; 65], ..tensor };
        let deep = pb::PredictRequest { inputs: vec![deep], ..ok };
        assert_eq!(
            predict_request(&deep.encode_to_vec()).unwrap_err(),
            "a tensor's shape has more than 64 dimensions"
        );
    }

    #[test]
    fn kserve_requests_are_scanned_alike() {
        let input = kpb::model_infer_request::InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![-1, 300],
            ..Default::default()
        };
        let ok = kpb::ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![input.clone()],
            raw_input_contents: vec![vec![0u8; 4].into()],
            ..Default::default()
        };
        assert_eq!(model_infer_request(&ok.encode_to_vec()), Ok(()));
        let raw = kpb::ModelInferRequest { raw_input_contents: vec![Default::default(); 2000], ..ok.clone() };
        assert!(model_infer_request(&raw.encode_to_vec()).unwrap_err().contains("raw_input_contents"));
        let outputs = kpb::ModelInferRequest { outputs: vec![Default::default(); 2000], ..ok.clone() };
        assert!(model_infer_request(&outputs.encode_to_vec()).unwrap_err().contains("1024 outputs"));
        let mut params = input.clone();
        for i in 0..100 {
            params.parameters.insert(i.to_string(), Default::default());
        }
        let p = kpb::ModelInferRequest { inputs: vec![params], ..ok.clone() };
        assert!(model_infer_request(&p.encode_to_vec()).unwrap_err().contains("parameters on one tensor"));
        let deep = kpb::model_infer_request::InferInputTensor { shape: vec![1; 100], ..input };
        let deep = kpb::ModelInferRequest { inputs: vec![deep], ..ok };
        assert!(model_infer_request(&deep.encode_to_vec()).unwrap_err().contains("64 dimensions"));
    }

    #[test]
    fn malformed_bytes_are_left_to_prost() {
        assert_eq!(predict_request(&[0x2a, 0xff, 0xff]), Ok(()));
        assert_eq!(model_infer_request(&[0xff; 12]), Ok(()));
    }
}
