//! Compute pipelines, one per WGSL entry point in shaders/, built once per
//! engine. Each shader's uniform struct has a `#[repr(C)]` twin here whose
//! size is checked against the WGSL layout in the tests.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::context::{GpuContext, Precision};

/// A pipeline and the layout of its bind group: binding 0 is the uniform
/// parameters, then storage buffers in order (`true` = read-only).
pub struct Kernel {
    pub label: &'static str,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    read_only: Vec<bool>,
}

impl Kernel {
    fn new(ctx: &GpuContext, module: &wgpu::ShaderModule, label: &'static str, entry: &str, read_only: &[bool]) -> Kernel {
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Uniform, has_dynamic_offset: false, min_binding_size: None },
            count: None,
        }];
        for (i, &ro) in read_only.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: ro },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = ctx.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries: &entries });
        let pl = ctx.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = ctx.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: Some(&pl),
            module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        Kernel { label, pipeline, layout, read_only: read_only.to_vec() }
    }

    /// A dispatch of this kernel with its parameters and buffers, ready to record.
    pub fn step<P: Pod>(self: &Arc<Self>, ctx: &GpuContext, params: &P, buffers: &[&wgpu::Buffer], groups: (u32, u32, u32)) -> Step {
        assert_eq!(buffers.len(), self.read_only.len(), "{}: wrong number of buffers", self.label);
        let uniform = ctx.uniform(self.label, params);
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.as_entire_binding() });
        }
        let bind = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(self.label), layout: &self.layout, entries: &entries });
        Step { kernel: self.clone(), bind, groups, _uniform: uniform }
    }
}

/// One recorded dispatch. Everything it binds was allocated at plan time.
pub struct Step {
    kernel: Arc<Kernel>,
    bind: wgpu::BindGroup,
    groups: (u32, u32, u32),
    _uniform: wgpu::Buffer,
}

impl Step {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.kernel.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(self.groups.0, self.groups.1, self.groups.2);
    }
}

/// depthwise.wgsl's output tile side and the largest input window side it
/// can stage: (TILE - 1) * stride + k must be at most SPAN.
pub const DEPTHWISE_TILE: usize = 16;
pub const DEPTHWISE_SPAN: usize = 36;

pub fn div_up(n: u32, d: u32) -> u32 {
    n.div_ceil(d)
}

macro_rules! params {
    ($name:ident { $($f:ident : $t:ty),* $(,)? }) => {
        #[repr(C)]
        #[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
        pub struct $name { $(pub $f: $t),* }
    };
}

params!(PreprocessParams {
    frame_w: u32, frame_h: u32, format: u32, roi_x: u32,
    roi_y: u32, roi_h: u32, out_w: u32, out_h: u32,
    max_taps_x: u32, max_taps_y: u32, _pad0: u32, _pad1: u32,
    mean: [f32; 4], inv_std: [f32; 4],
});
params!(ConvParams {
    in_c: u32, in_h: u32, in_w: u32, out_c: u32,
    out_h: u32, out_w: u32, k_h: u32, k_w: u32,
    stride_h: u32, stride_w: u32, pad_t: u32, pad_l: u32,
    groups: u32, _pad0: u32, act_min: f32, act_max: f32,
});
params!(EltwiseParams {
    len: u32, op: u32, b_len: u32, plane: u32,
    lo: f32, hi: f32, alpha: f32, beta: f32,
    row: u32, _pad0: u32, _pad1: u32, _pad2: u32,
});
params!(PoolParams {
    c: u32, in_h: u32, in_w: u32, out_h: u32,
    out_w: u32, k_h: u32, k_w: u32, stride_h: u32,
    stride_w: u32, pad_t: u32, pad_l: u32, op: u32,
    count_pad: u32, _pad0: u32, _pad1: u32, _pad2: u32,
});
params!(ResizeParams {
    c: u32, in_h: u32, in_w: u32, out_h: u32,
    out_w: u32, offset: u32, dim: u32, len: u32,
    inv_scale_h: f32, inv_scale_w: f32, _pad0: u32, _pad1: u32,
});

