//! Training checkpoints: everything a run needs to go on where it stopped
//! (parameters, optimizer moments, anchor, step, loss history), in a
//! versioned file with a checksum, written atomically.
//!
//! Layout: magic `LGTRAIN\0`, u32 version, u32 header length, the header
//! (JSON), then each tensor's f32 values little-endian in header order, then
//! the crc32 of everything before it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::fsutil::write_atomic;

const MAGIC: &[u8; 8] = b"LGTRAIN\0";
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LossPoint {
    pub stage: String,
    pub step: usize,
    pub loss: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    /// Identity of the run: base model, data and settings. A checkpoint of
    /// another run is never resumed.
    pub run_id: String,
    /// Stages completed before the current one.
    pub stages_done: Vec<String>,
    pub stage: String,
    /// Steps of the current stage already taken.
    pub step: usize,
    pub losses: Vec<LossPoint>,
    /// Length of each tensor, in file order: params, then m, v, anchor per param.
    pub lengths: Vec<usize>,
}

pub struct Checkpoint {
    pub header: Header,
    pub tensors: Vec<Vec<f32>>,
}

pub fn save(path: &Path, c: &Checkpoint) -> Result<(), TrainError> {
    let header = serde_json::to_vec(&c.header).expect("header serializes");
    let floats: usize = c.tensors.iter().map(Vec::len).sum();
    let mut bytes = Vec::with_capacity(16 + header.len() + 4 * floats + 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&header);
    for t in &c.tensors {
        for v in t {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    write_atomic(path, &bytes).map_err(|source| TrainError::Write { path: path.into(), source })
}

pub fn load(path: &Path) -> Result<Checkpoint, TrainError> {
    let bad = |reason: String| TrainError::Checkpoint { path: path.into(), reason };
    let bytes = std::fs::read(path).map_err(|source| TrainError::Read { path: path.into(), source })?;
    if bytes.len() < 20 || &bytes[..8] != MAGIC {
        return Err(bad("not a lineguard training checkpoint".into()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().unwrap()) {
        return Err(bad("checksum mismatch: the file is damaged (delete it to start over)".into()));
    }
    let version = u32::from_le_bytes(body[8..12].try_into().unwrap());
    if version != VERSION {
        return Err(bad(format!("version {version}; this lineguard reads version {VERSION}")));
    }
    let hlen = u32::from_le_bytes(body[12..16].try_into().unwrap()) as usize;
    let header: Header = serde_json::from_slice(body.get(16..16 + hlen).ok_or_else(|| bad("truncated header".into()))?)
        .map_err(|e| bad(format!("header: {e}")))?;
    let mut rest = &body[16 + hlen..];
    if rest.len() != 4 * header.lengths.iter().sum::<usize>() {
        return Err(bad("tensor data does not match the header".into()));
    }
    let mut tensors = Vec::with_capacity(header.lengths.len());
    for &n in &header.lengths {
        let (t, r) = rest.split_at(4 * n);
        tensors.push(t.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect());
        rest = r;
    }
    Ok(Checkpoint { header, tensors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.ckpt");
        let c = Checkpoint {
            header: Header {
                run_id: "abc".into(),
                stages_done: vec!["pretrain".into()],
                stage: "finetune".into(),
                step: 3,
                losses: vec![LossPoint { stage: "pretrain".into(), step: 0, loss: 4.5 }],
                lengths: vec![2, 1],
            },
            tensors: vec![vec![1.0, -2.0], vec![0.5]],
        };
        save(&p, &c).unwrap();
        let back = load(&p).unwrap();
        assert_eq!(back.tensors, c.tensors);
        assert_eq!(back.header.step, 3);
        assert_eq!(back.header.losses, c.header.losses);
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 6] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        let e = load(&p).err().unwrap().to_string();
        assert!(e.contains("checksum") && e.contains("train.ckpt"), "{e}");
    }
}
