//! Patch features: each encoder tap gets a 3x3 local average (stride 1, zero
//! padding counted in the divisor, as torch's AvgPool2d), coarser taps are
//! upsampled bilinearly (half-pixel) to the finest tap's grid, and the
//! channels are concatenated into one row per grid cell.

use super::resample::{ResampleTable, resize_plane};

/// One row of `dim` values per grid cell, row-major over the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchFeatures {
    pub grid_h: usize,
    pub grid_w: usize,
    pub dim: usize,
    pub data: Vec<f32>,
}

impl PatchFeatures {
    pub fn patches(&self) -> usize {
        self.grid_h * self.grid_w
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Shape of one tap's feature map (batch 1, NCHW).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

/// Turns tap maps into patch features; tables and scratch are built once.
#[derive(Debug, Clone)]
pub struct FeatureAssembler {
    taps: Vec<TapShape>,
    upsample: Vec<Option<(ResampleTable, ResampleTable)>>,
    pub grid_h: usize,
    pub grid_w: usize,
    pub dim: usize,
    pooled: Vec<f32>,
    tmp: Vec<f32>,
    up: Vec<f32>,
}

impl FeatureAssembler {
    /// The grid is the largest tap map (the stride-8 one for the default taps).
    pub fn new(taps: &[TapShape]) -> FeatureAssembler {
        assert!(!taps.is_empty(), "at least one tap");
        let grid_h = taps.iter().map(|t| t.height).max().unwrap();
        let grid_w = taps.iter().map(|t| t.width).max().unwrap();
        let upsample = taps
            .iter()
            .map(|t| {
                (t.height != grid_h || t.width != grid_w).then(|| {
                    (ResampleTable::bilinear_half_pixel(t.height, grid_h), ResampleTable::bilinear_half_pixel(t.width, grid_w))
                })
            })
            .collect();
        let biggest = taps.iter().map(|t| t.height * t.width).max().unwrap();
        FeatureAssembler {
            taps: taps.to_vec(),
            upsample,
            grid_h,
            grid_w,
            dim: taps.iter().map(|t| t.channels).sum(),
            pooled: vec![0.0; biggest],
            tmp: vec![0.0; grid_h.max(biggest) * grid_w],
            up: vec![0.0; grid_h * grid_w],
        }
    }

    pub fn taps(&self) -> &[TapShape] {
        &self.taps
    }

    /// `maps[i]` is tap i as C*H*W floats; writes `grid_h*grid_w*dim` values.
    pub fn assemble(&mut self, maps: &[&[f32]], out: &mut [f32]) {
        assert_eq!(maps.len(), self.taps.len());
        let cells = self.grid_h * self.grid_w;
        assert_eq!(out.len(), cells * self.dim);
        let mut offset = 0;
        for (t, (shape, map)) in self.taps.iter().zip(maps).enumerate() {
            let plane = shape.height * shape.width;
            assert_eq!(map.len(), shape.channels * plane, "tap {t} has the wrong size");
            for c in 0..shape.channels {
                avg_pool_3x3(&map[c * plane..(c + 1) * plane], shape.height, shape.width, &mut self.pooled[..plane]);
                let values: &[f32] = match &self.upsample[t] {
                    None => &self.pooled[..plane],
                    Some((rows, cols)) => {
                        resize_plane(&self.pooled[..plane], shape.width, rows, cols, &mut self.tmp, &mut self.up);
                        &self.up
                    }
                };
                for (cell, v) in values.iter().enumerate() {
                    out[cell * self.dim + offset + c] = *v;
                }
            }
            offset += shape.channels;
        }
    }
}

/// 3x3 mean, stride 1, zero padding, divisor always 9.
pub fn avg_pool_3x3(src: &[f32], h: usize, w: usize, dst: &mut [f32]) {
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0.0;
            for yy in y.saturating_sub(1)..(y + 2).min(h) {
                for xx in x.saturating_sub(1)..(x + 2).min(w) {
                    acc += src[yy * w + xx];
                }
            }
            dst[y * w + x] = acc / 9.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avg_pool_counts_padding_in_the_divisor() {
        let src = [1.0; 9];
        let mut dst = [0.0; 9];
        avg_pool_3x3(&src, 3, 3, &mut dst);
        assert_eq!(dst[4], 1.0);
        assert!((dst[0] - 4.0 / 9.0).abs() < 1e-7);
        assert!((dst[1] - 6.0 / 9.0).abs() < 1e-7);
    }

    #[test]
    fn concatenates_taps_per_cell_with_upsampling() {
        // tap 0: 1 channel 2x2; tap 1: 2 channels 1x1 (constant after upsample)
        let mut fa = FeatureAssembler::new(&[
            TapShape { channels: 1, height: 2, width: 2 },
            TapShape { channels: 2, height: 1, width: 1 },
        ]);
        assert_eq!((fa.grid_h, fa.grid_w, fa.dim), (2, 2, 3));
        let t0 = [9.0, 0.0, 0.0, 0.0];
        let t1 = [9.0, 18.0];
        let mut out = vec![0.0; 12];
        fa.assemble(&[&t0, &t1], &mut out);
        // cell 0: pooled tap0 = 9/9 = 1; tap1 pooled 1x1 = 1 and 2, upsampled constant
        assert_eq!(&out[0..3], &[1.0, 1.0, 2.0]);
        assert_eq!(&out[9..12], &[1.0, 1.0, 2.0]);
    }
}
