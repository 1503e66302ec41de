//! A captured frame: owned pixel bytes with their format, plus where and when
//! it came from. Image files become frames here.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PixelFormat {
    /// 3 bytes per pixel, R G B.
    Rgb8,
    /// 1 byte per pixel.
    Grey8,
    /// 4:2:2 packed Y0 U Y1 V, 2 bytes per pixel.
    Yuyv,
}

impl PixelFormat {
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb8 => 3,
            PixelFormat::Grey8 => 1,
            PixelFormat::Yuyv => 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// Rows packed without padding.
    pub data: Vec<u8>,
    /// Sequence number from the source, monotonic per run.
    pub seq: u64,
    pub captured_at: SystemTime,
    /// When the frame entered this process (queue latency is measured from here).
    pub arrived: Instant,
    /// Camera, file or generator that produced the frame.
    pub source: String,
    /// The file the frame came from, when the source needs to know it was handled (hot folder).
    pub origin: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{path}: cannot read the image: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a readable image: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error("{path}: {found} image; lineguard takes 8-bit RGB or greyscale images")]
    Channels { path: PathBuf, found: String },
    #[error("frame {source_name}#{seq}: {width}x{height} {format:?}, but {expected}")]
    Geometry { source_name: String, seq: u64, width: u32, height: u32, format: PixelFormat, expected: String },
    #[error("frame {source_name}#{seq}: {len} bytes for {width}x{height} {format:?} (expected {expected})")]
    Size { source_name: String, seq: u64, len: usize, width: u32, height: u32, format: PixelFormat, expected: usize },
}

impl Frame {
    /// `source#seq`: how logs and errors name a frame.
    pub fn label(&self) -> String {
        format!("{}#{}", self.source, self.seq)
    }

    /// A frame whose byte length is checked against its geometry.
    pub fn new(width: u32, height: u32, format: PixelFormat, data: Vec<u8>, seq: u64, source: String) -> Result<Frame, FrameError> {
        let expected = width as usize * height as usize * format.bytes_per_pixel();
        if data.len() != expected || width == 0 || height == 0 {
            return Err(FrameError::Size { source_name: source, seq, len: data.len(), width, height, format, expected });
        }
        Ok(Frame { width, height, format, data, seq, captured_at: SystemTime::now(), arrived: Instant::now(), source, origin: None })
    }

    /// Decodes an image file (PNG, JPEG) into an RGB8 or GREY8 frame.
    pub fn from_image_file(path: &Path, seq: u64) -> Result<Frame, FrameError> {
        let bytes = std::fs::read(path).map_err(|source| FrameError::Read { path: path.into(), source })?;
        Self::from_encoded(&bytes, path, seq)
    }

    /// Decodes image bytes; `path` names them in errors and becomes the source.
    pub fn from_encoded(bytes: &[u8], path: &Path, seq: u64) -> Result<Frame, FrameError> {
        let img = image::load_from_memory(bytes).map_err(|e| FrameError::Decode { path: path.into(), reason: e.to_string() })?;
        let (w, h) = (img.width(), img.height());
        let (format, data) = match img {
            image::DynamicImage::ImageRgb8(b) => (PixelFormat::Rgb8, b.into_raw()),
            image::DynamicImage::ImageLuma8(b) => (PixelFormat::Grey8, b.into_raw()),
            other => {
                return Err(FrameError::Channels { path: path.into(), found: format!("{:?}", other.color()) });
            }
        };
        let mut f = Frame::new(w, h, format, data, seq, path.display().to_string())?;
        if let Ok(m) = std::fs::metadata(path).and_then(|m| m.modified()) {
            f.captured_at = m;
        }
        Ok(f)
    }

    /// The frame as packed RGB8 (grey replicated, YUYV converted with BT.601).
    pub fn to_rgb8(&self) -> Vec<u8> {
        match self.format {
            PixelFormat::Rgb8 => self.data.clone(),
            PixelFormat::Grey8 => self.data.iter().flat_map(|&v| [v, v, v]).collect(),
            PixelFormat::Yuyv => {
                let mut out = Vec::with_capacity(self.data.len() / 2 * 3);
                for q in self.data.chunks_exact(4) {
                    let (u, v) = (q[1], q[3]);
                    out.extend(yuv_to_rgb(q[0], u, v));
                    out.extend(yuv_to_rgb(q[2], u, v));
                }
                out
            }
        }
    }
}

/// BT.601 limited-range YUV -> RGB (what V4L2 webcams send as YUYV).
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = (y as f32 - 16.0) * 1.164;
    let d = u as f32 - 128.0;
    let e = v as f32 - 128.0;
    let clamp = |x: f32| x.round().clamp(0.0, 255.0) as u8;
    [clamp(c + 1.596 * e), clamp(c - 0.392 * d - 0.813 * e), clamp(c + 2.017 * d)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_size_is_checked() {
        let e = Frame::new(4, 4, PixelFormat::Rgb8, vec![0; 47], 3, "cam0".into()).unwrap_err();
        assert_eq!(e.to_string(), "frame cam0#3: 47 bytes for 4x4 Rgb8 (expected 48)");
    }

    #[test]
    fn yuv_grey_and_primaries() {
        assert_eq!(yuv_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(yuv_to_rgb(235, 128, 128), [255, 255, 255]);
        let red = yuv_to_rgb(81, 90, 240);
        assert!(red[0] > 250 && red[1] < 5 && red[2] < 5, "{red:?}");
    }
}
