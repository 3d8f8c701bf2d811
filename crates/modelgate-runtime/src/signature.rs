//! A model's signature (input and output names, dtypes, shapes) and the check
//! every request passes before it is queued.

use std::fmt;

use crate::quote::quoted;
use crate::tensor::{DataType, Tensor, element_count};

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    /// A dynamic dimension; named ones (e.g. `N`) must agree across tensors.
    Dynamic(Option<String>),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Dynamic(Some(name)) => f.write_str(name),
            Dim::Dynamic(None) => f.write_str("?"),
        }
    }
}

/// A declared input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DataType,
    pub dims: Vec<Dim>,
}

impl TensorSpec {
    /// The shape as the KServe/Triton convention writes it: -1 for dynamic.
    pub fn shape_i64(&self) -> Vec<i64> {
        self.dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n,
                Dim::Dynamic(_) => -1,
            })
            .collect()
    }

    /// The shape with every dynamic dimension set to 1: a valid warm-up input.
    pub fn unit_shape(&self) -> Vec<i64> {
        self.dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n,
                Dim::Dynamic(_) => 1,
            })
            .collect()
    }
}

/// Formats a declared shape like `[N, 30]`.
pub struct DimsDisplay<'a>(pub &'a [Dim]);

impl fmt::Display for DimsDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

fn shape_str(shape: &[i64]) -> String {
    crate::quote::shape(shape).to_string()
}

/// The inputs and outputs of a model version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    /// Whether requests can be stacked along the first dimension: every input
    /// and output has one, and it is dynamic.
    pub fn batchable(&self) -> bool {
        !self.inputs.is_empty()
            && self
                .inputs
                .iter()
                .chain(&self.outputs)
                .all(|s| matches!(s.dims.first(), Some(Dim::Dynamic(_))))
    }
}

impl Signature {
    /// Whether one row of every input has a size fixed by the model: every
    /// dimension after the first is fixed and no input is a string. A
    /// one-row request then always carries the same work, so the run time
    /// measured on earlier rows predicts the next one's.
    pub fn fixed_row_size(&self) -> bool {
        !self.inputs.is_empty()
            && self.inputs.iter().all(|s| {
                s.dtype != crate::tensor::DataType::String
                    && s.dims.iter().skip(1).all(|d| matches!(d, Dim::Fixed(_)))
            })
    }
}

/// Why a request's inputs do not fit a signature. Every message names the
/// tensor, what was sent and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("no inputs given; the model expects {expected}")]
    NoInputs { expected: String },
    #[error("missing input {} ({dtype} {dims}); inputs given: {given}", quoted(.name))]
    Missing { name: String, dtype: DataType, dims: String, given: String },
    #[error("unknown input {}; the model's inputs are: {expected}", quoted(.name))]
    Unknown { name: String, expected: String },
    #[error("input {} is given more than once", quoted(.name))]
    Duplicate { name: String },
    #[error("input {} has dtype {got}, expected {expected}", quoted(.name))]
    DType { name: String, got: DataType, expected: DataType },
    #[error("input {} has shape {got}, expected {expected}", quoted(.name))]
    Shape { name: String, got: String, expected: String },
    #[error("input {} has shape {got}: an empty batch (a zero dimension) cannot be served", quoted(.name))]
    Empty { name: String, got: String },
    #[error("input {} has shape {got} but {elements} elements", quoted(.name))]
    Elements { name: String, got: String, elements: usize },
    #[error(
        "inputs disagree on dimension '{symbol}': {} has {first_value}, {} has {second_value}",
        quoted(.first),
        quoted(.second)
    )]
    SymbolMismatch { symbol: String, first: String, first_value: i64, second: String, second_value: i64 },
    #[error("unknown output {} requested; the model's outputs are: {expected}", quoted(.name))]
    UnknownOutput { name: String, expected: String },
    /// Each name is one copy of the output in the reply: repeating a name
    /// would multiply the response (and the memory behind it) for nothing.
    #[error("output {} is requested more than once", quoted(.name))]
    DuplicateOutput { name: String },
}

