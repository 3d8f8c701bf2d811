//! modelgate.v1 tensors ↔ the runtime's tensors. Every decoding mistake is a
//! [`BadRequest`] message that names the tensor and what was wrong.

use modelgate_proto::v1 as pb;
use modelgate_runtime::tensor::element_count;
use modelgate_runtime::{DataType, Tensor, TensorData, TensorSpec, quoted};

/// A client's request could not be decoded; the text says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

pub fn dtype_from_pb(value: i32) -> Option<DataType> {
    Some(match pb::DataType::try_from(value).ok()? {
        pb::DataType::Float32 => DataType::Float32,
        pb::DataType::Float64 => DataType::Float64,
        pb::DataType::Int32 => DataType::Int32,
        pb::DataType::Int64 => DataType::Int64,
        pb::DataType::Bool => DataType::Bool,
        pb::DataType::String => DataType::String,
        pb::DataType::Uint8 => DataType::Uint8,
        pb::DataType::Int8 => DataType::Int8,
        pb::DataType::Unspecified => return None,
    })
}

pub fn dtype_to_pb(dtype: DataType) -> pb::DataType {
    match dtype {
        DataType::Float32 => pb::DataType::Float32,
        DataType::Float64 => pb::DataType::Float64,
        DataType::Int32 => pb::DataType::Int32,
        DataType::Int64 => pb::DataType::Int64,
        DataType::Bool => pb::DataType::Bool,
        DataType::String => pb::DataType::String,
        DataType::Uint8 => pb::DataType::Uint8,
        DataType::Int8 => pb::DataType::Int8,
    }
}

/// Which typed fields hold elements, by field name.
fn typed_fields(t: &pb::Tensor) -> Vec<&'static str> {
    let mut set = Vec::new();
    if !t.float_data.is_empty() {
        set.push("float_data");
    }
    if !t.double_data.is_empty() {
        set.push("double_data");
    }
    if !t.int_data.is_empty() {
        set.push("int_data");
    }
    if !t.int64_data.is_empty() {
        set.push("int64_data");
    }
    if !t.bool_data.is_empty() {
        set.push("bool_data");
    }
    if !t.string_data.is_empty() {
        set.push("string_data");
    }
    set
}

fn typed_field_for(dtype: DataType) -> &'static str {
    match dtype {
        DataType::Float32 => "float_data",
        DataType::Float64 => "double_data",
        DataType::Int32 | DataType::Uint8 | DataType::Int8 => "int_data",
        DataType::Int64 => "int64_data",
        DataType::Bool => "bool_data",
        DataType::String => "string_data",
    }
}

/// A shape as messages print it: `[1, 30]`.
pub fn shape_str(shape: &[i64]) -> String {
    modelgate_runtime::quote::shape(shape).to_string()
}

/// Decodes one request tensor.
pub fn tensor_from_pb(t: pb::Tensor) -> Result<Tensor, BadRequest> {
    let name = if t.name.is_empty() { "<unnamed>".to_string() } else { quoted(&t.name).to_string() };
    let bad = |msg: String| BadRequest(format!("input {name}: {msg}"));
    let dtype = dtype_from_pb(t.dtype).ok_or_else(|| {
        bad(match pb::DataType::try_from(t.dtype) {
            Ok(_) => "dtype is not set".to_string(),
            Err(_) => format!("unknown dtype value {}", t.dtype),
        })
    })?;
    let elements = element_count(&t.shape).ok_or_else(|| {
        bad(format!("shape {} has a negative dimension or is too large", shape_str(&t.shape)))
    })?;
    let typed = typed_fields(&t);
    if !t.raw.is_empty() && !typed.is_empty() {
        return Err(bad(format!("contents are given both as raw and as {}; give one", typed.join(", "))));
    }
    let field = typed_field_for(dtype);
    if let Some(other) = typed.iter().find(|f| **f != field) {
        return Err(bad(format!("dtype is {dtype} but elements are in {other}; use {field} or raw")));
    }
    let data = if typed.is_empty() {
        if t.raw.is_empty() && elements > 0 {
            return Err(bad(format!(
                "no contents for shape {} ({elements} elements): set raw or {field}",
                shape_str(&t.shape)
            )));
        }
        TensorData::from_raw_bytes(dtype, t.raw, elements).map_err(|e| bad(e.to_string()))?
    } else {
        let data = typed_data(
            dtype,
            t.float_data,
            t.double_data,
            t.int_data,
            t.int64_data,
            t.bool_data,
            t.string_data,
        )
        .map_err(bad)?;
        check_element_count(&t.shape, elements, field, data.len()).map_err(bad)?;
        data
    };
    Ok(Tensor::new(t.name, t.shape, data))
}

/// Typed contents must hold exactly the shape's element count; the message
/// names the shape and the field (Predict and KServe alike).
pub fn check_element_count(shape: &[i64], elements: usize, field: &str, given: usize) -> Result<(), String> {
    if given == elements {
        return Ok(());
    }
    Err(format!("shape {} holds {elements} elements but {field} has {given}", shape_str(shape)))
}

/// Decodes a Predict request's inputs, stopping at the first mistake.
pub fn inputs_from_pb(inputs: Vec<pb::Tensor>) -> Result<Vec<Tensor>, BadRequest> {
    inputs.into_iter().map(tensor_from_pb).collect()
}

