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
        _ => false,
    })
}
