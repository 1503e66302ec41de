//! GPU engine parity, on whatever adapter wgpu finds (lavapipe in CI: Debian's
//! mesa-vulkan-drivers). Every kernel is checked against tract or a plain
//! reference on random inputs with awkward shapes; the whole encoder, the
//! preprocessing and the scoring against the CPU engine on real images.
//!
//! Error bounds, relative to the largest reference magnitude (at least 1):
//! single kernels 1e-5 (f32 sums of at most a few hundred terms in another
//! order, ~1e-7 per term); the whole encoder's features 1e-4: about 20 layers
//! of sums of up to 1,152 terms, each adding ~1e-6 relative, is ~2e-5 at
//! worst; lavapipe measures 1.9e-6, and the bound leaves room for GPUs that
//! fuse multiply-adds differently. Maps 1e-3: the distance
//! |q|^2 + |b|^2 - 2 q.b cancels about two digits near the nearest row.
//!
//! f16 storage (`gpu_precision = "f16"`, sums still in f32): each stored
//! value is rounded to 11 significant bits, 2^-11 = 4.9e-4 relative. A
//! kernel rounds its inputs, weights and output once each, so a single
//! kernel is bounded by F16_KERNEL_TOL below; through the whole encoder the
//! roundings compound layer by layer, and the features, maps and verdicts
//! are held to the looser bounds stated in their tests.
mod common;

use std::sync::LazyLock;

use lineguard::anomaly::Rect;
use lineguard::config::{EngineChoice, GpuPrecision};
use lineguard::engine::gpu::context::GpuContext;
use lineguard::engine::gpu::graph::plan_model;
use lineguard::engine::gpu::kernels::{KnnParams, Kernels, div_up};
use lineguard::engine::gpu::{GpuEngine, GpuError};
use lineguard::engine::{CpuEngine, Engine, EngineSpec};
use lineguard::frame::{Frame, PixelFormat};
use lineguard::model::onnx_build::{GraphBuilder, attr_float, attr_int, attr_ints, attr_str};
use lineguard::model::{Contract, TapSpec};
use lineguard::preprocess::Preprocessor;
use tract_onnx::prelude::*;

struct Gpu {
    ctx: GpuContext,
    k: Kernels,
}

fn open(precision: GpuPrecision) -> Gpu {
    let ctx = GpuContext::new(false, precision).unwrap_or_else(|e| {
        panic!("{e}: the GPU tests need a Vulkan driver with shader-f16 (for the f16 checks); without a GPU install Debian's mesa-vulkan-drivers and libvulkan1 (deploy/install-deps.sh does)")
    });
    let k = Kernels::new(&ctx);
    Gpu { ctx, k }
}

static GPU: LazyLock<Gpu> = LazyLock::new(|| open(GpuPrecision::F32));
static GPU_F16: LazyLock<Gpu> = LazyLock::new(|| open(GpuPrecision::F16));

/// One kernel with f16 storage: inputs, weights and output each rounded once
/// (3 x 4.9e-4, plus f32 sums), relative to the largest output magnitude.
const F16_KERNEL_TOL: f32 = 2e-3;

/// Deterministic values in [-1, 1).
fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Largest difference relative to the largest reference magnitude (at least 1).
fn rel_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

