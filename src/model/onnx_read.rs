//! Reading ONNX graphs: node attributes and float initializers, for the
//! consumers that walk the graph themselves (the GPU planner, training).

use tract_onnx::pb;

use super::onnx_build::FLOAT;

pub fn attr<'a>(n: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

pub fn attr_ints(n: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

pub fn attr_int(n: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}

pub fn attr_f(n: &pb::NodeProto, name: &str, default: f32) -> f32 {
    attr(n, name).map_or(default, |a| a.f)
}

pub fn attr_s(n: &pb::NodeProto, name: &str) -> Option<String> {
    attr(n, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// The values of a float32 initializer; `None` for any other type (whose
/// bytes would otherwise be read as f32).
pub fn tensor_f32(t: &pb::TensorProto) -> Option<Vec<f32>> {
    if t.data_type != FLOAT {
        None
    } else if !t.raw_data.is_empty() {
        Some(t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
    } else {
        Some(t.float_data.clone())
    }
}