impl Signature {
    fn input_list(&self) -> String {
        self.inputs
            .iter()
            .map(|s| format!("'{}' ({} {})", s.name, s.dtype, DimsDisplay(&s.dims)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks that `inputs` are exactly this signature's inputs, with matching
    /// dtypes and shapes, no empty batch, and consistent named dimensions.
    pub fn check_inputs(&self, inputs: &[Tensor]) -> Result<(), InputError> {
        if inputs.is_empty() {
            return Err(InputError::NoInputs { expected: self.input_list() });
        }
        // Models have a handful of inputs: linear scans, no allocation on the
        // request path.
        for (i, t) in inputs.iter().enumerate() {
            if inputs[..i].iter().any(|u| u.name == t.name) {
                return Err(InputError::Duplicate { name: t.name.clone() });
            }
            if !self.inputs.iter().any(|s| s.name == t.name) {
                return Err(InputError::Unknown { name: t.name.clone(), expected: self.input_list() });
            }
        }
        let find = |name: &str| inputs.iter().find(|t| t.name == name);
        // The first value a symbolic dimension took, from the inputs before.
        let first_value = |upto: usize, sym: &str| -> Option<(&str, i64)> {
            self.inputs[..upto].iter().find_map(|spec| {
                let t = find(&spec.name)?;
                spec.dims.iter().zip(&t.shape).find_map(|(d, &v)| match d {
                    Dim::Dynamic(Some(s)) if s == sym => Some((t.name.as_str(), v)),
                    _ => None,
                })
            })
        };
        for (index, spec) in self.inputs.iter().enumerate() {
            let Some(t) = find(&spec.name) else {
                let given = inputs.iter().map(|t| quoted(&t.name).to_string()).collect::<Vec<_>>().join(", ");
                return Err(InputError::Missing {
                    name: spec.name.clone(),
                    dtype: spec.dtype,
                    dims: DimsDisplay(&spec.dims).to_string(),
                    given,
                });
            };
            if t.dtype() != spec.dtype {
                return Err(InputError::DType { name: t.name.clone(), got: t.dtype(), expected: spec.dtype });
            }
            let shape_err = || InputError::Shape {
                name: t.name.clone(),
                got: shape_str(&t.shape),
                expected: DimsDisplay(&spec.dims).to_string(),
            };
            if t.shape.len() != spec.dims.len() {
                return Err(shape_err());
            }
            for (j, (&got, dim)) in t.shape.iter().zip(&spec.dims).enumerate() {
                if got < 0 {
                    return Err(shape_err());
                }
                match dim {
                    Dim::Fixed(n) if *n != got => return Err(shape_err()),
                    Dim::Dynamic(Some(sym)) => {
                        // Earlier inputs first, then earlier dimensions of this one.
                        let same_tensor = spec.dims[..j].iter().zip(&t.shape).find_map(|(d, &v)| match d {
                            Dim::Dynamic(Some(s)) if s == sym => Some((t.name.as_str(), v)),
                            _ => None,
                        });
                        if let Some((first, value)) = first_value(index, sym).or(same_tensor)
                            && value != got
                        {
                            return Err(InputError::SymbolMismatch {
                                symbol: sym.clone(),
                                first: first.to_string(),
                                first_value: value,
                                second: t.name.clone(),
                                second_value: got,
                            });
                        }
                    }
                    _ => {}
                }
            }
            if t.shape.contains(&0) {
                return Err(InputError::Empty { name: t.name.clone(), got: shape_str(&t.shape) });
            }
            if element_count(&t.shape) != Some(t.data.len()) {
                return Err(InputError::Elements {
                    name: t.name.clone(),
                    got: shape_str(&t.shape),
                    elements: t.data.len(),
                });
            }
        }
        Ok(())
    }

    /// Checks that every requested output exists and is asked for once.
    pub fn check_outputs(&self, requested: &[String]) -> Result<(), InputError> {
        for (i, name) in requested.iter().enumerate() {
            if !self.outputs.iter().any(|s| &s.name == name) {
                let expected =
                    self.outputs.iter().map(|s| format!("'{}'", s.name)).collect::<Vec<_>>().join(", ");
                return Err(InputError::UnknownOutput { name: name.clone(), expected });
            }
            // Every name before this one is a known output, so there are
            // at most as many as the model has: a short scan.
            if requested[..i].contains(name) {
                return Err(InputError::DuplicateOutput { name: name.clone() });
            }
        }
        Ok(())
    }

    /// True if a client of `self` can call `other` unchanged: same input names,
    /// dtypes and compatible shapes.
    pub fn inputs_compatible_with(&self, other: &Signature) -> bool {
        self.inputs.len() == other.inputs.len()
            && self.inputs.iter().all(|a| {
                other.inputs.iter().any(|b| {
                    a.name == b.name
                        && a.dtype == b.dtype
                        && a.dims.len() == b.dims.len()
                        && a.dims.iter().zip(&b.dims).all(|(x, y)| match (x, y) {
                            (Dim::Fixed(m), Dim::Fixed(n)) => m == n,
                            _ => true,
                        })
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    fn sig() -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "input".into(),
                dtype: DataType::Float32,
                dims: vec![Dim::Dynamic(Some("N".into())), Dim::Fixed(3)],
            }],
            outputs: vec![TensorSpec {
                name: "label".into(),
                dtype: DataType::Int64,
                dims: vec![Dim::Dynamic(Some("N".into()))],
            }],
        }
    }

    fn t(name: &str, shape: Vec<i64>, n: usize) -> Tensor {
        Tensor::new(name, shape, TensorData::Float32(vec![0.0; n]))
    }

    #[test]
    fn accepts_matching_inputs() {
        sig().check_inputs(&[t("input", vec![2, 3], 6)]).unwrap();
    }

    #[test]
    fn messages_name_the_tensor_and_the_expectation() {
        let s = sig();
        let e = s.check_inputs(&[t("input", vec![1, 4], 4)]).unwrap_err();
        assert_eq!(e.to_string(), "input 'input' has shape [1, 4], expected [N, 3]");
        let e = s.check_inputs(&[t("x", vec![1, 3], 3)]).unwrap_err();
        assert_eq!(e.to_string(), "unknown input 'x'; the model's inputs are: 'input' (FLOAT32 [N, 3])");
        let e = s
            .check_inputs(&[Tensor::new("input", vec![1, 3], TensorData::Float64(vec![0.0; 3]))])
            .unwrap_err();
        assert_eq!(e.to_string(), "input 'input' has dtype FLOAT64, expected FLOAT32");
        let e = s.check_inputs(&[t("input", vec![0, 3], 0)]).unwrap_err();
        assert!(matches!(e, InputError::Empty { .. }), "{e}");
        let e = s.check_inputs(&[t("input", vec![1, 3], 3), t("input", vec![1, 3], 3)]).unwrap_err();
        assert_eq!(e, InputError::Duplicate { name: "input".into() });
        let e = s.check_inputs(&[]).unwrap_err();
        assert!(matches!(e, InputError::NoInputs { .. }));
        let e = s.check_inputs(&[t("input", vec![2, 3], 5)]).unwrap_err();
        assert!(matches!(e, InputError::Elements { elements: 5, .. }));
        let e = s.check_outputs(&["nope".into()]).unwrap_err();
        assert_eq!(e.to_string(), "unknown output 'nope' requested; the model's outputs are: 'label'");
        let e = s.check_outputs(&["label".into(), "label".into()]).unwrap_err();
        assert_eq!(e.to_string(), "output 'label' is requested more than once");
        let e = s.check_outputs(&["x".repeat(1 << 20)]).unwrap_err().to_string();
        assert!(e.len() < 300 && e.contains("(1048576 bytes)"), "{e}");
    }

    #[test]
    fn named_dimensions_must_agree_across_inputs() {
        let mut s = sig();
        s.inputs.push(TensorSpec {
            name: "mask".into(),
            dtype: DataType::Float32,
            dims: vec![Dim::Dynamic(Some("N".into()))],
        });
        let e = s.check_inputs(&[t("input", vec![2, 3], 6), t("mask", vec![3], 3)]).unwrap_err();
        assert!(matches!(e, InputError::SymbolMismatch { .. }), "{e}");
        let e = s.check_inputs(&[t("input", vec![2, 3], 6)]).unwrap_err();
        assert!(e.to_string().starts_with("missing input 'mask'"), "{e}");
    }
}
