//! What the station counts, in one place: Prometheus metrics for `/metrics`,
//! and the live values the status topic and `/healthz` report. Names follow
//! `lineguard_<noun>_<unit>_total`; labels stay bounded (stage, verdict,
//! reason), frame ids and paths go to the log only.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::capture::{CameraState, CaptureError, CaptureEvents};
use crate::engine::StageTimes;
use crate::publish::mqtt::LinkEvents;
use crate::verdict::Decision;

type Labels = Vec<(&'static str, &'static str)>;

pub struct Telemetry {
    registry: Registry,
    frames: Counter,
    drops: Family<Labels, Counter>,
    verdicts: Family<Labels, Counter>,
    stage_seconds: Family<Labels, Histogram>,
    outbox_enqueued: Counter,
    outbox_acked: Counter,
    outbox_depth: Gauge,
    outbox_dropped: Counter,
    broker_connected: Gauge,
    broker_disconnects: Counter,
    commands: Family<Labels, Counter>,
    camera_up: Gauge,
    inference_errors: Counter,
    // Live values for the status topic.
    pub started: Instant,
    pub camera: Mutex<CameraState>,
    pub frames_total: AtomicU64,
    pub drops_total: AtomicU64,
    pub ok_total: AtomicU64,
    pub ng_total: AtomicU64,
    pub connected: AtomicBool,
    /// Last time the inference loop went round (the systemd watchdog checks it).
    pub heartbeat: Mutex<Instant>,
    /// (time, verdict count) at the last fps sample.
    fps_mark: Mutex<(Instant, u64, f64)>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let mut registry = Registry::with_prefix("lineguard");
        let t = Telemetry {
            frames: Counter::default(),
            drops: Family::default(),
            verdicts: Family::default(),
            stage_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 16))),
            outbox_enqueued: Counter::default(),
            outbox_acked: Counter::default(),
            outbox_depth: Gauge::default(),
            outbox_dropped: Counter::default(),
            broker_connected: Gauge::default(),
            broker_disconnects: Counter::default(),
            commands: Family::default(),
            camera_up: Gauge::default(),
            inference_errors: Counter::default(),
            registry: Registry::default(),
            started: Instant::now(),
            camera: Mutex::new(CameraState::Starting),
            frames_total: AtomicU64::new(0),
            drops_total: AtomicU64::new(0),
            ok_total: AtomicU64::new(0),
            ng_total: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            heartbeat: Mutex::new(Instant::now()),
            fps_mark: Mutex::new((Instant::now(), 0, 0.0)),
        };
        registry.register("frames_captured", "Frames delivered by the capture source", t.frames.clone());
        registry.register("frames_dropped", "Frames not inspected, by reason (busy: a newer frame won; bad_frame)", t.drops.clone());
        registry.register("verdicts", "Verdicts by result", t.verdicts.clone());
        registry.register("stage_seconds", "Per-frame time of each pipeline stage", t.stage_seconds.clone());
        registry.register("outbox_enqueued", "Verdicts written to the outbox", t.outbox_enqueued.clone());
        registry.register("outbox_acked", "Verdicts acknowledged by the broker", t.outbox_acked.clone());
        registry.register("outbox_depth", "Verdicts waiting in the outbox", t.outbox_depth.clone());
        registry.register("outbox_dropped", "Verdicts dropped because the outbox was full", t.outbox_dropped.clone());
        registry.register("broker_connected", "1 while connected to the MQTT broker", t.broker_connected.clone());
        registry.register("broker_disconnects", "Lost broker connections", t.broker_disconnects.clone());
        registry.register("commands", "Commands received, by result", t.commands.clone());
        registry.register("camera_up", "1 while the capture source delivers", t.camera_up.clone());
        registry.register("inference_errors", "Frames that failed in the engine", t.inference_errors.clone());
        Telemetry { registry, ..t }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        encode(&mut s, &self.registry).expect("writing to a String");
        s
    }

    pub fn verdict(&self, d: Decision, times: &StageTimes) {
        let (label, total) = match d {
            Decision::Ok => ("ok", &self.ok_total),
            Decision::Ng => ("ng", &self.ng_total),
        };
        self.verdicts.get_or_create(&vec![("verdict", label)]).inc();
        total.fetch_add(1, Ordering::Relaxed);
        for (name, d) in StageTimes::NAMES.iter().zip(times.as_array()) {
            self.stage_seconds.get_or_create(&vec![("stage", *name)]).observe(d.as_secs_f64());
        }
        self.stage_seconds.get_or_create(&vec![("stage", "total")]).observe(times.total().as_secs_f64());
    }

    pub fn inference_error(&self) {
        self.inference_errors.inc();
    }

    pub fn outbox(&self, enqueued: bool, depth: usize, dropped: usize) {
        if enqueued {
            self.outbox_enqueued.inc();
        }
        self.outbox_dropped.inc_by(dropped as u64);
        self.outbox_depth.set(depth as i64);
    }

    pub fn command(&self, ok: bool) {
        self.commands.get_or_create(&vec![("result", if ok { "ok" } else { "refused" })]).inc();
    }

    pub fn beat(&self) {
        *self.heartbeat.lock().expect("heartbeat lock") = Instant::now();
    }

    pub fn since_heartbeat(&self) -> std::time::Duration {
        self.heartbeat.lock().expect("heartbeat lock").elapsed()
    }

    pub fn verdicts_total(&self) -> u64 {
        self.ok_total.load(Ordering::Relaxed) + self.ng_total.load(Ordering::Relaxed)
    }

    /// Verdicts per second since the previous call (at least a second apart).
    pub fn fps(&self) -> f64 {
        let mut m = self.fps_mark.lock().expect("fps lock");
        let now = Instant::now();
        let dt = now.duration_since(m.0).as_secs_f64();
        if dt >= 1.0 {
            let n = self.verdicts_total();
            m.2 = (n - m.1) as f64 / dt;
            *m = (now, n, m.2);
        }
        m.2
    }
}

impl CaptureEvents for Telemetry {
    fn camera_state(&self, state: CameraState) {
        self.camera_up.set((state == CameraState::Ok) as i64);
        *self.camera.lock().expect("camera lock") = state;
    }

    fn frame_captured(&self) {
        self.frames.inc();
        self.frames_total.fetch_add(1, Ordering::Relaxed);
    }

    fn frame_dropped(&self) {
        self.drops.get_or_create(&vec![("reason", "busy")]).inc();
        self.drops_total.fetch_add(1, Ordering::Relaxed);
    }

    fn bad_frame(&self, _error: &CaptureError) {
        self.drops.get_or_create(&vec![("reason", "bad_frame")]).inc();
        self.drops_total.fetch_add(1, Ordering::Relaxed);
    }
}

impl LinkEvents for Telemetry {
    fn connected(&self) {
        self.broker_connected.set(1);
        self.connected.store(true, Ordering::Relaxed);
    }

    fn disconnected(&self, _error: &str) {
        self.broker_connected.set(0);
        self.broker_disconnects.inc();
        self.connected.store(false, Ordering::Relaxed);
    }

    fn published(&self, _acked: u64) {
        self.outbox_acked.inc();
        self.outbox_depth.dec();
    }

    fn command_refused(&self, _command: &str, _error: &str) {
        self.command(false);
    }
}
