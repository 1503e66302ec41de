//! V4L2 cameras (USB, CSI) through the `v4l` crate: YUYV, MJPEG or GREY at
//! the configured size and rate, exposure and gain set when given. A camera
//! that disappears is reported lost and reopened when it comes back.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use v4l::buffer::Type;
use v4l::control::{Control, Value};
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::convert::{grey_frame, mjpeg_frame, yuyv_frame};
use super::{CaptureError, FrameSource};
use crate::frame::Frame;

/// V4L2 control ids (linux/v4l2-controls.h).
const CID_EXPOSURE_AUTO: u32 = 0x009a_0901;
const CID_EXPOSURE_ABSOLUTE: u32 = 0x009a_0902;
const CID_GAIN: u32 = 0x0098_0913;
const EXPOSURE_MANUAL: i64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum V4l2Format {
    Yuyv,
    Mjpeg,
    Grey,
}

impl V4l2Format {
    fn fourcc(self) -> FourCC {
        FourCC::new(match self {
            V4l2Format::Yuyv => b"YUYV",
            V4l2Format::Mjpeg => b"MJPG",
            V4l2Format::Grey => b"GREY",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct V4l2Config {
    /// Device node, e.g. /dev/video0 (or a stable /dev/v4l/by-id/... link).
    pub device: PathBuf,
    pub width: u32,
    pub height: u32,
    pub pixel_format: V4l2Format,
    #[serde(default = "default_fps")]
    pub fps: u32,
    /// Manual exposure in microseconds (driver default when absent).
    #[serde(default)]
    pub exposure_us: Option<u32>,
    /// Analogue gain in the driver's units (driver default when absent).
    #[serde(default)]
    pub gain: Option<i64>,
    /// Milliseconds between reopen attempts after the camera is lost.
    #[serde(default = "super::default_reopen_ms")]
    pub reopen_ms: u64,
}

const fn default_fps() -> u32 {
    30
}

pub struct V4l2Source {
    cfg: V4l2Config,
    stream: Option<Stream<'static>>,
    width: u32,
    height: u32,
    seq: u64,
}

impl V4l2Source {
    pub fn open(cfg: &V4l2Config) -> Result<V4l2Source, CaptureError> {
        let mut s = V4l2Source { cfg: cfg.clone(), stream: None, width: cfg.width, height: cfg.height, seq: 0 };
        s.start()?;
        Ok(s)
    }

    fn name(&self) -> String {
        self.cfg.device.display().to_string()
    }

    fn start(&mut self) -> Result<(), CaptureError> {
        let err = |reason: String| CaptureError::Open { source_name: self.name(), reason };
        let dev = Device::with_path(&self.cfg.device).map_err(|e| err(e.to_string()))?;
        let mut fmt = dev.format().map_err(|e| err(format!("reading the format: {e}")))?;
        fmt.width = self.cfg.width;
        fmt.height = self.cfg.height;
        fmt.fourcc = self.cfg.pixel_format.fourcc();
        let got = dev.set_format(&fmt).map_err(|e| err(format!("setting the format: {e}")))?;
        if got.fourcc != fmt.fourcc || got.width != self.cfg.width || got.height != self.cfg.height {
            return Err(err(format!(
                "the camera offers {}x{} {} instead of the configured {}x{} {:?}",
                got.width, got.height, got.fourcc, self.cfg.width, self.cfg.height, self.cfg.pixel_format
            )));
        }
        dev.set_params(&v4l::video::capture::Parameters::with_fps(self.cfg.fps))
            .map_err(|e| err(format!("setting {} fps: {e}", self.cfg.fps)))?;
        if let Some(us) = self.cfg.exposure_us {
            // V4L2 absolute exposure is in 100 us units.
            dev.set_control(Control { id: CID_EXPOSURE_AUTO, value: Value::Integer(EXPOSURE_MANUAL) })
                .and_then(|_| dev.set_control(Control { id: CID_EXPOSURE_ABSOLUTE, value: Value::Integer((us as i64 / 100).max(1)) }))
                .map_err(|e| err(format!("setting exposure {us} us: {e}")))?;
        }
        if let Some(g) = self.cfg.gain {
            dev.set_control(Control { id: CID_GAIN, value: Value::Integer(g) }).map_err(|e| err(format!("setting gain {g}: {e}")))?;
        }
        let stream = Stream::with_buffers(&dev, Type::VideoCapture, 4).map_err(|e| err(format!("mapping buffers: {e}")))?;
        (self.width, self.height) = (got.width, got.height);
        self.stream = Some(stream);
        Ok(())
    }
}

impl FrameSource for V4l2Source {
    fn describe(&self) -> String {
        format!("v4l2 {} {}x{} {:?} @ {} fps", self.name(), self.width, self.height, self.cfg.pixel_format, self.cfg.fps)
    }

    fn next_frame(&mut self) -> Result<Frame, CaptureError> {
        let name = self.name();
        let stream = self.stream.as_mut().ok_or(CaptureError::Lost { source_name: name.clone(), reason: "not open".into() })?;
        let (buf, meta) = match stream.next() {
            Ok(b) => b,
            Err(e) => {
                self.stream = None;
                return Err(CaptureError::Lost { source_name: name, reason: e.to_string() });
            }
        };
        let used = (meta.bytesused as usize).min(buf.len());
        self.seq += 1;
        let (w, h, seq) = (self.width, self.height, self.seq);
        let frame = match self.cfg.pixel_format {
            V4l2Format::Yuyv => yuyv_frame(&buf[..used.max((w * h * 2) as usize).min(buf.len())], w, h, seq, &name),
            V4l2Format::Grey => grey_frame(&buf[..used.max((w * h) as usize).min(buf.len())], w, h, seq, &name),
            V4l2Format::Mjpeg => mjpeg_frame(&buf[..used], seq, &name),
        };
        frame.map_err(|e| CaptureError::BadFrame { source_name: name, reason: e.to_string() })
    }

    fn reopen(&mut self) -> Result<(), CaptureError> {
        self.stream = None;
        self.start()
    }

    fn reopen_interval(&self) -> Duration {
        Duration::from_millis(self.cfg.reopen_ms)
    }
}
