//! A simulated line: machined washers on a belt, photographed from above,
//! some with a scratch, a stain or a chipped edge. Deterministic per seed
//! and frame number. The frame's source says what it is
//! (`synthetic/ok`, `synthetic/ng:scratch`, ...), so a demo or a test can
//! compare verdicts with the truth.

use std::f32::consts::PI;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::{CaptureError, FrameSource};
use crate::frame::{Frame, PixelFormat};

pub const DEFECT_KINDS: [&str; 3] = ["scratch", "stain", "chip"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Frames per second.
    #[serde(default = "default_fps")]
    pub fps: f32,
    #[serde(default = "default_size")]
    pub width: u32,
    #[serde(default = "default_size")]
    pub height: u32,
    /// Share of defective parts.
    #[serde(default = "default_defect_rate")]
    pub defect_rate: f32,
    #[serde(default)]
    pub seed: u64,
    /// Stop after this many frames (the source then goes idle).
    #[serde(default)]
    pub frames: Option<u64>,
    /// Simulated camera outage, for testing recovery.
    #[serde(default)]
    pub outage: Option<Outage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    /// The camera vanishes after this many frames...
    pub after_frames: u64,
    /// ...and comes back after this long.
    pub duration_ms: u64,
}

const fn default_fps() -> f32 {
    10.0
}
const fn default_size() -> u32 {
    256
}
const fn default_defect_rate() -> f32 {
    0.2
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            fps: default_fps(),
            width: default_size(),
            height: default_size(),
            defect_rate: default_defect_rate(),
            seed: 0,
            frames: None,
            outage: None,
        }
    }
}

