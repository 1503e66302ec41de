// Exact nearest-neighbour distance from each patch to the memory bank, as a
// tiled GEMM with a running row minimum: d^2 = |q|^2 + |b|^2 - 2 q.b.
//
// `partial_min`: a workgroup of 16 x 16 threads owns 64 queries and one chunk
// of the bank (`chunk_rows` rows). It walks the chunk 64 bank rows at a time;
// the 64 x 64 block of dot products is register-blocked, 4 x 4 per thread
// (queries lid.y + 16a, rows lid.x + 16b), and the dims are walked in slices
// of 16 that go through workgroup memory stored k-major ([dim][row]), so each
// value is read from global memory once per block (the multiply is
// gemm_block.wgsl's `block_fma`). After each block, a
// thread folds |b|^2 - 2 q.b into its 4 running minima; at the end the 16
// threads sharing a query reduce in workgroup memory and write
// partial[chunk][query]. Grid: x = block of 64 queries, y = bank chunk.
// `finalize`: per query, the minimum over chunks plus |q|^2, square-rooted.

struct Params {
    queries: u32, rows: u32, dim: u32, chunk_rows: u32,
    chunks: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;        // queries x dim
@group(0) @binding(2) var<storage, read> bank: array<f32>;     // rows x dim
@group(0) @binding(3) var<storage, read> bank_sq: array<f32>;  // rows
@group(0) @binding(4) var<storage, read_write> partial: array<f32>; // chunks x queries
@group(0) @binding(5) var<storage, read_write> dist: array<f32>;    // queries

var<workgroup> mins: array<array<f32, 16>, 64>;    // [query in block][lid.x]

@compute @workgroup_size(16, 16)
fn partial_min(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let t = lid.y * 16u + lid.x;
    let q0 = wid.x * BLOCK;
    let row0 = wid.y * p.chunk_rows;
    let row_end = min(row0 + p.chunk_rows, p.rows);
    var best = array<f32, 4>(3.4e38, 3.4e38, 3.4e38, 3.4e38);
    for (var r0 = row0; r0 < row_end; r0 = r0 + BLOCK) {
        var acc: array<array<f32, 4>, 4>;
        for (var d0 = 0u; d0 < p.dim; d0 = d0 + SLICE) {
            // 64 x 16 values per tile, 256 threads: four each; consecutive
            // threads read consecutive dims of a row (coalesced).
            for (var k = 0u; k < 4u; k = k + 1u) {
                let e = t + k * 256u;
                let r = e / SLICE;
                let d = e % SLICE;
                let qq = q0 + r;
                a_tile[d][r] = select(0.0, q[qq * p.dim + d0 + d], qq < p.queries && d0 + d < p.dim);
                let br = r0 + r;
                b_tile[d][r] = select(0.0, bank[br * p.dim + d0 + d], br < row_end && d0 + d < p.dim);
            }
            workgroupBarrier();
            block_fma(&acc, lid);
            workgroupBarrier();
        }
        for (var b = 0u; b < 4u; b = b + 1u) {
            let row = r0 + lid.x + 16u * b;
            if (row < row_end) {
                let sq = bank_sq[row];
                for (var a = 0u; a < 4u; a = a + 1u) {
                    best[a] = min(best[a], sq - 2.0 * acc[a][b]);
                }
            }
        }
    }
    for (var a = 0u; a < 4u; a = a + 1u) {
        mins[lid.y + 16u * a][lid.x] = best[a];
    }
    workgroupBarrier();
    // 64 queries, 256 threads: the first 64 reduce one query each.
    if (t < BLOCK && q0 + t < p.queries) {
        var m = mins[t][0];
        for (var l = 1u; l < 16u; l = l + 1u) { m = min(m, mins[t][l]); }
        partial[wid.y * p.queries + q0 + t] = m;
    }
}

@compute @workgroup_size(64)
fn finalize(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.queries) { return; }
    var m = 3.4e38;
    for (var c = 0u; c < p.chunks; c = c + 1u) { m = min(m, partial[c * p.queries + i]); }
    var qsq = 0.0;
    for (var d = 0u; d < p.dim; d = d + 1u) { let v = q[i * p.dim + d]; qsq = qsq + v * v; }
    dist[i] = sqrt(max(qsq + m, 0.0));
}
