//! The hot folder: image files dropped into a folder are inspected once each,
//! then moved to `done/` (verdict stored) or `failed/` (with a
//! `NAME.reason.txt` saying why).
//!
//! A picked-up file first moves to `processing/`. Once its verdict is in the
//! outbox, its name is appended (fsynced) to `processing/.journal` and then
//! the file moves to `done/`. After a crash, a file in `processing/` whose
//! name is in the journal already has its verdict and just finishes moving;
//! any other is inspected again (its verdict was never stored). So every
//! file gets exactly one stored verdict, across restarts.

use std::collections::{HashSet, VecDeque};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{CaptureError, Completion, FrameSource};
use crate::enroll::IMAGE_EXTENSIONS;
use crate::frame::Frame;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderConfig {
    /// The watched folder; done/, failed/ and processing/ are made inside it.
    pub path: PathBuf,
    /// How often the folder is scanned.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// A file is taken only once it has not changed for this long (still being written otherwise).
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
}

const fn default_poll_ms() -> u64 {
    200
}
const fn default_settle_ms() -> u64 {
    300
}

const JOURNAL: &str = ".journal";

struct Dirs {
    inbox: PathBuf,
    processing: PathBuf,
    done: PathBuf,
    failed: PathBuf,
}

/// Moves files on after inspection; shared with the inference thread.
struct Mover {
    dirs: Dirs,
    journal: Mutex<std::fs::File>,
}

impl Mover {
    fn move_to(&self, from: &Path, dir: &Path) -> std::io::Result<PathBuf> {
        let name = from.file_name().unwrap_or_default();
        let mut to = dir.join(name);
        if to.exists() {
            // Same name again later: keep both.
            let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
            to = dir.join(format!("{stamp}-{}", name.to_string_lossy()));
        }
        std::fs::rename(from, &to)?;
        Ok(to)
    }
}

impl Completion for Mover {
    fn done(&self, origin: &Path) {
        let name = origin.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let logged = (|| -> std::io::Result<()> {
            let mut j = self.journal.lock().expect("journal lock");
            writeln!(j, "{name}")?;
            j.sync_data()
        })();
        if let Err(e) = logged {
            tracing::error!(file = %origin.display(), error = %e, "hot folder: cannot write the journal; the file stays in processing/");
            return;
        }
        if let Err(e) = self.move_to(origin, &self.dirs.done) {
            tracing::error!(file = %origin.display(), error = %e, "hot folder: cannot move to done/");
            return;
        }
        // Nothing in flight any more: the journal's entries are all settled.
        let idle = std::fs::read_dir(&self.dirs.processing).is_ok_and(|mut d| !d.any(|e| e.is_ok_and(|e| is_image(&e.path()))));
        if idle && let Err(e) = self.journal.lock().expect("journal lock").set_len(0) {
            tracing::warn!(error = %e, "hot folder: cannot compact the journal");
        }
    }

    fn failed(&self, origin: &Path, reason: &str) {
        match self.move_to(origin, &self.dirs.failed) {
            Ok(to) => {
                let mut r = to.into_os_string();
                r.push(".reason.txt");
                if let Err(e) = crate::fsutil::write_atomic(Path::new(&r), format!("{reason}\n").as_bytes()) {
                    tracing::error!(file = %origin.display(), error = %e, "hot folder: cannot write the reason file");
                }
            }
            Err(e) => tracing::error!(file = %origin.display(), error = %e, "hot folder: cannot move to failed/"),
        }
    }
}

pub struct FolderSource {
    mover: Arc<Mover>,
    poll: Duration,
    settle: Duration,
    /// Picked-up files waiting to be decoded, oldest first (recovered ones come first).
    ready: VecDeque<PathBuf>,
    seq: u64,
    /// Files seen in the inbox that were not yet settled: name -> (size, mtime).
    seen: std::collections::HashMap<PathBuf, (u64, SystemTime)>,
}

