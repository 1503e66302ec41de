//! Patch scores -> anomaly map: bilinear upsample of the patch grid to the
//! model input resolution, then a separable Gaussian blur (scipy's
//! `gaussian_filter`: reflect mode, truncate at 4 sigma). The image score is
//! the maximum of the blurred map, so "NG" and "some pixel above threshold"
//! are the same statement and every NG verdict has at least one region.

use super::resample::{ResampleTable, resize_plane};

/// Normalised 1-D Gaussian, radius `round(truncate * sigma)`.
pub fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    if sigma <= 0.0 {
        return vec![1.0];
    }
    let radius = (4.0 * sigma + 0.5) as i32;
    let mut k: Vec<f32> = (-radius..=radius).map(|x| (-0.5 * (x as f32 / sigma).powi(2)).exp()).collect();
    let s: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    k
}

/// scipy "reflect" (half-sample symmetric): d c b a | a b c d | d c b a.
#[inline]
pub fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let period = 2 * n;
    let mut m = i.rem_euclid(period);
    if m >= n {
        m = period - 1 - m;
    }
    m as usize
}

/// Separable blur of an `h x w` plane in place; `tmp` holds `h * w` values.
/// Both passes are written as sums of shifted rows so that they vectorise.
pub fn blur(plane: &mut [f32], h: usize, w: usize, kernel: &[f32], tmp: &mut [f32]) {
    let r = kernel.len() / 2;
    let mut padded = vec![0f32; w + 2 * r];
    for y in 0..h {
        let row = &plane[y * w..(y + 1) * w];
        for (i, p) in padded.iter_mut().enumerate() {
            *p = row[reflect(i as isize - r as isize, w)];
        }
        let out = &mut tmp[y * w..(y + 1) * w];
        out.fill(0.0);
        for (t, &kv) in kernel.iter().enumerate() {
            for (o, &p) in out.iter_mut().zip(&padded[t..t + w]) {
                *o += kv * p;
            }
        }
    }
    for y in 0..h {
        let out = &mut plane[y * w..(y + 1) * w];
        out.fill(0.0);
        for (t, &kv) in kernel.iter().enumerate() {
            let src = reflect(y as isize + t as isize - r as isize, h);
            for (o, &p) in out.iter_mut().zip(&tmp[src * w..(src + 1) * w]) {
                *o += kv * p;
            }
        }
    }
}

/// Patch grid -> blurred map at a fixed output size; tables built once.
#[derive(Debug, Clone)]
pub struct MapMaker {
    pub grid_h: usize,
    pub grid_w: usize,
    pub height: usize,
    pub width: usize,
    rows: ResampleTable,
    cols: ResampleTable,
    kernel: Vec<f32>,
    tmp: Vec<f32>,
}

impl MapMaker {
    pub fn new(grid_h: usize, grid_w: usize, height: usize, width: usize, sigma: f32) -> MapMaker {
        MapMaker {
            grid_h,
            grid_w,
            height,
            width,
            rows: ResampleTable::bilinear_half_pixel(grid_h, height),
            cols: ResampleTable::bilinear_half_pixel(grid_w, width),
            kernel: gaussian_kernel(sigma),
            tmp: vec![0.0; height.max(grid_h) * width],
        }
    }

    pub fn kernel(&self) -> &[f32] {
        &self.kernel
    }

    /// Writes the map into `out` (`height * width`) and returns its maximum.
    pub fn run(&mut self, patch_scores: &[f32], out: &mut [f32]) -> f32 {
        assert_eq!(patch_scores.len(), self.grid_h * self.grid_w);
        assert_eq!(out.len(), self.height * self.width);
        resize_plane(patch_scores, self.grid_w, &self.rows, &self.cols, &mut self.tmp, out);
        blur(out, self.height, self.width, &self.kernel, &mut self.tmp);
        out.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_matches_scipy_mode() {
        let got: Vec<usize> = (-3..7).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, vec![2, 1, 0, 0, 1, 2, 3, 3, 2, 1]);
    }

    #[test]
    fn kernel_is_normalised_with_radius_four_sigma() {
        let k = gaussian_kernel(4.0);
        assert_eq!(k.len(), 33);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(k[16] > k[15] && (k[15] - k[17]).abs() < 1e-9);
    }

    #[test]
    fn blur_keeps_a_constant_plane_and_the_mass_of_an_impulse() {
        let k = gaussian_kernel(2.0);
        let mut p = vec![3.0; 20 * 30];
        let mut tmp = vec![0.0; 600];
        blur(&mut p, 20, 30, &k, &mut tmp);
        assert!(p.iter().all(|v| (v - 3.0).abs() < 1e-5));
        let mut imp = vec![0.0; 41 * 41];
        imp[20 * 41 + 20] = 1.0;
        let mut tmp = vec![0.0; 41 * 41];
        blur(&mut imp, 41, 41, &k, &mut tmp);
        assert!((imp.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert_eq!(imp.iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0, 20 * 41 + 20);
    }

    #[test]
    fn map_peak_sits_over_the_hot_patch() {
        let mut m = MapMaker::new(4, 4, 32, 32, 1.0);
        let mut scores = vec![0.0; 16];
        scores[2 * 4 + 1] = 5.0; // row 2, col 1 -> pixels y 16..24, x 8..16
        let mut out = vec![0.0; 32 * 32];
        let peak = m.run(&scores, &mut out);
        let at = out.iter().position(|&v| v == peak).unwrap();
        let (y, x) = (at / 32, at % 32);
        assert!((16..24).contains(&y) && (8..16).contains(&x), "peak at {y},{x}");
    }
}
