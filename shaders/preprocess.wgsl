// Preprocess: region-of-interest crop + antialiased bilinear resize + normalise,
// from the raw frame bytes (RGB8, GREY8 or YUYV, packed 4 per u32) to the
// encoder input, NCHW, stored as `Out` (the encoder's precision, f32 or f16,
// set at load time); computed in f32. Two passes, as on the CPU (src/preprocess.rs):
// `horizontal` resamples each ROI row to the output width into `tmp`
// (roi_h x out_w x 3, values in [0,1]); `vertical` resamples columns and
// normalises. Each output value is a weighted sum over a short span of
// inputs; spans and weights come from the same tables the CPU builds.
// One thread per output value; workgroups of 64 along x.

struct Params {
    frame_w: u32, frame_h: u32, format: u32, roi_x: u32,
    roi_y: u32, roi_h: u32, out_w: u32, out_h: u32,
    max_taps_x: u32, max_taps_y: u32, _pad0: u32, _pad1: u32,
    mean: vec4<f32>,
    inv_std: vec4<f32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> frame: array<u32>;
@group(0) @binding(2) var<storage, read> spans: array<u32>;     // (start, n) per output column, then per output row
@group(0) @binding(3) var<storage, read> weights: array<f32>;   // column weights, then row weights
@group(0) @binding(4) var<storage, read_write> tmp: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<Out>;

fn byte_at(i: u32) -> u32 {
    return (frame[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}

fn clamp_u8(v: f32) -> f32 {
    // floor(v + 0.5): rounds halves up like the CPU's f32::round (WGSL round() goes to even).
    return clamp(floor(v + 0.5), 0.0, 255.0);
}

// RGB (0..255) of frame pixel (x, y); BT.601 limited range for YUYV, as on the CPU.
fn pixel(x: u32, y: u32) -> vec3<f32> {
    if (p.format == 0u) {
        let i = (y * p.frame_w + x) * 3u;
        return vec3<f32>(f32(byte_at(i)), f32(byte_at(i + 1u)), f32(byte_at(i + 2u)));
    }
    if (p.format == 1u) {
        let g = f32(byte_at(y * p.frame_w + x));
        return vec3<f32>(g, g, g);
    }
    let base = (y * p.frame_w + (x & ~1u)) * 2u;
    let yy = f32(byte_at(base + (x & 1u) * 2u));
    let d = f32(byte_at(base + 1u)) - 128.0;
    let e = f32(byte_at(base + 3u)) - 128.0;
    let c = (yy - 16.0) * 1.164;
    return vec3<f32>(clamp_u8(c + 1.596 * e), clamp_u8(c - 0.392 * d - 0.813 * e), clamp_u8(c + 2.017 * d));
}

@compute @workgroup_size(64)
fn horizontal(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = gid.x;
    let y = gid.y;
    if (x >= p.out_w || y >= p.roi_h) { return; }
    let start = spans[2u * x];
    let n = spans[2u * x + 1u];
    var acc = vec3<f32>(0.0);
    for (var t = 0u; t < n; t = t + 1u) {
        acc = acc + weights[x * p.max_taps_x + t] * pixel(p.roi_x + start + t, p.roi_y + y);
    }
    let o = (y * p.out_w + x) * 3u;
    tmp[o] = acc.x / 255.0;
    tmp[o + 1u] = acc.y / 255.0;
    tmp[o + 2u] = acc.z / 255.0;
}

@compute @workgroup_size(64)
fn vertical(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = gid.x;
    let y = gid.y;
    if (x >= p.out_w || y >= p.out_h) { return; }
    let span = 2u * p.out_w + 2u * y;
    let start = spans[span];
    let n = spans[span + 1u];
    let wbase = p.out_w * p.max_taps_x + y * p.max_taps_y;
    var acc = vec3<f32>(0.0);
    for (var t = 0u; t < n; t = t + 1u) {
        let i = ((start + t) * p.out_w + x) * 3u;
        acc = acc + weights[wbase + t] * vec3<f32>(tmp[i], tmp[i + 1u], tmp[i + 2u]);
    }
    let plane = p.out_h * p.out_w;
    let o = y * p.out_w + x;
    out[o] = Out((acc.x - p.mean.x) * p.inv_std.x);
    out[plane + o] = Out((acc.y - p.mean.y) * p.inv_std.y);
    out[2u * plane + o] = Out((acc.z - p.mean.z) * p.inv_std.z);
}
