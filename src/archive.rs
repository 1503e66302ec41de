//! The NG archive: each NG frame, its heatmap overlay and its verdict, kept on
//! disk within a byte budget; the oldest entries go first. Entry ids sort in
//! time order (`20261204T171016274Z-000042`), and the verdict carries its id.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crate::fsutil::write_atomic;

#[derive(Debug, thiserror::Error)]
#[error("archive {path}: {action}: {source}")]
pub struct ArchiveError {
    pub path: PathBuf,
    pub action: &'static str,
    pub source: std::io::Error,
}

const SUFFIXES: [&str; 3] = [".png", ".heatmap.png", ".json"];

pub struct Archive {
    dir: PathBuf,
    max_bytes: u64,
    /// (id, bytes), oldest first.
    entries: VecDeque<(String, u64)>,
    total: u64,
}

impl Archive {
    /// Opens the archive, counting what is already there.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Archive, ArchiveError> {
        let err = |action, source| ArchiveError { path: dir.into(), action, source };
        std::fs::create_dir_all(dir).map_err(|e| err("create", e))?;
        let mut sizes: std::collections::BTreeMap<String, u64> = Default::default();
        for e in std::fs::read_dir(dir).map_err(|e| err("list", e))? {
            let e = e.map_err(|e| err("list", e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = SUFFIXES.iter().rev().find_map(|s| name.strip_suffix(s)) {
                *sizes.entry(id.to_owned()).or_default() += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        let entries: VecDeque<(String, u64)> = sizes.into_iter().collect();
        let total = entries.iter().map(|e| e.1).sum();
        let mut a = Archive { dir: dir.into(), max_bytes, entries, total };
        a.enforce_budget()?;
        Ok(a)
    }

    /// The id for a frame captured at `captured_at` (RFC 3339) with sequence `seq`.
    pub fn id_for(captured_at: &str, seq: u64) -> String {
        let stamp: String = captured_at.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        format!("{stamp}-{seq:06}")
    }

    /// Stores one entry (frame PNG, heatmap PNG, verdict JSON) and trims the oldest.
    pub fn store(&mut self, id: &str, frame_png: &[u8], heatmap_png: &[u8], verdict_json: &[u8]) -> Result<(), ArchiveError> {
        let mut bytes = 0;
        for (suffix, data) in SUFFIXES.iter().zip([frame_png, heatmap_png, verdict_json]) {
            let path = self.dir.join(format!("{id}{suffix}"));
            write_atomic(&path, data).map_err(|source| ArchiveError { path, action: "write", source })?;
            bytes += data.len() as u64;
        }
        self.entries.push_back((id.to_owned(), bytes));
        self.total += bytes;
        self.enforce_budget()
    }

    fn enforce_budget(&mut self) -> Result<(), ArchiveError> {
        while self.total > self.max_bytes && self.entries.len() > 1 {
            let (id, bytes) = self.entries.pop_front().expect("non-empty");
            for s in SUFFIXES {
                let path = self.dir.join(format!("{id}{s}"));
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(ArchiveError { path, action: "delete", source }),
                }
            }
            self.total -= bytes;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_entries_go_first_when_over_budget() {
        let d = tempfile::tempdir().unwrap();
        let mut a = Archive::open(d.path(), 2500).unwrap();
        for i in 0..5 {
            let id = Archive::id_for(&format!("2026-12-04T17:10:1{i}.000Z"), i);
            a.store(&id, &[0; 500], &[0; 400], &[0; 100]).unwrap();
        }
        assert_eq!(a.len(), 2);
        assert!(a.bytes() <= 2500);
        let mut names: Vec<String> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names.len(), 6);
        assert!(names[0].starts_with("20261204T171013000Z-000003"), "{names:?}");
        // Reopening counts what is there and keeps the budget.
        let a = Archive::open(d.path(), 1500).unwrap();
        assert_eq!(a.len(), 1);
    }
}