impl ResizeParams {
    /// Bilinear resize of `c` planes from `input` (h, w) to `output` (h, w);
    /// the scale is output over input unless ONNX `scales` say otherwise.
    pub fn bilinear(c: usize, input: (usize, usize), output: (usize, usize), scales: Option<(f32, f32)>) -> ResizeParams {
        let (sh, sw) = scales.unwrap_or((output.0 as f32 / input.0 as f32, output.1 as f32 / input.1 as f32));
        ResizeParams {
            c: c as u32,
            in_h: input.0 as u32,
            in_w: input.1 as u32,
            out_h: output.0 as u32,
            out_w: output.1 as u32,
            inv_scale_h: 1.0 / sh,
            inv_scale_w: 1.0 / sw,
            ..Default::default()
        }
    }
}
params!(KnnParams { queries: u32, rows: u32, dim: u32, chunk_rows: u32, chunks: u32, _pad0: u32, _pad1: u32, _pad2: u32 });
params!(MapParams { gh: u32, gw: u32, h: u32, w: u32, radius: u32, _pad0: u32, _pad1: u32, _pad2: u32 });

/// The WGSL sources, embedded at build time; gemm_block.wgsl and
/// conv_params.wgsl are prepended to the kernels that use them (WGSL has no
/// includes). Shaders that hold tensors name their storage types `In` and
/// `Out`; `source` defines them.
pub const SOURCES: [(&str, &str); 8] = [
    ("preprocess", include_str!("../../../shaders/preprocess.wgsl")),
    ("conv", concat!(include_str!("../../../shaders/conv_params.wgsl"), include_str!("../../../shaders/gemm_block.wgsl"), include_str!("../../../shaders/conv.wgsl"))),
    ("depthwise", concat!(include_str!("../../../shaders/conv_params.wgsl"), include_str!("../../../shaders/depthwise.wgsl"))),
    ("eltwise", include_str!("../../../shaders/eltwise.wgsl")),
    ("pooling", include_str!("../../../shaders/pooling.wgsl")),
    ("resize", include_str!("../../../shaders/resize.wgsl")),
    ("knn", concat!(include_str!("../../../shaders/gemm_block.wgsl"), include_str!("../../../shaders/knn.wgsl"))),
    ("map", include_str!("../../../shaders/map.wgsl")),
];

/// A shader's source with its storage types: `In` for what it reads, `Out`
/// for what it writes (and `enable f16;` when either is f16).
pub fn source(name: &str, input: Precision, output: Precision) -> String {
    let src = SOURCES.iter().find(|s| s.0 == name).unwrap_or_else(|| panic!("no shader {name}")).1;
    let enable = if input == Precision::F16 || output == Precision::F16 { "enable f16;\n" } else { "" };
    format!("{enable}alias In = {};\nalias Out = {};\n{src}", input.wgsl(), output.wgsl())
}

/// Every pipeline, for one device. The encoder's kernels (`conv_*`, `unary`,
/// `binary`, `pool`, `global_avg`, `resize`, `copy`) and the preprocessing's
/// output use the device's precision; `tap_pool` turns the taps into f32, and
/// from there on (patch features, search, map) everything is f32.
pub struct Kernels {
    pub pre_horizontal: Arc<Kernel>,
    pub pre_vertical: Arc<Kernel>,
    pub conv_direct: Arc<Kernel>,
    pub conv_pointwise: Arc<Kernel>,
    pub conv_depthwise: Arc<Kernel>,
    pub unary: Arc<Kernel>,
    pub binary: Arc<Kernel>,
    pub pool: Arc<Kernel>,
    pub global_avg: Arc<Kernel>,
    pub resize: Arc<Kernel>,
    pub copy: Arc<Kernel>,
    pub tap_pool: Arc<Kernel>,
    pub bilinear: Arc<Kernel>,
    pub to_patches: Arc<Kernel>,
    pub knn_partial: Arc<Kernel>,
    pub knn_finalize: Arc<Kernel>,
    pub blur_h: Arc<Kernel>,
    pub blur_v: Arc<Kernel>,
    pub max_reduce: Arc<Kernel>,
}

