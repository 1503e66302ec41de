//! SimCLR's views of an image: random resized crop, horizontal flip, colour
//! jitter, random grayscale. Every random draw comes from a generator seeded
//! by (seed, step, image, view), so a run, and a resumed run, see the same views.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Side of the square crops fed to the encoder, in pixels (a multiple of 32).
    pub crop_size: usize,
    /// Crop area as a fraction of the image, drawn uniformly from this range.
    pub crop_scale: [f32; 2],
    /// Crop aspect ratio (width / height), drawn log-uniformly from this range.
    pub crop_ratio: [f32; 2],
    pub flip_p: f32,
    /// Probability that colour jitter is applied at all.
    pub jitter_p: f32,
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
    pub grayscale_p: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            // The station's input size: features are learnt at the scale they are scored at.
            crop_size: 224,
            crop_scale: [0.5, 1.0],
            crop_ratio: [0.75, 4.0 / 3.0],
            flip_p: 0.5,
            // SimCLR's brightness and contrast jitter: lighting changes on a line.
            // Its saturation, hue and grayscale teach invariance to exactly what
            // colour defects change: off by default (measured, README "Training").
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.0,
            hue: 0.0,
            grayscale_p: 0.0,
        }
    }
}

impl AugmentConfig {
    pub fn check(&self) -> Result<(), String> {
        let unit = |v: f32| (0.0..=1.0).contains(&v);
        if self.crop_size < 32 || !self.crop_size.is_multiple_of(32) {
            return Err(format!("augment.crop_size = {}: must be a multiple of 32, at least 32", self.crop_size));
        }
        if !(self.crop_scale[0] > 0.0 && self.crop_scale[0] <= self.crop_scale[1] && self.crop_scale[1] <= 1.0) {
            return Err(format!("augment.crop_scale = {:?}: needs 0 < min <= max <= 1", self.crop_scale));
        }
        if !(self.crop_ratio[0] > 0.0 && self.crop_ratio[0] <= self.crop_ratio[1]) {
            return Err(format!("augment.crop_ratio = {:?}: needs 0 < min <= max", self.crop_ratio));
        }
        for (k, v) in [("flip_p", self.flip_p), ("jitter_p", self.jitter_p), ("grayscale_p", self.grayscale_p), ("brightness", self.brightness), ("contrast", self.contrast), ("saturation", self.saturation)] {
            if !unit(v) {
                return Err(format!("augment.{k} = {v}: must be within 0..1"));
            }
        }
        if !(0.0..=0.5).contains(&self.hue) {
            return Err(format!("augment.hue = {}: must be within 0..0.5", self.hue));
        }
        Ok(())
    }
}

/// An image in [0, 1], 3 x size x size, as the station's preprocessing sees it.
#[derive(Debug, Clone)]
pub struct Cached {
    pub size: usize,
    pub rgb: Vec<f32>,
    /// Defect mask at the same size (defect images only).
    pub mask: Option<Vec<bool>>,
}

/// Where a view came from: the crop in image coordinates ([0, 1]) and the flip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewGeometry {
    pub x0: f32,
    pub y0: f32,
    pub w: f32,
    pub h: f32,
    pub flipped: bool,
}

impl ViewGeometry {
    /// The identity view (the whole image, unflipped).
    pub const WHOLE: ViewGeometry = ViewGeometry { x0: 0.0, y0: 0.0, w: 1.0, h: 1.0, flipped: false };

    /// Image coordinates of a point given in view coordinates ([0, 1]).
    pub fn to_image(&self, u: f32, v: f32) -> (f32, f32) {
        let u = if self.flipped { 1.0 - u } else { u };
        (self.x0 + u * self.w, self.y0 + v * self.h)
    }

    /// View coordinates of an image point, `None` outside the view.
    pub fn to_view(&self, x: f32, y: f32) -> Option<(f32, f32)> {
        let u = (x - self.x0) / self.w;
        let v = (y - self.y0) / self.h;
        if !(0.0..1.0).contains(&u) || !(0.0..1.0).contains(&v) {
            return None;
        }
        Some((if self.flipped { 1.0 - u } else { u }, v))
    }
}

/// A view ready for the encoder: 3 x crop x crop in [0, 1] (normalised later).
pub struct View {
    pub pixels: Vec<f32>,
    pub geometry: ViewGeometry,
    /// The mask cropped the same way (defect images only).
    pub mask: Option<Vec<bool>>,
}

