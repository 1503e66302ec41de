// Resampling and layout; stored as `In`/`Out` (f32 or f16, set at load
// time: the encoder's Resize and Concat use its precision, the patch
// features and the map are f32), interpolated in f32.
// `bilinear`: NCHW bilinear resize with half-pixel centres and edge clamp
// (ONNX Resize half_pixel / torch align_corners=False), one thread per output
// value; grid x = pixel, y = channel.
// `to_patches`: writes one tap (C x P, NCHW) into the patch-feature matrix
// (P x D, row per grid cell) at column offset `offset`: the transpose that
// turns channel planes into patch rows. Grid x = cell, y = channel.
// `copy`: out[offset + i] = in[i] (channel concatenation in NCHW).

struct Params {
    c: u32, in_h: u32, in_w: u32, out_h: u32,
    out_w: u32, offset: u32, dim: u32, len: u32,
    // Input pixels per output pixel (ONNX: 1 / scale), per axis.
    inv_scale_h: f32, inv_scale_w: f32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<In>;
@group(0) @binding(2) var<storage, read_write> y: array<Out>;

fn src_coord(o: u32, inv_scale: f32) -> f32 {
    return max((f32(o) + 0.5) * inv_scale - 0.5, 0.0);
}

@compute @workgroup_size(64)
fn bilinear(@builtin(global_invocation_id) gid: vec3<u32>) {
    let pix = gid.x;
    let c = gid.y;
    if (pix >= p.out_h * p.out_w || c >= p.c) { return; }
    let oy = pix / p.out_w;
    let ox = pix % p.out_w;
    let sy = src_coord(oy, p.inv_scale_h);
    let sx = src_coord(ox, p.inv_scale_w);
    let y0 = min(u32(floor(sy)), p.in_h - 1u);
    let x0 = min(u32(floor(sx)), p.in_w - 1u);
    let y1 = min(y0 + 1u, p.in_h - 1u);
    let x1 = min(x0 + 1u, p.in_w - 1u);
    let fy = sy - f32(y0);
    let fx = sx - f32(x0);
    let base = c * p.in_h * p.in_w;
    let top = f32(x[base + y0 * p.in_w + x0]) * (1.0 - fx) + f32(x[base + y0 * p.in_w + x1]) * fx;
    let bot = f32(x[base + y1 * p.in_w + x0]) * (1.0 - fx) + f32(x[base + y1 * p.in_w + x1]) * fx;
    y[c * p.out_h * p.out_w + pix] = Out(top * (1.0 - fy) + bot * fy);
}

@compute @workgroup_size(64)
fn to_patches(@builtin(global_invocation_id) gid: vec3<u32>) {
    let cell = gid.x;
    let c = gid.y;
    let cells = p.in_h * p.in_w;
    if (cell >= cells || c >= p.c) { return; }
    y[cell * p.dim + p.offset + c] = Out(x[c * cells + cell]);
}

@compute @workgroup_size(256)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.len) { return; }
    y[p.offset + i] = Out(x[i]);
}
