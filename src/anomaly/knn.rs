//! Exact nearest-neighbour distance from each patch to the memory bank.
//!
//! Brute force is a GEMM: |q - b|^2 = |q|^2 + |b|^2 - 2 q.b for every pair,
//! then a row minimum. For wide features the bank also gets a pruning index,
//! and the search stays exact:
//!
//! * the bank is centred and its top principal axes P (k of them) computed
//!   once; for a pair, |P(q-b)|^2 + (|Rq| - |Rb|)^2 <= |q - b|^2, where R is
//!   the residual off those axes (Pythagoras plus the reverse triangle
//!   inequality). Patch features are highly correlated, so with k = 24 of 120
//!   dims this lower bound is tight;
//! * that bound is itself a squared distance, between the (k+1)-dim points
//!   (Pq, |Rq|) and (Pb, |Rb|); so the bounds for all pairs are one GEMM
//!   (the `gemm` crate) of a fifth of the brute-force work;
//! * each query then takes the exact distance to its best-bound row, and
//!   computes exact distances only for rows whose bound is below the best
//!   distance found so far.
//!
//! Queries are split into blocks run in parallel on rayon's pool; each block
//! walks the bank in tiles, so the queries x bank matrix is never stored whole.

use std::cell::RefCell;

use nalgebra::{DMatrix, SymmetricEigen};
use rayon::prelude::*;

use super::coreset::sq_dist;

/// Queries per parallel task.
const QUERY_BLOCK: usize = 32;
/// Bank rows per GEMM tile.
const BANK_TILE: usize = 1024;
/// Principal axes kept for the lower bound.
const PRUNE_AXES: usize = 24;
/// Below this width the projection saves too little: plain brute force.
const PRUNE_MIN_DIM: usize = 2 * PRUNE_AXES;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Principal-axis projection of the bank, for lower bounds.
#[derive(Debug, Clone)]
struct PruneIndex {
    mean: Vec<f32>,
    /// `axes x dim`, orthonormal rows.
    basis: Vec<f32>,
    axes: usize,
    /// `rows x (axes + 1)`: the centred bank on the axes, then its norm off them.
    aug: Vec<f32>,
    /// Squared norm of each augmented row (= of the centred row).
    aug_sq: Vec<f32>,
    max_aug_sq: f32,
}

/// The bank, resident with what scoring needs.
#[derive(Debug, Clone)]
pub struct NearestNeighbour {
    bank: Vec<f32>,
    bank_sq: Vec<f32>,
    rows: usize,
    dim: usize,
    prune: Option<PruneIndex>,
}

