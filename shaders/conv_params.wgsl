// The parameters and bindings shared by the convolution kernels (conv.wgsl,
// depthwise.wgsl), prepended to both at load time: NCHW, batch 1, dilation 1;
// tensors and weights stored as `In`/`Out` (f32 or f16, set at load time by
// src/engine/gpu/kernels.rs); the bias and an optional clamp (ReLU, ReLU6,
// Clip: act_min, act_max) are fused into every kernel's epilogue.

struct Params {
    in_c: u32, in_h: u32, in_w: u32, out_c: u32,
    out_h: u32, out_w: u32, k_h: u32, k_w: u32,
    stride_h: u32, stride_w: u32, pad_t: u32, pad_l: u32,
    groups: u32, _pad0: u32, act_min: f32, act_max: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<In>;
@group(0) @binding(2) var<storage, read> w: array<In>;
@group(0) @binding(3) var<storage, read> b: array<In>;
@group(0) @binding(4) var<storage, read_write> y: array<Out>;
