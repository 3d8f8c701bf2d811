//! A model's scores, read from its outputs: what the prediction-shift and
//! feature-importance checks compare between versions (the request path and
//! the shadow side both record them), and whether the outputs hold NaN/Inf.

use modelgate_runtime::Tensor;

/// Each row's score: the last column of the first floating-point output (a
/// classifier's positive-class probability, a regressor's value).
pub fn scores(outputs: &[Tensor]) -> Vec<f64> {
    score_iter(outputs).collect()
}

/// [`scores`] without collecting them: the request path records each
/// reply's scores into the version's window with no allocation.
pub fn score_iter(outputs: &[Tensor]) -> Scores<'_> {
    for t in outputs {
        let cols = t
            .shape
            .last()
            .and_then(|&c| usize::try_from(c).ok())
            .filter(|&c| c > 0 && t.shape.len() > 1)
            .unwrap_or(1);
        match &t.data {
            modelgate_runtime::TensorData::Float32(v) => return Scores::F32(v.chunks(cols)),
            modelgate_runtime::TensorData::Float64(v) => return Scores::F64(v.chunks(cols)),
            modelgate_runtime::TensorData::Float16(v) => return Scores::F16(v.chunks(cols)),
            modelgate_runtime::TensorData::Bfloat16(v) => return Scores::Bf16(v.chunks(cols)),
            _ => {}
        }
    }
    Scores::None
}

/// The rows' scores of one output (see [`score_iter`]).
#[derive(Debug, Clone)]
pub enum Scores<'a> {
    F32(std::slice::Chunks<'a, f32>),
    F64(std::slice::Chunks<'a, f64>),
    F16(std::slice::Chunks<'a, modelgate_runtime::half::f16>),
    Bf16(std::slice::Chunks<'a, modelgate_runtime::half::bf16>),
    /// No floating-point output.
    None,
}

impl Iterator for Scores<'_> {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        // A row is never empty (chunks of at least one element), so its
        // last element is always there.
        match self {
            Self::F32(rows) => rows.next().and_then(|r| r.last()).map(|&x| f64::from(x)),
            Self::F64(rows) => rows.next().and_then(|r| r.last()).copied(),
            Self::F16(rows) => rows.next().and_then(|r| r.last()).map(|&x| f64::from(x)),
            Self::Bf16(rows) => rows.next().and_then(|r| r.last()).map(|&x| f64::from(x)),
            Self::None => None,
        }
    }
}

/// Whether any floating-point output holds a NaN or an infinity.
pub fn has_nan_inf(outputs: &[Tensor]) -> bool {
    outputs.iter().any(|t| match &t.data {
        modelgate_runtime::TensorData::Float32(v) => v.iter().any(|x| !x.is_finite()),
        modelgate_runtime::TensorData::Float64(v) => v.iter().any(|x| !x.is_finite()),
        modelgate_runtime::TensorData::Float16(v) => v.iter().any(|x| !x.is_finite()),
        modelgate_runtime::TensorData::Bfloat16(v) => v.iter().any(|x| !x.is_finite()),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use modelgate_runtime::half::{bf16, f16};
    use modelgate_runtime::{Tensor, TensorData};

    use super::*;

    #[test]
    fn sixteen_bit_floats_are_scored_and_checked_for_nan_inf() {
        let p = |v: Vec<f16>| vec![Tensor::new("p", vec![2, 2], TensorData::Float16(v))];
        let finite = p([0.25, 0.75, 0.5, 0.5].map(f16::from_f32).to_vec());
        assert_eq!(scores(&finite), vec![0.75, 0.5]);
        assert!(!has_nan_inf(&finite));
        assert!(has_nan_inf(&p(vec![f16::ZERO, f16::NAN, f16::ONE, f16::ONE])));
        let b = |v: bf16| vec![Tensor::new("p", vec![1], TensorData::Bfloat16(vec![v]))];
        assert!(has_nan_inf(&b(bf16::INFINITY)));
        assert!(!has_nan_inf(&b(bf16::MAX)));
        assert_eq!(scores(&b(bf16::ONE)), vec![1.0]);
        // Unsigned integer outputs are labels, not scores.
        let labels = vec![Tensor::new("label", vec![2], TensorData::Uint64(vec![0, 1]))];
        assert!(scores(&labels).is_empty() && !has_nan_inf(&labels));
    }
}
