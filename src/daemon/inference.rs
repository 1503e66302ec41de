//! The inference thread: takes frames from the capture queue as the trigger
//! mode says, scores them, stores each verdict durably (outbox, or stdout
//! without a broker), archives NG frames, and carries out commands. It owns
//! the engine, so recipe switches and enrollment happen here, between frames.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{Notify, mpsc::UnboundedSender};

use super::telemetry::Telemetry;
use crate::archive::Archive;
use crate::capture::queue::Popped;
use crate::capture::{Completion, FrameQueue};
use crate::config::{Config, TriggerMode};
use crate::enroll::{EnrollParams, enroll};
use crate::frame::Frame;
use crate::heatmap;
use crate::progress::Progress;
use crate::publish::messages::{Command, CommandKind, EnrollmentStatus, Reply};
use crate::publish::outbox::Outbox;
use crate::station::{Inspection, Inspector, Overrides};

/// Where verdicts go.
pub enum Sink {
    /// The outbox, drained by the MQTT link.
    Outbox { outbox: Arc<Mutex<Outbox>>, changed: Arc<Notify>, topic: String },
    /// One JSON line per verdict on stdout (no broker configured).
    Stdout,
}

/// Live values the status reports, owned by this thread, read by others.
#[derive(Debug, Clone, Default)]
pub struct StationView {
    pub recipe: String,
    pub threshold: f32,
    pub model_id: String,
    pub bank_id: String,
    pub engine: String,
    pub enrollment: Option<EnrollmentStatus>,
}

struct Enrollment {
    recipe: String,
    target: usize,
    dir: PathBuf,
    frames: usize,
    command_id: Option<String>,
}

struct PendingTrigger {
    at: Instant,
    correlation_id: Option<String>,
    id: Option<String>,
}

pub struct InferenceLoop {
    pub config_path: PathBuf,
    pub cfg: Config,
    pub overrides: Overrides,
    pub inspector: Inspector,
    pub queue: Arc<FrameQueue>,
    pub completion: Option<Arc<dyn Completion>>,
    pub control: Receiver<Command>,
    pub replies: Option<UnboundedSender<Reply>>,
    pub sink: Sink,
    pub archive: Option<Archive>,
    pub telemetry: Arc<Telemetry>,
    pub view: Arc<Mutex<StationView>>,
    pub status_changed: Arc<Notify>,
    /// Set by SIGHUP.
    pub reload: Arc<AtomicBool>,
    triggers: VecDeque<PendingTrigger>,
    next_tick: Instant,
    enrollment: Option<Enrollment>,
}