/// `c[i][j] = a[i] . b[j]` for `n` rows of `a` and `m` rows of `b`, `d` values each.
fn dot_products(a: &[f32], n: usize, b: &[f32], m: usize, d: usize, c: &mut [f32]) {
    assert!(a.len() >= n * d && b.len() >= m * d && c.len() >= n * m);
    // SAFETY: the assert bounds every index the strides describe:
    // lhs n x d row-major, rhs = b^T (d x m, b row-major), dst n x m row-major.
    unsafe {
        gemm::gemm(
            n,
            m,
            d,
            c.as_mut_ptr(),
            1,
            m as isize,
            false,
            a.as_ptr(),
            1,
            d as isize,
            b.as_ptr(),
            d as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

impl PruneIndex {
    fn build(bank: &[f32], rows: usize, dim: usize) -> PruneIndex {
        let mut mean = vec![0f64; dim];
        for r in bank.chunks_exact(dim) {
            mean.iter_mut().zip(r).for_each(|(m, v)| *m += *v as f64);
        }
        let mean: Vec<f32> = mean.iter().map(|m| (m / rows as f64) as f32).collect();
        let centred: Vec<f32> = bank.chunks_exact(dim).flat_map(|r| r.iter().zip(&mean).map(|(v, m)| v - m)).collect();
        // Covariance (up to scale) as centred^T centred, via the same GEMM.
        let transposed: Vec<f32> = (0..dim).flat_map(|j| (0..rows).map(move |i| (i, j))).map(|(i, j)| centred[i * dim + j]).collect();
        let mut cov = vec![0f32; dim * dim];
        dot_products(&transposed, dim, &transposed, dim, rows, &mut cov);
        let eig = SymmetricEigen::new(DMatrix::from_row_slice(dim, dim, &cov).map(|v| v as f64));
        let mut order: Vec<usize> = (0..dim).collect();
        order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
        let axes = PRUNE_AXES.min(dim);
        let basis: Vec<f32> = order[..axes]
            .iter()
            .flat_map(|&c| (0..dim).map(move |r| (r, c)))
            .map(|(r, c)| eig.eigenvectors[(r, c)] as f32)
            .collect();
        let aug = augment(&centred, rows, dim, &basis, axes);
        let aug_sq: Vec<f32> = aug.chunks_exact(axes + 1).map(|p| p.iter().map(|v| v * v).sum()).collect();
        let max_aug_sq = aug_sq.iter().copied().fold(0.0, f32::max);
        PruneIndex { mean, basis, axes, aug, aug_sq, max_aug_sq }
    }
}

/// Rows of `centred` (`n x dim`) as `n x (axes + 1)`: coordinates on the axes,
/// then the norm of what the axes leave out.
fn augment(centred: &[f32], n: usize, dim: usize, basis: &[f32], axes: usize) -> Vec<f32> {
    let mut proj = vec![0f32; n * axes];
    dot_products(centred, n, basis, axes, dim, &mut proj);
    let mut aug = Vec::with_capacity(n * (axes + 1));
    for (c, p) in centred.chunks_exact(dim).zip(proj.chunks_exact(axes)) {
        let full: f32 = c.iter().map(|v| v * v).sum();
        let on_axes: f32 = p.iter().map(|v| v * v).sum();
        aug.extend_from_slice(p);
        aug.push((full - on_axes).max(0.0).sqrt());
    }
    aug
}

impl NearestNeighbour {
    /// `bank` holds `rows` rows of `dim` values.
    pub fn new(bank: Vec<f32>, dim: usize) -> NearestNeighbour {
        assert!(dim > 0 && bank.len() % dim == 0 && !bank.is_empty(), "bank must be a non-empty rows x dim matrix");
        let rows = bank.len() / dim;
        let bank_sq = bank.chunks_exact(dim).map(|r| r.iter().map(|v| v * v).sum()).collect();
        let prune = (dim >= PRUNE_MIN_DIM && rows >= 4 * BANK_TILE).then(|| PruneIndex::build(&bank, rows, dim));
        NearestNeighbour { bank, bank_sq, rows, dim, prune }
    }

    /// The same bank searched by brute force only (the reference for tests and benchmarks).
    pub fn brute_force(bank: Vec<f32>, dim: usize) -> NearestNeighbour {
        let mut nn = Self::new(bank, dim);
        nn.prune = None;
        nn
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn bank(&self) -> &[f32] {
        &self.bank
    }

    /// L2 distance from each query row to its nearest bank row.
    pub fn min_distances(&self, queries: &[f32], out: &mut [f32]) {
        self.min_distances_masked(queries, out, None)
    }

    /// As [`Self::min_distances`], ignoring bank rows whose `sources[row] == skip`
    /// (leave-one-image-out calibration). With every row skipped, the result is +inf.
    pub fn min_distances_excluding(&self, queries: &[f32], out: &mut [f32], sources: &[u32], skip: u32) {
        assert_eq!(sources.len(), self.rows);
        self.min_distances_masked(queries, out, Some((sources, skip)))
    }

    fn min_distances_masked(&self, queries: &[f32], out: &mut [f32], mask: Option<(&[u32], u32)>) {
        let d = self.dim;
        assert_eq!(queries.len(), out.len() * d, "queries must be out.len() rows of {d}");
        out.par_chunks_mut(QUERY_BLOCK).enumerate().for_each(|(b, out_block)| {
            let q = &queries[b * QUERY_BLOCK * d..(b * QUERY_BLOCK + out_block.len()) * d];
            SCRATCH.with_borrow_mut(|scratch| match &self.prune {
                Some(p) => self.pruned_block(p, q, out_block, mask, scratch),
                None => self.brute_force_block(q, out_block, mask, scratch),
            });
        });
    }

    fn brute_force_block(&self, q: &[f32], out: &mut [f32], mask: Option<(&[u32], u32)>, scratch: &mut Vec<f32>) {
        let (n, d) = (out.len(), self.dim);
        scratch.resize(QUERY_BLOCK * BANK_TILE, 0.0);
        let mut best = [f32::INFINITY; QUERY_BLOCK];
        for t0 in (0..self.rows).step_by(BANK_TILE) {
            let tile = BANK_TILE.min(self.rows - t0);
            let g = &mut scratch[..n * tile];
            dot_products(q, n, &self.bank[t0 * d..(t0 + tile) * d], tile, d, g);
            let sq = &self.bank_sq[t0..t0 + tile];
            for (i, best_i) in best.iter_mut().enumerate().take(n) {
                let row = &g[i * tile..(i + 1) * tile];
                let mut m = *best_i;
                for (j, (&dot, &bsq)) in row.iter().zip(sq).enumerate() {
                    if mask.is_none_or(|(src, skip)| src[t0 + j] != skip) {
                        m = m.min(bsq - 2.0 * dot);
                    }
                }
                *best_i = m;
            }
        }
        for (i, o) in out.iter_mut().enumerate() {
            let qsq: f32 = q[i * d..(i + 1) * d].iter().map(|v| v * v).sum();
            // Rounding can push a true zero slightly negative.
            *o = (qsq + best[i]).max(0.0).sqrt();
        }
    }

    fn pruned_block(&self, p: &PruneIndex, q: &[f32], out: &mut [f32], mask: Option<(&[u32], u32)>, scratch: &mut Vec<f32>) {
        let (n, d, rows) = (out.len(), self.dim, self.rows);
        let ka = p.axes + 1;
        let centred: Vec<f32> = q.chunks_exact(d).flat_map(|r| r.iter().zip(&p.mean).map(|(v, m)| v - m)).collect();
        let qa = augment(&centred, n, d, &p.basis, p.axes);
        let qa_sq: Vec<f32> = qa.chunks_exact(ka).map(|v| v.iter().map(|x| x * x).sum()).collect();

        // Lower bounds for every pair: the GEMM writes dot products straight
        // into the bound matrix, which is then turned into squared distances
        // in place while tracking each query's smallest bound.
        scratch.resize(QUERY_BLOCK * rows, 0.0);
        let lb = &mut scratch[..n * rows];
        let mut best_row = [usize::MAX; QUERY_BLOCK];
        let mut best_lb = [f32::INFINITY; QUERY_BLOCK];
        for t0 in (0..rows).step_by(BANK_TILE) {
            let tile = BANK_TILE.min(rows - t0);
            let b = &p.aug[t0 * ka..(t0 + tile) * ka];
            // SAFETY: dst is the n x tile block at column t0 of the n x rows
            // matrix `lb` (row stride `rows`); lhs n x ka, rhs b^T ka x tile.
            unsafe {
                gemm::gemm(
                    n, tile, ka, lb.as_mut_ptr().add(t0), 1, rows as isize, false, qa.as_ptr(), 1, ka as isize,
                    b.as_ptr(), ka as isize, 1, 0.0, 1.0, false, false, false, gemm::Parallelism::None,
                );
            }
            let bsq = &p.aug_sq[t0..t0 + tile];
            for i in 0..n {
                let row = &mut lb[i * rows + t0..i * rows + t0 + tile];
                let m = to_sq_distances(row, qa_sq[i], bsq);
                match mask {
                    None if m < best_lb[i] => {
                        best_lb[i] = m;
                        best_row[i] = t0 + row.iter().position(|&v| v == m).expect("the minimum is in the row");
                    }
                    None => {}
                    Some((src, skip)) => {
                        for (j, &v) in row.iter().enumerate() {
                            if v < best_lb[i] && src[t0 + j] != skip {
                                (best_lb[i], best_row[i]) = (v, t0 + j);
                            }
                        }
                    }
                }
            }
        }

        // Exact distances only where the bound allows a closer row.
        for i in 0..n {
            if best_row[i] == usize::MAX {
                out[i] = f32::INFINITY;
                continue;
            }
            let qi = &q[i * d..(i + 1) * d];
            let exact = |j: usize| sq_dist(qi, &self.bank[j * d..(j + 1) * d]);
            let mut best = exact(best_row[i]);
            // The bounds come from an expansion; allow for its rounding.
            let slack = 1e-4 * (qa_sq[i] + p.max_aug_sq) + 1e-6;
            // Candidates are rare: test 16 bounds at a time, look closer only on a hit.
            for (c, chunk) in lb[i * rows..(i + 1) * rows].chunks(16).enumerate() {
                if !any_below(chunk, best + slack) {
                    continue;
                }
                for (o, &bound) in chunk.iter().enumerate() {
                    let j = c * 16 + o;
                    if bound < best + slack && j != best_row[i] && mask.is_none_or(|(src, skip)| src[j] != skip) {
                        best = best.min(exact(j));
                    }
                }
            }
            out[i] = best.sqrt();
        }
    }
}

/// Whether any value is below `t` (branch-free, so that it vectorises).
fn any_below(values: &[f32], t: f32) -> bool {
    values.iter().fold(0u32, |acc, &v| acc | (v < t) as u32) != 0
}

/// `row[j] <- a + b_sq[j] - 2 row[j]` (dot products to squared distances);
/// returns the row's minimum. Sixteen lanes so that both loops vectorise.
fn to_sq_distances(row: &mut [f32], a: f32, b_sq: &[f32]) -> f32 {
    let mut lanes = [f32::INFINITY; 16];
    let mut rc = row.chunks_exact_mut(16);
    let mut bc = b_sq.chunks_exact(16);
    for (r, b) in (&mut rc).zip(&mut bc) {
        for l in 0..16 {
            r[l] = a + b[l] - 2.0 * r[l];
            lanes[l] = lanes[l].min(r[l]);
        }
    }
    let mut m = lanes.iter().copied().fold(f32::INFINITY, f32::min);
    for (r, b) in rc.into_remainder().iter_mut().zip(bc.remainder()) {
        *r = a + b - 2.0 * *r;
        m = m.min(*r);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn naive(q: &[f32], b: &[f32], d: usize) -> Vec<f32> {
        q.chunks(d)
            .map(|qr| {
                b.chunks(d)
                    .map(|br| qr.iter().zip(br).map(|(x, y)| (x - y) * (x - y)).sum::<f32>())
                    .fold(f32::INFINITY, f32::min)
                    .sqrt()
            })
            .collect()
    }

    /// Correlated data like patch features: a few strong directions plus noise.
    fn clustered(rng: &mut ChaCha8Rng, rows: usize, d: usize) -> Vec<f32> {
        let dirs: Vec<f32> = (0..6 * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        (0..rows)
            .flat_map(|_| {
                let w: Vec<f32> = (0..6).map(|_| rng.random_range(-3.0..3.0)).collect();
                (0..d).map(|j| (0..6).map(|t| w[t] * dirs[t * d + j]).sum::<f32>() + rng.random_range(-0.1..0.1)).collect::<Vec<_>>()
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn brute_force_matches_naive_search(n in 1usize..80, m in 1usize..2100, d in 1usize..40, seed in 0u64..1000) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let q: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..m * d).map(|_| rng.random_range(-1.0..1.0)).collect();
            let nn = NearestNeighbour::new(b.clone(), d);
            let mut out = vec![0.0; n];
            nn.min_distances(&q, &mut out);
            for (got, want) in out.iter().zip(naive(&q, &b, d)) {
                prop_assert!((got - want).abs() <= 1e-3 * (1.0 + want), "got {got}, want {want}");
            }
        }

        #[test]
        fn pruned_search_is_exact(n in 1usize..70, m in 4096usize..6000, d in 64usize..130, seed in 0u64..1000, uniform in any::<bool>()) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (b, q) = if uniform {
                ((0..m * d).map(|_| rng.random_range(-1.0..1.0)).collect(), (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect())
            } else {
                (clustered(&mut rng, m, d), clustered(&mut rng, n, d))
            };
            let nn = NearestNeighbour::new(b.clone(), d);
            prop_assert!(nn.prune.is_some());
            let mut out = vec![0.0; n];
            nn.min_distances(&q, &mut out);
            for (got, want) in out.iter().zip(naive(&q, &b, d)) {
                prop_assert!((got - want).abs() <= 1e-3 * (1.0 + want), "got {got}, want {want}");
            }
        }
    }

    #[test]
    fn a_bank_row_is_at_distance_zero_from_itself() {
        let b: Vec<f32> = (0..300).map(|v| (v as f32 * 0.37).sin() * 10.0).collect();
        let nn = NearestNeighbour::new(b.clone(), 3);
        let mut out = vec![1.0; 100];
        nn.min_distances(&b, &mut out);
        assert!(out.iter().all(|&v| v < 1e-2), "{out:?}");
    }

    #[test]
    fn excluding_a_source_skips_its_rows_in_both_searches() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let d = 96;
        let b = clustered(&mut rng, 5000, d);
        let sources: Vec<u32> = (0..5000).map(|i| (i % 7) as u32).collect();
        let q = b[..10 * d].to_vec(); // rows 0..10 come from sources 0..7, 0..3
        let pruned = NearestNeighbour::new(b.clone(), d);
        let brute = NearestNeighbour::brute_force(b.clone(), d);
        let (mut a, mut c) = (vec![0.0; 10], vec![0.0; 10]);
        pruned.min_distances_excluding(&q, &mut a, &sources, 0);
        brute.min_distances_excluding(&q, &mut c, &sources, 0);
        for i in 0..10 {
            // Brute force rounds a true 0 up to ~0.01 (expansion); the pruned search is exact there.
            assert!((a[i] - c[i]).abs() < 2e-2 + 1e-3 * c[i], "row {i}: {} vs {}", a[i], c[i]);
        }
        assert!(a[0] > 0.0, "row 0 is from source 0, so not its own neighbour");
        assert!(a[1] < 1e-2, "row 1 is from source 1 and in the bank");
        let tiny = NearestNeighbour::new(vec![0.0, 0.0, 10.0, 0.0], 2);
        let mut out = [0.0];
        tiny.min_distances_excluding(&[0.0, 0.0], &mut out, &[7, 7], 7);
        assert!(out[0].is_infinite());
    }
}