/// The generator for one (step, image, view): independent of thread order.
pub fn rng_for(seed: u64, step: usize, image: usize, view: usize) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(((step as u64) << 24) ^ ((image as u64) << 2) ^ view as u64);
    r
}

fn sample_crop(cfg: &AugmentConfig, rng: &mut ChaCha8Rng) -> (f32, f32, f32, f32) {
    for _ in 0..10 {
        let area = rng.random_range(cfg.crop_scale[0]..=cfg.crop_scale[1]);
        let ratio = rng.random_range(cfg.crop_ratio[0].ln()..=cfg.crop_ratio[1].ln()).exp();
        let w = (area * ratio).sqrt();
        let h = (area / ratio).sqrt();
        if w <= 1.0 && h <= 1.0 {
            return (rng.random_range(0.0..=1.0 - w), rng.random_range(0.0..=1.0 - h), w, h);
        }
    }
    (0.0, 0.0, 1.0, 1.0)
}

/// Bilinear sample of channel `c` at image coordinates (x, y) in pixels.
fn bilinear(img: &Cached, c: usize, x: f32, y: f32) -> f32 {
    let s = img.size;
    let x = x.clamp(0.0, (s - 1) as f32);
    let y = y.clamp(0.0, (s - 1) as f32);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(s - 1), (y0 + 1).min(s - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let p = &img.rgb[c * s * s..(c + 1) * s * s];
    let top = p[y0 * s + x0] * (1.0 - fx) + p[y0 * s + x1] * fx;
    let bottom = p[y1 * s + x0] * (1.0 - fx) + p[y1 * s + x1] * fx;
    top * (1.0 - fy) + bottom * fy
}

fn gray(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// Hue rotation by `shift` turns (torchvision's adjust_hue, through HSV).
fn shift_hue(rgb: [f32; 3], shift: f32) -> [f32; 3] {
    let [r, g, b] = rgb;
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    if d <= 0.0 {
        return rgb;
    }
    let h = if max == r {
        ((g - b) / d).rem_euclid(6.0)
    } else if max == g {
        (b - r) / d + 2.0
    } else {
        (r - g) / d + 4.0
    } / 6.0;
    let h = (h + shift).rem_euclid(1.0) * 6.0;
    let (s, v) = (d / max, max);
    let i = h.floor();
    let f = h - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i as i32 % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// Colour jitter in torchvision's order (brightness, contrast, saturation, hue).
fn jitter(cfg: &AugmentConfig, rng: &mut ChaCha8Rng, px: &mut [f32], n: usize) {
    let factor = |rng: &mut ChaCha8Rng, amount: f32| rng.random_range((1.0 - amount).max(0.0)..=1.0 + amount);
    let b = factor(rng, cfg.brightness);
    let c = factor(rng, cfg.contrast);
    let s = factor(rng, cfg.saturation);
    let h = rng.random_range(-cfg.hue..=cfg.hue);
    for v in px.iter_mut() {
        *v = (*v * b).clamp(0.0, 1.0);
    }
    let mean_gray = (0..n).map(|i| gray(px[i], px[n + i], px[2 * n + i])).sum::<f32>() / n as f32;
    for v in px.iter_mut() {
        *v = (mean_gray + (*v - mean_gray) * c).clamp(0.0, 1.0);
    }
    for i in 0..n {
        let g = gray(px[i], px[n + i], px[2 * n + i]);
        let mut rgb = [0f32; 3];
        for (ch, out) in rgb.iter_mut().enumerate() {
            *out = (g + (px[ch * n + i] - g) * s).clamp(0.0, 1.0);
        }
        if h != 0.0 {
            rgb = shift_hue(rgb, h);
        }
        for (ch, v) in rgb.iter().enumerate() {
            px[ch * n + i] = *v;
        }
    }
}

/// One augmented view of `img`.
pub fn view(cfg: &AugmentConfig, img: &Cached, rng: &mut ChaCha8Rng) -> View {
    let (x0, y0, w, h) = sample_crop(cfg, rng);
    let flipped = rng.random_bool(cfg.flip_p as f64);
    let geometry = ViewGeometry { x0, y0, w, h, flipped };
    let out = cfg.crop_size;
    let n = out * out;
    let s = img.size as f32;
    let mut pixels = vec![0f32; 3 * n];
    let mut mask = img.mask.as_ref().map(|_| vec![false; n]);
    for oy in 0..out {
        for ox in 0..out {
            let (ix, iy) = geometry.to_image((ox as f32 + 0.5) / out as f32, (oy as f32 + 0.5) / out as f32);
            let (px, py) = (ix * s - 0.5, iy * s - 0.5);
            for c in 0..3 {
                pixels[c * n + oy * out + ox] = bilinear(img, c, px, py);
            }
            if let (Some(m), Some(src)) = (mask.as_mut(), img.mask.as_ref()) {
                let (mx, my) = ((ix * s) as usize, (iy * s) as usize);
                m[oy * out + ox] = src[my.min(img.size - 1) * img.size + mx.min(img.size - 1)];
            }
        }
    }
    if rng.random_bool(cfg.jitter_p as f64) {
        jitter(cfg, rng, &mut pixels, n);
    }
    if rng.random_bool(cfg.grayscale_p as f64) {
        for i in 0..n {
            let g = gray(pixels[i], pixels[n + i], pixels[2 * n + i]);
            for c in 0..3 {
                pixels[c * n + i] = g;
            }
        }
    }
    View { pixels, geometry, mask }
}

/// The whole image resized to `size` without augmentation (fine-tuning's
/// reference view and the parity checks).
pub fn plain(img: &Cached, size: usize) -> View {
    let cfg = AugmentConfig { crop_size: size, crop_scale: [1.0, 1.0], crop_ratio: [1.0, 1.0], flip_p: 0.0, jitter_p: 0.0, grayscale_p: 0.0, ..Default::default() };
    view(&cfg, img, &mut ChaCha8Rng::seed_from_u64(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(size: usize) -> Cached {
        let n = size * size;
        let mut rgb = vec![0f32; 3 * n];
        for i in 0..n {
            rgb[i] = (i % size) as f32 / size as f32;
            rgb[n + i] = (i / size) as f32 / size as f32;
            rgb[2 * n + i] = 0.5;
        }
        Cached { size, rgb, mask: None }
    }

    #[test]
    fn views_are_deterministic_under_the_seed_and_differ_across_streams() {
        let cfg = AugmentConfig { crop_size: 32, jitter_p: 0.8, grayscale_p: 0.2, ..Default::default() };
        let img = image(64);
        let a = view(&cfg, &img, &mut rng_for(7, 3, 1, 0));
        let b = view(&cfg, &img, &mut rng_for(7, 3, 1, 0));
        let c = view(&cfg, &img, &mut rng_for(7, 3, 1, 1));
        assert_eq!(a.pixels, b.pixels);
        assert_eq!(a.geometry, b.geometry);
        assert_ne!(a.pixels, c.pixels);
        assert!(a.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn geometry_round_trips_including_flips() {
        let g = ViewGeometry { x0: 0.2, y0: 0.1, w: 0.5, h: 0.6, flipped: true };
        let (x, y) = g.to_image(0.25, 0.5);
        let (u, v) = g.to_view(x, y).unwrap();
        assert!((u - 0.25).abs() < 1e-6 && (v - 0.5).abs() < 1e-6);
        assert!(g.to_view(0.1, 0.5).is_none());
    }

    #[test]
    fn plain_view_of_a_same_size_image_is_the_image() {
        let img = image(32);
        let v = plain(&img, 32);
        let err = v.pixels.iter().zip(&img.rgb).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-5, "max difference {err}");
    }

    #[test]
    fn hue_shift_by_a_full_turn_is_the_identity_and_gray_is_fixed() {
        let c = [0.8, 0.3, 0.1];
        let back = shift_hue(c, 1.0);
        assert!(c.iter().zip(back).all(|(a, b)| (a - b).abs() < 1e-5));
        assert_eq!(shift_hue([0.4, 0.4, 0.4], 0.3), [0.4, 0.4, 0.4]);
        let third = shift_hue([1.0, 0.0, 0.0], 1.0 / 3.0);
        assert!((third[1] - 1.0).abs() < 1e-5 && third[0].abs() < 1e-5);
    }

    #[test]
    fn bad_settings_name_the_key() {
        let e = AugmentConfig { crop_size: 100, ..Default::default() }.check().unwrap_err();
        assert!(e.contains("augment.crop_size"), "{e}");
        let e = AugmentConfig { hue: 0.7, ..Default::default() }.check().unwrap_err();
        assert!(e.contains("augment.hue"), "{e}");
    }
}