impl InferenceLoop {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config_path: PathBuf,
        cfg: Config,
        overrides: Overrides,
        inspector: Inspector,
        queue: Arc<FrameQueue>,
        completion: Option<Arc<dyn Completion>>,
        control: Receiver<Command>,
        replies: Option<UnboundedSender<Reply>>,
        sink: Sink,
        archive: Option<Archive>,
        telemetry: Arc<Telemetry>,
        status_changed: Arc<Notify>,
        reload: Arc<AtomicBool>,
    ) -> InferenceLoop {
        let l = InferenceLoop {
            config_path,
            cfg,
            overrides,
            inspector,
            queue,
            completion,
            control,
            replies,
            sink,
            archive,
            telemetry,
            view: Arc::new(Mutex::new(StationView::default())),
            status_changed,
            reload,
            triggers: VecDeque::new(),
            next_tick: Instant::now(),
            enrollment: None,
        };
        l.publish_view();
        l
    }

    fn publish_view(&self) {
        let mut v = self.view.lock().expect("view lock");
        v.recipe = self.inspector.recipe.clone();
        v.threshold = self.inspector.threshold;
        v.model_id = self.inspector.model_id().to_owned();
        v.bank_id = self.inspector.bank_id().to_owned();
        v.engine = self.inspector.engine().description();
        v.enrollment = self.enrollment.as_ref().map(|e| EnrollmentStatus { recipe: e.recipe.clone(), frames: e.frames, target: e.target });
        drop(v);
        self.status_changed.notify_one();
    }

    fn reply(&self, r: Reply) {
        self.telemetry.command(r.ok);
        if !r.ok {
            tracing::warn!(command = %r.command, error = ?r.error, "command failed");
        }
        if let Some(tx) = &self.replies {
            let _ = tx.send(r);
        }
    }

    /// Runs until the capture queue is closed and drained.
    pub fn run(mut self) {
        loop {
            self.telemetry.beat();
            if self.reload.swap(false, Ordering::Relaxed) {
                match self.reload_config() {
                    Ok(()) => tracing::info!("configuration and bank reloaded"),
                    Err(e) => tracing::error!(error = %e, "reload failed; still running the previous configuration"),
                }
            }
            while let Ok(cmd) = self.control.try_recv() {
                self.command(cmd);
            }
            let wait = Duration::from_millis(100);
            match self.cfg.trigger.mode {
                TriggerMode::FreeRun => match self.queue.pop(wait) {
                    Popped::Frame(f) => {
                        self.process(f, None);
                    }
                    Popped::Timeout => {}
                    Popped::Closed => return,
                },
                TriggerMode::Interval => {
                    let now = Instant::now();
                    if now < self.next_tick {
                        std::thread::sleep((self.next_tick - now).min(wait));
                        continue;
                    }
                    match self.queue.pop(wait) {
                        Popped::Frame(f) => {
                            self.next_tick = Instant::now() + Duration::from_millis(self.cfg.trigger.interval_ms);
                            self.process(f, None);
                        }
                        Popped::Timeout => {}
                        Popped::Closed => return,
                    }
                }
                TriggerMode::Mqtt => {
                    let Some(t) = self.triggers.front() else {
                        // Stopping with no trigger pending: queued frames were never asked for.
                        if self.queue.is_closed() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    if t.at.elapsed() > Duration::from_millis(self.cfg.trigger.timeout_ms) {
                        let t = self.triggers.pop_front().expect("front exists");
                        self.reply(Reply::error("trigger", t.id, format!("no frame within {} ms", self.cfg.trigger.timeout_ms)));
                        continue;
                    }
                    match self.queue.pop(wait) {
                        // A camera frame must be taken after the trigger; a file is taken as it comes.
                        Popped::Frame(f) if self.queue.is_lossless() || f.arrived >= t.at => {
                            let t = self.triggers.pop_front().expect("front exists");
                            let corr = t.correlation_id.clone();
                            if self.process(f, corr) {
                                self.telemetry.command(true);
                            }
                        }
                        Popped::Frame(_) | Popped::Timeout => {}
                        Popped::Closed => return,
                    }
                }
            }
        }
    }

    /// Scores one frame and stores its verdict; false if it failed.
    fn process(&mut self, frame: Frame, correlation_id: Option<String>) -> bool {
        let mut inspection = match self.inspector.inspect(&frame) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(frame = %frame.label(), error = %e, "inspection failed");
                self.telemetry.inference_error();
                if let (Some(c), Some(o)) = (&self.completion, &frame.origin) {
                    c.failed(o, &e.to_string());
                }
                return false;
            }
        };
        inspection.verdict.correlation_id = correlation_id;
        if inspection.verdict.verdict == crate::verdict::Decision::Ng {
            self.archive_ng(&frame, &mut inspection);
        }
        self.telemetry.verdict(inspection.verdict.verdict, &inspection.scored.times);
        if self.enrollment.is_some() {
            self.enroll_frame(&frame);
        }
        let payload = serde_json::to_vec(&inspection.verdict).expect("verdict serializes");
        let stored = match &self.sink {
            Sink::Stdout => {
                println!("{}", String::from_utf8_lossy(&payload));
                true
            }
            Sink::Outbox { outbox, changed, topic } => {
                let mut ob = outbox.lock().expect("outbox lock");
                let r = ob.append(topic, &payload);
                let depth = ob.depth();
                drop(ob);
                match r {
                    Ok(a) => {
                        self.telemetry.outbox(a.seq.is_some(), depth, a.dropped + a.seq.is_none() as usize);
                        if a.seq.is_none() {
                            tracing::error!(id = %inspection.verdict.id, "outbox full (when_full = drop_newest): verdict dropped");
                        }
                        changed.notify_one();
                        a.seq.is_some()
                    }
                    Err(e) => {
                        tracing::error!(id = %inspection.verdict.id, error = %e, "cannot store the verdict");
                        false
                    }
                }
            }
        };
        if let (Some(c), Some(o)) = (&self.completion, &frame.origin) {
            if stored { c.done(o) } else { c.failed(o, "the verdict could not be stored (see the log)") }
        }
        stored
    }

    fn archive_ng(&mut self, frame: &Frame, inspection: &mut Inspection) {
        let Some(archive) = self.archive.as_mut() else { return };
        let v = &inspection.verdict;
        let id = Archive::id_for(&v.frame.captured_at, frame.seq);
        let encode = |img: &image::RgbImage| -> Vec<u8> {
            let mut buf = Vec::new();
            let _ = img.write_to(&mut std::io::Cursor::new(&mut buf), image::ImageFormat::Png);
            buf
        };
        let raw = image::RgbImage::from_raw(frame.width, frame.height, frame.to_rgb8()).expect("frame geometry");
        let over = heatmap::overlay(frame, &inspection.scored, v.threshold, &v.regions);
        let mut v2 = v.clone();
        v2.archive_id = Some(id.clone());
        let json = serde_json::to_vec_pretty(&v2).expect("verdict serializes");
        match archive.store(&id, &encode(&raw), &encode(&over), &json) {
            Ok(()) => inspection.verdict.archive_id = Some(id),
            Err(e) => tracing::error!(error = %e, "NG archive: cannot store the frame"),
        }
    }

    fn command(&mut self, cmd: Command) {
        let name = cmd.kind.name();
        let id = cmd.id.clone();
        match cmd.kind {
            CommandKind::Trigger { correlation_id } => {
                if self.cfg.trigger.mode != TriggerMode::Mqtt {
                    return self.reply(Reply::error(name, id, "trigger.mode is not \"mqtt\"".into()));
                }
                self.triggers.push_back(PendingTrigger { at: Instant::now(), correlation_id, id });
            }
            CommandKind::Recipe { recipe } => {
                match self.inspector.select_recipe(&self.cfg, Some(&recipe), None) {
                    Ok(()) => {
                        tracing::info!(%recipe, "recipe switched");
                        self.publish_view();
                        self.reply(Reply::ok(name, id, Some(json!({"recipe": recipe, "bank_id": self.inspector.bank_id(), "threshold": self.inspector.threshold}))));
                    }
                    Err(e) => self.reply(Reply::error(name, id, e.to_string())),
                }
            }
            CommandKind::Threshold { threshold } => {
                self.inspector.set_threshold(threshold);
                self.publish_view();
                self.reply(Reply::ok(name, id, Some(json!({"threshold": self.inspector.threshold}))));
            }
            CommandKind::Reload => match self.reload_config() {
                Ok(()) => self.reply(Reply::ok(name, id, Some(json!({"recipe": self.inspector.recipe, "bank_id": self.inspector.bank_id()})))),
                Err(e) => self.reply(Reply::error(name, id, e)),
            },
            CommandKind::EnrollStart { recipe, frames } => {
                if let Err(e) = self.cfg.recipe(Some(&recipe)) {
                    return self.reply(Reply::error(name, id, e.to_string()));
                }
                if self.enrollment.is_some() {
                    return self.reply(Reply::error(name, id, "an enrollment is already running (stop or cancel it first)".into()));
                }
                let stamp = crate::archive::Archive::id_for(&crate::verdict::rfc3339(std::time::SystemTime::now()), 0);
                let dir = self.cfg.daemon.state_dir.join("enroll").join(format!("{recipe}-{stamp}"));
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    return self.reply(Reply::error(name, id, format!("{}: {e}", dir.display())));
                }
                tracing::info!(%recipe, frames, dir = %dir.display(), "enrollment started: collecting frames");
                self.enrollment = Some(Enrollment { recipe, target: frames, dir, frames: 0, command_id: id.clone() });
                self.publish_view();
                self.reply(Reply::ok(name, id, Some(json!({"action": "start", "frames": frames}))));
            }
            CommandKind::EnrollStop => self.finish_enrollment(id),
            CommandKind::EnrollCancel => {
                let e = self.enrollment.take();
                self.publish_view();
                match e {
                    Some(e) => self.reply(Reply::ok(name, id, Some(json!({"action": "cancel", "frames": e.frames})))),
                    None => self.reply(Reply::error(name, id, "no enrollment is running".into())),
                }
            }
        }
    }

    fn enroll_frame(&mut self, frame: &Frame) {
        let Some(e) = self.enrollment.as_mut() else { return };
        let img = image::RgbImage::from_raw(frame.width, frame.height, frame.to_rgb8()).expect("frame geometry");
        let path = e.dir.join(format!("{:06}.png", e.frames));
        match heatmap::save_png(&img, &path) {
            Ok(()) => e.frames += 1,
            Err(err) => tracing::error!(file = %path.display(), error = %err, "enrollment: cannot save the frame"),
        }
        let done = e.frames >= e.target;
        self.publish_view();
        if done {
            let id = self.enrollment.as_ref().and_then(|e| e.command_id.clone());
            self.finish_enrollment(id);
        }
    }

    /// Builds the bank from the collected frames, writes it to the recipe's
    /// bank path, and loads it if that recipe is active.
    fn finish_enrollment(&mut self, id: Option<String>) {
        let Some(e) = self.enrollment.take() else {
            return self.reply(Reply::error("enroll", id, "no enrollment is running".into()));
        };
        let result = (|| -> Result<serde_json::Value, String> {
            let (_, recipe) = self.cfg.recipe(Some(&e.recipe)).map_err(|x| x.to_string())?;
            let images = crate::enroll::list_images(&e.dir).map_err(|x| x.to_string())?;
            let params = EnrollParams::from_config(&self.cfg, recipe.roi);
            let contract = self.inspector.contract().clone();
            tracing::info!(recipe = %e.recipe, images = images.len(), "enrollment: building the bank");
            let bank = enroll(self.inspector.engine_mut(), &contract, &images, &params, &Progress::hidden()).map_err(|x| x.to_string())?;
            bank.save(&recipe.bank).map_err(|x| x.to_string())?;
            if self.inspector.recipe == e.recipe {
                self.inspector.select_recipe(&self.cfg, Some(&e.recipe), None).map_err(|x| x.to_string())?;
            } else {
                // The engine holds the active recipe's bank; enrollment did not change it.
                let active = self.inspector.recipe.clone();
                self.inspector.select_recipe(&self.cfg, Some(&active), None).map_err(|x| x.to_string())?;
            }
            Ok(json!({"action": "stop", "recipe": e.recipe, "images": images.len(), "bank": recipe.bank, "bank_id": bank.id(), "threshold": bank.header.threshold}))
        })();
        self.publish_view();
        match result {
            Ok(detail) => {
                tracing::info!(%detail, "enrollment finished");
                self.reply(Reply::ok("enroll", id, Some(detail)))
            }
            Err(err) => self.reply(Reply::error("enroll", id, err)),
        }
    }

    /// Re-reads the configuration and the active recipe's bank; keeps the old ones on error.
    fn reload_config(&mut self) -> Result<(), String> {
        let cfg = Config::load(&self.config_path).map_err(|e| e.to_string())?;
        let same_model = cfg.model.path == self.cfg.model.path && cfg.model.taps == self.cfg.model.taps && cfg.engine.kind == self.cfg.engine.kind;
        let recipe = if cfg.recipes.contains_key(&self.inspector.recipe) { self.inspector.recipe.clone() } else { cfg.station.recipe.clone() };
        if same_model && self.overrides.model.is_none() {
            self.inspector.select_recipe(&cfg, Some(&recipe), self.overrides.bank.as_deref()).map_err(|e| e.to_string())?;
        } else {
            let ov = Overrides { recipe: Some(recipe), ..self.overrides.clone() };
            self.inspector = Inspector::open(&cfg, &ov).map_err(|e| e.to_string())?;
        }
        self.cfg = cfg;
        self.publish_view();
        Ok(())
    }
}
