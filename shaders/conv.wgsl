// Convolutions (parameters and bindings: conv_params.wgsl); every sum is
// accumulated in f32.
//
// `direct`: any kernel size, stride, padding and group count (depthwise
// windows too large for depthwise.wgsl's tile come here). One thread per
// output value, looping over the input channels of its group and the kernel
// window. Grid: x = output pixel (64 per
// workgroup), y = output channel.
//
// `pointwise`: 1x1, stride 1, one group: a GEMM out[oc][p] = W[oc][:] . X[:][p].
// A workgroup of 16 x 16 threads owns a 64 x 64 output block, 4 x 4 per
// thread in registers (channels lid.y + 16a, pixels lid.x + 16b); the input
// channels are walked in slices of 16 through workgroup memory stored
// k-major, so each weight and input value is read from global memory once
// per block (the multiply is gemm_block.wgsl's `block_fma`).
// Grid: x = block of 64 pixels, y = block of 64 output channels.

@compute @workgroup_size(64)
fn direct(@builtin(global_invocation_id) gid: vec3<u32>) {
    let pix = gid.x;
    let oc = gid.y;
    if (pix >= p.out_h * p.out_w || oc >= p.out_c) { return; }
    let oy = pix / p.out_w;
    let ox = pix % p.out_w;
    let cin_g = p.in_c / p.groups;
    let cout_g = p.out_c / p.groups;
    let g = oc / cout_g;
    var acc = f32(b[oc]);
    for (var ic = 0u; ic < cin_g; ic = ic + 1u) {
        let xc = (g * cin_g + ic) * p.in_h * p.in_w;
        let wc = (oc * cin_g + ic) * p.k_h * p.k_w;
        for (var ky = 0u; ky < p.k_h; ky = ky + 1u) {
            let iy = i32(oy * p.stride_h + ky) - i32(p.pad_t);
            if (iy < 0 || iy >= i32(p.in_h)) { continue; }
            for (var kx = 0u; kx < p.k_w; kx = kx + 1u) {
                let ix = i32(ox * p.stride_w + kx) - i32(p.pad_l);
                if (ix < 0 || ix >= i32(p.in_w)) { continue; }
                acc = acc + f32(w[wc + ky * p.k_w + kx]) * f32(x[xc + u32(iy) * p.in_w + u32(ix)]);
            }
        }
    }
    y[oc * p.out_h * p.out_w + pix] = Out(clamp(acc, p.act_min, p.act_max));
}

@compute @workgroup_size(16, 16)
fn pointwise(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let pixels = p.out_h * p.out_w;
    let t = lid.y * 16u + lid.x;
    let p0 = wid.x * BLOCK;
    let oc0 = wid.y * BLOCK;
    var acc: array<array<f32, 4>, 4>;  // [output channel lid.y + 16a][pixel lid.x + 16b]
    for (var k0 = 0u; k0 < p.in_c; k0 = k0 + SLICE) {
        for (var e4 = 0u; e4 < 4u; e4 = e4 + 1u) {
            let e = t + e4 * 256u;
            // W: consecutive threads read consecutive k of one output channel.
            let wr = e / SLICE;
            let wk = e % SLICE;
            a_tile[wk][wr] = select(0.0, f32(w[(oc0 + wr) * p.in_c + k0 + wk]), oc0 + wr < p.out_c && k0 + wk < p.in_c);
            // X: consecutive threads read consecutive pixels of one channel.
            let xk = e / BLOCK;
            let xp = e % BLOCK;
            b_tile[xk][xp] = select(0.0, f32(x[(k0 + xk) * pixels + p0 + xp]), k0 + xk < p.in_c && p0 + xp < pixels);
        }
        workgroupBarrier();
        block_fma(&acc, lid);
        workgroupBarrier();
    }
    for (var a = 0u; a < 4u; a = a + 1u) {
        let oc = oc0 + lid.y + 16u * a;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let pix = p0 + lid.x + 16u * j;
            if (pix < pixels && oc < p.out_c) {
                y[oc * pixels + pix] = Out(clamp(acc[a][j] + f32(b[oc]), p.act_min, p.act_max));
            }
        }
    }
}