/// One generated part: RGB8 pixels and what is wrong with it.
pub fn generate(width: u32, height: u32, seed: u64, index: u64, defect_rate: f32) -> (Vec<u8>, Option<&'static str>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ index);
    let (w, h) = (width as usize, height as usize);
    let s = w.min(h) as f32 / 256.0;
    let cx = w as f32 / 2.0 + rng.random_range(-2.0..2.0) * s;
    let cy = h as f32 / 2.0 + rng.random_range(-2.0..2.0) * s;
    let (r_in, r_out) = (36.0 * s, 92.0 * s);
    let light = rng.random_range(-0.15..0.15) + 0.8;
    let rot = rng.random_range(0.0..2.0 * PI);
    let defect = (rng.random::<f32>() < defect_rate).then(|| DEFECT_KINDS[rng.random_range(0..DEFECT_KINDS.len())]);

    // Defect geometry, on the ring.
    let ang = rng.random_range(0.0..2.0 * PI);
    let rad = rng.random_range(r_in + 10.0 * s..r_out - 10.0 * s);
    let (dx, dy) = (cx + rad * ang.cos(), cy + rad * ang.sin());
    let len = rng.random_range(20.0..45.0) * s;
    let dir = rng.random_range(0.0..PI);
    let (ux, uy) = (dir.cos(), dir.sin());
    let blob = rng.random_range(4.0..8.0) * s;
    let chip_c = (cx + (r_out + 2.0 * s) * ang.cos(), cy + (r_out + 2.0 * s) * ang.sin());
    let chip_r = rng.random_range(8.0..12.0) * s;

    let mut out = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let noise: f32 = rng.sample(StandardNormal);
            let bg = 55.0 + 12.0 * (fx / w as f32 * PI).sin() + 3.0 * noise;
            let (px, py) = (fx - cx, fy - cy);
            let r = (px * px + py * py).sqrt();
            let a = py.atan2(px);
            let chipped = defect == Some("chip") && ((fx - chip_c.0).powi(2) + (fy - chip_c.1).powi(2)).sqrt() < chip_r;
            // Soft ring edges (anti-aliased over one pixel).
            let cover = ((r - r_in).clamp(0.0, 1.0)) * ((r_out - r).clamp(0.0, 1.0));
            let cover = if chipped { 0.0 } else { cover };
            let mut metal = 150.0 + 45.0 * light * (a - rot).cos() + 6.0 * (r * 0.9 / s).sin() + 4.0 * noise;
            match defect {
                Some("scratch") => {
                    let (qx, qy) = (fx - dx, fy - dy);
                    let along = qx * ux + qy * uy;
                    let across = (qx * uy - qy * ux).abs();
                    if along.abs() < len / 2.0 && across < 1.5 * s {
                        metal -= 70.0 * (1.0 - across / (1.5 * s));
                    }
                }
                Some("stain") => {
                    let d = ((fx - dx).powi(2) + (fy - dy).powi(2)).sqrt();
                    if d < blob {
                        metal -= 60.0 * (1.0 - (d / blob).powi(2));
                    }
                }
                _ => {}
            }
            let v = bg * (1.0 - cover) + metal * cover;
            let tint = [1.0, 0.97, 0.9];
            for c in 0..3 {
                out[(y * w + x) * 3 + c] = (v * tint[c]).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    (out, defect)
}

pub struct SyntheticSource {
    cfg: SyntheticConfig,
    index: u64,
    next_due: Instant,
    /// When the current simulated outage ends.
    outage_until: Option<Instant>,
    outage_done: bool,
}

impl SyntheticSource {
    pub fn new(cfg: &SyntheticConfig) -> SyntheticSource {
        SyntheticSource { cfg: cfg.clone(), index: 0, next_due: Instant::now(), outage_until: None, outage_done: false }
    }
}

impl FrameSource for SyntheticSource {
    fn describe(&self) -> String {
        format!("synthetic line {}x{} at {} fps, {}% defective", self.cfg.width, self.cfg.height, self.cfg.fps, self.cfg.defect_rate * 100.0)
    }

    fn next_frame(&mut self) -> Result<Frame, CaptureError> {
        if self.cfg.frames.is_some_and(|n| self.index >= n) {
            std::thread::sleep(Duration::from_millis(100));
            return Err(CaptureError::Idle);
        }
        if let Some(o) = &self.cfg.outage
            && !self.outage_done
            && self.index >= o.after_frames
        {
            self.outage_done = true;
            self.outage_until = Some(Instant::now() + Duration::from_millis(o.duration_ms));
            return Err(CaptureError::Lost { source_name: "synthetic".into(), reason: "simulated outage".into() });
        }
        let now = Instant::now();
        if self.next_due > now {
            std::thread::sleep(self.next_due - now);
        }
        self.next_due = self.next_due.max(now) + Duration::from_secs_f32(1.0 / self.cfg.fps.max(0.01));
        let (data, defect) = generate(self.cfg.width, self.cfg.height, self.cfg.seed, self.index, self.cfg.defect_rate);
        let label = match defect {
            Some(k) => format!("synthetic/ng:{k}"),
            None => "synthetic/ok".into(),
        };
        let f = Frame::new(self.cfg.width, self.cfg.height, PixelFormat::Rgb8, data, self.index, label)
            .map_err(|e| CaptureError::BadFrame { source_name: "synthetic".into(), reason: e.to_string() })?;
        self.index += 1;
        Ok(f)
    }

    fn reopen(&mut self) -> Result<(), CaptureError> {
        match self.outage_until {
            Some(t) if Instant::now() < t => {
                Err(CaptureError::Open { source_name: "synthetic".into(), reason: "simulated outage".into() })
            }
            _ => {
                self.outage_until = None;
                self.next_due = Instant::now();
                Ok(())
            }
        }
    }

    fn reopen_interval(&self) -> Duration {
        Duration::from_millis(200)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_defects_change_pixels_locally() {
        let (a, da) = generate(128, 128, 7, 3, 0.0);
        let (b, _) = generate(128, 128, 7, 3, 0.0);
        assert_eq!(a, b);
        assert_eq!(da, None);
        let kinds: Vec<_> = (0..40).filter_map(|i| generate(64, 64, 1, i, 1.0).1).collect();
        for k in DEFECT_KINDS {
            assert!(kinds.contains(&k), "{k} never generated");
        }
    }

    #[test]
    fn outage_loses_the_camera_then_recovers() {
        let mut s = SyntheticSource::new(&SyntheticConfig {
            fps: 1000.0,
            width: 32,
            height: 32,
            outage: Some(Outage { after_frames: 2, duration_ms: 100 }),
            ..Default::default()
        });
        assert!(s.next_frame().is_ok() && s.next_frame().is_ok());
        assert!(matches!(s.next_frame(), Err(CaptureError::Lost { .. })));
        assert!(s.reopen().is_err());
        std::thread::sleep(Duration::from_millis(120));
        assert!(s.reopen().is_ok());
        assert_eq!(s.next_frame().unwrap().seq, 2);
    }
}
