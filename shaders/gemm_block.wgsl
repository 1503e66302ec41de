// The 64 x 64 register-blocked multiply shared by conv.wgsl's `pointwise`
// and knn.wgsl's `partial_min` (prepended to both at load time: WGSL has no
// includes). A workgroup of 16 x 16 threads stages a 16-deep slice of two
// operands in workgroup memory, k-major ([k][row in block]), and each thread
// accumulates a 4 x 4 block of products: rows lid.y + 16a of `a_tile` times
// rows lid.x + 16b of `b_tile`. 16 multiply-adds per pair of reads.

const BLOCK: u32 = 64u;
const SLICE: u32 = 16u;
var<workgroup> a_tile: array<array<f32, 64>, 16>;
var<workgroup> b_tile: array<array<f32, 64>, 16>;

fn block_fma(acc: ptr<function, array<array<f32, 4>, 4>>, lid: vec3<u32>) {
    for (var k = 0u; k < SLICE; k = k + 1u) {
        var av: array<f32, 4>;
        var bv: array<f32, 4>;
        for (var i = 0u; i < 4u; i = i + 1u) {
            av[i] = a_tile[k][lid.y + 16u * i];
            bv[i] = b_tile[k][lid.x + 16u * i];
        }
        for (var i = 0u; i < 4u; i = i + 1u) {
            for (var j = 0u; j < 4u; j = j + 1u) {
                (*acc)[i][j] = fma(av[i], bv[j], (*acc)[i][j]);
            }
        }
    }
}
