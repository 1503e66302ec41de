//! The on-disk outbox: every verdict is appended and fsynced here before it
//! is published, and removed only when the broker has acknowledged it. It
//! survives broker outages, daemon restarts, SIGKILL and power loss, and
//! hands records back in order.
//!
//! Layout: a directory of segment files `NNNNNNNNNNNNNNNNNNNN.seg` (first
//! sequence number, 20 digits), each a run of records
//! `u32 length | u32 crc32 | u64 seq | u16 topic length | topic | payload`
//! (length and crc cover everything after the crc), plus `acked`, the highest
//! acknowledged sequence number (8 bytes + crc32, replaced atomically).
//! A torn record at the end of the newest segment (power loss mid-write) is
//! cut off at start-up; a bad record anywhere else is an error.
//! Bounded in bytes: when full, either the oldest pending records are
//! dropped or the new one is refused (`when_full`), and the drop is counted.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

const SEGMENT_BYTES: u64 = 4 << 20;
const HEADER: usize = 4 + 4 + 8 + 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Drop the oldest undelivered verdicts to make room (keeps the newest).
    #[default]
    DropOldest,
    /// Refuse the new verdict (keeps the oldest).
    DropNewest,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {action}: {source}")]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
    #[error("outbox {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("outbox: a {size}-byte record exceeds the whole budget of {max} bytes")]
    TooLarge { size: usize, max: u64 },
}

/// One pending message.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Record {
    fn encoded_len(&self) -> usize {
        HEADER + self.topic.len() + self.payload.len()
    }

    fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(8 + 2 + self.topic.len() + self.payload.len());
        body.extend_from_slice(&self.seq.to_le_bytes());
        body.extend_from_slice(&(self.topic.len() as u16).to_le_bytes());
        body.extend_from_slice(self.topic.as_bytes());
        body.extend_from_slice(&self.payload);
        let mut out = Vec::with_capacity(8 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }
}

/// Outcome of an append.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// Sequence number of the new record, `None` if it was refused (full, `drop_newest`).
    pub seq: Option<u64>,
    /// Pending records dropped to make room (`drop_oldest`).
    pub dropped: usize,
}

pub struct Outbox {
    dir: PathBuf,
    max_bytes: u64,
    when_full: WhenFull,
    /// Undelivered records, oldest first.
    pending: VecDeque<Record>,
    pending_bytes: u64,
    /// Acknowledged out of order, waiting for the ones before them.
    acked_ahead: BTreeSet<u64>,
    /// Highest sequence number such that it and all before it are acknowledged.
    acked: u64,
    next_seq: u64,
    /// The segment being appended to: (first seq, file, size).
    current: Option<(u64, File, u64)>,
    /// Segments on disk by first seq.
    segments: Vec<u64>,
    pub dropped_total: u64,
    /// Damaged records skipped at start-up.
    pub corrupt_skipped: u64,
}

