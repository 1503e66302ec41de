//! `lineguard run`: the station as a service.
//!
//! ```text
//! capture thread --FrameQueue--> inference thread --outbox (fsync)--> MQTT task --> broker
//!                                   ^   commands <---------------------'   |
//!                                   '--- SIGHUP reload          status, replies
//! ```
//!
//! Capture never waits on inference (the newest frame wins) and inference
//! never waits on the broker (the outbox holds verdicts while it is away).
//! SIGTERM stops capture, finishes the queued frames, gives the broker
//! `daemon.shutdown_flush_secs` to take the outbox, and says goodbye.

pub mod http;
pub mod inference;
pub mod systemd;
pub mod telemetry;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};

use crate::archive::{Archive, ArchiveError};
use crate::capture::{self, CaptureError, FrameQueue};
use crate::config::{Config, ConfigError};
use crate::publish::messages::{StationState, Status, Topics, VerdictCounts};
use crate::publish::mqtt::{self, LinkContext, LinkError};
use crate::publish::outbox::{Outbox, OutboxError};
use crate::publish::broker::{self, BrokerError};
use crate::station::{Inspector, Overrides, StationError};
use crate::verdict::rfc3339;
use inference::{InferenceLoop, Sink, StationView};
use telemetry::Telemetry;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: [capture] is missing: `lineguard run` needs a frame source (see firmware-config/SCHEMA.md)")]
    NoCapture { path: PathBuf },
    #[error(transparent)]
    Station(#[from] StationError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("http.listen {listen}: {source}")]
    Http { listen: std::net::SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Runtime(String),
}

/// Runs the station until SIGTERM/SIGINT (or `stop` becomes true).
pub fn run(config_path: &Path, overrides: Overrides, stop: Option<Arc<AtomicBool>>) -> Result<(), DaemonError> {
    let cfg = Config::load(config_path)?;
    let capture_cfg = cfg.capture.clone().ok_or_else(|| DaemonError::NoCapture { path: config_path.into() })?;
    let telemetry = Arc::new(Telemetry::new());
    if let Some(b) = &cfg.broker {
        broker::start(b.listen)?;
    }
    let inspector = Inspector::open(&cfg, &overrides)?;
    let source = capture::open(&capture_cfg, &cfg.base_dir)?;
    tracing::info!(source = %source.describe(), trigger = ?cfg.trigger.mode, "capture open");
    let queue = Arc::new(if source.lossless() { FrameQueue::lossless(4) } else { FrameQueue::latest() });
    let completion = source.completion();
    let topics = Topics::new(cfg.mqtt.as_ref().map_or("lineguard", |m| m.topic_prefix.as_str()), &cfg.station.name);

    let outbox_changed = Arc::new(Notify::new());
    let status_changed = Arc::new(Notify::new());
    let (outbox, sink) = match &cfg.mqtt {
        Some(_) => {
            let ob = Outbox::open(cfg.outbox.dir.as_deref().expect("resolved at load"), cfg.outbox.max_bytes, cfg.outbox.when_full)?;
            if ob.depth() > 0 {
                tracing::info!(pending = ob.depth(), "outbox: verdicts from before the restart will be sent first");
            }
            let ob = Arc::new(Mutex::new(ob));
            (Some(ob.clone()), Sink::Outbox { outbox: ob, changed: outbox_changed.clone(), topic: topics.verdict.clone() })
        }
        None => (None, Sink::Stdout),
    };
    let archive = match &cfg.archive {
        Some(a) => Some(Archive::open(a.dir.as_deref().expect("resolved at load"), a.max_bytes)?),
        None => None,
    };
    let (control_tx, control_rx) = std::sync::mpsc::channel();
    let (reply_tx, reply_rx) = mpsc::unbounded_channel();
    let reload = Arc::new(AtomicBool::new(false));
    let inference = InferenceLoop::new(
        config_path.into(),
        cfg.clone(),
        overrides,
        inspector,
        queue.clone(),
        completion,
        control_rx,
        cfg.mqtt.as_ref().map(|_| reply_tx),
        sink,
        archive,
        telemetry.clone(),
        status_changed.clone(),
        reload.clone(),
    );
    let view = inference.view.clone();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("lineguard-io")
        .build()
        .map_err(|e| DaemonError::Runtime(e.to_string()))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    // Capture and inference run on their own threads, never on the runtime.
    let stop_capture = Arc::new(AtomicBool::new(false));
    let capture_thread = {
        let (q, s, t) = (queue.clone(), stop_capture.clone(), telemetry.clone());
        std::thread::Builder::new().name("lineguard-capture".into()).spawn(move || capture::run(source, q, s, t))
    }
    .map_err(|e| DaemonError::Runtime(e.to_string()))?;
    let inference_thread = std::thread::Builder::new()
        .name("lineguard-inference".into())
        .spawn(move || inference.run())
        .map_err(|e| DaemonError::Runtime(e.to_string()))?;

    let link = match (&cfg.mqtt, &outbox) {
        (Some(m), Some(ob)) => {
            let opts = mqtt::options(m, &cfg.station.name, &topics)?;
            let status = status_fn(&cfg.station.name, telemetry.clone(), view.clone(), ob.clone());
            let cx = LinkContext {
                station: cfg.station.name.clone(),
                topics,
                outbox: ob.clone(),
                outbox_changed: outbox_changed.clone(),
                replies: reply_rx,
                commands: control_tx,
                status,
                status_changed: status_changed.clone(),
                connected: Arc::new(AtomicBool::new(false)),
                shutdown: shutdown_rx.clone(),
                flush_timeout: Duration::from_secs(cfg.daemon.shutdown_flush_secs),
                events: telemetry.clone(),
            };
            Some(rt.spawn(mqtt::run(m.clone(), opts, cx)))
        }
        _ => None,
    };

    let result: Result<(), DaemonError> = rt.block_on(async {
        if let Some(listen) = cfg.http.listen {
            http::serve(listen, telemetry.clone(), cfg.mqtt.is_some()).await.map_err(|source| DaemonError::Http { listen, source })?;
        }
        tokio::spawn(systemd::watchdog(telemetry.clone()));
        systemd::ready(&format!("inspecting, recipe {}", view.lock().expect("view lock").recipe));
        wait_for_stop(reload.clone(), stop).await;
        Ok(())
    });

    // Orderly stop: capture first, then let inference drain, then the link flushes.
    systemd::stopping();
    tracing::info!("stopping: finishing queued frames");
    stop_capture.store(true, Ordering::Relaxed);
    let _ = capture_thread.join();
    let _ = inference_thread.join();
    let _ = shutdown_tx.send(true);
    if let Some(h) = link {
        let flush = Duration::from_secs(cfg.daemon.shutdown_flush_secs + 5);
        let _ = rt.block_on(async { tokio::time::timeout(flush, h).await });
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("stopped");
    result
}

/// Waits for SIGTERM/SIGINT (or the test hook); SIGHUP sets `reload`.
async fn wait_for_stop(reload: Arc<AtomicBool>, stop: Option<Arc<AtomicBool>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    let mut int = signal(SignalKind::interrupt()).expect("signal handler");
    let mut hup = signal(SignalKind::hangup()).expect("signal handler");
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM"); return }
            _ = int.recv() => { tracing::info!("SIGINT"); return }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading configuration and bank");
                systemd::reloading();
                reload.store(true, Ordering::Relaxed);
            }
            _ = poll.tick() => if stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) { return },
        }
    }
}

