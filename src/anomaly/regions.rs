//! Defect regions: 8-connected components of the anomaly map above the
//! threshold, with bounding boxes mapped back to frame pixels.

use serde::{Deserialize, Serialize};

/// A rectangle in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// One defect region of a verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Bounding box in frame pixels.
    #[serde(flatten)]
    pub bbox: Rect,
    /// Area above threshold, in frame pixels (scaled from the map).
    pub area_px: u64,
    /// Highest map value inside the region.
    pub peak_score: f32,
}

/// Where the map sits in the frame: the map covers `roi` at its own resolution.
#[derive(Debug, Clone, Copy)]
pub struct MapPlacement {
    pub roi: Rect,
    pub map_width: usize,
    pub map_height: usize,
}

impl MapPlacement {
    fn to_frame(&self, mx0: usize, my0: usize, mx1: usize, my1: usize) -> Rect {
        let sx = self.roi.width as f64 / self.map_width as f64;
        let sy = self.roi.height as f64 / self.map_height as f64;
        let x0 = (mx0 as f64 * sx).floor() as u32;
        let y0 = (my0 as f64 * sy).floor() as u32;
        let x1 = ((mx1 as f64 * sx).ceil() as u32).min(self.roi.width);
        let y1 = ((my1 as f64 * sy).ceil() as u32).min(self.roi.height);
        Rect { x: self.roi.x + x0, y: self.roi.y + y0, width: x1 - x0, height: y1 - y0 }
    }
}

/// Components of `map > threshold` with at least `min_area_map_px` map pixels,
/// largest peak first, at most `max_regions`.
pub fn find_regions(
    map: &[f32],
    placement: &MapPlacement,
    threshold: f32,
    min_area_map_px: usize,
    max_regions: usize,
) -> Vec<Region> {
    let (w, h) = (placement.map_width, placement.map_height);
    assert_eq!(map.len(), w * h);
    let mut label = vec![false; w * h];
    let mut stack = Vec::new();
    let mut regions = Vec::new();
    let px_area = (placement.roi.width as f64 * placement.roi.height as f64) / (w * h) as f64;
    for start in 0..w * h {
        if label[start] || map[start] <= threshold {
            continue;
        }
        label[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        let mut area = 0usize;
        let mut peak = f32::NEG_INFINITY;
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            area += 1;
            peak = peak.max(map[i]);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    let j = ny * w + nx;
                    if !label[j] && map[j] > threshold {
                        label[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        if area >= min_area_map_px.max(1) {
            regions.push(Region {
                bbox: placement.to_frame(x0, y0, x1, y1),
                area_px: (area as f64 * px_area).round() as u64,
                peak_score: peak,
            });
        }
    }
    regions.sort_by(|a, b| b.peak_score.total_cmp(&a.peak_score));
    regions.truncate(max_regions);
    regions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_blobs_become_two_boxes_in_frame_pixels() {
        // 8x8 map covering a 16x16 ROI at (100, 50): each map pixel is 2x2 frame pixels.
        let mut map = vec![0.0; 64];
        for (y, x) in [(1, 1), (1, 2), (2, 2)] {
            map[y * 8 + x] = 2.0;
        }
        map[6 * 8 + 6] = 3.0;
        let p = MapPlacement { roi: Rect { x: 100, y: 50, width: 16, height: 16 }, map_width: 8, map_height: 8 };
        let r = find_regions(&map, &p, 1.0, 1, 10);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].bbox, Rect { x: 112, y: 62, width: 2, height: 2 });
        assert_eq!(r[0].peak_score, 3.0);
        assert_eq!(r[1].bbox, Rect { x: 102, y: 52, width: 4, height: 4 });
        assert_eq!(r[1].area_px, 12);
    }

    #[test]
    fn diagonal_neighbours_join_and_small_blobs_drop() {
        let mut map = vec![0.0; 25];
        map[0] = 5.0;
        map[6] = 5.0;
        map[24] = 5.0;
        let p = MapPlacement { roi: Rect { x: 0, y: 0, width: 5, height: 5 }, map_width: 5, map_height: 5 };
        let r = find_regions(&map, &p, 1.0, 2, 10);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].bbox, Rect { x: 0, y: 0, width: 2, height: 2 });
    }
}
