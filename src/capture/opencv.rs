//! Anything OpenCV's VideoCapture opens (feature `opencv`): RTSP or HTTP
//! streams, GStreamer pipelines, GigE cameras with an OpenCV backend, video
//! files. BGR frames become RGB8, single-channel frames GREY8.

use std::time::Duration;

use opencv::core::Mat;
use opencv::prelude::*;
use opencv::videoio;

use super::{CaptureError, FrameSource, OpenCvConfig};
use crate::frame::{Frame, PixelFormat};

pub struct OpenCvSource {
    cfg: OpenCvConfig,
    cap: Option<videoio::VideoCapture>,
    mat: Mat,
    seq: u64,
}

impl OpenCvSource {
    pub fn open(cfg: &OpenCvConfig) -> Result<OpenCvSource, CaptureError> {
        let mut s = OpenCvSource { cfg: cfg.clone(), cap: None, mat: Mat::default(), seq: 0 };
        s.reopen()?;
        Ok(s)
    }

    fn lost(&mut self, reason: String) -> CaptureError {
        self.cap = None;
        CaptureError::Lost { source_name: self.cfg.uri.clone(), reason }
    }
}

impl FrameSource for OpenCvSource {
    fn describe(&self) -> String {
        format!("opencv {}", self.cfg.uri)
    }

    fn next_frame(&mut self) -> Result<Frame, CaptureError> {
        let Some(cap) = self.cap.as_mut() else { return Err(self.lost("not open".into())) };
        match cap.read(&mut self.mat) {
            Ok(true) if !self.mat.empty() => {}
            Ok(_) => return Err(self.lost("end of stream or no frame".into())),
            Err(e) => return Err(self.lost(e.to_string())),
        }
        let bad = |reason: String| CaptureError::BadFrame { source_name: self.cfg.uri.clone(), reason };
        let (w, h) = (self.mat.cols() as u32, self.mat.rows() as u32);
        let channels = self.mat.channels();
        let continuous = if self.mat.is_continuous() { self.mat.clone() } else { self.mat.try_clone().map_err(|e| bad(e.to_string()))? };
        let bytes = continuous.data_bytes().map_err(|e| bad(e.to_string()))?;
        let (format, data) = match channels {
            3 => (PixelFormat::Rgb8, bytes.chunks_exact(3).flat_map(|p| [p[2], p[1], p[0]]).collect()),
            1 => (PixelFormat::Grey8, bytes.to_vec()),
            n => return Err(bad(format!("{n}-channel frames are not supported"))),
        };
        self.seq += 1;
        Frame::new(w, h, format, data, self.seq, self.cfg.uri.clone()).map_err(|e| bad(e.to_string()))
    }

    fn reopen(&mut self) -> Result<(), CaptureError> {
        let err = |reason: String| CaptureError::Open { source_name: self.cfg.uri.clone(), reason };
        let cap = videoio::VideoCapture::from_file(&self.cfg.uri, videoio::CAP_ANY).map_err(|e| err(e.to_string()))?;
        if !cap.is_opened().map_err(|e| err(e.to_string()))? {
            return Err(err("OpenCV cannot open it".into()));
        }
        self.cap = Some(cap);
        Ok(())
    }

    fn reopen_interval(&self) -> Duration {
        Duration::from_millis(self.cfg.reopen_ms)
    }
}
