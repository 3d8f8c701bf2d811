//! ONNX models built byte by byte, for the hostile-model tests and the
//! `hostile_model` fuzz target: a model file is untrusted input too.
//!
//! The messages are `modelgate_runtime::onnx`'s (the part of `onnx.proto`
//! modelgate reads itself), so a test can write a 75-byte file that
//! declares a 4 TB input, a Loop that never ends, or one whose trip count a
//! client sends, without Python or the `onnx` package.

use prost::Message;

pub use modelgate_runtime::onnx::*;

/// A declared dimension: a fixed size, or a named dynamic one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum D {
    Fixed(i64),
    Dynamic(&'static str),
}

/// A graph input or output of `elem` type and `dims` shape.
pub fn value(name: &str, elem: i32, dims: &[D]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| match d {
            D::Fixed(n) => DimensionProto { dim_value: Some(*n), dim_param: None },
            D::Dynamic(p) => DimensionProto { dim_value: None, dim_param: Some((*p).to_string()) },
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto { elem_type: elem, shape: Some(TensorShapeProto { dim }) }),
        }),
    }
}

/// A node `op(inputs) -> outputs` with attributes.
pub fn node(op: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: String::new(),
        op_type: op.into(),
        attribute,
    }
}

/// A graph-valued attribute (a Loop's `body`).
pub fn graph_attr(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto { name: name.into(), g: Some(g), r#type: 5, ..Default::default() }
}

/// A tensor-valued attribute (`Constant`'s or `ConstantOfShape`'s `value`).
pub fn tensor_attr(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto { name: name.into(), t: Some(t), r#type: 4, ..Default::default() }
}

/// An int attribute.
pub fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i, r#type: 2, ..Default::default() }
}

/// An ints attribute.
pub fn ints_attr(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), ints: ints.to_vec(), r#type: 7, ..Default::default() }
}

/// A named float tensor.
pub fn floats(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: elem::FLOAT,
        float_data: data.to_vec(),
        ..Default::default()
    }
}

/// A named int64 tensor.
pub fn int64s(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: elem::INT64,
        int64_data: data.to_vec(),
        ..Default::default()
    }
}

/// A named bool scalar.
pub fn bool_scalar(name: &str, v: bool) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: elem::BOOL,
        raw_data: vec![u8::from(v)],
        ..Default::default()
    }
}

/// A model of one graph at IR version 8, opset 17.
pub fn model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: 8,
        producer_name: "modelgate-hostile".into(),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
    }
}

/// The model's bytes, as a `model.onnx` file holds them.
pub fn encode(m: &ModelProto) -> Vec<u8> {
    m.encode_to_vec()
}

/// `x -> Identity -> y`, with `x` and `y` of `elem` type and `dims` shape:
/// with a fixed dimension of `1 << 40` this is the 75-byte file whose
/// warm-up used to allocate 4 TB.
pub fn identity(elem: i32, dims: &[D]) -> Vec<u8> {
    encode(&model(GraphProto {
        name: "identity".into(),
        node: vec![node("Identity", &["x"], &["y"], vec![])],
        input: vec![value("x", elem, dims)],
        output: vec![value("y", elem, dims)],
        ..Default::default()
    }))
}

/// A Loop's body that adds 1 to a float `[1]` carried value and keeps its
/// condition as it came in.
fn counting_body() -> GraphProto {
    GraphProto {
        name: "body".into(),
        node: vec![
            node("Identity", &["cond_in"], &["cond_out"], vec![]),
            node("Add", &["v_in", "one"], &["v_out"], vec![]),
        ],
        initializer: vec![floats("one", &[1], &[1.0])],
        input: vec![
            value("iter", elem::INT64, &[]),
            value("cond_in", elem::BOOL, &[]),
            value("v_in", elem::FLOAT, &[D::Fixed(1)]),
        ],
        output: vec![value("cond_out", elem::BOOL, &[]), value("v_out", elem::FLOAT, &[D::Fixed(1)])],
    }
}

/// `y = x + iterations` by a Loop with no trip count and a condition that
/// stays true: it never ends (the `loop_forever` of issue 14). Input `x`
/// float `[1]`, output `y` float `[1]`.
pub fn loop_forever() -> Vec<u8> {
    encode(&model(GraphProto {
        name: "loop_forever".into(),
        node: vec![node("Loop", &["", "keep_going", "x"], &["y"], vec![graph_attr("body", counting_body())])],
        initializer: vec![bool_scalar("keep_going", true)],
        input: vec![value("x", elem::FLOAT, &[D::Fixed(1)])],
        output: vec![value("y", elem::FLOAT, &[D::Fixed(1)])],
    }))
}

/// `y = x + n` by a Loop whose trip count `n` (int64 `[1]`) is an input:
/// the client decides how long it runs. Warm-up sends `n = 0`.
pub fn loop_count() -> Vec<u8> {
    encode(&model(GraphProto {
        name: "loop_count".into(),
        node: vec![node(
            "Loop",
            &["n", "keep_going", "x"],
            &["y"],
            vec![graph_attr("body", counting_body())],
        )],
        initializer: vec![bool_scalar("keep_going", true)],
        input: vec![value("n", elem::INT64, &[D::Fixed(1)]), value("x", elem::FLOAT, &[D::Fixed(1)])],
        output: vec![value("y", elem::FLOAT, &[D::Fixed(1)])],
    }))
}

/// `y = ConstantOfShape(shape)`: a float tensor of zeros as large as the
/// client's int64 `[1]` input says. Warm-up sends `[0]`.
pub fn constant_of_shape() -> Vec<u8> {
    encode(&model(GraphProto {
        name: "constant_of_shape".into(),
        node: vec![node(
            "ConstantOfShape",
            &["shape"],
            &["y"],
            vec![tensor_attr("value", floats("", &[1], &[0.0]))],
        )],
        input: vec![value("shape", elem::INT64, &[D::Fixed(1)])],
        output: vec![value("y", elem::FLOAT, &[D::Dynamic("n")])],
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_huge_identity_is_the_issues_75_bytes_or_so() {
        let bytes = identity(elem::FLOAT, &[D::Fixed(1 << 40)]);
        assert!(bytes.len() < 100, "{} bytes", bytes.len());
        let back = ModelProto::decode(bytes.as_slice()).expect("decodes");
        let dims = &back.graph.as_ref().expect("graph").input[0]
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .and_then(|t| t.shape.as_ref())
            .expect("shape")
            .dim;
        assert_eq!(dims[0].dim_value, Some(1 << 40));
    }
}
