//! The encoder on the GPU: the ONNX contract is loaded and shape-inferred by
//! tract (every value's shape comes from tract's analysis), the nodes that
//! the feature taps need are walked in graph order, and each becomes one
//! dispatch with its buffers allocated here, once. An operator we do not
//! support is an error now, naming the op and the node, never at frame time.
//!
//! Supported: Conv (any kernel, stride, padding, groups incl. depthwise;
//! dilation 1), Add, Mul (same shape, per channel or scalar), Clip, Relu,
//! Sigmoid, HardSigmoid, HardSwish, GlobalAveragePool, AveragePool, MaxPool,
//! Resize (linear, half_pixel), Concat (channels), Identity. A Clip or Relu
//! right after a Conv is fused into it. Tensors and weights are stored in
//! the device's precision (f32, or f16 as `gpu_precision` chooses).

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;
use tract_onnx::prelude::*;

use super::GpuError;
use super::context::GpuContext;
use super::kernels::{ConvParams, DEPTHWISE_SPAN, DEPTHWISE_TILE, EltwiseParams, Kernels, PoolParams, ResizeParams, Step, div_up, flat_groups};
use crate::model::Contract;
use crate::model::onnx_read::{attr_f, attr_int, attr_ints, attr_s, tensor_f32};

/// A planned tensor: its buffer (in the device's precision) and shape
/// (channels, height, width).
pub struct Value {
    pub buffer: wgpu::Buffer,
    pub shape: [usize; 3],
}

impl Value {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct EncoderPlan {
    pub input: std::sync::Arc<Value>,
    pub steps: Vec<Step>,
    /// Tap outputs in the requested order.
    pub taps: Vec<std::sync::Arc<Value>>,
    pub dispatches_by_op: Vec<(String, usize)>,
}

impl EncoderPlan {
    /// Uploads `input` (C x H x W), runs the plan, reads back every tap.
    /// The engine records the steps into its own submission; this is for
    /// parity tests and diagnostics.
    pub fn run(&self, ctx: &GpuContext, input: &[f32]) -> Result<Vec<Vec<f32>>, GpuError> {
        assert_eq!(input.len(), self.input.len(), "input length");
        super::write_padded(&ctx.queue, &self.input.buffer, 0, &ctx.precision.encode(input), &mut Vec::new());
        ctx.run(&self.steps.iter().collect::<Vec<_>>());
        self.taps.iter().map(|t| ctx.read_values(&t.buffer, t.len(), ctx.precision)).collect()
    }
}

struct Planner<'a> {
    ctx: &'a GpuContext,
    k: &'a Kernels,
    path: String,
    inits: HashMap<&'a str, &'a pb::TensorProto>,
    facts: HashMap<String, [usize; 3]>,
    values: HashMap<String, std::sync::Arc<Value>>,
    steps: Vec<Step>,
    counts: HashMap<String, usize>,
}

