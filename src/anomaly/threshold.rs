//! Threshold calibration from scores of held-out good images.

use serde::{Deserialize, Serialize};

/// How the threshold was set, stored in the bank header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Target fraction of good parts rejected, before the margin.
    pub false_reject_rate: f32,
    /// Relative margin added on top of the quantile.
    pub margin: f32,
    /// Number of good scores used.
    pub samples: usize,
    /// Quantile of the good scores at `1 - false_reject_rate`.
    pub quantile_score: f32,
    pub max_good_score: f32,
    pub mean_good_score: f32,
}

/// Linear-interpolated quantile (numpy's default) of unsorted values.
pub fn quantile(values: &[f32], q: f32) -> f32 {
    assert!(!values.is_empty());
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    let pos = q.clamp(0.0, 1.0) as f64 * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let t = (pos - lo as f64) as f32;
    v[lo] + (v[hi] - v[lo]) * t
}

/// Threshold = quantile(good, 1 - false_reject_rate) * (1 + margin).
pub fn calibrate(good_scores: &[f32], false_reject_rate: f32, margin: f32) -> (f32, Calibration) {
    let q = quantile(good_scores, 1.0 - false_reject_rate);
    let cal = Calibration {
        false_reject_rate,
        margin,
        samples: good_scores.len(),
        quantile_score: q,
        max_good_score: good_scores.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        mean_good_score: good_scores.iter().sum::<f32>() / good_scores.len() as f32,
    };
    (q * (1.0 + margin), cal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_like_numpy() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert!((quantile(&v, 0.9) - 3.7).abs() < 1e-6);
    }

    #[test]
    fn margin_scales_the_quantile() {
        let scores: Vec<f32> = (1..=100).map(|v| v as f32).collect();
        let (t, c) = calibrate(&scores, 0.0, 0.1);
        assert!((t - 110.0).abs() < 1e-4);
        assert_eq!(c.max_good_score, 100.0);
        assert_eq!(c.samples, 100);
    }
}
