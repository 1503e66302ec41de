//! Training objectives: SimCLR's NT-Xent on whole-view embeddings, its dense
//! (patch-level) form on corresponding cells of two views, the L2-SP anchor
//! that ties fine-tuned weights to where they started, and the margin that
//! pushes labelled defect cells away from the good ones in the features the
//! station scores with.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// Rows scaled to unit length.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-6);
    x / norm
}

/// NT-Xent over 2N embeddings where rows i and i + N are two views of one
/// image: each row's positive is its partner, the other 2N - 2 rows are negatives.
pub fn nt_xent(z: Tensor<2>, temperature: f32) -> Tensor<1> {
    let [rows, _] = z.dims();
    let n = rows / 2;
    let device = z.device();
    let z = l2_normalize(z);
    let sim = z.clone().matmul(z.transpose()) / temperature;
    // A row must not pick itself: its similarity is pushed far down.
    let sim = sim - Tensor::<2>::eye(rows, &device) * 1e4;
    let target: Vec<f32> = (0..rows).flat_map(|i| (0..rows).map(move |j| if j == (i + n) % rows { 1.0 } else { 0.0 })).collect();
    let target = Tensor::<2>::from_data(TensorData::new(target, [rows, rows]), &device);
    -(log_softmax(sim, 1) * target).sum() / rows as f32
}

/// InfoNCE between matched rows of `a` and `b` (row k of `a` and row k of
/// `b` are the same place seen in two views), symmetric.
pub fn dense_info_nce(a: Tensor<2>, b: Tensor<2>, temperature: f32) -> Tensor<1> {
    let [m, _] = a.dims();
    let device = a.device();
    let a = l2_normalize(a);
    let b = l2_normalize(b);
    let logits = a.matmul(b.transpose()) / temperature;
    let eye = Tensor::<2>::eye(m, &device);
    let ab = -(log_softmax(logits.clone(), 1) * eye.clone()).sum();
    let ba = -(log_softmax(logits.transpose(), 1) * eye).sum();
    (ab + ba) / (2 * m) as f32
}

/// Mean squared distance of the trainable parameters from `anchor`, per element.
pub fn l2_sp(params: &[Tensor<1>], anchor: &[Tensor<1>], trainable: &[bool]) -> Option<Tensor<1>> {
    let mut total: Option<Tensor<1>> = None;
    let mut count = 0usize;
    for ((p, a), &t) in params.iter().zip(anchor).zip(trainable) {
        if !t {
            continue;
        }
        count += p.dims()[0];
        let d = (p.clone() - a.clone()).powi_scalar(2).sum();
        total = Some(match total {
            Some(s) => s + d,
            None => d,
        });
    }
    total.map(|s| s / count.max(1) as f32)
}

/// Squared Euclidean distances between the rows of `a` (M x C) and `b` (K x C).
fn sq_distances(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    let aa = a.clone().powi_scalar(2).sum_dim(1);
    let bb = b.clone().powi_scalar(2).sum_dim(1).transpose();
    (aa + bb - a.matmul(b.transpose()) * 2.0).clamp_min(0.0)
}

/// Hinge on the nearest-good distance of defect cells, relative to the
/// nearest-good distance of good cells of the other view: a defect cell
/// should be at least `margin` times further from the good features than a
/// good cell is, which is what raises its anomaly score.
pub fn defect_margin(defects: Tensor<2>, good_a: Tensor<2>, good_b: Tensor<2>, margin: f32) -> Tensor<1> {
    let good_nn = sq_distances(good_a, good_b.clone()).min_dim(1).clamp_min(1e-6).sqrt().mean().detach().reshape([1, 1]);
    let defect_nn = sq_distances(defects, good_b).min_dim(1).clamp_min(1e-6).sqrt();
    (-(defect_nn / good_nn) + margin).clamp_min(0.0).mean()
}

/// Row indices as an Int tensor (for `select`).
pub fn indices(ix: &[usize], device: &Device) -> Tensor<1, Int> {
    Tensor::<1, Int>::from_data(TensorData::new(ix.iter().map(|&i| i as i64).collect::<Vec<_>>(), [ix.len()]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t2(rows: &[[f32; 2]]) -> Tensor<2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::<2>::from_data(TensorData::new(flat, [rows.len(), 2]), &Device::flex())
    }

    fn value(t: Tensor<1>) -> f32 {
        t.into_data().try_to_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn nt_xent_is_low_when_partners_agree_and_high_when_they_do_not() {
        // Two images, two views each: rows 0/2 and 1/3 are partners.
        let agree = value(nt_xent(t2(&[[1.0, 0.0], [0.0, 1.0], [1.0, 0.05], [0.05, 1.0]]), 0.1));
        let swapped = value(nt_xent(t2(&[[1.0, 0.0], [0.0, 1.0], [0.05, 1.0], [1.0, 0.05]]), 0.1));
        assert!(agree < 0.01, "{agree}");
        assert!(swapped > 5.0, "{swapped}");
    }

    #[test]
    fn dense_info_nce_prefers_matched_rows() {
        let a = t2(&[[1.0, 0.0], [0.0, 1.0]]);
        let good = value(dense_info_nce(a.clone(), t2(&[[1.0, 0.1], [0.1, 1.0]]), 0.2));
        let bad = value(dense_info_nce(a, t2(&[[0.1, 1.0], [1.0, 0.1]]), 0.2));
        assert!(good < bad, "{good} vs {bad}");
        // At chance, the loss is ln(rows).
        let flat = value(dense_info_nce(t2(&[[1.0, 0.0], [1.0, 0.0]]), t2(&[[1.0, 0.0], [1.0, 0.0]]), 0.2));
        assert!((flat - 2f32.ln()).abs() < 1e-5, "{flat}");
    }

    #[test]
    fn defect_margin_is_zero_once_defects_are_far_enough() {
        let good_a = t2(&[[0.0, 0.0], [1.0, 0.0]]);
        let good_b = t2(&[[0.0, 0.1], [1.0, 0.1]]);
        let near = value(defect_margin(t2(&[[0.0, 0.05]]), good_a.clone(), good_b.clone(), 2.0));
        let far = value(defect_margin(t2(&[[5.0, 5.0]]), good_a, good_b, 2.0));
        assert!(near > 1.0, "{near}");
        assert_eq!(far, 0.0);
    }
}
