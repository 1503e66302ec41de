//! AdamW with a linear warm-up and cosine decay, and gradient clipping by
//! global norm. Kept here (not burn's optimizer) because its state is a few
//! flat tensors that the checkpoint stores in our own versioned format.

use burn::tensor::Tensor;

#[derive(Debug, Clone, Copy)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

/// Learning rate at `step` of `total`: linear warm-up over `warmup` steps, then cosine to zero.
pub fn schedule(peak: f32, step: usize, total: usize, warmup: usize) -> f32 {
    if step < warmup {
        return peak * (step + 1) as f32 / warmup as f32;
    }
    let span = total.saturating_sub(warmup).max(1);
    let t = ((step - warmup) as f32 / span as f32).min(1.0);
    peak * 0.5 * (1.0 + (std::f32::consts::PI * t).cos())
}

/// Scale factor that brings the global gradient norm down to `max_norm`, and the norm.
pub fn clip_factor(grads: &[Option<Tensor<1>>], max_norm: f32) -> (f32, f32) {
    let sq: f32 = grads
        .iter()
        .flatten()
        .map(|g| g.clone().powi_scalar(2).sum().into_data().try_to_vec::<f32>().expect("f32 gradients")[0])
        .sum();
    let norm = sq.sqrt();
    let factor = if max_norm > 0.0 && norm > max_norm { max_norm / norm } else { 1.0 };
    (factor, norm)
}

impl AdamW {
    /// One update of `p` with gradient `g` (already clipped) at 1-based step `t`.
    /// Weight decay is decoupled and applies only where `decay` (weights, not biases).
    #[allow(clippy::too_many_arguments)]
    pub fn update(&self, p: Tensor<1>, g: Tensor<1>, m: &mut Tensor<1>, v: &mut Tensor<1>, t: usize, lr: f32, decay: bool) -> Tensor<1> {
        *m = m.clone() * self.beta1 + g.clone() * (1.0 - self.beta1);
        *v = v.clone() * self.beta2 + g.powi_scalar(2) * (1.0 - self.beta2);
        let mhat = m.clone() / (1.0 - self.beta1.powi(t as i32));
        let vhat = v.clone() / (1.0 - self.beta2.powi(t as i32));
        let p = if decay { p.clone() - p * (lr * self.weight_decay) } else { p };
        p - mhat / (vhat.sqrt() + self.eps) * lr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert!((schedule(1.0, 0, 100, 10) - 0.1).abs() < 1e-6);
        assert!((schedule(1.0, 9, 100, 10) - 1.0).abs() < 1e-6);
        assert!((schedule(1.0, 10, 100, 10) - 1.0).abs() < 1e-6);
        assert!(schedule(1.0, 55, 100, 10) < 0.6);
        assert!(schedule(1.0, 100, 100, 10).abs() < 1e-6);
    }

    #[test]
    fn adamw_moves_against_the_gradient_by_about_lr() {
        let d = Device::flex();
        let t = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [2]), &d);
        let (mut m, mut v) = (t(vec![0.0, 0.0]), t(vec![0.0, 0.0]));
        let opt = AdamW { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
        let p = opt.update(t(vec![1.0, 1.0]), t(vec![2.0, -0.5]), &mut m, &mut v, 1, 0.1, true);
        let p = p.into_data().try_to_vec::<f32>().unwrap();
        assert!((p[0] - 0.9).abs() < 1e-4 && (p[1] - 1.1).abs() < 1e-4, "{p:?}");
        let (f, n) = clip_factor(&[Some(t(vec![3.0, 4.0])), None], 1.0);
        assert!((n - 5.0).abs() < 1e-5 && (f - 0.2).abs() < 1e-6);
    }
}
