//! The part of `onnx.proto` (IR 8) modelgate reads or writes itself, with
//! the official field numbers: the declared inputs and outputs of a model
//! file, checked before ONNX Runtime sees them (a declared dimension below
//! -1 makes the `ort` crate panic while it builds the session), and the
//! messages the hostile-model tests and fuzz target build models from.

use prost::Message;

/// ONNX element types (`TensorProto.DataType`).
pub mod elem {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const STRING: i32 = 8;
    pub const BOOL: i32 = 9;
    pub const DOUBLE: i32 = 11;
}

#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(message, optional, tag = "6")]
    pub g: Option<GraphProto>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    /// `AttributeType`: FLOAT 1, INT 2, TENSOR 4, GRAPH 5, INTS 7.
    #[prost(int32, tag = "20")]
    pub r#type: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorTypeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<DimensionProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DimensionProto {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

/// Only a model's declared inputs and outputs: decoding skips every other
/// field (nodes, initializers: the weights), so checking a large model
/// copies nothing big.
#[derive(Clone, PartialEq, Message)]
pub struct ModelDecl {
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphDecl>,
}

/// See [`ModelDecl`].
#[derive(Clone, PartialEq, Message)]
pub struct GraphDecl {
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

/// Only the operator types of a model's top-level nodes (see
/// [`has_control_flow`]): every other field is skipped.
#[derive(Clone, PartialEq, Message)]
struct ModelOps {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphOps>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphOps {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeOp>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeOp {
    #[prost(string, tag = "4")]
    op_type: String,
}

/// Whether a model's graph has control flow (`Loop`, `If`, `Scan`): its run
/// time may then depend on the input values, not only on their shape, so
/// earlier runs do not predict the next. Subgraphs live only inside those
/// nodes, so the top level says it all. A file that does not decode counts
/// as having control flow.
pub fn has_control_flow(bytes: &[u8]) -> bool {
    let Ok(model) = ModelOps::decode(bytes) else {
        return true;
    };
    model.graph.is_some_and(|g| g.node.iter().any(|n| matches!(n.op_type.as_str(), "Loop" | "If" | "Scan")))
}

/// A declared dimension no tensor can have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{which} '{name}' declares dimension {dim}: a dimension is at least 0 (or -1 for a dynamic one)")]
pub struct BadDimension {
    pub which: &'static str,
    pub name: String,
    pub dim: i64,
}

/// Refuses a model file whose graph declares an input or output dimension
/// below -1 (ONNX Runtime reads -1 as "symbolic"; anything lower is no
/// size at all, and the `ort` crate panics on it). A file that does not
/// decode is left to ONNX Runtime, which says why.
pub fn check_declared_dims(bytes: &[u8]) -> Result<(), BadDimension> {
    let Ok(model) = ModelDecl::decode(bytes) else {
        return Ok(());
    };
    let Some(graph) = model.graph else {
        return Ok(());
    };
    for (which, values) in [("input", &graph.input), ("output", &graph.output)] {
        for v in values {
            let dims = v.r#type.as_ref().and_then(|t| t.tensor_type.as_ref()).and_then(|t| t.shape.as_ref());
            for d in dims.map(|s| s.dim.as_slice()).unwrap_or_default() {
                if let Some(n) = d.dim_value
                    && n < -1
                {
                    return Err(BadDimension { which, name: v.name.chars().take(128).collect(), dim: n });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn model_of(ops: &[&str]) -> Vec<u8> {
        let node = ops.iter().map(|op| NodeProto { op_type: (*op).into(), ..Default::default() }).collect();
        ModelProto { graph: Some(GraphProto { node, ..Default::default() }), ..Default::default() }
            .encode_to_vec()
    }

    #[test]
    fn control_flow_is_found_at_the_top_level_and_an_undecodable_file_counts_as_having_it() {
        assert!(!has_control_flow(&model_of(&["MatMul", "Add", "Softmax"])));
        for op in ["Loop", "If", "Scan"] {
            assert!(has_control_flow(&model_of(&["MatMul", op])), "{op}");
        }
        assert!(has_control_flow(&[0xff, 0xff, 0xff]));
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let file = |rel: &str| std::fs::read(root.join(rel)).unwrap();
        assert!(!has_control_flow(&file("repository/breast-cancer/1/model.onnx")));
        assert!(has_control_flow(&file("faults/slow.onnx")));
    }
}