fn io<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> OutboxError + 'a {
    move |source| OutboxError::Io { path: path.into(), action, source }
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, recovering what was pending.
    pub fn open(dir: &Path, max_bytes: u64, when_full: WhenFull) -> Result<Outbox, OutboxError> {
        std::fs::create_dir_all(dir).map_err(io(dir, "create the directory"))?;
        let acked = read_acked(dir)?;
        let mut segments: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io(dir, "list"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        segments.sort();
        let mut ob = Outbox {
            dir: dir.into(),
            max_bytes,
            when_full,
            pending: VecDeque::new(),
            pending_bytes: 0,
            acked_ahead: BTreeSet::new(),
            acked,
            next_seq: acked + 1,
            current: None,
            segments: segments.clone(),
            dropped_total: 0,
            corrupt_skipped: 0,
        };
        for (i, &first) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            for r in ob.read_segment(first, last)? {
                ob.next_seq = ob.next_seq.max(r.seq + 1);
                if r.seq > acked {
                    ob.pending_bytes += r.encoded_len() as u64;
                    ob.pending.push_back(r);
                }
            }
        }
        ob.collect_garbage()?;
        Ok(ob)
    }

    /// Reads a segment's records. A bad record at the end of the newest
    /// segment is a torn write (power loss mid-append) and is cut off; a bad
    /// record elsewhere is skipped with an error in the log (and counted),
    /// so that one damaged record never holds back the ones after it.
    fn read_segment(&mut self, first: u64, newest: bool) -> Result<Vec<Record>, OutboxError> {
        let path = self.dir.join(segment_name(first));
        let bytes = std::fs::read(&path).map_err(io(&path, "read"))?;
        let mut out = Vec::new();
        let mut at = 0usize;
        while at < bytes.len() {
            let len = bytes.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize);
            let end = len.map(|l| at + 8 + l);
            let whole = end.filter(|&e| e <= bytes.len() && len.unwrap() >= 10);
            let parsed = whole.and_then(|e| {
                let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
                let body = &bytes[at + 8..e];
                if crc32fast::hash(body) != crc {
                    return None;
                }
                let seq = u64::from_le_bytes(body[..8].try_into().unwrap());
                let tlen = u16::from_le_bytes(body[8..10].try_into().unwrap()) as usize;
                let topic = String::from_utf8(body.get(10..10 + tlen)?.to_vec()).ok()?;
                Some(Record { seq, topic, payload: body[10 + tlen..].to_vec() })
            });
            match (parsed, whole) {
                (Some(r), Some(e)) => {
                    out.push(r);
                    at = e;
                }
                (None, w) if newest && w.is_none_or(|e| e == bytes.len()) => {
                    tracing::warn!(file = %path.display(), valid_bytes = at, dropped_bytes = bytes.len() - at, "outbox: cutting a torn record");
                    let f = OpenOptions::new().write(true).open(&path).map_err(io(&path, "open"))?;
                    f.set_len(at as u64).map_err(io(&path, "truncate"))?;
                    f.sync_all().map_err(io(&path, "fsync"))?;
                    break;
                }
                (None, Some(e)) => {
                    tracing::error!(file = %path.display(), offset = at, "outbox: skipping a damaged record");
                    self.corrupt_skipped += 1;
                    at = e;
                }
                (None, None) => {
                    tracing::error!(file = %path.display(), offset = at, "outbox: segment damaged from here on; skipping the rest");
                    self.corrupt_skipped += 1;
                    break;
                }
                (Some(_), None) => unreachable!("a parsed record is whole"),
            }
        }
        Ok(out)
    }

    /// Appends a record durably (fsync) and returns its sequence number.
    pub fn append(&mut self, topic: &str, payload: &[u8]) -> Result<Appended, OutboxError> {
        let rec = Record { seq: self.next_seq, topic: topic.into(), payload: payload.to_vec() };
        let size = rec.encoded_len() as u64;
        if size > self.max_bytes {
            return Err(OutboxError::TooLarge { size: size as usize, max: self.max_bytes });
        }
        let mut dropped = 0;
        while self.pending_bytes + size > self.max_bytes {
            match self.when_full {
                WhenFull::DropNewest => {
                    self.dropped_total += 1;
                    return Ok(Appended { seq: None, dropped: 0 });
                }
                WhenFull::DropOldest => {
                    let old = self.pending.front().expect("over budget means something is pending").seq;
                    // Treat the dropped record as delivered so that the watermark moves on.
                    self.ack(old)?;
                    dropped += 1;
                    self.dropped_total += 1;
                }
            }
        }
        self.write_record(&rec)?;
        self.next_seq += 1;
        self.pending_bytes += size;
        self.pending.push_back(rec);
        Ok(Appended { seq: Some(self.next_seq - 1), dropped })
    }

    fn write_record(&mut self, rec: &Record) -> Result<(), OutboxError> {
        let needs_new = self.current.as_ref().is_none_or(|(_, _, size)| *size >= SEGMENT_BYTES);
        if needs_new {
            let path = self.dir.join(segment_name(rec.seq));
            let f = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path, "create a segment"))?;
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
            self.segments.push(rec.seq);
            self.current = Some((rec.seq, f, 0));
        }
        let (first, f, size) = self.current.as_mut().expect("set above");
        let path = self.dir.join(segment_name(*first));
        let bytes = rec.encode();
        f.write_all(&bytes).map_err(io(&path, "append"))?;
        f.sync_data().map_err(io(&path, "fsync"))?;
        *size += bytes.len() as u64;
        Ok(())
    }

    /// Marks `seq` delivered. Records leave the outbox in order: an ack that
    /// arrives early waits until all before it are acknowledged.
    pub fn ack(&mut self, seq: u64) -> Result<(), OutboxError> {
        if seq <= self.acked {
            return Ok(());
        }
        self.acked_ahead.insert(seq);
        let before = self.acked;
        while self.acked_ahead.remove(&(self.acked + 1)) {
            self.acked += 1;
        }
        if self.acked == before {
            return Ok(());
        }
        while self.pending.front().is_some_and(|r| r.seq <= self.acked) {
            let r = self.pending.pop_front().expect("checked");
            self.pending_bytes -= r.encoded_len() as u64;
        }
        self.write_acked()?;
        self.collect_garbage()
    }

    fn write_acked(&self) -> Result<(), OutboxError> {
        let mut b = self.acked.to_le_bytes().to_vec();
        b.extend_from_slice(&crc32fast::hash(&b).to_le_bytes());
        let path = self.dir.join("acked");
        write_atomic(&path, &b).map_err(io(&path, "write"))
    }

    /// Deletes segments whose records are all acknowledged (never the one being written).
    fn collect_garbage(&mut self) -> Result<(), OutboxError> {
        let current = self.current.as_ref().map(|c| c.0);
        let oldest_pending = self.pending.front().map_or(self.next_seq, |r| r.seq);
        let mut keep = Vec::new();
        for (i, &first) in self.segments.iter().enumerate() {
            let next_first = self.segments.get(i + 1).copied();
            let fully_acked = next_first.is_some_and(|n| n <= oldest_pending) || (next_first.is_none() && oldest_pending >= self.next_seq && Some(first) != current);
            if fully_acked && Some(first) != current {
                let path = self.dir.join(segment_name(first));
                std::fs::remove_file(&path).map_err(io(&path, "remove a delivered segment"))?;
            } else {
                keep.push(first);
            }
        }
        self.segments = keep;
        Ok(())
    }

    /// Undelivered records, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Record> {
        self.pending.iter()
    }

    /// The pending record after `seq` (or the oldest with `None`).
    pub fn next_after(&self, seq: Option<u64>) -> Option<&Record> {
        match seq {
            None => self.pending.front(),
            Some(s) => {
                let i = self.pending.partition_point(|r| r.seq <= s);
                self.pending.get(i)
            }
        }
    }

    pub fn depth(&self) -> usize {
        self.pending.len()
    }

    pub fn depth_bytes(&self) -> u64 {
        self.pending_bytes
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }
}

