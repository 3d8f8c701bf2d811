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
        pb::DataType::Float16 => DataType::Float16,
        pb::DataType::Bfloat16 => DataType::Bfloat16,
        pb::DataType::Int16 => DataType::Int16,
        pb::DataType::Uint16 => DataType::Uint16,
        pb::DataType::Uint32 => DataType::Uint32,
        pb::DataType::Uint64 => DataType::Uint64,
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
        DataType::Float16 => pb::DataType::Float16,
        DataType::Bfloat16 => pb::DataType::Bfloat16,
        DataType::Int16 => pb::DataType::Int16,
        DataType::Uint16 => pb::DataType::Uint16,
        DataType::Uint32 => pb::DataType::Uint32,
        DataType::Uint64 => pb::DataType::Uint64,
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
    if !t.uint64_data.is_empty() {
        set.push("uint64_data");
    }
    set
}

fn typed_field_for(dtype: DataType) -> &'static str {
    match dtype {
        DataType::Float32 | DataType::Float16 | DataType::Bfloat16 => "float_data",
        DataType::Float64 => "double_data",
        DataType::Int32 | DataType::Int16 | DataType::Int8 | DataType::Uint16 | DataType::Uint8 => "int_data",
        DataType::Int64 => "int64_data",
        DataType::Uint32 | DataType::Uint64 => "uint64_data",
        DataType::Bool => "bool_data",
        DataType::String => "string_data",
    }
}

/// A shape as messages print it: `[1, 30]`.
pub fn shape_str(shape: &[i64]) -> String {
    modelgate_runtime::quote::shape(shape).to_string()
}

