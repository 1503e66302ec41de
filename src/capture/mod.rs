//! Frame sources behind one trait: V4L2 cameras, OpenCV (feature `opencv`),
//! a hot folder, and a synthetic line. `[capture] kind = ...` selects one;
//! each is checked when it opens, before any frame flows.

pub mod convert;
pub mod folder;
#[cfg(feature = "opencv")]
pub mod opencv;
pub mod queue;
pub mod synthetic;
pub mod v4l2;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::frame::Frame;
pub use queue::FrameQueue;

/// `[capture]` in lineguard.toml: one table per source kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CaptureConfig {
    /// A V4L2 camera (USB/CSI): YUYV, MJPEG or GREY.
    V4l2(v4l2::V4l2Config),
    /// Anything OpenCV opens: RTSP/GStreamer pipelines, GigE cameras, video files (feature `opencv`).
    Opencv(OpenCvConfig),
    /// A folder watched for new image files; each is inspected once, then moved to done/ or failed/.
    Folder(folder::FolderConfig),
    /// Generated parts, good and defective, at a given rate (demo and tests).
    Synthetic(synthetic::SyntheticConfig),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenCvConfig {
    /// A URI, pipeline or file that OpenCV's VideoCapture accepts.
    pub uri: String,
    /// Milliseconds between reconnect attempts when the stream drops.
    #[serde(default = "default_reopen_ms")]
    pub reopen_ms: u64,
}

pub(crate) const fn default_reopen_ms() -> u64 {
    1000
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{source_name}: cannot open: {reason}")]
    Open { source_name: String, reason: String },
    #[error("{source_name}: lost: {reason}")]
    Lost { source_name: String, reason: String },
    #[error("{source_name}: bad frame: {reason}")]
    BadFrame { source_name: String, reason: String },
    /// Nothing to deliver right now; ask again.
    #[error("idle")]
    Idle,
}

/// What happens to a frame's origin once its verdict is durable (hot folder).
pub trait Completion: Send + Sync {
    fn done(&self, origin: &Path);
    fn failed(&self, origin: &Path, reason: &str);
}

/// A source of frames, driven by one capture thread.
pub trait FrameSource: Send {
    fn describe(&self) -> String;
    /// Blocks for the next frame (at most about a second; `Idle` otherwise).
    fn next_frame(&mut self) -> Result<Frame, CaptureError>;
    /// Tries to get the device back after `Lost`.
    fn reopen(&mut self) -> Result<(), CaptureError>;
    /// Every frame must be inspected (files), rather than the newest winning (cameras).
    fn lossless(&self) -> bool {
        false
    }
    /// Bookkeeping after the verdict is stored, for sources that need it.
    fn completion(&self) -> Option<Arc<dyn Completion>> {
        None
    }
    /// Milliseconds between reopen attempts.
    fn reopen_interval(&self) -> Duration {
        Duration::from_millis(default_reopen_ms())
    }
}

/// Opens the configured source; relative paths resolve against `base`.
pub fn open(cfg: &CaptureConfig, base: &Path) -> Result<Box<dyn FrameSource>, CaptureError> {
    match cfg {
        CaptureConfig::V4l2(c) => Ok(Box::new(v4l2::V4l2Source::open(c)?)),
        CaptureConfig::Folder(c) => Ok(Box::new(folder::FolderSource::open(c, base)?)),
        CaptureConfig::Synthetic(c) => Ok(Box::new(synthetic::SyntheticSource::new(c))),
        #[cfg(feature = "opencv")]
        CaptureConfig::Opencv(c) => Ok(Box::new(opencv::OpenCvSource::open(c)?)),
        #[cfg(not(feature = "opencv"))]
        CaptureConfig::Opencv(c) => Err(CaptureError::Open {
            source_name: c.uri.clone(),
            reason: "this build has no OpenCV support: rebuild with `cargo build --release --features opencv` \
                     (needs Debian's libopencv-dev and clang)"
                .into(),
        }),
    }
}

pub(crate) fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

/// Camera state as the status topic and /healthz report it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CameraState {
    Starting,
    Ok,
    Lost { reason: String },
    Stopped,
}

/// Events the capture thread reports (the daemon turns them into status and metrics).
pub trait CaptureEvents: Send + Sync {
    fn camera_state(&self, state: CameraState);
    fn frame_captured(&self);
    fn frame_dropped(&self);
    fn bad_frame(&self, error: &CaptureError);
}

/// The capture loop: frames into `queue` until `stop`; a lost camera is
/// reopened every `reopen_interval` while the rest of the station keeps running.
pub fn run(mut source: Box<dyn FrameSource>, queue: Arc<FrameQueue>, stop: Arc<AtomicBool>, events: Arc<dyn CaptureEvents>) {
    events.camera_state(CameraState::Ok);
    let mut lost = false;
    while !stop.load(Ordering::Relaxed) {
        if lost {
            match source.reopen() {
                Ok(()) => {
                    tracing::info!(source = %source.describe(), "camera back");
                    lost = false;
                    events.camera_state(CameraState::Ok);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reopen failed");
                    sleep_unless_stopped(source.reopen_interval(), &stop);
                    continue;
                }
            }
        }
        match source.next_frame() {
            Ok(frame) => {
                events.frame_captured();
                if queue.push(frame) {
                    events.frame_dropped();
                }
            }
            Err(CaptureError::Idle) => {}
            Err(e @ CaptureError::BadFrame { .. }) => {
                tracing::warn!(error = %e, "frame skipped");
                events.bad_frame(&e);
            }
            Err(e) => {
                tracing::error!(error = %e, "camera lost; retrying");
                lost = true;
                events.camera_state(CameraState::Lost { reason: e.to_string() });
            }
        }
    }
    queue.close();
    events.camera_state(CameraState::Stopped);
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
}
