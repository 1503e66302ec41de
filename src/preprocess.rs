//! Frame -> encoder input: region-of-interest crop, antialiased bilinear
//! resize to the model's input size (Pillow's BILINEAR), scale to [0, 1] and
//! normalise with the contract's mean/std, as f32 NCHW RGB.

use crate::anomaly::Rect;
use crate::anomaly::resample::ResampleTable;
use crate::frame::{Frame, FrameError, PixelFormat};
use crate::model::InputSpec;

/// Preprocessing for one frame geometry; tables and scratch built once.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    frame_width: u32,
    frame_height: u32,
    roi: Rect,
    out_h: usize,
    out_w: usize,
    rows: ResampleTable,
    cols: ResampleTable,
    mean: [f32; 3],
    std: [f32; 3],
    /// roi.height x out_w x 3, between the passes.
    tmp: Vec<f32>,
}

impl Preprocessor {
    /// `roi` defaults to the whole frame; it must lie inside the frame.
    pub fn new(frame_width: u32, frame_height: u32, roi: Option<Rect>, input: &InputSpec) -> Result<Preprocessor, String> {
        let roi = roi.unwrap_or(Rect { x: 0, y: 0, width: frame_width, height: frame_height });
        if roi.width == 0 || roi.height == 0 || roi.x + roi.width > frame_width || roi.y + roi.height > frame_height {
            return Err(format!(
                "the region of interest {}x{} at ({}, {}) does not fit the {}x{} frame",
                roi.width, roi.height, roi.x, roi.y, frame_width, frame_height
            ));
        }
        Ok(Preprocessor {
            frame_width,
            frame_height,
            roi,
            out_h: input.height,
            out_w: input.width,
            rows: ResampleTable::antialiased_bilinear(roi.height as usize, input.height),
            cols: ResampleTable::antialiased_bilinear(roi.width as usize, input.width),
            mean: input.mean,
            std: input.std,
            tmp: vec![0.0; roi.height as usize * input.width * 3],
        })
    }

    pub fn roi(&self) -> Rect {
        self.roi
    }

    pub fn frame_size(&self) -> (u32, u32) {
        (self.frame_width, self.frame_height)
    }

    pub fn output_len(&self) -> usize {
        3 * self.out_h * self.out_w
    }

    /// The resampling tables (rows, cols), for engines that preprocess elsewhere.
    pub fn tables(&self) -> (&ResampleTable, &ResampleTable) {
        (&self.rows, &self.cols)
    }

    /// Writes the normalised 3 x H x W tensor into `out`.
    pub fn run(&mut self, frame: &Frame, out: &mut [f32]) -> Result<(), FrameError> {
        if (frame.width, frame.height) != (self.frame_width, self.frame_height) {
            return Err(FrameError::Geometry {
                source_name: frame.source.clone(),
                seq: frame.seq,
                width: frame.width,
                height: frame.height,
                format: frame.format,
                expected: format!("this preprocessor was built for {}x{}", self.frame_width, self.frame_height),
            });
        }
        assert_eq!(out.len(), self.output_len());
        let converted;
        let (data, bpp) = match frame.format {
            PixelFormat::Rgb8 => (&frame.data[..], 3),
            PixelFormat::Grey8 => (&frame.data[..], 1),
            PixelFormat::Yuyv => {
                converted = frame.to_rgb8();
                (&converted[..], 3)
            }
        };
        let fw = frame.width as usize;
        let (rx, ry) = (self.roi.x as usize, self.roi.y as usize);
        let ow = self.out_w;
        // Horizontal pass over the ROI rows, values scaled to [0, 1].
        for y in 0..self.roi.height as usize {
            let line = &data[((ry + y) * fw + rx) * bpp..];
            for x in 0..ow {
                for c in 0..3 {
                    let ch = if bpp == 1 { 0 } else { c };
                    self.tmp[(y * ow + x) * 3 + c] = self.cols.apply(x, |i| line[i * bpp + ch] as f32) / 255.0;
                }
            }
        }
        // Vertical pass, normalise, write planar.
        let plane = self.out_h * ow;
        for y in 0..self.out_h {
            for x in 0..ow {
                for c in 0..3 {
                    let v = self.rows.apply(y, |i| self.tmp[(i * ow + x) * 3 + c]);
                    out[c * plane + y * ow + x] = (v - self.mean[c]) / self.std[c];
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(size: usize) -> InputSpec {
        InputSpec { name: "image".into(), height: size, width: size, mean: [0.5; 3], std: [0.5; 3] }
    }

    #[test]
    fn crops_the_roi_and_normalises() {
        // 8x8 RGB frame: left half black, right half white; ROI is the right half.
        let mut data = vec![0u8; 8 * 8 * 3];
        for y in 0..8 {
            for x in 4..8 {
                data[(y * 8 + x) * 3..(y * 8 + x) * 3 + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        let f = Frame::new(8, 8, PixelFormat::Rgb8, data, 0, "t".into()).unwrap();
        let mut p = Preprocessor::new(8, 8, Some(Rect { x: 4, y: 0, width: 4, height: 8 }), &spec(4)).unwrap();
        let mut out = vec![0.0; 48];
        p.run(&f, &mut out).unwrap();
        assert!(out.iter().all(|&v| (v - 1.0).abs() < 1e-6), "{out:?}");
    }

    #[test]
    fn grey_frames_fill_all_three_channels() {
        let f = Frame::new(4, 4, PixelFormat::Grey8, vec![51; 16], 0, "t".into()).unwrap();
        let mut p = Preprocessor::new(4, 4, None, &spec(4)).unwrap();
        let mut out = vec![0.0; 48];
        p.run(&f, &mut out).unwrap();
        assert!(out.iter().all(|&v| (v - (0.2 - 0.5) / 0.5).abs() < 1e-6));
    }

    #[test]
    fn roi_outside_the_frame_is_refused() {
        let e = Preprocessor::new(100, 100, Some(Rect { x: 50, y: 0, width: 60, height: 10 }), &spec(32)).unwrap_err();
        assert!(e.contains("does not fit the 100x100 frame"), "{e}");
    }
}
