// Depthwise convolution (groups = input channels, each output channel reads
// input channel oc / multiplier; parameters and bindings: conv_params.wgsl),
// summed in f32. A workgroup of 16 x 16 threads owns a 16 x 16 tile of one
// output channel: it stages the input window the tile needs, at most
// (15 * stride + k)^2 <= 36 x 36 values with the padding as zeros, in
// workgroup memory once, and each thread then sums its k x k window from
// there instead of reading k^2 values from global memory.
// Grid: x = tile column, y = tile row, z = output channel.

const TILE: u32 = 16u;
// Window side the tile can stage: (TILE - 1) * stride + k <= SPAN (checked at plan time).
const SPAN: u32 = 36u;
var<workgroup> window: array<f32, SPAN * SPAN>;

@compute @workgroup_size(16, 16)
fn depthwise(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let oc = wid.z;
    let ic = oc / (p.out_c / p.in_c);
    let oy0 = wid.y * TILE;
    let ox0 = wid.x * TILE;
    let iy0 = i32(oy0 * p.stride_h) - i32(p.pad_t);
    let ix0 = i32(ox0 * p.stride_w) - i32(p.pad_l);
    let span_h = (TILE - 1u) * p.stride_h + p.k_h;
    let span_w = (TILE - 1u) * p.stride_w + p.k_w;
    let plane = ic * p.in_h * p.in_w;
    for (var i = lid.y * TILE + lid.x; i < span_h * span_w; i = i + TILE * TILE) {
        let iy = iy0 + i32(i / span_w);
        let ix = ix0 + i32(i % span_w);
        var v = 0.0;
        if (iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w)) {
            v = f32(x[plane + u32(iy) * p.in_w + u32(ix)]);
        }
        window[i] = v;
    }
    workgroupBarrier();
    let oy = oy0 + lid.y;
    let ox = ox0 + lid.x;
    if (oy >= p.out_h || ox >= p.out_w) { return; }
    var acc = f32(b[oc]);
    let wbase = oc * p.k_h * p.k_w;
    for (var ky = 0u; ky < p.k_h; ky = ky + 1u) {
        let row = (lid.y * p.stride_h + ky) * span_w + lid.x * p.stride_w;
        for (var kx = 0u; kx < p.k_w; kx = kx + 1u) {
            acc = acc + f32(w[wbase + ky * p.k_w + kx]) * window[row + kx];
        }
    }
    y[(oc * p.out_h + oy) * p.out_w + ox] = Out(clamp(acc, p.act_min, p.act_max));
}
