//! The encoder as burn tensors: the ONNX contract's own graph, walked node by
//! node, with every convolution's weight and bias as a trainable parameter.
//! Training changes only initializer values, so the exported file keeps the
//! graph, the input and the taps of the model it started from, and the CPU
//! and GPU engines run it unchanged.
//!
//! Supported: Conv (any stride, asymmetric pads, groups), Clip, Relu, Add,
//! Identity: what `lineguard model import` writes. Anything else is an error
//! that names the op and the node.

use std::collections::HashMap;

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use tract_onnx::pb;

use crate::model::Contract;
use crate::model::onnx_read::{attr_int, attr_ints, tensor_f32};

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("{path}: node '{node}' ({op}): {why}")]
    Unsupported { path: String, op: String, node: String, why: String },
    #[error("{path}: tap '{tap}' is not an output of the graph")]
    Tap { path: String, tap: String },
}

/// One trainable tensor: an initializer of the contract.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    /// Frozen parameters keep their ImageNet values.
    pub trainable: bool,
}

enum Op {
    Conv { weight: usize, bias: Option<usize>, options: ConvOptions<2> },
    Clip { min: f32, max: f32 },
    Add,
    Identity,
}

struct Node {
    op: Op,
    inputs: Vec<usize>,
    output: usize,
}

/// The walked graph: which parameter each conv uses, which values are taps.
pub struct EncoderGraph {
    nodes: Vec<Node>,
    values: usize,
    input: usize,
    taps: Vec<usize>,
    pub params: Vec<ParamSpec>,
    /// Initial values, in the order of `params`.
    pub initial: Vec<Vec<f32>>,
}

/// `_blocks.7._expand_conv.weight_folded` -> Some(7); the stem -> None.
fn block_index(name: &str) -> Option<usize> {
    name.strip_prefix("_blocks.")?.split('.').next()?.parse().ok()
}

impl EncoderGraph {
    /// Walks `contract`'s graph up to the last of `taps`. Parameters of the
    /// stem and of the first `freeze_blocks` blocks are frozen.
    pub fn from_contract(contract: &Contract, taps: &[String], freeze_blocks: usize) -> Result<EncoderGraph, GraphError> {
        let path = contract.path.display().to_string();
        let g = contract.graph();
        let inits: HashMap<&str, &pb::TensorProto> = g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut ids: HashMap<String, usize> = HashMap::new();
        ids.insert(contract.meta.input.name.clone(), 0);
        let mut graph = EncoderGraph { nodes: vec![], values: 1, input: 0, taps: vec![], params: vec![], initial: vec![] };
        let mut param_ids: HashMap<String, usize> = HashMap::new();
        for n in &g.node {
            let bad = |why: String| GraphError::Unsupported { path: path.clone(), op: n.op_type.clone(), node: n.name.clone(), why };
            let scalar = |name: &str| -> Result<f32, GraphError> {
                let t = inits.get(name).ok_or_else(|| bad(format!("input '{name}' is not an initializer")))?;
                tensor_f32(t).and_then(|v| v.first().copied()).ok_or_else(|| bad(format!("'{name}' is not a float scalar")))
            };
            let mut param = |graph: &mut EncoderGraph, name: &str| -> Result<usize, GraphError> {
                if let Some(&i) = param_ids.get(name) {
                    return Ok(i);
                }
                let t = inits.get(name).ok_or_else(|| bad(format!("weight '{name}' is not an initializer")))?;
                let data = tensor_f32(t).ok_or_else(|| bad(format!("weight '{name}' is not float32")))?;
                let frozen = block_index(name).is_none_or(|b| b < freeze_blocks) && freeze_blocks > 0;
                graph.params.push(ParamSpec { name: name.to_owned(), shape: t.dims.iter().map(|&d| d as usize).collect(), trainable: !frozen });
                graph.initial.push(data);
                param_ids.insert(name.to_owned(), graph.params.len() - 1);
                Ok(graph.params.len() - 1)
            };
            let value = |ids: &HashMap<String, usize>, name: &str| {
                ids.get(name).copied().ok_or_else(|| bad(format!("input '{name}' is not computed by an earlier node")))
            };
            let (op, inputs) = match n.op_type.as_str() {
                "Conv" => {
                    let x = value(&ids, &n.input[0])?;
                    let weight = param(&mut graph, &n.input[1])?;
                    let bias = match n.input.get(2).filter(|s| !s.is_empty()) {
                        Some(b) => Some(param(&mut graph, b)?),
                        None => None,
                    };
                    let strides = attr_ints(n, "strides").unwrap_or(vec![1, 1]);
                    let pads = attr_ints(n, "pads").unwrap_or(vec![0, 0, 0, 0]);
                    let dil = attr_ints(n, "dilations").unwrap_or(vec![1, 1]);
                    if strides.len() != 2 || pads.len() != 4 || dil.len() != 2 {
                        return Err(bad("only 2-D convolutions are supported".into()));
                    }
                    let u = |v: i64| v as usize;
                    let options = ConvOptions::new_with_padding(
                        [u(strides[0]), u(strides[1])],
                        [(u(pads[0]), u(pads[2])), (u(pads[1]), u(pads[3]))],
                        [u(dil[0]), u(dil[1])],
                        attr_int(n, "group", 1) as usize,
                    );
                    (Op::Conv { weight, bias, options }, vec![x])
                }
                "Clip" => {
                    let min = n.input.get(1).filter(|s| !s.is_empty()).map(|s| scalar(s)).transpose()?.unwrap_or(f32::MIN);
                    let max = n.input.get(2).filter(|s| !s.is_empty()).map(|s| scalar(s)).transpose()?.unwrap_or(f32::MAX);
                    (Op::Clip { min, max }, vec![value(&ids, &n.input[0])?])
                }
                "Relu" => (Op::Clip { min: 0.0, max: f32::MAX }, vec![value(&ids, &n.input[0])?]),
                "Add" => (Op::Add, vec![value(&ids, &n.input[0])?, value(&ids, &n.input[1])?]),
                "Identity" => (Op::Identity, vec![value(&ids, &n.input[0])?]),
                other => return Err(bad(format!("'{other}' cannot be trained here (supported: Conv, Clip, Relu, Add, Identity)"))),
            };
            let output = graph.values;
            graph.values += 1;
            ids.insert(n.output[0].clone(), output);
            graph.nodes.push(Node { op, inputs, output });
        }
        for t in taps {
            let id = *ids.get(t).ok_or_else(|| GraphError::Tap { path: path.clone(), tap: t.clone() })?;
            graph.taps.push(id);
        }
        // Nodes after the last tap are not needed for training.
        let last = graph.taps.iter().filter_map(|&id| graph.nodes.iter().position(|n| n.output == id)).max().unwrap_or(0);
        graph.nodes.truncate(last + 1);
        let used: std::collections::HashSet<usize> = graph
            .nodes
            .iter()
            .flat_map(|n| match n.op {
                Op::Conv { weight, bias, .. } => [Some(weight), bias],
                _ => [None, None],
            })
            .flatten()
            .collect();
        for (i, p) in graph.params.iter_mut().enumerate() {
            p.trainable &= used.contains(&i);
        }
        Ok(graph)
    }