#[allow(clippy::too_many_arguments)]
fn typed_data(
    dtype: DataType,
    float_data: Vec<f32>,
    double_data: Vec<f64>,
    int_data: Vec<i32>,
    int64_data: Vec<i64>,
    bool_data: Vec<bool>,
    string_data: Vec<Vec<u8>>,
) -> Result<TensorData, String> {
    fn narrow<T: TryFrom<i32>>(v: Vec<i32>, dtype: DataType) -> Result<Vec<T>, String> {
        v.into_iter()
            .enumerate()
            .map(|(i, x)| T::try_from(x).map_err(|_| format!("element {i} ({x}) does not fit {dtype}")))
            .collect()
    }
    Ok(match dtype {
        DataType::Float32 => TensorData::Float32(float_data),
        DataType::Float64 => TensorData::Float64(double_data),
        DataType::Int32 => TensorData::Int32(int_data),
        DataType::Uint8 => TensorData::Uint8(narrow(int_data, dtype)?),
        DataType::Int8 => TensorData::Int8(narrow(int_data, dtype)?),
        DataType::Int64 => TensorData::Int64(int64_data),
        DataType::Bool => TensorData::Bool(bool_data),
        DataType::String => TensorData::String(
            string_data
                .into_iter()
                .enumerate()
                .map(|(i, b)| String::from_utf8(b).map_err(|_| format!("string element {i} is not UTF-8")))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// Encodes one output tensor, as raw bytes or in its typed field.
pub fn tensor_to_pb(t: Tensor, typed: bool) -> pb::Tensor {
    let mut out = pb::Tensor {
        name: t.name,
        dtype: dtype_to_pb(t.data.dtype()) as i32,
        shape: t.shape,
        ..Default::default()
    };
    if !typed {
        // Raw bytes that came in stay as they are; a numeric output's vector
        // becomes the response bytes without a copy.
        out.raw = t.data.into_raw_bytes();
        return out;
    }
    match t.data.owned().into_owned() {
        TensorData::Float32(v) => out.float_data = v,
        TensorData::Float64(v) => out.double_data = v,
        TensorData::Int32(v) => out.int_data = v,
        TensorData::Uint8(v) => out.int_data = v.into_iter().map(i32::from).collect(),
        TensorData::Int8(v) => out.int_data = v.into_iter().map(i32::from).collect(),
        TensorData::Int64(v) => out.int64_data = v,
        TensorData::Bool(v) => out.bool_data = v,
        TensorData::String(v) => out.string_data = v.into_iter().map(String::into_bytes).collect(),
        TensorData::Raw { bytes, .. } => out.raw = bytes,
    }
    out
}

/// Decodes a response tensor (raw or typed) back into a runtime tensor; used by
/// the CLI and tests.
pub fn output_from_pb(t: pb::Tensor) -> Result<Tensor, BadRequest> {
    let mut t = tensor_from_pb(t).map_err(|e| BadRequest(e.0.replacen("input", "output", 1)))?;
    // Callers read the elements: decode raw bytes once here.
    if matches!(t.data, TensorData::Raw { .. }) {
        t.data = t.data.owned().into_owned();
    }
    Ok(t)
}

/// A declared tensor as metadata.
pub fn spec_to_pb(spec: &TensorSpec) -> pb::TensorMetadata {
    pb::TensorMetadata {
        name: spec.name.clone(),
        dtype: dtype_to_pb(spec.dtype) as i32,
        shape: spec.shape_i64(),
        dim_names: spec
            .dims
            .iter()
            .map(|d| match d {
                modelgate_runtime::Dim::Dynamic(Some(n)) => n.clone(),
                _ => String::new(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_f32(name: &str, shape: Vec<i64>, raw: Vec<u8>) -> pb::Tensor {
        pb::Tensor {
            name: name.into(),
            dtype: pb::DataType::Float32 as i32,
            shape,
            raw: raw.into(),
            ..Default::default()
        }
    }

    #[test]
    fn raw_and_typed_decode_alike() {
        let raw = raw_f32("x", vec![2], [1.0f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat());
        let typed = pb::Tensor {
            name: "x".into(),
            dtype: pb::DataType::Float32 as i32,
            shape: vec![2],
            float_data: vec![1.0, 2.0],
            ..Default::default()
        };
        assert_eq!(tensor_from_pb(raw).unwrap(), tensor_from_pb(typed).unwrap());
    }

    #[test]
    fn errors_name_the_tensor() {
        let e = tensor_from_pb(raw_f32("x", vec![2], vec![0; 7])).unwrap_err();
        assert_eq!(e.0, "input 'x': raw contents are 7 bytes, expected 8 (2 FLOAT32 elements)");
        let mut t = raw_f32("x", vec![1], vec![0; 4]);
        t.int64_data = vec![1];
        assert!(tensor_from_pb(t).unwrap_err().0.contains("both as raw and as int64_data"));
        let t = pb::Tensor {
            name: "x".into(),
            dtype: pb::DataType::Float32 as i32,
            shape: vec![1],
            int64_data: vec![1],
            ..Default::default()
        };
        assert_eq!(
            tensor_from_pb(t).unwrap_err().0,
            "input 'x': dtype is FLOAT32 but elements are in int64_data; use float_data or raw"
        );
        let t = pb::Tensor { name: "x".into(), shape: vec![1], ..Default::default() };
        assert_eq!(tensor_from_pb(t).unwrap_err().0, "input 'x': dtype is not set");
        let e = tensor_from_pb(raw_f32("x", vec![-1, 2], vec![])).unwrap_err();
        assert!(e.0.contains("negative dimension"), "{}", e.0);
        let e = tensor_from_pb(raw_f32("x", vec![1, 2], vec![])).unwrap_err();
        assert!(e.0.contains("no contents"), "{}", e.0);
    }

    #[test]
    fn encode_decode_round_trip() {
        let t = Tensor::new("p", vec![1, 2], TensorData::Float32(vec![0.25, 0.75]));
        for typed in [false, true] {
            assert_eq!(output_from_pb(tensor_to_pb(t.clone(), typed)).unwrap(), t);
        }
    }
}
