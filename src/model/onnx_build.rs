//! Writing ONNX graphs: thin constructors over the protobuf types that
//! tract-onnx already generates, so the importer never hand-encodes protobuf.

use tract_onnx::pb;

pub const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;
pub const OPSET: i64 = 17;
/// ONNX IR version 8 goes with opset 17.
pub const IR_VERSION: i64 = 8;

/// A graph under construction: nodes in topological order plus initializers.
#[derive(Default)]
pub struct GraphBuilder {
    pub nodes: Vec<pb::NodeProto>,
    pub initializers: Vec<pb::TensorProto>,
    counter: usize,
}

impl GraphBuilder {
    /// A fresh value name with a readable prefix.
    pub fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_{}", self.counter)
    }

    pub fn initializer(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        assert_eq!(dims.iter().product::<usize>(), data.len(), "initializer {name}: shape and data disagree");
        self.initializers.push(pb::TensorProto {
            name: name.to_owned(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.to_owned()
    }

    /// Appends a node and returns the name of its (single) output.
    pub fn node(&mut self, op: &str, inputs: &[&str], attributes: Vec<pb::AttributeProto>, output: String) -> String {
        self.nodes.push(pb::NodeProto {
            name: output.clone(),
            op_type: op.to_owned(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            attribute: attributes,
            ..Default::default()
        });
        output
    }

    /// A model of one float input (`dims`, batch 1 included) whose outputs
    /// are `outputs`, their shapes left to inference; for tests and tools.
    pub fn into_model(self, input: &str, dims: &[usize], outputs: &[&str]) -> pb::ModelProto {
        let dims: Vec<Option<usize>> = dims.iter().map(|&d| Some(d)).collect();
        let graph = pb::GraphProto {
            name: "lineguard".into(),
            node: self.nodes,
            initializer: self.initializers,
            input: vec![value_info(input, &dims)],
            output: outputs.iter().map(|o| pb::ValueInfoProto { name: o.to_string(), ..Default::default() }).collect(),
            ..Default::default()
        };
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: OPSET }],
            producer_name: "lineguard".into(),
            graph: Some(graph),
            ..Default::default()
        }
    }
}

fn attribute(name: &str, ty: pb::attribute_proto::AttributeType, set: impl FnOnce(&mut pb::AttributeProto)) -> pb::AttributeProto {
    let mut a = pb::AttributeProto { name: name.to_owned(), r#type: ty as i32, ..Default::default() };
    set(&mut a);
    a
}

pub fn attr_ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    attribute(name, pb::attribute_proto::AttributeType::Ints, |a| a.ints = values.to_vec())
}

pub fn attr_int(name: &str, value: i64) -> pb::AttributeProto {
    attribute(name, pb::attribute_proto::AttributeType::Int, |a| a.i = value)
}

pub fn attr_float(name: &str, value: f32) -> pb::AttributeProto {
    attribute(name, pb::attribute_proto::AttributeType::Float, |a| a.f = value)
}

pub fn attr_str(name: &str, value: &str) -> pb::AttributeProto {
    attribute(name, pb::attribute_proto::AttributeType::String, |a| a.s = value.as_bytes().to_vec())
}

/// A float tensor value description; `None` dims become symbolic (`batch`).
pub fn value_info(name: &str, dims: &[Option<usize>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(n) => Value::DimValue(*n as i64),
                None => Value::DimParam("batch".into()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: FLOAT,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Static dims of a graph input or output, `None` for symbolic ones.
pub fn dims_of(info: &pb::ValueInfoProto) -> Option<Vec<Option<usize>>> {
    use pb::tensor_shape_proto::dimension::Value;
    let Some(pb::type_proto::Value::TensorType(t)) = info.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    Some(
        t.shape
            .as_ref()?
            .dim
            .iter()
            .map(|d| match d.value {
                Some(Value::DimValue(n)) if n >= 0 => Some(n as usize),
                _ => None,
            })
            .collect(),
    )
}
