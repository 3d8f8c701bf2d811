//! Comparing a shadow's outputs with the champion's for the same request.

use modelgate_runtime::{Tensor, TensorData};
use serde::Serialize;

/// How one output of the shadow differs from the champion's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputDiff {
    pub name: String,
    /// Elements compared (0 when shapes or dtypes differ).
    pub elements: usize,
    /// Largest |shadow − champion| over finite pairs (numeric outputs).
    pub max_abs_diff: Option<f64>,
    pub mean_abs_diff: Option<f64>,
    /// Share of equal elements, for integer, bool and string outputs (labels).
    pub agreement: Option<f64>,
    pub champion_nan_inf: usize,
    pub shadow_nan_inf: usize,
    /// Set when the two cannot be compared element by element.
    pub mismatch: Option<String>,
}

fn floats(d: &TensorData) -> Option<Vec<f64>> {
    match d {
        TensorData::Float32(v) => Some(v.iter().map(|&x| f64::from(x)).collect()),
        TensorData::Float64(v) => Some(v.clone()),
        TensorData::Float16(v) => Some(v.iter().map(|&x| f64::from(x)).collect()),
        TensorData::Bfloat16(v) => Some(v.iter().map(|&x| f64::from(x)).collect()),
        _ => None,
    }
}

fn discrete(d: &TensorData) -> Option<Vec<String>> {
    Some(match d {
        TensorData::Int32(v) => v.iter().map(i32::to_string).collect(),
        TensorData::Int64(v) => v.iter().map(i64::to_string).collect(),
        TensorData::Uint8(v) => v.iter().map(u8::to_string).collect(),
        TensorData::Int8(v) => v.iter().map(i8::to_string).collect(),
        TensorData::Int16(v) => v.iter().map(i16::to_string).collect(),
        TensorData::Uint16(v) => v.iter().map(u16::to_string).collect(),
        TensorData::Uint32(v) => v.iter().map(u32::to_string).collect(),
        TensorData::Uint64(v) => v.iter().map(u64::to_string).collect(),
        TensorData::Bool(v) => v.iter().map(bool::to_string).collect(),
        TensorData::String(v) => v.clone(),
        _ => return None,
    })
}

/// Compares output `name` of both runs.
pub fn compare_output(champion: &Tensor, shadow: &Tensor) -> OutputDiff {
    let mut diff = OutputDiff {
        name: champion.name.clone(),
        elements: 0,
        max_abs_diff: None,
        mean_abs_diff: None,
        agreement: None,
        champion_nan_inf: floats(&champion.data).map_or(0, |v| v.iter().filter(|x| !x.is_finite()).count()),
        shadow_nan_inf: floats(&shadow.data).map_or(0, |v| v.iter().filter(|x| !x.is_finite()).count()),
        mismatch: None,
    };
    if champion.shape != shadow.shape {
        diff.mismatch = Some(format!("shape {:?} vs {:?}", champion.shape, shadow.shape));
        return diff;
    }
    if let (Some(a), Some(b)) = (floats(&champion.data), floats(&shadow.data)) {
        let pairs: Vec<f64> = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| (x - y).abs())
            .collect();
        diff.elements = a.len();
        if !pairs.is_empty() {
            diff.max_abs_diff = Some(pairs.iter().copied().fold(0.0, f64::max));
            diff.mean_abs_diff = Some(pairs.iter().sum::<f64>() / pairs.len() as f64);
        }
    } else if let (Some(a), Some(b)) = (discrete(&champion.data), discrete(&shadow.data)) {
        diff.elements = a.len();
        if !a.is_empty() {
            diff.agreement = Some(a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64);
        }
    } else {
        diff.mismatch = Some(format!("dtype {} vs {}", champion.dtype(), shadow.dtype()));
    }
    diff
}

/// Compares every champion output with the shadow's output of the same name.
pub fn compare(champion: &[Tensor], shadow: &[Tensor]) -> Vec<OutputDiff> {
    champion
        .iter()
        .map(|c| match shadow.iter().find(|s| s.name == c.name) {
            Some(s) => compare_output(c, s),
            None => OutputDiff {
                name: c.name.clone(),
                elements: 0,
                max_abs_diff: None,
                mean_abs_diff: None,
                agreement: None,
                champion_nan_inf: 0,
                shadow_nan_inf: 0,
                mismatch: Some("the shadow has no such output".into()),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_outputs_give_abs_diffs_and_count_nans() {
        let a = Tensor::new("p", vec![2, 2], TensorData::Float32(vec![0.1, 0.9, 0.4, 0.6]));
        let b = Tensor::new("p", vec![2, 2], TensorData::Float32(vec![0.2, 0.8, f32::NAN, f32::NAN]));
        let d = compare_output(&a, &b);
        assert_eq!(d.shadow_nan_inf, 2);
        assert!((d.max_abs_diff.unwrap() - 0.1).abs() < 1e-6);
        assert!((d.mean_abs_diff.unwrap() - 0.1).abs() < 1e-6);
    }

    #[test]
    fn half_floats_are_floats_and_unsigned_ints_are_labels() {
        use modelgate_runtime::half::{bf16, f16};
        let h = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
        let a = Tensor::new("p", vec![3], TensorData::Float16(h(&[0.5, 0.25, 1.0])));
        let b = Tensor::new("p", vec![3], TensorData::Float16(h(&[0.75, f32::NAN, f32::INFINITY])));
        let d = compare_output(&a, &b);
        assert_eq!((d.shadow_nan_inf, d.max_abs_diff), (2, Some(0.25)));
        let b16 = Tensor::new("p", vec![1], TensorData::Bfloat16(vec![bf16::NEG_INFINITY]));
        assert_eq!(compare_output(&b16, &b16).champion_nan_inf, 1);
        let a = Tensor::new("label", vec![2], TensorData::Uint64(vec![u64::MAX, 1]));
        let b = Tensor::new("label", vec![2], TensorData::Uint64(vec![u64::MAX, 2]));
        assert_eq!(compare_output(&a, &b).agreement, Some(0.5));
        let a = Tensor::new("label", vec![1], TensorData::Uint16(vec![7]));
        assert_eq!(compare_output(&a, &a).agreement, Some(1.0));
    }

    #[test]
    fn labels_give_agreement() {
        let a = Tensor::new("label", vec![4], TensorData::Int64(vec![0, 1, 1, 0]));
        let b = Tensor::new("label", vec![4], TensorData::Int64(vec![0, 1, 0, 0]));
        assert_eq!(compare_output(&a, &b).agreement, Some(0.75));
    }

    #[test]
    fn incomparable_outputs_say_why() {
        let a = Tensor::new("y", vec![1], TensorData::Int64(vec![0]));
        let b = Tensor::new("y", vec![2], TensorData::Int64(vec![0, 1]));
        assert!(compare_output(&a, &b).mismatch.unwrap().contains("shape"));
        let d = compare(&[a], &[]);
        assert_eq!(d[0].mismatch.as_deref(), Some("the shadow has no such output"));
    }
}