/// Decodes one request tensor.
pub fn tensor_from_pb(mut t: pb::Tensor) -> Result<Tensor, BadRequest> {
    // The input's name is formatted only for an error: a request that
    // decodes allocates nothing for it.
    fn bad_input(name: &str, msg: String) -> BadRequest {
        if name.is_empty() {
            BadRequest(format!("input <unnamed>: {msg}"))
        } else {
            BadRequest(format!("input {}: {msg}", quoted(name)))
        }
    }
    let bad = |msg: String| bad_input(&t.name, msg);
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
        let data = typed_data(dtype, &mut t).map_err(|msg| bad_input(&t.name, msg))?;
        check_element_count(&t.shape, elements, field, data.len()).map_err(|msg| bad_input(&t.name, msg))?;
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

/// Typed elements wider than `T`, narrowed; an element that does not fit
/// is an error naming it and `dtype` (Predict and KServe alike).
pub fn narrow<T: TryFrom<F>, F: Copy + std::fmt::Display>(
    v: Vec<F>,
    dtype: impl std::fmt::Display,
) -> Result<Vec<T>, String> {
    v.into_iter()
        .enumerate()
        .map(|(i, x)| T::try_from(x).map_err(|_| format!("element {i} ({x}) does not fit {dtype}")))
        .collect()
}

/// float32 values as elements of `dtype`: FLOAT16 and BFLOAT16 rounded to
/// nearest, any other dtype kept as FLOAT32. A finite value that would round
/// to an infinity is the client's mistake, not a silent infinity (NaN and
/// infinities stay what they are).
pub fn floats_as(dtype: DataType, v: Vec<f32>) -> Result<TensorData, String> {
    use modelgate_runtime::half::{bf16, f16};
    match dtype {
        DataType::Float16 => {
            round_floats(v, dtype, f16::MAX.to_f32(), f16::from_f32, f16::is_finite).map(TensorData::Float16)
        }
        DataType::Bfloat16 => round_floats(v, dtype, bf16::MAX.to_f32(), bf16::from_f32, bf16::is_finite)
            .map(TensorData::Bfloat16),
        _ => Ok(TensorData::Float32(v)),
    }
}

fn round_floats<T: Copy>(
    v: Vec<f32>,
    dtype: DataType,
    max: f32,
    from_f32: fn(f32) -> T,
    is_finite: fn(T) -> bool,
) -> Result<Vec<T>, String> {
    v.into_iter()
        .enumerate()
        .map(|(i, x)| {
            let y = from_f32(x);
            if x.is_finite() && !is_finite(y) {
                // BFLOAT16's range is float32's: 39 digits in positional notation.
                let show = |v: f32| if v.abs() < 1e7 { v.to_string() } else { format!("{v:e}") };
                return Err(format!("element {i} ({}) is out of {dtype}'s range (±{})", show(x), show(max)));
            }
            Ok(y)
        })
        .collect()
}

/// The typed field of `dtype`, taken out of `t`.
fn typed_data(dtype: DataType, t: &mut pb::Tensor) -> Result<TensorData, String> {
    use std::mem::take;
    Ok(match dtype {
        DataType::Float32 | DataType::Float16 | DataType::Bfloat16 => {
            floats_as(dtype, take(&mut t.float_data))?
        }
        DataType::Float64 => TensorData::Float64(take(&mut t.double_data)),
        DataType::Int32 => TensorData::Int32(take(&mut t.int_data)),
        DataType::Int16 => TensorData::Int16(narrow(take(&mut t.int_data), dtype)?),
        DataType::Int8 => TensorData::Int8(narrow(take(&mut t.int_data), dtype)?),
        DataType::Uint16 => TensorData::Uint16(narrow(take(&mut t.int_data), dtype)?),
        DataType::Uint8 => TensorData::Uint8(narrow(take(&mut t.int_data), dtype)?),
        DataType::Int64 => TensorData::Int64(take(&mut t.int64_data)),
        DataType::Uint32 => TensorData::Uint32(narrow(take(&mut t.uint64_data), dtype)?),
        DataType::Uint64 => TensorData::Uint64(take(&mut t.uint64_data)),
        DataType::Bool => TensorData::Bool(take(&mut t.bool_data)),
        DataType::String => TensorData::String(
            take(&mut t.string_data)
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
        TensorData::Int16(v) => out.int_data = v.into_iter().map(i32::from).collect(),
        TensorData::Uint16(v) => out.int_data = v.into_iter().map(i32::from).collect(),
        TensorData::Int64(v) => out.int64_data = v,
        TensorData::Uint32(v) => out.uint64_data = v.into_iter().map(u64::from).collect(),
        TensorData::Uint64(v) => out.uint64_data = v,
        // Every 16-bit float is exactly a float32.
        TensorData::Float16(v) => out.float_data = v.into_iter().map(f32::from).collect(),
        TensorData::Bfloat16(v) => out.float_data = v.into_iter().map(f32::from).collect(),
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
    fn sixteen_bit_floats_round_from_float_data_and_refuse_overflow() {
        use modelgate_runtime::half::{bf16, f16};
        let t = |dtype: pb::DataType, float_data: Vec<f32>| pb::Tensor {
            name: "x".into(),
            dtype: dtype as i32,
            shape: vec![float_data.len() as i64],
            float_data,
            ..Default::default()
        };
        let got = tensor_from_pb(t(pb::DataType::Float16, vec![0.1, 65504.0, f32::NAN, f32::NEG_INFINITY]))
            .unwrap();
        let TensorData::Float16(v) = got.data else { panic!("{:?}", got.data) };
        assert_eq!(v[..2], [f16::from_f32(0.1), f16::MAX]);
        assert!(v[2].is_nan() && v[3] == f16::NEG_INFINITY, "NaN and infinities are values, not mistakes");
        assert_eq!(
            tensor_from_pb(t(pb::DataType::Float16, vec![1.0, -65520.0])).unwrap_err().0,
            "input 'x': element 1 (-65520) is out of FLOAT16's range (±65504)"
        );
        assert_eq!(
            tensor_from_pb(t(pb::DataType::Bfloat16, vec![f32::MAX])).unwrap_err().0,
            "input 'x': element 0 (3.4028235e38) is out of BFLOAT16's range (±3.3895314e38)"
        );
        let got = tensor_from_pb(t(pb::DataType::Bfloat16, vec![1.0, 3.0e38])).unwrap();
        assert_eq!(got.data, TensorData::Bfloat16(vec![bf16::ONE, bf16::from_f32(3.0e38)]));
    }

    #[test]
    fn narrow_and_wide_unsigned_ints_use_int_data_and_uint64_data() {
        let t = |dtype: pb::DataType, int_data: Vec<i32>, uint64_data: Vec<u64>| pb::Tensor {
            name: "x".into(),
            dtype: dtype as i32,
            shape: vec![2],
            int_data,
            uint64_data,
            ..Default::default()
        };
        let ok = |t| tensor_from_pb(t).unwrap().data;
        assert_eq!(
            ok(t(pb::DataType::Int16, vec![-32768, 32767], vec![])),
            TensorData::Int16(vec![i16::MIN, i16::MAX])
        );
        assert_eq!(
            ok(t(pb::DataType::Uint16, vec![0, 65535], vec![])),
            TensorData::Uint16(vec![0, u16::MAX])
        );
        assert_eq!(
            ok(t(pb::DataType::Uint32, vec![], vec![0, 4294967295])),
            TensorData::Uint32(vec![0, u32::MAX])
        );
        assert_eq!(
            ok(t(pb::DataType::Uint64, vec![], vec![0, u64::MAX])),
            TensorData::Uint64(vec![0, u64::MAX])
        );
        let err = |t| tensor_from_pb(t).unwrap_err().0;
        assert_eq!(
            err(t(pb::DataType::Uint16, vec![0, 65536], vec![])),
            "input 'x': element 1 (65536) does not fit UINT16"
        );
        assert_eq!(
            err(t(pb::DataType::Uint32, vec![1, 2], vec![])),
            "input 'x': dtype is UINT32 but elements are in int_data; use uint64_data or raw"
        );
        // Typed outputs go back to the same fields.
        for data in [
            TensorData::Int16(vec![-1, 2]),
            TensorData::Uint16(vec![3, 65535]),
            TensorData::Uint32(vec![u32::MAX, 0]),
            TensorData::Uint64(vec![u64::MAX, 1]),
        ] {
            let back = output_from_pb(tensor_to_pb(Tensor::new("x", vec![2], data.clone()), true)).unwrap();
            assert_eq!(back.data, data);
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let t = Tensor::new("p", vec![1, 2], TensorData::Float32(vec![0.25, 0.75]));
        for typed in [false, true] {
            assert_eq!(output_from_pb(tensor_to_pb(t.clone(), typed)).unwrap(), t);
        }
    }
}
