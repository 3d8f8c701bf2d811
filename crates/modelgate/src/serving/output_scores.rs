//! A model's scores, read from its outputs: what the prediction-shift and
//! feature-importance checks compare between versions (the request path and
//! the shadow side both record them), and whether the outputs hold NaN/Inf.

use modelgate_runtime::Tensor;

/// Each row's score: the last column of the first floating-point output (a
/// classifier's positive-class probability, a regressor's value).
pub fn scores(outputs: &[Tensor]) -> Vec<f64> {
    for t in outputs {
        let cols = t
            .shape
            .last()
            .and_then(|&c| usize::try_from(c).ok())
            .filter(|&c| c > 0 && t.shape.len() > 1)
            .unwrap_or(1);
        match &t.data {
            modelgate_runtime::TensorData::Float32(v) => {
                return v.chunks(cols).filter_map(|r| r.last()).map(|&x| f64::from(x)).collect();
            }
            modelgate_runtime::TensorData::Float64(v) => {
                return v.chunks(cols).filter_map(|r| r.last()).copied().collect();
            }
            modelgate_runtime::TensorData::Float16(v) => {
                return v.chunks(cols).filter_map(|r| r.last()).map(|&x| f64::from(x)).collect();
            }
            modelgate_runtime::TensorData::Bfloat16(v) => {
                return v.chunks(cols).filter_map(|r| r.last()).map(|&x| f64::from(x)).collect();
            }
            _ => {}
        }
    }
    Vec::new()
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
