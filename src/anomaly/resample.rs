//! 1-D resampling tables shared by the preprocessor, the feature upsampler and
//! the map upsampler: each output sample is a weighted sum of a short run of
//! input samples. Built once per geometry, applied per frame.

/// Weights for resizing an axis of `input` samples to `output` samples.
#[derive(Debug, Clone, PartialEq)]
pub struct ResampleTable {
    pub input: usize,
    pub output: usize,
    /// Per output sample: first input index and number of taps.
    pub spans: Vec<(u32, u32)>,
    /// Per output sample: `taps` weights, padded to `max_taps`.
    pub weights: Vec<f32>,
    pub max_taps: usize,
}

impl ResampleTable {
    /// Pillow-style antialiased bilinear (triangle filter whose support widens
    /// by the downscale factor; plain bilinear with half-pixel centres when
    /// upscaling). This is what `Image.resize(BILINEAR)` does.
    pub fn antialiased_bilinear(input: usize, output: usize) -> ResampleTable {
        assert!(input > 0 && output > 0);
        let scale = input as f64 / output as f64;
        let filter_scale = scale.max(1.0);
        let support = filter_scale; // triangle support 1.0, widened
        let mut rows: Vec<(u32, Vec<f32>)> = Vec::with_capacity(output);
        for o in 0..output {
            let center = (o as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(input);
            let mut w: Vec<f64> = (lo..hi)
                .map(|i| {
                    let x = (i as f64 - center + 0.5) / filter_scale;
                    (1.0 - x.abs()).max(0.0)
                })
                .collect();
            let sum: f64 = w.iter().sum();
            if sum > 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            }
            // Trim zero weights at the ends so spans stay tight.
            let first = w.iter().position(|&v| v != 0.0).unwrap_or(0);
            let last = w.iter().rposition(|&v| v != 0.0).map_or(first + 1, |p| p + 1);
            rows.push(((lo + first) as u32, w[first..last].iter().map(|&v| v as f32).collect()));
        }
        Self::from_rows(input, output, rows)
    }

    /// Bilinear with half-pixel centres and edge clamping, no antialiasing
    /// (ONNX Resize `half_pixel`, torch `align_corners=False`).
    pub fn bilinear_half_pixel(input: usize, output: usize) -> ResampleTable {
        assert!(input > 0 && output > 0);
        let scale = input as f64 / output as f64;
        let rows = (0..output)
            .map(|o| {
                let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(input - 1);
                let i1 = (i0 + 1).min(input - 1);
                let w1 = (src - i0 as f64) as f32;
                if i1 == i0 || w1 == 0.0 { (i0 as u32, vec![1.0]) } else { (i0 as u32, vec![1.0 - w1, w1]) }
            })
            .collect();
        Self::from_rows(input, output, rows)
    }

    fn from_rows(input: usize, output: usize, rows: Vec<(u32, Vec<f32>)>) -> ResampleTable {
        let max_taps = rows.iter().map(|r| r.1.len()).max().unwrap_or(1).max(1);
        let mut spans = Vec::with_capacity(output);
        let mut weights = vec![0f32; output * max_taps];
        for (o, (start, w)) in rows.into_iter().enumerate() {
            spans.push((start, w.len() as u32));
            weights[o * max_taps..o * max_taps + w.len()].copy_from_slice(&w);
        }
        ResampleTable { input, output, spans, weights, max_taps }
    }

    /// Output sample `o` from `get(i)`.
    #[inline]
    pub fn apply(&self, o: usize, get: impl Fn(usize) -> f32) -> f32 {
        let (start, n) = self.spans[o];
        let w = &self.weights[o * self.max_taps..];
        let mut acc = 0.0;
        for t in 0..n as usize {
            acc += w[t] * get(start as usize + t);
        }
        acc
    }
}

/// Resizes a single-channel `ih x iw` plane to `oh x ow` with the two tables;
/// `tmp` holds `ih * ow` values between the passes.
pub fn resize_plane(src: &[f32], iw: usize, rows: &ResampleTable, cols: &ResampleTable, tmp: &mut [f32], dst: &mut [f32]) {
    let (ih, ow) = (rows.input, cols.output);
    debug_assert_eq!(cols.input, iw);
    for y in 0..ih {
        let line = &src[y * iw..(y + 1) * iw];
        for x in 0..ow {
            tmp[y * ow + x] = cols.apply(x, |i| line[i]);
        }
    }
    for y in 0..rows.output {
        for x in 0..ow {
            dst[y * ow + x] = rows.apply(y, |i| tmp[i * ow + x]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_stay_in_range() {
        for (i, o) in [(256, 224), (1000, 224), (224, 224), (14, 28), (3, 7), (451, 256)] {
            for t in [ResampleTable::antialiased_bilinear(i, o), ResampleTable::bilinear_half_pixel(i, o)] {
                for k in 0..o {
                    let (s, n) = t.spans[k];
                    let sum: f32 = t.weights[k * t.max_taps..k * t.max_taps + n as usize].iter().sum();
                    assert!((sum - 1.0).abs() < 1e-5, "{i}->{o} row {k}: sum {sum}");
                    assert!((s + n) as usize <= i, "{i}->{o} row {k} reads past the end");
                }
            }
        }
    }

    #[test]
    fn half_pixel_upsample_matches_hand_values() {
        // 2 -> 4: output centres at -0.25, 0.25, 0.75, 1.25 in input units.
        let t = ResampleTable::bilinear_half_pixel(2, 4);
        let v: Vec<f32> = (0..4).map(|o| t.apply(o, |i| [10.0, 20.0][i])).collect();
        assert_eq!(v, vec![10.0, 12.5, 17.5, 20.0]);
    }

    #[test]
    fn same_size_is_identity() {
        let src: Vec<f32> = (0..35).map(|v| v as f32).collect();
        let r = ResampleTable::antialiased_bilinear(5, 5);
        let c = ResampleTable::antialiased_bilinear(7, 7);
        let mut tmp = vec![0.0; 35];
        let mut dst = vec![0.0; 35];
        resize_plane(&src, 7, &r, &c, &mut tmp, &mut dst);
        assert_eq!(src, dst);
    }

    #[test]
    fn downscale_by_two_widens_the_triangle_like_pillow() {
        // Pillow BILINEAR 4 -> 2, first output: centre 1.0, support 2, taps at
        // inputs 0, 1, 2 with triangle weights 0.75, 0.75, 0.25 (input -1 is
        // outside), renormalised: 3/7, 3/7, 1/7.
        let t = ResampleTable::antialiased_bilinear(4, 2);
        assert_eq!(t.spans[0], (0, 3));
        let w = &t.weights[0..3];
        let expected = [3.0 / 7.0, 3.0 / 7.0, 1.0 / 7.0];
        assert!(w.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{w:?}");
    }
}
