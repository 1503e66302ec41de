//! Exact nearest-neighbour distance from each patch to the memory bank.
//!
//! The squared distance is |q|^2 + |b|^2 - 2 q.b, so the work is one GEMM of
//! the queries against the bank (done by the `gemm` crate) followed by a row
//! minimum. Queries are split into blocks run in parallel on rayon's pool; each
//! block walks the bank in tiles that stay in cache, so the full
//! queries x bank matrix is never materialised.

use std::cell::RefCell;

use rayon::prelude::*;

/// Queries per parallel task.
const QUERY_BLOCK: usize = 32;
/// Bank rows per GEMM tile.
const BANK_TILE: usize = 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The bank, resident with its squared norms.
#[derive(Debug, Clone)]
pub struct NearestNeighbour {
    bank: Vec<f32>,
    bank_sq: Vec<f32>,
    rows: usize,
    dim: usize,
}

impl NearestNeighbour {
    /// `bank` holds `rows` rows of `dim` values.
    pub fn new(bank: Vec<f32>, dim: usize) -> NearestNeighbour {
        assert!(dim > 0 && bank.len() % dim == 0 && !bank.is_empty(), "bank must be a non-empty rows x dim matrix");
        let rows = bank.len() / dim;
        let bank_sq = bank.chunks_exact(dim).map(|r| r.iter().map(|v| v * v).sum()).collect();
        NearestNeighbour { bank, bank_sq, rows, dim }
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
            SCRATCH.with_borrow_mut(|scratch| self.block(q, out_block, mask, scratch));
        });
    }

    fn block(&self, q: &[f32], out: &mut [f32], mask: Option<(&[u32], u32)>, scratch: &mut Vec<f32>) {
        let (n, d) = (out.len(), self.dim);
        scratch.resize(QUERY_BLOCK * BANK_TILE, 0.0);
        let mut best = [f32::INFINITY; QUERY_BLOCK];
        for t0 in (0..self.rows).step_by(BANK_TILE) {
            let tile = BANK_TILE.min(self.rows - t0);
            let g = &mut scratch[..n * tile];
            dot_products(q, n, &self.bank[t0 * d..(t0 + tile) * d], tile, d, g);
            for (i, best_i) in best.iter_mut().enumerate().take(n) {
                let row = &g[i * tile..(i + 1) * tile];
                let sq = &self.bank_sq[t0..t0 + tile];
                let mut m = *best_i;
                match mask {
                    None => {
                        for (&dot, &bsq) in row.iter().zip(sq) {
                            m = m.min(bsq - 2.0 * dot);
                        }
                    }
                    Some((sources, skip)) => {
                        for (j, (&dot, &bsq)) in row.iter().zip(sq).enumerate() {
                            if sources[t0 + j] != skip {
                                m = m.min(bsq - 2.0 * dot);
                            }
                        }
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
}

/// `g[i][j] = q[i] . b[j]` for `n` query rows and `m` bank rows of `d` values.
fn dot_products(q: &[f32], n: usize, b: &[f32], m: usize, d: usize, g: &mut [f32]) {
    assert!(q.len() >= n * d && b.len() >= m * d && g.len() >= n * m);
    // SAFETY: the asserts above bound every index the strides describe:
    // lhs n x d row-major, rhs = b^T (d x m, b row-major), dst n x m row-major.
    unsafe {
        gemm::gemm(
            n,
            m,
            d,
            g.as_mut_ptr(),
            1,
            m as isize,
            false,
            q.as_ptr(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_naive_search(n in 1usize..80, m in 1usize..2100, d in 1usize..40, seed in 0u64..1000) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let q: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..m * d).map(|_| rng.random_range(-1.0..1.0)).collect();
            let nn = NearestNeighbour::new(b.clone(), d);
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
    fn excluding_a_source_skips_its_rows() {
        let b = vec![0.0, 0.0, 10.0, 0.0];
        let nn = NearestNeighbour::new(b, 2);
        let mut out = [0.0];
        nn.min_distances_excluding(&[0.0, 0.0], &mut out, &[7, 8], 7);
        assert!((out[0] - 10.0).abs() < 1e-5);
        nn.min_distances_excluding(&[0.0, 0.0], &mut out, &[7, 7], 7);
        assert!(out[0].is_infinite());
    }
}