/// Runs the graph on tract and on the GPU, in f32 and in f16 storage, with
/// the same random input and asserts every output agrees within `tol` (f32)
/// or F16_KERNEL_TOL.
fn parity(what: &str, g: GraphBuilder, shape: [usize; 3], outputs: &[&str], tol: f32) {
    let [c, h, w] = shape;
    let proto = g.into_model("x", &[1, c, h, w], outputs);
    let x = random(c * h * w, what.len() as u64 * 31 + c as u64);
    let tract = tract_onnx::onnx()
        .model_for_proto_model(&proto)
        .and_then(|m| m.with_input_fact(0, f32::fact([1, c, h, w]).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap_or_else(|e| panic!("{what}: tract: {e:#}"));
    let want = tract.run(tvec![tract_ndarray::Array4::from_shape_vec((1, c, h, w), x.clone()).unwrap().into_tensor().into()]).unwrap();
    let names: Vec<String> = outputs.iter().map(|s| s.to_string()).collect();
    for (gpu, tol) in [(&*GPU, tol), (&*GPU_F16, F16_KERNEL_TOL)] {
        let precision = gpu.ctx.precision;
        let plan = plan_model(&gpu.ctx, &gpu.k, &proto, what, "x", shape, &names).unwrap_or_else(|e| panic!("{what} ({precision}): plan: {e}"));
        let got = plan.run(&gpu.ctx, &x).unwrap_or_else(|e| panic!("{what} ({precision}): run: {e}"));
        for (i, name) in outputs.iter().enumerate() {
            let want = want[i].try_as_plain_ram().and_then(|v| v.as_slice::<f32>()).unwrap();
            let err = rel_error(&got[i], want);
            eprintln!("{what} ({precision}): output {name}: relative error {err:e}");
            assert!(err <= tol, "{what} ({precision}): output {name}: relative error {err:e} over {tol:e}");
        }
    }
}

fn weights(g: &mut GraphBuilder, name: &str, dims: &[usize], seed: u64) -> String {
    let n = dims.iter().product();
    g.initializer(name, dims, &random(n, seed))
}

struct ConvCase {
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pads: [usize; 4],
    group: usize,
    bias: bool,
}

fn conv_graph(c: &ConvCase, act: Option<&str>) -> GraphBuilder {
    let mut g = GraphBuilder::default();
    let w = weights(&mut g, "w", &[c.cout, c.cin / c.group, c.k, c.k], 1);
    let b = if c.bias { weights(&mut g, "b", &[c.cout], 2) } else { String::new() };
    let attrs = vec![
        attr_ints("kernel_shape", &[c.k as i64, c.k as i64]),
        attr_ints("strides", &[c.stride as i64, c.stride as i64]),
        attr_ints("pads", &c.pads.map(|p| p as i64)),
        attr_int("group", c.group as i64),
    ];
    let inputs: Vec<&str> = if c.bias { vec!["x", &w, &b] } else { vec!["x", &w] };
    g.node("Conv", &inputs, attrs, "conv".into());
    match act {
        Some("Relu") => {
            g.node("Relu", &["conv"], vec![], "y".into());
        }
        Some("Relu6") => {
            g.initializer("lo", &[], &[0.0]);
            g.initializer("hi", &[], &[6.0]);
            g.node("Clip", &["conv", "lo", "hi"], vec![], "y".into());
        }
        _ => {}
    }
    g
}

#[test]
fn conv_matches_tract_for_kernel_sizes_strides_padding_and_groups() {
    let cases = [
        // 3x3, stride 1, symmetric padding, odd sizes.
        ConvCase { cin: 5, h: 13, w: 17, cout: 7, k: 3, stride: 1, pads: [1, 1, 1, 1], group: 1, bias: true },
        // Stride 2 with TF-style asymmetric padding.
        ConvCase { cin: 5, h: 13, w: 16, cout: 7, k: 3, stride: 2, pads: [0, 0, 1, 1], group: 1, bias: true },
        // 5x5 depthwise, stride 2.
        ConvCase { cin: 6, h: 11, w: 9, cout: 6, k: 5, stride: 2, pads: [2, 2, 2, 2], group: 6, bias: true },
        // Depthwise 3x3 with a channel multiplier of 2, no bias.
        ConvCase { cin: 4, h: 9, w: 10, cout: 8, k: 3, stride: 1, pads: [1, 1, 1, 1], group: 4, bias: false },
        // Two groups.
        ConvCase { cin: 6, h: 11, w: 9, cout: 4, k: 3, stride: 1, pads: [0, 1, 2, 1], group: 2, bias: true },
        // 1x1 with stride 2 (not the pointwise GEMM path).
        ConvCase { cin: 9, h: 7, w: 7, cout: 5, k: 1, stride: 2, pads: [0, 0, 0, 0], group: 1, bias: true },
        // The stem shape: 3 channels in, 3x3 stride 2.
        ConvCase { cin: 3, h: 31, w: 29, cout: 8, k: 3, stride: 2, pads: [1, 1, 1, 1], group: 1, bias: true },
        // Depthwise over several 16 x 16 output tiles (stride 2, partial edge tiles).
        ConvCase { cin: 5, h: 67, w: 37, cout: 5, k: 3, stride: 2, pads: [1, 1, 1, 1], group: 5, bias: true },
        // Depthwise 5x5, stride 1, over several tiles.
        ConvCase { cin: 3, h: 20, w: 35, cout: 3, k: 5, stride: 1, pads: [2, 2, 2, 2], group: 3, bias: true },
        // Depthwise 7x7 stride 2: the window (15 * 2 + 7 = 37) is over the tile, so the direct kernel.
        ConvCase { cin: 2, h: 19, w: 21, cout: 2, k: 7, stride: 2, pads: [3, 3, 3, 3], group: 2, bias: true },
    ];
    for (i, c) in cases.iter().enumerate() {
        parity(&format!("conv case {i}"), conv_graph(c, None), [c.cin, c.h, c.w], &["conv"], 1e-5);
    }
}

#[test]
fn depthwise_convs_take_the_tiled_kernel_when_the_window_fits() {
    let route = |c: &ConvCase| {
        let proto = conv_graph(c, None).into_model("x", &[1, c.cin, c.h, c.w], &["conv"]);
        let plan = plan_model(&GPU.ctx, &GPU.k, &proto, "dw.onnx", "x", [c.cin, c.h, c.w], &["conv".into()]).unwrap();
        plan.dispatches_by_op.iter().map(|(op, _)| op.clone()).collect::<Vec<_>>()
    };
    let dw = |k: usize, stride: usize| ConvCase { cin: 4, h: 40, w: 40, cout: 8, k, stride, pads: [k / 2; 4], group: 4, bias: true };
    assert_eq!(route(&dw(3, 2)), ["Conv(depthwise)"]);
    assert_eq!(route(&dw(5, 2)), ["Conv(depthwise)"]);
    assert_eq!(route(&dw(7, 2)), ["Conv(grouped)"]);
}

#[test]
fn pointwise_conv_matches_tract_off_the_tile_grid() {
    // Channels and pixels that are not multiples of the 64 x 64 block or the 16-deep slice.
    for (i, (cin, cout, h, w)) in [(37, 21, 9, 11), (3, 70, 5, 13), (130, 65, 8, 8), (16, 64, 16, 4)].into_iter().enumerate() {
        let c = ConvCase { cin, h, w, cout, k: 1, stride: 1, pads: [0; 4], group: 1, bias: i % 2 == 0 };
        parity(&format!("pointwise case {i}"), conv_graph(&c, None), [cin, h, w], &["conv"], 1e-5);
    }
}

#[test]
fn conv_with_fused_relu_and_relu6_matches_tract() {
    let c = ConvCase { cin: 8, h: 10, w: 10, cout: 12, k: 3, stride: 1, pads: [1; 4], group: 1, bias: true };
    parity("conv+relu", conv_graph(&c, Some("Relu")), [8, 10, 10], &["y"], 1e-5);
    let c = ConvCase { cin: 24, h: 7, w: 9, cout: 40, k: 1, stride: 1, pads: [0; 4], group: 1, bias: true };
    parity("pointwise+relu6", conv_graph(&c, Some("Relu6")), [24, 7, 9], &["y"], 1e-5);
}

#[test]
fn conv_with_same_upper_auto_padding_matches_tract() {
    let mut g = GraphBuilder::default();
    let w = weights(&mut g, "w", &[6, 3, 5, 5], 3);
    let attrs = vec![attr_ints("kernel_shape", &[5, 5]), attr_ints("strides", &[2, 2]), attr_str("auto_pad", "SAME_UPPER")];
    g.node("Conv", &["x", &w], attrs, "conv".into());
    parity("conv SAME_UPPER", g, [3, 14, 15], &["conv"], 1e-5);
}

#[test]
fn elementwise_ops_match_tract() {
    let (c, h, w) = (6, 7, 9);
    let mut g = GraphBuilder::default();
    g.node("Sigmoid", &["x"], vec![], "sigmoid".into());
    g.node("HardSwish", &["x"], vec![], "hardswish".into());
    g.node("HardSigmoid", &["x"], vec![attr_float("alpha", 0.3), attr_float("beta", 0.4)], "hardsigmoid".into());
    g.node("Relu", &["x"], vec![], "relu".into());
    g.initializer("lo", &[], &[-0.25]);
    g.initializer("hi", &[], &[0.5]);
    g.node("Clip", &["x", "lo", "hi"], vec![], "clip".into());
    // Same shape, per channel, scalar.
    g.node("Add", &["x", "sigmoid"], vec![], "add_same".into());
    let pc = weights(&mut g, "per_channel", &[1, c, 1, 1], 4);
    g.node("Mul", &["x", &pc], vec![], "mul_channel".into());
    g.initializer("half", &[], &[0.5]);
    g.node("Add", &["x", "half"], vec![], "add_scalar".into());
    let outs = ["sigmoid", "hardswish", "hardsigmoid", "relu", "clip", "add_same", "mul_channel", "add_scalar"];
    parity("elementwise", g, [c, h, w], &outs, 1e-5);
}

#[test]
fn squeeze_excite_block_matches_tract() {
    // GlobalAveragePool -> 1x1 reduce -> Relu -> 1x1 expand -> Sigmoid -> Mul, as in MobileNetV3.
    let c = 24;
    let mut g = GraphBuilder::default();
    g.node("GlobalAveragePool", &["x"], vec![], "gap".into());
    let w1 = weights(&mut g, "w1", &[6, c, 1, 1], 5);
    let b1 = weights(&mut g, "b1", &[6], 6);
    g.node("Conv", &["gap", &w1, &b1], vec![attr_ints("kernel_shape", &[1, 1])], "reduce".into());
    g.node("Relu", &["reduce"], vec![], "reduce_relu".into());
    let w2 = weights(&mut g, "w2", &[c, 6, 1, 1], 7);
    let b2 = weights(&mut g, "b2", &[c], 8);
    g.node("Conv", &["reduce_relu", &w2, &b2], vec![attr_ints("kernel_shape", &[1, 1])], "expand".into());
    g.node("Sigmoid", &["expand"], vec![], "gate".into());
    g.node("Mul", &["x", "gate"], vec![], "y".into());
    parity("squeeze-excite", g, [c, 11, 13], &["gap", "y"], 1e-5);
}

#[test]
fn pooling_matches_tract() {
    let mut g = GraphBuilder::default();
    let pool = |op: &str, k: i64, s: i64, p: i64, count_pad: Option<i64>| {
        let mut a = vec![attr_ints("kernel_shape", &[k, k]), attr_ints("strides", &[s, s]), attr_ints("pads", &[p, p, p, p])];
        if let Some(cp) = count_pad {
            a.push(attr_int("count_include_pad", cp));
        }
        (op.to_owned(), a)
    };
    for (name, (op, attrs)) in [
        ("max_3s2p1", pool("MaxPool", 3, 2, 1, None)),
        ("avg_3s1p1_with_pad", pool("AveragePool", 3, 1, 1, Some(1))),
        ("avg_3s1p1_without_pad", pool("AveragePool", 3, 1, 1, Some(0))),
        ("avg_2s2", pool("AveragePool", 2, 2, 0, None)),
    ] {
        g.node(&op, &["x"], attrs, name.into());
    }
    g.node("GlobalAveragePool", &["x"], vec![], "global".into());
    parity("pooling", g, [5, 13, 11], &["max_3s2p1", "avg_3s1p1_with_pad", "avg_3s1p1_without_pad", "avg_2s2", "global"], 1e-5);
}

#[test]
fn bilinear_resize_and_concat_match_tract() {
    let mut g = GraphBuilder::default();
    let linear = || vec![attr_str("mode", "linear"), attr_str("coordinate_transformation_mode", "half_pixel")];
    g.initializer("up", &[4], &[1.0, 1.0, 2.0, 2.0]);
    g.node("Resize", &["x", "", "up"], linear(), "up2".into());
    g.initializer("down", &[4], &[1.0, 1.0, 0.5, 0.5]);
    g.node("Resize", &["x", "", "down"], linear(), "down2".into());
    g.node("Relu", &["x"], vec![], "relu".into());
    g.node("Concat", &["x", "relu", "x"], vec![attr_int("axis", 1)], "cat".into());
    parity("resize+concat", g, [3, 9, 13], &["up2", "down2", "cat"], 1e-5);
}

#[test]
fn an_unsupported_operator_is_a_load_error_naming_op_and_node() {
    let mut g = GraphBuilder::default();
    g.node("Relu", &["x"], vec![], "ok".into());
    g.node("Tanh", &["ok"], vec![], "squash_7".into());
    let proto = g.into_model("x", &[1, 3, 8, 8], &["squash_7"]);
    let err = plan_model(&GPU.ctx, &GPU.k, &proto, "toy.onnx", "x", [3, 8, 8], &["squash_7".into()]).err().expect("Tanh must be refused");
    let msg = err.to_string();
    assert!(matches!(err, GpuError::Unsupported { .. }), "{msg}");
    assert!(msg.contains("toy.onnx") && msg.contains("Tanh") && msg.contains("squash_7"), "{msg}");

    let mut g = GraphBuilder::default();
    let w = weights(&mut g, "w", &[4, 3, 3, 3], 9);
    g.node("Conv", &["x", &w], vec![attr_ints("kernel_shape", &[3, 3]), attr_ints("dilations", &[2, 2])], "dilated".into());
    let proto = g.into_model("x", &[1, 3, 12, 12], &["dilated"]);
    let msg = plan_model(&GPU.ctx, &GPU.k, &proto, "toy.onnx", "x", [3, 12, 12], &["dilated".into()]).err().expect("dilation refused").to_string();
    assert!(msg.contains("Conv") && msg.contains("dilated") && msg.contains("dilation"), "{msg}");
}

#[test]
fn knn_kernel_finds_the_exact_nearest_bank_row() {
    // Sizes off every tile: 3 bank chunks (the last partial), dims not a multiple of 16.
    let (queries, rows, dim) = (777usize, 2500usize, 120usize);
    let q = random(queries * dim, 11);
    let mut bank = random(rows * dim, 12);
    // Plant exact matches so that some distances are 0 (the cancellation worst case).
    bank[..dim].copy_from_slice(&q[5 * dim..6 * dim]);
    let sq: Vec<f32> = bank.chunks_exact(dim).map(|r| r.iter().map(|v| v * v).sum()).collect();
    let ctx = &GPU.ctx;
    let chunk_rows = 1024u32;
    let chunks = div_up(rows as u32, chunk_rows);
    let qb = ctx.storage_init("q", bytemuck::cast_slice(&q));
    let bb = ctx.storage_init("bank", bytemuck::cast_slice(&bank));
    let sb = ctx.storage_init("bank.sq", bytemuck::cast_slice(&sq));
    let partial = ctx.storage("partial", chunks as u64 * queries as u64 * 4);
    let dist = ctx.storage("dist", queries as u64 * 4);
    let p = KnnParams { queries: queries as u32, rows: rows as u32, dim: dim as u32, chunk_rows, chunks, ..Default::default() };
    let bufs = [&qb, &bb, &sb, &partial, &dist];
    let a = GPU.k.knn_partial.step(ctx, &p, &bufs, (div_up(queries as u32, 64), chunks, 1));
    let b = GPU.k.knn_finalize.step(ctx, &p, &bufs, (div_up(queries as u32, 64), 1, 1));
    ctx.run(&[&a, &b]);
    let got = ctx.read_f32(&dist, queries).unwrap();
    let want: Vec<f32> = q
        .chunks_exact(dim)
        .map(|qr| {
            let best = bank.chunks_exact(dim).map(|br| qr.iter().zip(br).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>()).fold(f64::MAX, f64::min);
            best.sqrt() as f32
        })
        .collect();
    // Distances are about 6 here; |q|^2 + |b|^2 - 2 q.b in f32 loses ~1e-6 of |q|^2 (~40).
    let err = want.iter().zip(&got).map(|(w, g)| (w * w - g * g).abs()).fold(0f32, f32::max);
    assert!(err < 1e-3, "squared distance error {err}");
    assert!(got[5] < 2e-2, "planted exact match: {}", got[5]);
}

fn contract_and_spec() -> (std::sync::Arc<Contract>, EngineSpec) {
    let contract = std::sync::Arc::new(Contract::load(&common::model()).unwrap());
    let taps: Vec<TapSpec> = contract.taps(&["stage3_stride8".into(), "stage4_stride16".into()]).unwrap();
    let spec = EngineSpec { contract: contract.clone(), taps, blur_sigma: 4.0, threads: 2, gpu_precision: GpuPrecision::F32 };
    (contract, spec)
}

fn with_precision(spec: &EngineSpec, gpu_precision: GpuPrecision) -> EngineSpec {
    EngineSpec { gpu_precision, ..spec.clone() }
}

fn test_images(n: usize) -> Vec<std::path::PathBuf> {
    let d = common::dataset().join("brick/test");
    let mut kinds: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()).collect();
    kinds.sort();
    let mut v: Vec<_> = kinds.iter().flat_map(|k| lineguard::enroll::list_images(k).unwrap()).collect();
    v.truncate(n);
    v
}

#[test]
fn preprocessing_matches_the_cpu_for_rgb_grey_yuyv_and_a_roi() {
    let (contract, spec) = contract_and_spec();
    let mut gpu = GpuEngine::new(&spec, false).unwrap();
    // f16 storage rounds each normalised value once: 4.9e-4 of at most ~2.6.
    let mut gpu16 = GpuEngine::new(&with_precision(&spec, GpuPrecision::F16), false).unwrap();
    let rgb = Frame::from_image_file(&test_images(1)[0], 0).unwrap();
    let (w, h) = (rgb.width, rgb.height);
    let grey: Vec<u8> = rgb.data.chunks_exact(3).map(|p| ((p[0] as u32 + p[1] as u32 + p[2] as u32) / 3) as u8).collect();
    let yuyv: Vec<u8> = rgb.data.chunks_exact(6).flat_map(|p| [p[1], 128 + p[0] / 4, p[4], 128 - p[5] / 4]).collect();
    let frames = [
        rgb.clone(),
        Frame::new(w, h, PixelFormat::Grey8, grey, 1, "grey".into()).unwrap(),
        Frame::new(w, h, PixelFormat::Yuyv, yuyv, 2, "yuyv".into()).unwrap(),
    ];
    let rois = [None, Some(Rect { x: 17, y: 9, width: 201, height: 163 })];
    for f in &frames {
        for roi in rois {
            let mut pre = Preprocessor::new(f.width, f.height, roi, &contract.meta.input).unwrap();
            let mut want = vec![0f32; pre.output_len()];
            pre.run(f, &mut want).unwrap();
            let got = gpu.preprocessed(f, roi).unwrap();
            let err = rel_error(&got, &want);
            assert!(err < 1e-5, "{:?} roi {roi:?}: relative error {err:e}", f.format);
            let err = rel_error(&gpu16.preprocessed(f, roi).unwrap(), &want);
            assert!(err < 1e-3, "f16: {:?} roi {roi:?}: relative error {err:e}", f.format);
        }
    }
}

#[test]
fn encoder_features_match_the_cpu_engine_within_the_stated_bound() {
    let (_, spec) = contract_and_spec();
    let mut cpu = CpuEngine::new(&spec).unwrap();
    // f16: about 25 stored layers between the image and the deepest tap, each
    // rounding once (4.9e-4): ~2.5e-3 if the errors added like a random walk,
    // more where a layer amplifies them; lavapipe measures 5.3e-3.
    for (precision, bound) in [(GpuPrecision::F32, 1e-4), (GpuPrecision::F16, F16_FEATURE_TOL)] {
        let mut gpu = GpuEngine::new(&with_precision(&spec, precision), false).unwrap();
        let mut worst = 0f32;
        for (i, p) in test_images(3).iter().enumerate() {
            let f = Frame::from_image_file(p, i as u64).unwrap();
            let a = gpu.embed(&f, None).unwrap();
            let b = cpu.embed(&f, None).unwrap();
            assert_eq!((a.grid_h, a.grid_w, a.dim), (b.grid_h, b.grid_w, b.dim));
            worst = worst.max(rel_error(&a.data, &b.data));
        }
        eprintln!("encoder features ({precision:?}, 3 images): worst relative error {worst:e}");
        assert!(worst < bound, "{precision:?}: features differ by {worst:e} of their largest magnitude (bound {bound:e})");
    }
}

/// Whole-encoder features with f16 storage, relative to the largest magnitude.
const F16_FEATURE_TOL: f32 = 1e-2;
/// Anomaly maps with f16 storage: the feature error, through the distance
/// (lavapipe measures 6.4e-3 on 14 images).
const F16_MAP_TOL: f32 = 2e-2;

#[test]
fn scores_and_verdicts_match_the_cpu_engine_on_real_images() {
    let (contract, spec) = contract_and_spec();
    let mut cpu = CpuEngine::new(&spec).unwrap();
    let mut gpu = lineguard::engine::create(EngineChoice::Gpu, &spec).unwrap();
    let mut gpu16 = lineguard::engine::create(EngineChoice::Gpu, &with_precision(&spec, GpuPrecision::F16)).unwrap();
    let train = lineguard::enroll::list_images(&common::dataset().join("brick/train/good")).unwrap();
    let params = lineguard::enroll::EnrollParams {
        roi: None,
        blur_sigma: spec.blur_sigma,
        taps: spec.taps.iter().map(|t| t.name.clone()).collect(),
        enroll: Default::default(),
    };
    let bank = lineguard::enroll::enroll(&mut cpu, &contract, &train, &params, &lineguard::progress::Progress::hidden()).unwrap();
    cpu.set_bank(&bank.data, bank.header.dim).unwrap();
    gpu.set_bank(&bank.data, bank.header.dim).unwrap();
    gpu16.set_bank(&bank.data, bank.header.dim).unwrap();
    let threshold = bank.header.threshold;
    let (mut cpu_scores, mut gpu_scores, mut gpu16_scores, mut defective) = (vec![], vec![], vec![], vec![]);
    let (mut worst_map, mut worst_map16) = (0f32, 0f32);
    for (i, p) in test_images(usize::MAX).iter().enumerate() {
        let f = Frame::from_image_file(p, i as u64).unwrap();
        let a = cpu.score(&f, None).unwrap();
        let b = gpu.score(&f, None).unwrap();
        let map_err = rel_error(&b.map, &a.map);
        worst_map = worst_map.max(map_err);
        assert!(map_err < 1e-3, "{}: anomaly maps differ by {map_err:e}", p.display());
        assert_eq!(a.score >= threshold, b.score >= threshold, "{}: verdicts differ (cpu {} gpu {} threshold {threshold})", p.display(), a.score, b.score);
        let c = gpu16.score(&f, None).unwrap();
        let map_err16 = rel_error(&c.map, &a.map);
        worst_map16 = worst_map16.max(map_err16);
        assert!(map_err16 < F16_MAP_TOL, "{} (f16): anomaly maps differ by {map_err16:e}", p.display());
        assert_eq!(a.score >= threshold, c.score >= threshold, "{}: verdicts differ (cpu {} gpu f16 {} threshold {threshold})", p.display(), a.score, c.score);
        cpu_scores.push(a.score);
        gpu_scores.push(b.score);
        gpu16_scores.push(c.score);
        defective.push(!p.parent().unwrap().ends_with("good"));
    }
    // A batch in one submission gives the frame-by-frame results.
    let frames: Vec<Frame> = test_images(6).iter().enumerate().map(|(i, p)| Frame::from_image_file(p, i as u64).unwrap()).collect();
    let batch = gpu.score_batch(&frames, None).unwrap();
    assert_eq!(batch.len(), frames.len());
    for (i, b) in batch.iter().enumerate() {
        assert!((b.score - gpu_scores[i]).abs() <= 1e-5 * gpu_scores[i], "batch frame {i}: {} vs {}", b.score, gpu_scores[i]);
    }
    let auroc = |s: &[f32]| lineguard::eval::metrics::auroc(s, &defective).unwrap();
    let (a, b, c) = (auroc(&cpu_scores), auroc(&gpu_scores), auroc(&gpu16_scores));
    eprintln!("anomaly maps ({} images): worst relative error f32 {worst_map:e}, f16 {worst_map16:e}; image AUROC cpu {a:.4} gpu {b:.4} gpu f16 {c:.4}", defective.len());
    assert!((a - b).abs() <= 0.002, "image AUROC cpu {a} gpu {b}");
    assert!((a - c).abs() <= 0.002, "image AUROC cpu {a} gpu f16 {c}");
}

#[test]
fn auto_takes_a_hardware_gpu_or_the_cpu_and_devices_lists_the_adapters() {
    let out = common::lineguard_cmd(&["devices", "--json"]).output().unwrap();
    common::assert_success(&out, "lineguard devices --json");
    let adapters: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!adapters.is_empty(), "no adapter listed, yet the GPU tests found one");
    for a in &adapters {
        for key in ["name", "backend", "device_type", "hardware", "max_storage_buffer_binding_size", "timestamp_queries", "shader_f16"] {
            assert!(a.get(key).is_some(), "adapter without {key}: {a}");
        }
    }
    let hardware = adapters.iter().any(|a| a["hardware"] == true);
    let (_, spec) = contract_and_spec();
    let engine = lineguard::engine::create(EngineChoice::Auto, &spec).unwrap();
    let want = if hardware { lineguard::engine::EngineKind::Gpu } else { lineguard::engine::EngineKind::Cpu };
    assert_eq!(engine.kind(), want, "auto picked {}", engine.description());
}