fn read_acked(dir: &Path) -> Result<u64, OutboxError> {
    let path = dir.join("acked");
    match std::fs::read(&path) {
        Ok(b) if b.len() == 12 && crc32fast::hash(&b[..8]).to_le_bytes() == b[8..12] => {
            Ok(u64::from_le_bytes(b[..8].try_into().unwrap()))
        }
        Ok(_) => Err(OutboxError::Corrupt { path, reason: "bad acknowledgement marker (delete it to re-send everything pending)".into() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io(&path, "read")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, max: u64, wf: WhenFull) -> Outbox {
        Outbox::open(dir, max, wf).unwrap()
    }

    #[test]
    fn survives_reopen_and_delivers_in_order() {
        let d = tempfile::tempdir().unwrap();
        let mut ob = open(d.path(), 1 << 20, WhenFull::DropOldest);
        for i in 0..5 {
            ob.append("t/v", format!("v{i}").as_bytes()).unwrap();
        }
        ob.ack(1).unwrap();
        ob.ack(3).unwrap(); // early: 2 is still pending
        assert_eq!(ob.acked(), 1);
        drop(ob);
        let mut ob = open(d.path(), 1 << 20, WhenFull::DropOldest);
        let seqs: Vec<u64> = ob.pending().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![2, 3, 4, 5], "an ack ahead of a gap is not durable; 3 may be re-sent");
        assert_eq!(ob.pending().next().unwrap().payload, b"v1");
        assert_eq!(ob.append("t/v", b"v5").unwrap().seq, Some(6));
        for s in 2..=6 {
            ob.ack(s).unwrap();
        }
        assert_eq!(ob.depth(), 0);
        drop(ob);
        let ob = open(d.path(), 1 << 20, WhenFull::DropOldest);
        assert_eq!(ob.depth(), 0);
        assert_eq!(ob.next_after(None), None);
    }

    #[test]
    fn torn_tail_is_cut_and_earlier_records_kept() {
        let d = tempfile::tempdir().unwrap();
        let mut ob = open(d.path(), 1 << 20, WhenFull::DropOldest);
        ob.append("a", b"one").unwrap();
        ob.append("a", b"two").unwrap();
        drop(ob);
        let seg = d.path().join(segment_name(1));
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2]); // half a header of a third record
        std::fs::write(&seg, &bytes).unwrap();
        let mut ob = open(d.path(), 1 << 20, WhenFull::DropOldest);
        assert_eq!(ob.pending().map(|r| r.payload.clone()).collect::<Vec<_>>(), vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, bytes.len() - 6);
        assert_eq!(ob.append("a", b"three").unwrap().seq, Some(3));
    }

    #[test]
    fn damaged_last_record_is_cut_and_damaged_middle_record_skipped() {
        let d = tempfile::tempdir().unwrap();
        let mut ob = open(d.path(), 1 << 20, WhenFull::DropOldest);
        ob.append("a", b"one").unwrap();
        ob.append("a", b"two").unwrap();
        drop(ob);
        let seg = d.path().join(segment_name(1));
        let mut bytes = std::fs::read(&seg).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&seg, &bytes).unwrap();
        let mut ob = open(d.path(), 1 << 20, WhenFull::DropOldest);
        assert_eq!(ob.depth(), 1, "the damaged last record is cut, the first survives");
        ob.append("a", b"three").unwrap();
        ob.append("a", b"four").unwrap();
        drop(ob);
        // After a reopen appends go to a new segment (first seq 2): damage its
        // first record, "three"; it is skipped and "four" after it survives.
        let seg2 = d.path().join(segment_name(2));
        let mut bytes = std::fs::read(&seg2).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&seg2, &bytes).unwrap();
        let ob = open(d.path(), 1 << 20, WhenFull::DropOldest);
        assert_eq!(ob.pending().map(|r| r.payload.clone()).collect::<Vec<_>>(), vec![b"one".to_vec(), b"four".to_vec()]);
        assert_eq!(ob.corrupt_skipped, 1);
    }

    #[test]
    fn budget_drops_oldest_or_refuses_newest() {
        let d = tempfile::tempdir().unwrap();
        let size = (HEADER + 1 + 10) as u64;
        let mut ob = open(d.path(), 3 * size, WhenFull::DropOldest);
        for i in 0..5 {
            ob.append("a", format!("payload-{i:02}").as_bytes()).unwrap();
        }
        assert_eq!(ob.pending().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(ob.dropped_total, 2);
        let d2 = tempfile::tempdir().unwrap();
        let mut ob = open(d2.path(), 3 * size, WhenFull::DropNewest);
        let results: Vec<Option<u64>> = (0..5).map(|i| ob.append("a", format!("payload-{i:02}").as_bytes()).unwrap().seq).collect();
        assert_eq!(results, vec![Some(1), Some(2), Some(3), None, None]);
        assert_eq!(ob.dropped_total, 2);
        assert!(matches!(ob.append("a", &[0; 1000]), Err(OutboxError::TooLarge { .. })));
    }

    #[test]
    fn delivered_segments_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let mut ob = open(d.path(), 64 << 20, WhenFull::DropOldest);
        let payload = vec![7u8; 100_000];
        for _ in 0..100 {
            ob.append("a", &payload).unwrap();
        }
        let segs = || std::fs::read_dir(d.path()).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".seg")).count();
        assert!(segs() >= 3);
        for s in 1..=100 {
            ob.ack(s).unwrap();
        }
        assert_eq!(segs(), 1, "only the segment being written remains");
        assert_eq!(ob.next_after(Some(50)), None);
    }
}
