// Element-wise operators on flat tensors stored as `In`/`Out` (f32 or f16,
// set at load time), computed in f32; one thread per element,
// workgroups of 256 laid out in 2-D when the tensor is large.
// `unary`: op 0 clamp(x, lo, hi) (Relu, Relu6, Clip), 1 sigmoid,
// 2 hard-swish x * relu6(x + 3) / 6, 3 hard-sigmoid clamp(alpha x + beta, 0, 1).
// `binary`: op 0 add, 1 mul; b is either the same size as a, or one value per
// channel (NCHW [1, C, 1, 1] broadcast, as in squeeze-excite), or a scalar.

struct Params {
    len: u32, op: u32, b_len: u32, plane: u32,
    lo: f32, hi: f32, alpha: f32, beta: f32,
    row: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<In>;
@group(0) @binding(2) var<storage, read> b: array<In>;
@group(0) @binding(3) var<storage, read_write> out: array<Out>;

fn index(gid: vec3<u32>) -> u32 {
    return gid.y * p.row + gid.x;
}

@compute @workgroup_size(256)
fn unary(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= p.len) { return; }
    let v = f32(a[i]);
    var r = v;
    switch p.op {
        case 0u: { r = clamp(v, p.lo, p.hi); }
        case 1u: { r = 1.0 / (1.0 + exp(-v)); }
        case 2u: { r = v * clamp(v + 3.0, 0.0, 6.0) / 6.0; }
        default: { r = clamp(p.alpha * v + p.beta, 0.0, 1.0); }
    }
    out[i] = Out(r);
}

@compute @workgroup_size(256)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= p.len) { return; }
    var j = i;
    if (p.b_len == 1u) {
        j = 0u;
    } else if (p.b_len != p.len) {
        j = i / p.plane;
    }
    if (p.op == 0u) {
        out[i] = Out(f32(a[i]) + f32(b[j]));
    } else {
        out[i] = Out(f32(a[i]) * f32(b[j]));
    }
}
