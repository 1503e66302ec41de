//! Heatmap overlays for people: the frame with the anomaly map blended over
//! the region of interest (blue = normal, red = at or above threshold) and
//! defect regions boxed.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::anomaly::{Rect, Region};
use crate::engine::Scored;
use crate::frame::Frame;

/// A "turbo"-like ramp: 0 -> dark blue, 0.5 -> green/yellow, 1 -> red.
pub fn colormap(t: f32) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0);
    let stops: [(f32, [f32; 3]); 5] = [
        (0.0, [48.0, 18.0, 59.0]),
        (0.25, [40.0, 150.0, 240.0]),
        (0.5, [100.0, 240.0, 100.0]),
        (0.75, [250.0, 190.0, 40.0]),
        (1.0, [200.0, 20.0, 10.0]),
    ];
    let i = stops.iter().rposition(|s| s.0 <= t).unwrap_or(0).min(stops.len() - 2);
    let (t0, c0) = stops[i];
    let (t1, c1) = stops[i + 1];
    let u = (t - t0) / (t1 - t0);
    [0, 1, 2].map(|k| (c0[k] + (c1[k] - c0[k]) * u).round() as u8)
}

/// Bilinear sample of a `w x h` map at continuous coordinates.
fn sample(map: &[f32], w: usize, h: usize, x: f32, y: f32) -> f32 {
    let x = x.clamp(0.0, (w - 1) as f32);
    let y = y.clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let top = map[y0 * w + x0] * (1.0 - fx) + map[y0 * w + x1] * fx;
    let bot = map[y1 * w + x0] * (1.0 - fx) + map[y1 * w + x1] * fx;
    top * (1.0 - fy) + bot * fy
}

/// The map resampled to the ROI's pixel size (for overlays and pixel metrics).
pub fn map_at_roi_resolution(s: &Scored) -> Vec<f32> {
    let (rw, rh) = (s.roi.width as usize, s.roi.height as usize);
    let (sx, sy) = (s.map_width as f32 / rw as f32, s.map_height as f32 / rh as f32);
    let mut out = vec![0.0; rw * rh];
    for y in 0..rh {
        for x in 0..rw {
            out[y * rw + x] = sample(&s.map, s.map_width, s.map_height, (x as f32 + 0.5) * sx - 0.5, (y as f32 + 0.5) * sy - 0.5);
        }
    }
    out
}

fn draw_rect(img: &mut RgbImage, r: &Rect, color: [u8; 3]) {
    let (w, h) = img.dimensions();
    let (x0, y0) = (r.x.min(w - 1), r.y.min(h - 1));
    let (x1, y1) = ((r.x + r.width).saturating_sub(1).min(w - 1), (r.y + r.height).saturating_sub(1).min(h - 1));
    for t in 0..2u32 {
        for x in x0..=x1 {
            img.put_pixel(x, (y0 + t).min(h - 1), Rgb(color));
            img.put_pixel(x, y1.saturating_sub(t), Rgb(color));
        }
        for y in y0..=y1 {
            img.put_pixel((x0 + t).min(w - 1), y, Rgb(color));
            img.put_pixel(x1.saturating_sub(t), y, Rgb(color));
        }
    }
}

/// The frame with the map blended in; map values are shown relative to the
/// threshold (the top of the ramp is 1.25 x threshold).
pub fn overlay(frame: &Frame, s: &Scored, threshold: f32, regions: &[Region]) -> RgbImage {
    let rgb = frame.to_rgb8();
    let mut img = RgbImage::from_raw(frame.width, frame.height, rgb).expect("frame geometry checked at creation");
    let roi_map = map_at_roi_resolution(s);
    let scale = 1.0 / (1.25 * threshold.max(f32::EPSILON));
    for y in 0..s.roi.height {
        for x in 0..s.roi.width {
            let v = roi_map[(y * s.roi.width + x) as usize] * scale;
            let c = colormap(v);
            let alpha = 0.25 + 0.4 * v.clamp(0.0, 1.0);
            let p = img.get_pixel_mut(s.roi.x + x, s.roi.y + y);
            for k in 0..3 {
                p.0[k] = (p.0[k] as f32 * (1.0 - alpha) + c[k] as f32 * alpha).round() as u8;
            }
        }
    }
    for r in regions {
        draw_rect(&mut img, &r.bbox, [255, 0, 255]);
    }
    img
}

/// Writes a PNG atomically.
pub fn save_png(img: &RgbImage, path: &Path) -> std::io::Result<()> {
    let mut buf = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut buf), image::ImageFormat::Png).map_err(std::io::Error::other)?;
    crate::fsutil::write_atomic(path, &buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colormap_ends() {
        assert_eq!(colormap(0.0), [48, 18, 59]);
        assert_eq!(colormap(1.0), [200, 20, 10]);
        assert_eq!(colormap(7.0), [200, 20, 10]);
    }
}