impl Planner<'_> {
    fn unsupported(&self, n: &pb::NodeProto, why: &str) -> GpuError {
        GpuError::Unsupported { path: self.path.clone(), op: n.op_type.clone(), node: n.name.clone(), why: why.into() }
    }

    fn value(&self, n: &pb::NodeProto, name: &str) -> Result<std::sync::Arc<Value>, GpuError> {
        self.values.get(name).cloned().ok_or_else(|| self.unsupported(n, &format!("input '{name}' is not a tensor computed on the GPU")))
    }

    fn init(&self, name: &str) -> Option<Vec<f32>> {
        self.inits.get(name).and_then(|t| tensor_f32(t))
    }

    fn output(&mut self, n: &pb::NodeProto) -> Result<std::sync::Arc<Value>, GpuError> {
        let name = &n.output[0];
        let shape = *self.facts.get(name).ok_or_else(|| self.unsupported(n, &format!("no 4-D shape for output '{name}'")))?;
        let bytes = shape.iter().product::<usize>() * self.ctx.precision.bytes();
        let v = std::sync::Arc::new(Value { buffer: self.ctx.storage(name, bytes as u64), shape });
        self.values.insert(name.clone(), v.clone());
        Ok(v)
    }

    fn count(&mut self, op: &str) {
        *self.counts.entry(op.to_owned()).or_default() += 1;
    }

    fn conv(&mut self, n: &pb::NodeProto, act: (f32, f32)) -> Result<(), GpuError> {
        let x = self.value(n, &n.input[0])?;
        let w = self.init(&n.input[1]).ok_or_else(|| self.unsupported(n, "weights must be a float32 initializer"))?;
        let wshape = self.inits[n.input[1].as_str()].dims.clone();
        let y = self.output(n)?;
        let (oc, kh, kw) = (wshape[0] as usize, wshape[2] as usize, wshape[3] as usize);
        let b = match n.input.get(2).filter(|s| !s.is_empty()) {
            Some(bn) => self.init(bn).ok_or_else(|| self.unsupported(n, "bias must be a float32 initializer"))?,
            None => vec![0.0; oc],
        };
        if attr_ints(n, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
            return Err(self.unsupported(n, "dilation other than 1"));
        }
        let strides = attr_ints(n, "strides").unwrap_or(vec![1, 1]);
        let group = attr_int(n, "group", 1) as usize;
        let [ic, ih, iw] = x.shape;
        let [_, yh, yw] = y.shape;
        let (pad_t, pad_l) = match attr_s(n, "auto_pad").as_deref() {
            None | Some("NOTSET") => {
                let p = attr_ints(n, "pads").unwrap_or(vec![0, 0, 0, 0]);
                (p[0] as usize, p[1] as usize)
            }
            Some("VALID") => (0, 0),
            Some(mode) => {
                let total = |o: usize, s: usize, k: usize, i: usize| ((o - 1) * s + k).saturating_sub(i);
                let (th, tw) = (total(yh, strides[0] as usize, kh, ih), total(yw, strides[1] as usize, kw, iw));
                if mode == "SAME_LOWER" { (th.div_ceil(2), tw.div_ceil(2)) } else { (th / 2, tw / 2) }
            }
        };
        let p = ConvParams {
            in_c: ic as u32,
            in_h: ih as u32,
            in_w: iw as u32,
            out_c: oc as u32,
            out_h: yh as u32,
            out_w: yw as u32,
            k_h: kh as u32,
            k_w: kw as u32,
            stride_h: strides[0] as u32,
            stride_w: strides[1] as u32,
            pad_t: pad_t as u32,
            pad_l: pad_l as u32,
            groups: group as u32,
            _pad0: 0,
            act_min: act.0,
            act_max: act.1,
        };
        let wb = self.ctx.storage_init(&format!("{}.weight", n.name), &self.ctx.precision.encode(&w));
        let bb = self.ctx.storage_init(&format!("{}.bias", n.name), &self.ctx.precision.encode(&b));
        let pixels = (yh * yw) as u32;
        let window_fits = |s: i64, k: usize| (DEPTHWISE_TILE - 1) * s as usize + k <= DEPTHWISE_SPAN;
        let step = if kh == 1 && kw == 1 && strides == [1, 1] && pad_t == 0 && pad_l == 0 && group == 1 {
            self.count("Conv(pointwise)");
            self.k.conv_pointwise.step(self.ctx, &p, &[&x.buffer, &wb, &bb, &y.buffer], (div_up(pixels, 64), div_up(oc as u32, 64), 1))
        } else if group == ic && group > 1 && oc % ic == 0 && window_fits(strides[0], kh) && window_fits(strides[1], kw) {
            self.count("Conv(depthwise)");
            let tile = DEPTHWISE_TILE as u32;
            self.k.conv_depthwise.step(self.ctx, &p, &[&x.buffer, &wb, &bb, &y.buffer], (div_up(yw as u32, tile), div_up(yh as u32, tile), oc as u32))
        } else {
            self.count(if group > 1 { "Conv(grouped)" } else { "Conv(direct)" });
            self.k.conv_direct.step(self.ctx, &p, &[&x.buffer, &wb, &bb, &y.buffer], (div_up(pixels, 64), oc as u32, 1))
        };
        self.steps.push(step);
        Ok(())
    }

    fn unary(&mut self, n: &pb::NodeProto, op: u32, lo: f32, hi: f32, alpha: f32, beta: f32) -> Result<(), GpuError> {
        let x = self.value(n, &n.input[0])?;
        let y = self.output(n)?;
        let (groups, row) = flat_groups(x.len() as u32, 256);
        let p = EltwiseParams { len: x.len() as u32, op, b_len: 1, plane: 1, lo, hi, alpha, beta, row, ..Default::default() };
        self.steps.push(self.k.unary.step(self.ctx, &p, &[&x.buffer, &x.buffer, &y.buffer], groups));
        self.count(&n.op_type);
        Ok(())
    }

    fn binary(&mut self, n: &pb::NodeProto, op: u32) -> Result<(), GpuError> {
        let a = self.value(n, &n.input[0])?;
        let (b_buf, b_len) = match self.values.get(&n.input[1]) {
            Some(v) => (None, v.len()),
            None => {
                let c = self.init(&n.input[1]).ok_or_else(|| self.unsupported(n, "second input is neither computed nor a float32 initializer"))?;
                (Some(self.ctx.storage_init(&n.input[1], &self.ctx.precision.encode(&c))), c.len())
            }
        };
        let plane = a.shape[1] * a.shape[2];
        if !(b_len == a.len() || b_len == 1 || b_len == a.shape[0]) {
            return Err(self.unsupported(n, &format!("broadcast of {b_len} values onto {:?}", a.shape)));
        }
        let y = self.output(n)?;
        let (groups, row) = flat_groups(a.len() as u32, 256);
        let p = EltwiseParams { len: a.len() as u32, op, b_len: b_len as u32, plane: plane as u32, row, ..Default::default() };
        let step = match &b_buf {
            Some(bb) => self.k.binary.step(self.ctx, &p, &[&a.buffer, bb, &y.buffer], groups),
            None => {
                let b = self.value(n, &n.input[1])?;
                self.k.binary.step(self.ctx, &p, &[&a.buffer, &b.buffer, &y.buffer], groups)
            }
        };
        self.steps.push(step);
        self.count(&n.op_type);
        Ok(())
    }

    fn pool(&mut self, n: &pb::NodeProto, max: bool) -> Result<(), GpuError> {
        let x = self.value(n, &n.input[0])?;
        let y = self.output(n)?;
        let k = attr_ints(n, "kernel_shape").ok_or_else(|| self.unsupported(n, "kernel_shape missing"))?;
        let s = attr_ints(n, "strides").unwrap_or(vec![1, 1]);
        let pads = attr_ints(n, "pads").unwrap_or(vec![0, 0, 0, 0]);
        if attr_s(n, "auto_pad").is_some_and(|m| m != "NOTSET") {
            return Err(self.unsupported(n, "auto_pad on pooling"));
        }
        let p = PoolParams {
            c: x.shape[0] as u32,
            in_h: x.shape[1] as u32,
            in_w: x.shape[2] as u32,
            out_h: y.shape[1] as u32,
            out_w: y.shape[2] as u32,
            k_h: k[0] as u32,
            k_w: k[1] as u32,
            stride_h: s[0] as u32,
            stride_w: s[1] as u32,
            pad_t: pads[0] as u32,
            pad_l: pads[1] as u32,
            op: max as u32,
            count_pad: attr_int(n, "count_include_pad", 0) as u32,
            ..Default::default()
        };
        self.steps.push(self.k.pool.step(self.ctx, &p, &[&x.buffer, &y.buffer], (div_up((y.shape[1] * y.shape[2]) as u32, 64), y.shape[0] as u32, 1)));
        self.count(&n.op_type);
        Ok(())
    }

    fn node(&mut self, n: &pb::NodeProto, fused: Option<(f32, f32)>) -> Result<(), GpuError> {
        const INF: f32 = f32::MAX;
        match n.op_type.as_str() {
            "Conv" => self.conv(n, fused.unwrap_or((-INF, INF))),
            "Relu" => self.unary(n, 0, 0.0, INF, 0.0, 0.0),
            "Clip" => {
                let (lo, hi) = self.clip_bounds(n);
                self.unary(n, 0, lo, hi, 0.0, 0.0)
            }
            "Sigmoid" => self.unary(n, 1, 0.0, 0.0, 0.0, 0.0),
            "HardSwish" => self.unary(n, 2, 0.0, 0.0, 0.0, 0.0),
            "HardSigmoid" => self.unary(n, 3, 0.0, 0.0, attr_f(n, "alpha", 0.2), attr_f(n, "beta", 0.5)),
            "Add" => self.binary(n, 0),
            "Mul" => self.binary(n, 1),
            "AveragePool" => self.pool(n, false),
            "MaxPool" => self.pool(n, true),
            "GlobalAveragePool" => {
                let x = self.value(n, &n.input[0])?;
                let y = self.output(n)?;
                let p = PoolParams { c: x.shape[0] as u32, in_h: x.shape[1] as u32, in_w: x.shape[2] as u32, ..Default::default() };
                self.steps.push(self.k.global_avg.step(self.ctx, &p, &[&x.buffer, &y.buffer], (x.shape[0] as u32, 1, 1)));
                self.count("GlobalAveragePool");
                Ok(())
            }
            "Resize" => {
                let mode = attr_s(n, "mode").unwrap_or_else(|| "nearest".into());
                let ctm = attr_s(n, "coordinate_transformation_mode").unwrap_or_else(|| "half_pixel".into());
                if mode != "linear" || !(ctm == "half_pixel" || ctm == "pytorch_half_pixel") {
                    return Err(self.unsupported(n, &format!("mode '{mode}' with '{ctm}' (only linear, half_pixel)")));
                }
                let x = self.value(n, &n.input[0])?;
                let y = self.output(n)?;
                // Scales from the `scales` input when given (ONNX uses them, not the size ratio).
                let scales = n.input.get(2).filter(|s| !s.is_empty()).and_then(|s| self.init(s)).filter(|v| v.len() == 4).map(|v| (v[2], v[3]));
                let p = ResizeParams::bilinear(x.shape[0], (x.shape[1], x.shape[2]), (y.shape[1], y.shape[2]), scales);
                self.steps.push(self.k.resize.step(self.ctx, &p, &[&x.buffer, &y.buffer], (div_up((y.shape[1] * y.shape[2]) as u32, 64), y.shape[0] as u32, 1)));
                self.count("Resize");
                Ok(())
            }
            "Concat" => {
                if attr_int(n, "axis", 1) != 1 {
                    return Err(self.unsupported(n, "concatenation on an axis other than channels"));
                }
                let inputs: Vec<_> = n.input.iter().map(|i| self.value(n, i)).collect::<Result<_, _>>()?;
                let y = self.output(n)?;
                let mut offset = 0;
                for x in inputs {
                    let p = ResizeParams { offset: offset as u32, len: x.len() as u32, ..Default::default() };
                    self.steps.push(self.k.copy.step(self.ctx, &p, &[&x.buffer, &y.buffer], (div_up(x.len() as u32, 256), 1, 1)));
                    offset += x.len();
                }
                self.count("Concat");
                Ok(())
            }
            "Identity" => {
                let x = self.value(n, &n.input[0])?;
                self.values.insert(n.output[0].clone(), x);
                Ok(())
            }
            other => Err(self.unsupported(n, &format!("operator {other} has no GPU kernel"))),
        }
    }

    fn clip_bounds(&self, n: &pb::NodeProto) -> (f32, f32) {
        let bound = |i: usize, attr: &str, default: f32| {
            n.input.get(i).filter(|s| !s.is_empty()).and_then(|s| self.init(s)).and_then(|v| v.first().copied()).unwrap_or(attr_f(n, attr, default))
        };
        (bound(1, "min", -f32::MAX), bound(2, "max", f32::MAX))
    }
}

