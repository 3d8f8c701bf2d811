//! The gateway's tensor: a name, a shape and typed elements. Every protocol
//! (modelgate.v1, KServe v2) decodes into this and encodes from it, so nothing
//! below the gRPC handlers knows which protocol a request came in on.

use std::fmt;

use half::{bf16, f16};

/// Element type of a tensor, as far as modelgate serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Float32,
    Float64,
    Int32,
    Int64,
    Bool,
    Uint8,
    Int8,
    String,
    /// IEEE 754 half precision.
    Float16,
    /// bfloat16: float32's exponent with a 7-bit mantissa.
    Bfloat16,
    Int16,
    Uint16,
    Uint32,
    Uint64,
}

impl DataType {
    /// The KServe v2 / Triton name of the type (`FP32`, `INT64`, `BYTES`…):
    /// what clients of either API, and the shadow records, call it.
    pub fn kserve_name(self) -> &'static str {
        match self {
            DataType::Float32 => "FP32",
            DataType::Float64 => "FP64",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Int8 => "INT8",
            DataType::String => "BYTES",
            DataType::Float16 => "FP16",
            DataType::Bfloat16 => "BF16",
            DataType::Int16 => "INT16",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
        }
    }

    /// Size of one element in bytes in the raw little-endian layout; `None` for
    /// strings, whose elements are length-prefixed.
    pub fn element_size(self) -> Option<usize> {
        match self {
            Self::Float32 | Self::Int32 | Self::Uint32 => Some(4),
            Self::Float64 | Self::Int64 | Self::Uint64 => Some(8),
            Self::Float16 | Self::Bfloat16 | Self::Int16 | Self::Uint16 => Some(2),
            Self::Bool | Self::Uint8 | Self::Int8 => Some(1),
            Self::String => None,
        }
    }

    /// The upper-case name used in messages and the KServe protocol's spelling
    /// where the two agree (`FP32` etc. are mapped at that protocol's edge).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Float32 => "FLOAT32",
            Self::Float64 => "FLOAT64",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Bool => "BOOL",
            Self::Uint8 => "UINT8",
            Self::Int8 => "INT8",
            Self::String => "STRING",
            Self::Float16 => "FLOAT16",
            Self::Bfloat16 => "BFLOAT16",
            Self::Int16 => "INT16",
            Self::Uint16 => "UINT16",
            Self::Uint32 => "UINT32",
            Self::Uint64 => "UINT64",
        }
    }

    /// Whether elements are floating point (NaN and infinities exist, values
    /// are compared with a tolerance rather than for agreement).
    pub fn is_float(self) -> bool {
        matches!(self, Self::Float32 | Self::Float64 | Self::Float16 | Self::Bfloat16)
    }

    pub(crate) fn from_ort(ty: ort::value::TensorElementType) -> Option<Self> {
        use ort::value::TensorElementType as T;
        Some(match ty {
            T::Float32 => Self::Float32,
            T::Float64 => Self::Float64,
            T::Int32 => Self::Int32,
            T::Int64 => Self::Int64,
            T::Bool => Self::Bool,
            T::Uint8 => Self::Uint8,
            T::Int8 => Self::Int8,
            T::String => Self::String,
            T::Float16 => Self::Float16,
            T::Bfloat16 => Self::Bfloat16,
            T::Int16 => Self::Int16,
            T::Uint16 => Self::Uint16,
            T::Uint32 => Self::Uint32,
            T::Uint64 => Self::Uint64,
            _ => return None,
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Typed, row-major elements of a tensor.
#[derive(Debug, Clone)]
pub enum TensorData {
    Float32(Vec<f32>),
    Float64(Vec<f64>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Int8(Vec<i8>),
    String(Vec<String>),
    Float16(Vec<f16>),
    Bfloat16(Vec<bf16>),
    Int16(Vec<i16>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    /// Little-endian numeric elements (not BOOL or STRING) still in the
    /// request's buffer: ONNX Runtime reads them in place when the buffer is
    /// aligned for the type (copied only when it is not). See
    /// [`TensorData::from_raw_bytes`].
    Raw {
        dtype: DataType,
        bytes: bytes::Bytes,
    },
}

impl PartialEq for TensorData {
    /// Equal when the dtypes and the elements are, however they are held.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Raw { .. }, _) | (_, Self::Raw { .. }) => {
                self.dtype() == other.dtype() && *self.owned() == *other.owned()
            }
            (Self::Float32(a), Self::Float32(b)) => a == b,
            (Self::Float64(a), Self::Float64(b)) => a == b,
            (Self::Int32(a), Self::Int32(b)) => a == b,
            (Self::Int64(a), Self::Int64(b)) => a == b,
            (Self::Bool(a), Self::Bool(b)) => a == b,
            (Self::Uint8(a), Self::Uint8(b)) => a == b,
            (Self::Int8(a), Self::Int8(b)) => a == b,
            (Self::String(a), Self::String(b)) => a == b,
            (Self::Float16(a), Self::Float16(b)) => a == b,
            (Self::Bfloat16(a), Self::Bfloat16(b)) => a == b,
            (Self::Int16(a), Self::Int16(b)) => a == b,
            (Self::Uint16(a), Self::Uint16(b)) => a == b,
            (Self::Uint32(a), Self::Uint32(b)) => a == b,
            (Self::Uint64(a), Self::Uint64(b)) => a == b,
            _ => false,
        }
    }
}

impl TensorData {
    pub fn dtype(&self) -> DataType {
        match self {
            Self::Float32(_) => DataType::Float32,
            Self::Float64(_) => DataType::Float64,
            Self::Int32(_) => DataType::Int32,
            Self::Int64(_) => DataType::Int64,
            Self::Bool(_) => DataType::Bool,
            Self::Uint8(_) => DataType::Uint8,
            Self::Int8(_) => DataType::Int8,
            Self::String(_) => DataType::String,
            Self::Float16(_) => DataType::Float16,
            Self::Bfloat16(_) => DataType::Bfloat16,
            Self::Int16(_) => DataType::Int16,
            Self::Uint16(_) => DataType::Uint16,
            Self::Uint32(_) => DataType::Uint32,
            Self::Uint64(_) => DataType::Uint64,
            Self::Raw { dtype, .. } => *dtype,
        }
    }

    /// The elements in their typed form: borrowed unless they are still raw
    /// bytes, which are decoded.
    pub fn owned(&self) -> std::borrow::Cow<'_, TensorData> {
        match self {
            Self::Raw { dtype, bytes } => {
                let n = dtype.element_size().map_or(0, |size| bytes.len() / size);
                // The length was checked when the bytes were accepted.
                std::borrow::Cow::Owned(Self::from_raw(*dtype, bytes, n).unwrap_or(Self::Uint8(Vec::new())))
            }
            other => std::borrow::Cow::Borrowed(other),
        }
    }

    /// Like [`TensorData::from_raw`], but numeric elements stay in `bytes`
    /// (no copy); BOOL and STRING are decoded (they must be checked).
    pub fn from_raw_bytes(
        dtype: DataType,
        bytes: bytes::Bytes,
        elements: usize,
    ) -> Result<Self, RawDecodeError> {
        match dtype {
            DataType::Bool | DataType::String => Self::from_raw(dtype, &bytes, elements),
            _ => {
                let size = dtype.element_size().unwrap_or(1);
                let expected = elements.checked_mul(size).ok_or(RawDecodeError::TooLarge)?;
                if bytes.len() != expected {
                    return Err(RawDecodeError::Length { got: bytes.len(), expected, elements, dtype });
                }
                Ok(Self::Raw { dtype, bytes })
            }
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::Float32(v) => v.len(),
            Self::Float64(v) => v.len(),
            Self::Int32(v) => v.len(),
            Self::Int64(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::Uint8(v) => v.len(),
            Self::Int8(v) => v.len(),
            Self::String(v) => v.len(),
            Self::Float16(v) => v.len(),
            Self::Bfloat16(v) => v.len(),
            Self::Int16(v) => v.len(),
            Self::Uint16(v) => v.len(),
            Self::Uint32(v) => v.len(),
            Self::Uint64(v) => v.len(),
            Self::Raw { dtype, bytes } => dtype.element_size().map_or(0, |size| bytes.len() / size),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes the raw little-endian layout of `dtype` (strings: each element a
    /// 4-byte little-endian length, then its UTF-8 bytes). `elements` is the
    /// count the shape promises; a byte length that disagrees is an error that
    /// says both.
    pub fn from_raw(dtype: DataType, raw: &[u8], elements: usize) -> Result<Self, RawDecodeError> {
        if let Some(size) = dtype.element_size() {
            let expected = elements.checked_mul(size).ok_or(RawDecodeError::TooLarge)?;
            if raw.len() != expected {
                return Err(RawDecodeError::Length { got: raw.len(), expected, elements, dtype });
            }
        }
        // Generic over the conversion (not a `fn` pointer), so that it is
        // inlined and the loop compiles to a plain copy: through a pointer
        // it was one indirect call per element, ~10 µs for a 27 KB image.
        fn le<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
            raw.chunks_exact(N)
                .map(|c| {
                    let mut b = [0u8; N];
                    b.copy_from_slice(c);
                    f(b)
                })
                .collect()
        }
        Ok(match dtype {
            DataType::Float32 => Self::Float32(le(raw, f32::from_le_bytes)),
            DataType::Float64 => Self::Float64(le(raw, f64::from_le_bytes)),
            DataType::Int32 => Self::Int32(le(raw, i32::from_le_bytes)),
            DataType::Int64 => Self::Int64(le(raw, i64::from_le_bytes)),
            DataType::Uint8 => Self::Uint8(raw.to_vec()),
            DataType::Int8 => Self::Int8(raw.iter().map(|&b| b as i8).collect()),
            DataType::Float16 => Self::Float16(le(raw, f16::from_le_bytes)),
            DataType::Bfloat16 => Self::Bfloat16(le(raw, bf16::from_le_bytes)),
            DataType::Int16 => Self::Int16(le(raw, i16::from_le_bytes)),
            DataType::Uint16 => Self::Uint16(le(raw, u16::from_le_bytes)),
            DataType::Uint32 => Self::Uint32(le(raw, u32::from_le_bytes)),
            DataType::Uint64 => Self::Uint64(le(raw, u64::from_le_bytes)),
            DataType::Bool => Self::Bool(
                raw.iter()
                    .map(|&b| match b {
                        0 => Ok(false),
                        1 => Ok(true),
                        other => Err(RawDecodeError::Bool(other)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            DataType::String => Self::String(decode_strings(raw, elements)?),
        })
    }

    /// The raw little-endian layout as shared bytes, for a response: on a
    /// little-endian machine numeric vectors are handed over as they are (the
    /// allocation moves into the `Bytes`, nothing is copied); bools and
    /// strings are encoded.
    pub fn into_raw_bytes(self) -> bytes::Bytes {
        /// A vector seen as its bytes; `T: Pod` makes the view safe.
        struct AsBytes<T>(Vec<T>);
        impl<T: bytemuck::Pod> AsRef<[u8]> for AsBytes<T> {
            fn as_ref(&self) -> &[u8] {
                bytemuck::cast_slice(&self.0)
            }
        }
        fn owned<T: bytemuck::Pod + Send + 'static>(v: Vec<T>) -> bytes::Bytes {
            bytes::Bytes::from_owner(AsBytes(v))
        }
        if cfg!(target_endian = "big") {
            return match self {
                Self::Raw { bytes, .. } => bytes,
                other => other.to_raw().into(),
            };
        }
        match self {
            Self::Float32(v) => owned(v),
            Self::Float64(v) => owned(v),
            Self::Int32(v) => owned(v),
            Self::Int64(v) => owned(v),
            Self::Uint8(v) => v.into(),
            Self::Int8(v) => owned(v),
            Self::Float16(v) => owned(v),
            Self::Bfloat16(v) => owned(v),
            Self::Int16(v) => owned(v),
            Self::Uint16(v) => owned(v),
            Self::Uint32(v) => owned(v),
            Self::Uint64(v) => owned(v),
            Self::Raw { bytes, .. } => bytes,
            other @ (Self::Bool(_) | Self::String(_)) => other.to_raw().into(),
        }
    }

    /// Encodes into the raw little-endian layout (see [`TensorData::from_raw`]).
    pub fn to_raw(&self) -> Vec<u8> {
        // Generic over the conversion, as in `from_raw`, so that it inlines.
        fn le<const N: usize, T: Copy>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
            let mut out = Vec::with_capacity(v.len() * N);
            for &x in v {
                out.extend_from_slice(&f(x));
            }
            out
        }
        match self {
            Self::Float32(v) => le(v, f32::to_le_bytes),
            Self::Float64(v) => le(v, f64::to_le_bytes),
            Self::Int32(v) => le(v, i32::to_le_bytes),
            Self::Int64(v) => le(v, i64::to_le_bytes),
            Self::Uint8(v) => v.clone(),
            Self::Int8(v) => v.iter().map(|&x| x as u8).collect(),
            Self::Float16(v) => le(v, f16::to_le_bytes),
            Self::Bfloat16(v) => le(v, bf16::to_le_bytes),
            Self::Int16(v) => le(v, i16::to_le_bytes),
            Self::Uint16(v) => le(v, u16::to_le_bytes),
            Self::Uint32(v) => le(v, u32::to_le_bytes),
            Self::Uint64(v) => le(v, u64::to_le_bytes),
            Self::Bool(v) => v.iter().map(|&x| u8::from(x)).collect(),
            Self::String(v) => {
                let mut out = Vec::with_capacity(v.iter().map(|s| s.len() + 4).sum());
                for s in v {
                    // Strings over 4 GiB cannot come out of a request bounded at 64 MiB.
                    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                out
            }
            Self::Raw { bytes, .. } => bytes.to_vec(),
        }
    }
}

fn decode_strings(raw: &[u8], elements: usize) -> Result<Vec<String>, RawDecodeError> {
    let mut out = Vec::with_capacity(elements.min(raw.len() / 4 + 1));
    let mut rest = raw;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(RawDecodeError::StringLayout);
        }
        let (len, tail) = rest.split_at(4);
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if tail.len() < len {
            return Err(RawDecodeError::StringLayout);
        }
        let (s, tail) = tail.split_at(len);
        out.push(String::from_utf8(s.to_vec()).map_err(|_| RawDecodeError::Utf8(out.len()))?);
        rest = tail;
    }
    if out.len() != elements {
        return Err(RawDecodeError::StringCount { got: out.len(), expected: elements });
    }
    Ok(out)
}

/// Why raw tensor bytes could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RawDecodeError {
    #[error("raw contents are {got} bytes, expected {expected} ({elements} {dtype} elements)")]
    Length { got: usize, expected: usize, elements: usize, dtype: DataType },
    #[error("shape is too large")]
    TooLarge,
    #[error("BOOL elements must be 0 or 1, got {0}")]
    Bool(u8),
    #[error("raw STRING contents are not a sequence of 4-byte-length-prefixed elements")]
    StringLayout,
    #[error("raw STRING contents hold {got} elements, the shape says {expected}")]
    StringCount { got: usize, expected: usize },
    #[error("STRING element {0} is not valid UTF-8")]
    Utf8(usize),
}

/// A named tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

impl Tensor {
    pub fn new(name: impl Into<String>, shape: Vec<i64>, data: TensorData) -> Self {
        Self { name: name.into(), shape, data }
    }

    pub fn dtype(&self) -> DataType {
        self.data.dtype()
    }
}

impl TensorData {
    /// An empty buffer of `dtype` with room for `capacity` elements.
    fn with_capacity(dtype: DataType, capacity: usize) -> Self {
        match dtype {
            DataType::Float32 => Self::Float32(Vec::with_capacity(capacity)),
            DataType::Float64 => Self::Float64(Vec::with_capacity(capacity)),
            DataType::Int32 => Self::Int32(Vec::with_capacity(capacity)),
            DataType::Int64 => Self::Int64(Vec::with_capacity(capacity)),
            DataType::Bool => Self::Bool(Vec::with_capacity(capacity)),
            DataType::Uint8 => Self::Uint8(Vec::with_capacity(capacity)),
            DataType::Int8 => Self::Int8(Vec::with_capacity(capacity)),
            DataType::String => Self::String(Vec::with_capacity(capacity)),
            DataType::Float16 => Self::Float16(Vec::with_capacity(capacity)),
            DataType::Bfloat16 => Self::Bfloat16(Vec::with_capacity(capacity)),
            DataType::Int16 => Self::Int16(Vec::with_capacity(capacity)),
            DataType::Uint16 => Self::Uint16(Vec::with_capacity(capacity)),
            DataType::Uint32 => Self::Uint32(Vec::with_capacity(capacity)),
            DataType::Uint64 => Self::Uint64(Vec::with_capacity(capacity)),
        }
    }

    /// Appends `other`'s elements; `false` (nothing appended) when the
    /// dtypes differ.
    fn extend_from(&mut self, other: &TensorData) -> bool {
        let other = other.owned();
        match (self, &*other) {
            (Self::Float32(a), Self::Float32(b)) => a.extend_from_slice(b),
            (Self::Float64(a), Self::Float64(b)) => a.extend_from_slice(b),
            (Self::Int32(a), Self::Int32(b)) => a.extend_from_slice(b),
            (Self::Int64(a), Self::Int64(b)) => a.extend_from_slice(b),
            (Self::Bool(a), Self::Bool(b)) => a.extend_from_slice(b),
            (Self::Uint8(a), Self::Uint8(b)) => a.extend_from_slice(b),
            (Self::Int8(a), Self::Int8(b)) => a.extend_from_slice(b),
            (Self::String(a), Self::String(b)) => a.extend_from_slice(b),
            (Self::Float16(a), Self::Float16(b)) => a.extend_from_slice(b),
            (Self::Bfloat16(a), Self::Bfloat16(b)) => a.extend_from_slice(b),
            (Self::Int16(a), Self::Int16(b)) => a.extend_from_slice(b),
            (Self::Uint16(a), Self::Uint16(b)) => a.extend_from_slice(b),
            (Self::Uint32(a), Self::Uint32(b)) => a.extend_from_slice(b),
            (Self::Uint64(a), Self::Uint64(b)) => a.extend_from_slice(b),
            _ => return false,
        }
        true
    }

    /// The elements `range`, copied.
    fn slice(&self, range: std::ops::Range<usize>) -> Option<Self> {
        Some(match &*self.owned() {
            Self::Float32(v) => Self::Float32(v.get(range)?.to_vec()),
            Self::Float64(v) => Self::Float64(v.get(range)?.to_vec()),
            Self::Int32(v) => Self::Int32(v.get(range)?.to_vec()),
            Self::Int64(v) => Self::Int64(v.get(range)?.to_vec()),
            Self::Bool(v) => Self::Bool(v.get(range)?.to_vec()),
            Self::Uint8(v) => Self::Uint8(v.get(range)?.to_vec()),
            Self::Int8(v) => Self::Int8(v.get(range)?.to_vec()),
            Self::String(v) => Self::String(v.get(range)?.to_vec()),
            Self::Float16(v) => Self::Float16(v.get(range)?.to_vec()),
            Self::Bfloat16(v) => Self::Bfloat16(v.get(range)?.to_vec()),
            Self::Int16(v) => Self::Int16(v.get(range)?.to_vec()),
            Self::Uint16(v) => Self::Uint16(v.get(range)?.to_vec()),
            Self::Uint32(v) => Self::Uint32(v.get(range)?.to_vec()),
            Self::Uint64(v) => Self::Uint64(v.get(range)?.to_vec()),
            Self::Raw { .. } => return None,
        })
    }
}

impl Tensor {
    /// Rows: the first dimension (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().map_or(1, |&d| usize::try_from(d).unwrap_or(0))
    }

    /// Stacks tensors along the first dimension. `None` unless they share
    /// name, dtype and every dimension but the first.
    pub fn concat_rows(parts: &[&Tensor]) -> Option<Tensor> {
        let first = parts.first()?;
        let inner = first.shape.get(1..)?;
        let mut rows: i64 = 0;
        let mut len = 0;
        for p in parts {
            if p.name != first.name || p.dtype() != first.dtype() || p.shape.get(1..)? != inner {
                return None;
            }
            rows = rows.checked_add(*p.shape.first()?)?;
            len += p.data.len();
        }
        let mut data = TensorData::with_capacity(first.dtype(), len);
        for p in parts {
            if !data.extend_from(&p.data) {
                return None;
            }
        }
        let mut shape = first.shape.clone();
        shape[0] = rows;
        Some(Tensor::new(first.name.clone(), shape, data))
    }

    /// Splits along the first dimension into pieces of `rows` rows each.
    /// `None` unless they add up to this tensor's rows.
    pub fn split_rows(&self, rows: &[usize]) -> Option<Vec<Tensor>> {
        if rows.iter().sum::<usize>() != self.rows() || self.shape.is_empty() {
            return None;
        }
        let per_row = element_count(&self.shape[1..])?;
        let mut at = 0;
        rows.iter()
            .map(|&n| {
                let data = self.data.slice(at * per_row..(at + n) * per_row)?;
                at += n;
                let mut shape = self.shape.clone();
                shape[0] = i64::try_from(n).ok()?;
                Some(Tensor::new(self.name.clone(), shape, data))
            })
            .collect()
    }
}

/// Number of elements a shape holds, or `None` if a dimension is negative or
/// the product overflows.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        let d = usize::try_from(d).ok()?;
        acc.checked_mul(d)
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn into_raw_bytes_matches_to_raw_for_every_type() {
        let all = [
            TensorData::Float32(vec![1.5, -0.0, f32::NAN, f32::INFINITY]),
            TensorData::Float64(vec![1.5, -2.25]),
            TensorData::Int32(vec![-1, 7]),
            TensorData::Int64(vec![i64::MIN, 3]),
            TensorData::Uint8(vec![0, 255]),
            TensorData::Int8(vec![-128, 127]),
            TensorData::Bool(vec![true, false]),
            TensorData::String(vec!["a".into(), "bc".into()]),
            TensorData::Float16(vec![f16::from_f32(1.5), f16::NAN, f16::NEG_INFINITY]),
            TensorData::Bfloat16(vec![bf16::from_f32(-2.0), bf16::NAN]),
            TensorData::Int16(vec![i16::MIN, 1]),
            TensorData::Uint16(vec![u16::MAX, 0]),
            TensorData::Uint32(vec![u32::MAX, 2]),
            TensorData::Uint64(vec![u64::MAX, 3]),
        ];
        for d in all {
            let expected = d.to_raw();
            assert_eq!(d.into_raw_bytes().as_ref(), expected.as_slice());
        }
    }
    use super::*;

    #[test]
    fn rows_concat_and_split_back() {
        let a = Tensor::new("x", vec![1, 2], TensorData::Float32(vec![1.0, 2.0]));
        let b = Tensor::new("x", vec![2, 2], TensorData::Float32(vec![3.0, 4.0, 5.0, 6.0]));
        let both = Tensor::concat_rows(&[&a, &b]).unwrap();
        assert_eq!(both.shape, vec![3, 2]);
        assert_eq!(both.data, TensorData::Float32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        assert_eq!(both.split_rows(&[1, 2]).unwrap(), vec![a.clone(), b.clone()]);
        assert!(both.split_rows(&[1, 1]).is_none(), "rows must add up");
        let other_width = Tensor::new("x", vec![1, 3], TensorData::Float32(vec![0.0; 3]));
        assert!(Tensor::concat_rows(&[&a, &other_width]).is_none());
        let other_type = Tensor::new("x", vec![1, 2], TensorData::Int64(vec![0; 2]));
        assert!(Tensor::concat_rows(&[&a, &other_type]).is_none());
        let s = Tensor::new("s", vec![2], TensorData::String(vec!["a".into(), "b".into()]));
        assert_eq!(s.split_rows(&[1, 1]).unwrap()[1].data, TensorData::String(vec!["b".into()]));
    }

    #[test]
    fn raw_round_trips_every_dtype() {
        let cases = vec![
            TensorData::Float32(vec![1.5, -0.0, f32::MAX]),
            TensorData::Float64(vec![1e300, -2.5]),
            TensorData::Int32(vec![-1, 0, i32::MAX]),
            TensorData::Int64(vec![i64::MIN, 7]),
            TensorData::Bool(vec![true, false, true]),
            TensorData::Uint8(vec![0, 255]),
            TensorData::Int8(vec![-128, 127]),
            TensorData::String(vec!["héllo".into(), String::new(), "x".into()]),
            TensorData::Float16(vec![f16::from_f32(0.5), f16::MAX, f16::MIN_POSITIVE_SUBNORMAL]),
            TensorData::Bfloat16(vec![bf16::from_f32(3.0), bf16::MIN]),
            TensorData::Int16(vec![i16::MIN, -1, i16::MAX]),
            TensorData::Uint16(vec![0, u16::MAX]),
            TensorData::Uint32(vec![0, u32::MAX]),
            TensorData::Uint64(vec![0, u64::MAX]),
        ];
        for data in cases {
            let raw = data.to_raw();
            let back = TensorData::from_raw(data.dtype(), &raw, data.len()).unwrap();
            assert_eq!(back, data);
        }
    }

    #[test]
    fn raw_length_mismatch_names_both_sizes() {
        let err = TensorData::from_raw(DataType::Float32, &[0; 7], 2).unwrap_err();
        assert_eq!(err.to_string(), "raw contents are 7 bytes, expected 8 (2 FLOAT32 elements)");
        let err = TensorData::from_raw_bytes(DataType::Bfloat16, vec![0; 5].into(), 2).unwrap_err();
        assert_eq!(err.to_string(), "raw contents are 5 bytes, expected 4 (2 BFLOAT16 elements)");
    }

    #[test]
    fn sixteen_bit_and_unsigned_layouts() {
        let sizes = [
            (DataType::Float16, 2),
            (DataType::Bfloat16, 2),
            (DataType::Int16, 2),
            (DataType::Uint16, 2),
            (DataType::Uint32, 4),
            (DataType::Uint64, 8),
        ];
        for (dtype, size) in sizes {
            assert_eq!(dtype.element_size(), Some(size), "{dtype}");
        }
        // IEEE half and bfloat16 bits, little-endian: 1.0 is 0x3c00 and 0x3f80.
        assert_eq!(TensorData::Float16(vec![f16::ONE]).to_raw(), [0x00, 0x3c]);
        assert_eq!(TensorData::Bfloat16(vec![bf16::ONE]).to_raw(), [0x80, 0x3f]);
        let raw =
            TensorData::from_raw_bytes(DataType::Uint64, u64::MAX.to_le_bytes().to_vec().into(), 1).unwrap();
        assert_eq!(raw, TensorData::Uint64(vec![u64::MAX]), "raw bytes compare by their elements");
        assert!(
            DataType::Float16.is_float() && DataType::Bfloat16.is_float() && !DataType::Uint64.is_float()
        );
    }

    #[test]
    fn malformed_strings_are_errors_not_panics() {
        assert_eq!(
            TensorData::from_raw(DataType::String, &[5, 0, 0, 0, b'a'], 1),
            Err(RawDecodeError::StringLayout)
        );
        assert_eq!(TensorData::from_raw(DataType::String, &[0, 0], 1), Err(RawDecodeError::StringLayout));
        assert_eq!(
            TensorData::from_raw(DataType::String, &[1, 0, 0, 0, 0xff], 1),
            Err(RawDecodeError::Utf8(0))
        );
        assert_eq!(
            TensorData::from_raw(DataType::String, &[0, 0, 0, 0], 2),
            Err(RawDecodeError::StringCount { got: 1, expected: 2 })
        );
    }

    #[test]
    fn bool_bytes_other_than_zero_or_one_are_rejected() {
        assert_eq!(TensorData::from_raw(DataType::Bool, &[2], 1), Err(RawDecodeError::Bool(2)));
    }

    #[test]
    fn element_count_rejects_negative_and_overflow() {
        assert_eq!(element_count(&[2, 3]), Some(6));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[2, -1]), None);
        assert_eq!(element_count(&[i64::MAX, i64::MAX]), None);
    }
}