impl Kernels {
    pub fn new(ctx: &GpuContext) -> Kernels {
        let m = |name: &str, input: Precision, output: Precision| {
            let src = source(name, input, output);
            ctx.device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(name), source: wgpu::ShaderSource::Wgsl(src.into()) })
        };
        let (act, f32) = (ctx.precision, Precision::F32);
        let (pre, conv, depthwise) = (m("preprocess", f32, act), m("conv", act, act), m("depthwise", act, act));
        let (elt, pool_m, resize_m) = (m("eltwise", act, act), m("pooling", act, act), m("resize", act, act));
        let (knn, map) = (m("knn", f32, f32), m("map", f32, f32));
        let k = |module: &wgpu::ShaderModule, label: &'static str, entry: &str, ro: &[bool]| Arc::new(Kernel::new(ctx, module, label, entry, ro));
        let (pool, resize) = (k(&pool_m, "pooling.pool", "pool", &[true, false]), k(&resize_m, "resize.bilinear", "bilinear", &[true, false]));
        // The f32 side (tap pooling, patch features, map upsampling): with an
        // f32 encoder these are the encoder's own pipelines, not compiled twice.
        let (tap_pool, bilinear, to_patches) = if act == f32 {
            (pool.clone(), resize.clone(), k(&resize_m, "resize.to_patches", "to_patches", &[true, false]))
        } else {
            let resize_f32 = m("resize", f32, f32);
            (
                k(&m("pooling", act, f32), "pooling.tap_pool", "pool", &[true, false]),
                k(&resize_f32, "resize.bilinear_f32", "bilinear", &[true, false]),
                k(&resize_f32, "resize.to_patches", "to_patches", &[true, false]),
            )
        };
        Kernels {
            pre_horizontal: k(&pre, "preprocess.horizontal", "horizontal", &[true, true, true, false, false]),
            pre_vertical: k(&pre, "preprocess.vertical", "vertical", &[true, true, true, false, false]),
            conv_direct: k(&conv, "conv.direct", "direct", &[true, true, true, false]),
            conv_pointwise: k(&conv, "conv.pointwise", "pointwise", &[true, true, true, false]),
            conv_depthwise: k(&depthwise, "depthwise.depthwise", "depthwise", &[true, true, true, false]),
            unary: k(&elt, "eltwise.unary", "unary", &[true, true, false]),
            binary: k(&elt, "eltwise.binary", "binary", &[true, true, false]),
            pool,
            global_avg: k(&pool_m, "pooling.global_avg", "global_avg", &[true, false]),
            resize,
            copy: k(&resize_m, "resize.copy", "copy", &[true, false]),
            tap_pool,
            bilinear,
            to_patches,
            knn_partial: k(&knn, "knn.partial_min", "partial_min", &[true, true, true, false, false]),
            knn_finalize: k(&knn, "knn.finalize", "finalize", &[true, true, true, false, false]),
            blur_h: k(&map, "map.blur_h", "blur_h", &[true, true, false]),
            blur_v: k(&map, "map.blur_v", "blur_v", &[true, true, false]),
            max_reduce: k(&map, "map.max_reduce", "max_reduce", &[true, true, false]),
        }
    }
}

/// Workgroups for `n` elements at `per` per workgroup, folded into 2-D when
/// over the per-dimension limit; returns (groups, row length in elements).
pub fn flat_groups(n: u32, per: u32) -> ((u32, u32, u32), u32) {
    const MAX: u32 = 65535;
    let groups = div_up(n, per);
    if groups <= MAX {
        ((groups.max(1), 1, 1), groups.max(1) * per)
    } else {
        let gy = div_up(groups, MAX);
        ((MAX, gy, 1), MAX * per)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform struct sizes match the WGSL layouts (16-byte multiples, field counts).
    #[test]
    fn uniform_twins_have_the_wgsl_sizes() {
        assert_eq!(std::mem::size_of::<PreprocessParams>(), 12 * 4 + 32);
        assert_eq!(std::mem::size_of::<ConvParams>(), 64);
        assert_eq!(std::mem::size_of::<EltwiseParams>(), 48);
        assert_eq!(std::mem::size_of::<PoolParams>(), 64);
        assert_eq!(std::mem::size_of::<ResizeParams>(), 48);
        assert_eq!(std::mem::size_of::<KnnParams>(), 32);
        assert_eq!(std::mem::size_of::<MapParams>(), 32);
    }

    /// The planner routes a depthwise conv to depthwise.wgsl only when its
    /// window fits the shader's tile; both sides must use the same sizes.
    #[test]
    fn depthwise_tile_constants_match_the_shader() {
        let src = SOURCES.iter().find(|s| s.0 == "depthwise").unwrap().1;
        assert!(src.contains(&format!("const TILE: u32 = {DEPTHWISE_TILE}u;")), "depthwise.wgsl TILE != DEPTHWISE_TILE");
        assert!(src.contains(&format!("const SPAN: u32 = {DEPTHWISE_SPAN}u;")), "depthwise.wgsl SPAN != DEPTHWISE_SPAN");
    }

    #[test]
    fn every_shader_parses_and_validates_in_both_precisions() {
        use Precision::{F16, F32};
        for (name, _) in SOURCES {
            for (input, output) in [(F32, F32), (F16, F16), (F16, F32), (F32, F16)] {
                let src = source(name, input, output);
                let at = |e: String| format!("{name}.wgsl ({input} -> {output}): {e}");
                let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{}", at(e.emit_to_string(&src))));
                naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
                    .validate(&module)
                    .unwrap_or_else(|e| panic!("{}", at(format!("{e:?}"))));
            }
        }
    }
}