    /// Parameters as flat tensors on `device` (not tracked by autodiff).
    pub fn initial_tensors(&self, device: &Device) -> Vec<Tensor<1>> {
        self.initial.iter().map(|v| Tensor::from_data(TensorData::new(v.clone(), [v.len()]), device)).collect()
    }

    /// Runs the graph on `x` (N x 3 x H x W, normalised) and returns the taps
    /// in the requested order. `params` are flat, in the order of `self.params`.
    pub fn forward(&self, params: &[Tensor<1>], x: Tensor<4>) -> Vec<Tensor<4>> {
        let mut values: Vec<Option<Tensor<4>>> = vec![None; self.values];
        values[self.input] = Some(x);
        // How often each value is still read, so intermediate values are dropped early.
        let mut reads = vec![0usize; self.values];
        for n in &self.nodes {
            for &i in &n.inputs {
                reads[i] += 1;
            }
        }
        for &t in &self.taps {
            reads[t] += 1;
        }
        let mut take = |values: &mut Vec<Option<Tensor<4>>>, i: usize| {
            reads[i] -= 1;
            let v = values[i].as_ref().expect("graph order").clone();
            if reads[i] == 0 {
                values[i] = None;
            }
            v
        };
        for n in &self.nodes {
            let out = match &n.op {
                Op::Conv { weight, bias, options } => {
                    let x = take(&mut values, n.inputs[0]);
                    let shape: [usize; 4] = self.params[*weight].shape.clone().try_into().expect("conv weights are 4-D");
                    let w = params[*weight].clone().reshape(shape);
                    let b = bias.map(|b| params[b].clone());
                    conv2d(x, w, b, options.clone())
                }
                Op::Clip { min, max } => take(&mut values, n.inputs[0]).clamp(*min, *max),
                Op::Add => {
                    let a = take(&mut values, n.inputs[0]);
                    a + take(&mut values, n.inputs[1])
                }
                Op::Identity => take(&mut values, n.inputs[0]),
            };
            values[n.output] = Some(out);
        }
        self.taps.iter().map(|&t| take(&mut values, t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_index_reads_efficientnet_names() {
        assert_eq!(block_index("_blocks.7._expand_conv.weight_folded"), Some(7));
        assert_eq!(block_index("_blocks.10._project_conv.bias_folded"), Some(10));
        assert_eq!(block_index("_conv_stem.weight_folded"), None);
    }
}