fn status_fn(
    station: &str,
    t: Arc<Telemetry>,
    view: Arc<Mutex<StationView>>,
    outbox: Arc<Mutex<Outbox>>,
) -> Arc<dyn Fn() -> Status + Send + Sync> {
    let station = station.to_owned();
    Arc::new(move || {
        let v = view.lock().expect("view lock").clone();
        let ob = outbox.lock().expect("outbox lock");
        Status {
            schema_version: crate::publish::messages::SCHEMA_VERSION,
            station: station.clone(),
            state: StationState::Online,
            time: rfc3339(std::time::SystemTime::now()),
            engine: v.engine,
            model_id: v.model_id,
            bank_id: v.bank_id,
            recipe: v.recipe,
            threshold: v.threshold,
            fps: t.fps(),
            frames_captured: t.frames_total.load(Ordering::Relaxed),
            verdicts: VerdictCounts { ok: t.ok_total.load(Ordering::Relaxed), ng: t.ng_total.load(Ordering::Relaxed) },
            drops: t.drops_total.load(Ordering::Relaxed),
            outbox_depth: ob.depth(),
            outbox_dropped: ob.dropped_total,
            camera: t.camera.lock().expect("camera lock").clone(),
            broker_connected: t.connected.load(Ordering::Relaxed),
            uptime_s: t.started.elapsed().as_secs(),
            enrollment: v.enrollment,
        }
    })
}
