//! Detection metrics: ROC curve and its area (ties counted as half), and the
//! confusion counts at a threshold.

use serde::Serialize;

/// Area under the ROC curve; `None` when one class is absent.
pub fn auroc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let curve = roc_curve(scores, positive)?;
    Some(curve.windows(2).map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0).sum())
}

/// ROC points (false positive rate, true positive rate) from (0,0) to (1,1),
/// one per distinct score; `None` when one class is absent.
pub fn roc_curve(scores: &[f32], positive: &[bool]) -> Option<Vec<(f64, f64)>> {
    assert_eq!(scores.len(), positive.len());
    let pos = positive.iter().filter(|&&p| p).count();
    let neg = positive.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if positive[order[i]] { tp += 1 } else { fp += 1 }
            i += 1;
        }
        points.push((fp as f64 / neg as f64, tp as f64 / pos as f64));
    }
    Some(points)
}

/// Image-level results at a threshold; NG (score > threshold) is the positive call.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Confusion {
    pub true_ng: usize,
    pub false_ng: usize,
    pub true_ok: usize,
    pub false_ok: usize,
}

impl Confusion {
    pub fn at(scores: &[f32], defective: &[bool], threshold: f32) -> Confusion {
        let mut c = Confusion { true_ng: 0, false_ng: 0, true_ok: 0, false_ok: 0 };
        for (&s, &d) in scores.iter().zip(defective) {
            match (s > threshold, d) {
                (true, true) => c.true_ng += 1,
                (true, false) => c.false_ng += 1,
                (false, false) => c.true_ok += 1,
                (false, true) => c.false_ok += 1,
            }
        }
        c
    }

    pub fn precision(&self) -> f64 {
        ratio(self.true_ng, self.true_ng + self.false_ng)
    }

    pub fn recall(&self) -> f64 {
        ratio(self.true_ng, self.true_ng + self.false_ok)
    }

    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }
    }

    /// Share of good parts called NG.
    pub fn false_reject_rate(&self) -> f64 {
        ratio(self.false_ng, self.false_ng + self.true_ok)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_random_and_inverted() {
        let l = [false, false, true, true];
        assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &l), Some(1.0));
        assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &l), Some(0.0));
        assert_eq!(auroc(&[0.5; 4], &l), Some(0.5));
        assert_eq!(auroc(&[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn matches_the_mann_whitney_count() {
        // pairs (pos, neg): count pos > neg, ties 0.5
        let s = [0.3, 0.7, 0.5, 0.5, 0.9, 0.1, 0.7];
        let l = [false, true, true, false, true, false, false];
        let mut wins = 0.0;
        let (mut np, mut nn) = (0, 0);
        for i in 0..7 {
            for j in 0..7 {
                if l[i] && !l[j] {
                    wins += if s[i] > s[j] { 1.0 } else if s[i] == s[j] { 0.5 } else { 0.0 };
                }
            }
            if l[i] { np += 1 } else { nn += 1 }
        }
        let want = wins / (np * nn) as f64;
        assert!((auroc(&s, &l).unwrap() - want).abs() < 1e-12);
    }

    #[test]
    fn confusion_counts() {
        let c = Confusion::at(&[0.1, 0.6, 0.7, 0.2], &[false, false, true, true], 0.5);
        assert_eq!(c, Confusion { true_ng: 1, false_ng: 1, true_ok: 1, false_ok: 1 });
        assert_eq!(c.f1(), 0.5);
        assert_eq!(c.false_reject_rate(), 0.5);
    }
}