/// Plans the encoder of a contract up to `taps` (graph output names).
pub fn plan(ctx: &GpuContext, k: &Kernels, contract: &Contract, taps: &[String]) -> Result<EncoderPlan, GpuError> {
    let input = &contract.meta.input;
    let path = contract.path.display().to_string();
    plan_model(ctx, k, &contract.proto, &path, &input.name, [3, input.height, input.width], taps)
}

/// Plans any ONNX model with one NCHW input (batch 1) up to `outputs`;
/// `path` names the model in errors.
pub fn plan_model(
    ctx: &GpuContext,
    k: &Kernels,
    proto: &pb::ModelProto,
    path: &str,
    input_name: &str,
    input_shape: [usize; 3],
    taps: &[String],
) -> Result<EncoderPlan, GpuError> {
    let path = path.to_owned();
    let tract_err = |e: TractError| GpuError::Load { path: path.clone(), reason: format!("{e:#}") };
    let [ic, ih, iw] = input_shape;
    let mut model = tract_onnx::onnx()
        .model_for_proto_model(proto)
        .map_err(tract_err)?
        .with_input_names([input_name])
        .map_err(tract_err)?
        .with_input_fact(0, f32::fact([1, ic, ih, iw]).into())
        .map_err(tract_err)?;
    model.analyse(false).map_err(tract_err)?;
    let graph = proto.graph.as_ref().ok_or_else(|| GpuError::Load { path: path.clone(), reason: "no graph".into() })?;

    // Shapes of every value, from tract's analysis.
    let mut facts = HashMap::new();
    for node in &graph.node {
        for out in &node.output {
            if let Some(outlet) = model.find_outlet_label(out)
                && let Ok(f) = model.outlet_fact(outlet)
                && let Ok(Some(s)) = f.shape.as_concrete_finite()
            {
                let s: Vec<usize> = s.to_vec();
                let chw = match s.as_slice() {
                    [1, c, h, w] => Some([*c, *h, *w]),
                    [1, c] => Some([*c, 1, 1]),
                    _ => None,
                };
                if let Some(chw) = chw {
                    facts.insert(out.clone(), chw);
                }
            }
        }
    }

    // The nodes the taps need, walking back from them.
    let producer: HashMap<&str, &pb::NodeProto> = graph.node.iter().flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n))).collect();
    let mut needed: HashSet<&str> = HashSet::new();
    let mut stack: Vec<&str> = taps.iter().map(String::as_str).collect();
    while let Some(v) = stack.pop() {
        if let Some(n) = producer.get(v)
            && needed.insert(n.name.as_str())
        {
            stack.extend(n.input.iter().map(String::as_str).filter(|s| !s.is_empty()));
        }
    }
    let consumers = |v: &str| graph.node.iter().filter(|n| needed.contains(n.name.as_str()) && n.input.iter().any(|i| i == v)).count();

    let in_buf = ctx.storage("image", (ic * ih * iw * ctx.precision.bytes()) as u64);
    let mut p = Planner {
        ctx,
        k,
        path: path.clone(),
        inits: graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect(),
        facts,
        values: HashMap::new(),
        steps: Vec::new(),
        counts: HashMap::new(),
    };
    let input_value = std::sync::Arc::new(Value { buffer: in_buf, shape: input_shape });
    p.values.insert(input_name.to_owned(), input_value.clone());

    let mut skip: HashSet<&str> = HashSet::new();
    for n in graph.node.iter().filter(|n| needed.contains(n.name.as_str())) {
        if skip.contains(n.name.as_str()) {
            continue;
        }
        if n.name.is_empty() {
            return Err(GpuError::Unsupported { path: path.clone(), op: n.op_type.clone(), node: "(unnamed)".into(), why: "nodes need names".into() });
        }
        // Fuse Conv -> Clip/Relu when the conv output feeds only the activation and is not a tap:
        // the conv clamps, and the activation's output names the conv's buffer.
        let activation = (n.op_type == "Conv" && consumers(&n.output[0]) == 1 && !taps.contains(&n.output[0]))
            .then(|| graph.node.iter().find(|m| needed.contains(m.name.as_str()) && m.input.first() == Some(&n.output[0])))
            .flatten()
            .filter(|m| m.op_type == "Clip" || m.op_type == "Relu");
        match activation {
            Some(m) => {
                p.node(n, Some(if m.op_type == "Relu" { (0.0, f32::MAX) } else { p.clip_bounds(m) }))?;
                skip.insert(m.name.as_str());
                let v = p.values[&n.output[0]].clone();
                p.values.insert(m.output[0].clone(), v);
            }
            None => p.node(n, None)?,
        }
    }
    let tap_values = taps
        .iter()
        .map(|t| {
            p.values.get(t).cloned().ok_or_else(|| GpuError::Unsupported {
                path: path.clone(),
                op: "output".into(),
                node: t.clone(),
                why: "tap not computed".into(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut dispatches_by_op: Vec<(String, usize)> = p.counts.into_iter().collect();
    dispatches_by_op.sort();
    Ok(EncoderPlan { input: input_value, steps: p.steps, taps: tap_values, dispatches_by_op })
}
