// Anomaly map -> image score, as on the CPU (src/anomaly/map.rs); the patch
// scores are upsampled to the map by resize.wgsl's `bilinear`.
// `blur_h` / `blur_v`: the separable Gaussian with scipy's reflect edges; the
// kernel weights come from the CPU (one source of truth). `max_reduce`: one workgroup of 256 threads takes the
// maximum of the map (strided loop, then a tree in workgroup memory).

struct Params {
    gh: u32, gw: u32, h: u32, w: u32,
    radius: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> taps: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

// scipy's "reflect" edge: ... c b a | a b c ... (the edge value repeated).
fn reflect_index(i: i32, n: i32) -> i32 {
    let period = 2 * n;
    var m = ((i % period) + period) % period;
    if (m >= n) { m = period - 1 - m; }
    return m;
}

@compute @workgroup_size(64)
fn blur_h(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.h * p.w) { return; }
    let y = i / p.w;
    let x = i32(i % p.w);
    var acc = 0.0;
    for (var t = 0u; t <= 2u * p.radius; t = t + 1u) {
        let xx = reflect_index(x + i32(t) - i32(p.radius), i32(p.w));
        acc = acc + taps[t] * src[y * p.w + u32(xx)];
    }
    dst[i] = acc;
}

@compute @workgroup_size(64)
fn blur_v(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.h * p.w) { return; }
    let y = i32(i / p.w);
    let x = i % p.w;
    var acc = 0.0;
    for (var t = 0u; t <= 2u * p.radius; t = t + 1u) {
        let yy = reflect_index(y + i32(t) - i32(p.radius), i32(p.h));
        acc = acc + taps[t] * src[u32(yy) * p.w + x];
    }
    dst[i] = acc;
}

var<workgroup> best: array<f32, 256>;

@compute @workgroup_size(256)
fn max_reduce(@builtin(local_invocation_id) lid: vec3<u32>) {
    var m = -3.4e38;
    for (var i = lid.x; i < p.h * p.w; i = i + 256u) { m = max(m, src[i]); }
    best[lid.x] = m;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid.x < s) { best[lid.x] = max(best[lid.x], best[lid.x + s]); }
        workgroupBarrier();
    }
    if (lid.x == 0u) { dst[0] = best[0]; }
}