fn is_image(p: &Path) -> bool {
    p.is_file()
        && p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

impl FolderSource {
    pub fn open(cfg: &FolderConfig, base: &Path) -> Result<FolderSource, CaptureError> {
        let inbox = super::resolve(base, &cfg.path);
        let name = inbox.display().to_string();
        let err = |reason: String| CaptureError::Open { source_name: name.clone(), reason };
        if !inbox.is_dir() {
            return Err(err("not a folder (create it, or fix capture.path)".into()));
        }
        let dirs = Dirs { processing: inbox.join("processing"), done: inbox.join("done"), failed: inbox.join("failed"), inbox };
        for d in [&dirs.processing, &dirs.done, &dirs.failed] {
            std::fs::create_dir_all(d).map_err(|e| err(format!("cannot create {}: {e}", d.display())))?;
        }
        // Recover from a crash: finish what was stored, re-queue what was not.
        let journal_path = dirs.processing.join(JOURNAL);
        let logged: HashSet<String> =
            std::fs::read_to_string(&journal_path).unwrap_or_default().lines().map(str::to_owned).collect();
        let mut leftovers: Vec<PathBuf> = std::fs::read_dir(&dirs.processing)
            .map_err(|e| err(e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_image(p))
            .collect();
        leftovers.sort();
        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&journal_path)
            .map_err(|e| err(format!("cannot open {}: {e}", journal_path.display())))?;
        let mover = Arc::new(Mover { dirs, journal: Mutex::new(journal) });
        let mut ready = VecDeque::new();
        for p in leftovers {
            let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if logged.contains(&name) {
                tracing::info!(file = %p.display(), "hot folder: verdict already stored; moving to done/");
                mover.move_to(&p, &mover.dirs.done).map_err(|e| err(e.to_string()))?;
            } else {
                tracing::info!(file = %p.display(), "hot folder: inspection was interrupted; inspecting again");
                ready.push_back(p);
            }
        }
        if ready.is_empty() {
            // Nothing in flight: the journal's entries are all settled.
            let j = mover.journal.lock().expect("journal lock");
            j.set_len(0).map_err(|e| err(e.to_string()))?;
        }
        Ok(FolderSource {
            mover,
            poll: Duration::from_millis(cfg.poll_ms.max(10)),
            settle: Duration::from_millis(cfg.settle_ms),
            ready,
            seq: 0,
            seen: Default::default(),
        })
    }

    /// Moves settled new files into processing/, oldest first.
    fn scan(&mut self) -> std::io::Result<()> {
        let mut files: Vec<(SystemTime, PathBuf, u64)> = Vec::new();
        for e in std::fs::read_dir(&self.mover.dirs.inbox)? {
            let p = e?.path();
            if !is_image(&p) || p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                continue;
            }
            let m = std::fs::metadata(&p)?;
            files.push((m.modified()?, p, m.len()));
        }
        files.sort();
        let now = SystemTime::now();
        let mut still_seen = std::collections::HashMap::new();
        for (mtime, p, len) in files {
            let settled = self.seen.get(&p) == Some(&(len, mtime)) && now.duration_since(mtime).unwrap_or_default() >= self.settle;
            if settled {
                let to = self.mover.move_to(&p, &self.mover.dirs.processing)?;
                self.ready.push_back(to);
            } else {
                still_seen.insert(p, (len, mtime));
            }
        }
        self.seen = still_seen;
        Ok(())
    }
}

impl FrameSource for FolderSource {
    fn describe(&self) -> String {
        format!("hot folder {}", self.mover.dirs.inbox.display())
    }

    fn next_frame(&mut self) -> Result<Frame, CaptureError> {
        if self.ready.is_empty() {
            std::thread::sleep(self.poll);
            self.scan().map_err(|e| CaptureError::Lost {
                source_name: self.mover.dirs.inbox.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        let Some(path) = self.ready.pop_front() else { return Err(CaptureError::Idle) };
        self.seq += 1;
        match Frame::from_image_file(&path, self.seq) {
            Ok(mut f) => {
                f.origin = Some(path);
                Ok(f)
            }
            Err(e) => {
                self.mover.failed(&path, &e.to_string());
                Err(CaptureError::BadFrame { source_name: path.display().to_string(), reason: e.to_string() })
            }
        }
    }

    fn reopen(&mut self) -> Result<(), CaptureError> {
        if self.mover.dirs.inbox.is_dir() {
            Ok(())
        } else {
            Err(CaptureError::Open { source_name: self.mover.dirs.inbox.display().to_string(), reason: "folder is gone".into() })
        }
    }

    fn lossless(&self) -> bool {
        true
    }

    fn completion(&self) -> Option<Arc<dyn Completion>> {
        Some(self.mover.clone())
    }
}
