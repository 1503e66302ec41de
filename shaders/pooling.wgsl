// Pooling, NCHW, batch 1; stored as `In`/`Out` (f32 or f16, set at load
// time: the encoder's pools are In = Out, the patch features' 3x3 average
// reads the encoder's precision and writes f32), summed in f32.
// `pool`: average (op 0) or max (op 1) over a k_h x k_w window with stride
// and padding; the average divides by the full window when count_pad = 1
// (torch's default, and PatchCore's 3x3 local average) or by the valid
// cells otherwise. One thread per output value; grid x = pixel, y = channel.
// `global_avg`: one workgroup of 64 per channel sums its plane in a strided
// loop, then reduces in workgroup memory.

struct Params {
    c: u32, in_h: u32, in_w: u32, out_h: u32,
    out_w: u32, k_h: u32, k_w: u32, stride_h: u32,
    stride_w: u32, pad_t: u32, pad_l: u32, op: u32,
    count_pad: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<In>;
@group(0) @binding(2) var<storage, read_write> y: array<Out>;

@compute @workgroup_size(64)
fn pool(@builtin(global_invocation_id) gid: vec3<u32>) {
    let pix = gid.x;
    let c = gid.y;
    if (pix >= p.out_h * p.out_w || c >= p.c) { return; }
    let oy = pix / p.out_w;
    let ox = pix % p.out_w;
    var acc = 0.0;
    if (p.op == 1u) { acc = -3.4e38; }
    var n = 0.0;
    for (var ky = 0u; ky < p.k_h; ky = ky + 1u) {
        let iy = i32(oy * p.stride_h + ky) - i32(p.pad_t);
        if (iy < 0 || iy >= i32(p.in_h)) { continue; }
        for (var kx = 0u; kx < p.k_w; kx = kx + 1u) {
            let ix = i32(ox * p.stride_w + kx) - i32(p.pad_l);
            if (ix < 0 || ix >= i32(p.in_w)) { continue; }
            let v = f32(x[(c * p.in_h + u32(iy)) * p.in_w + u32(ix)]);
            if (p.op == 1u) { acc = max(acc, v); } else { acc = acc + v; }
            n = n + 1.0;
        }
    }
    if (p.op == 0u) {
        if (p.count_pad == 1u) { n = f32(p.k_h * p.k_w); }
        acc = acc / max(n, 1.0);
    }
    y[c * p.out_h * p.out_w + pix] = Out(acc);
}

var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn global_avg(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let c = wid.x;
    let plane = p.in_h * p.in_w;
    var acc = 0.0;
    for (var i = lid.x; i < plane; i = i + 64u) {
        acc = acc + f32(x[c * plane + i]);
    }
    partial[lid.x] = acc;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s = s >> 1u) {
        if (lid.x < s) { partial[lid.x] = partial[lid.x] + partial[lid.x + s]; }
        workgroupBarrier();
    }
    if (lid.x == 0u) { y[c] = Out(partial[0] / f32(plane)); }
}
