//! The memory bank file: patch embeddings of known-good parts plus everything
//! needed to use them safely (model identity, taps, preprocessing, threshold).
//!
//! Layout (little endian):
//! `b"LGBANK\r\n"` | u32 format version | u32 header length | header JSON |
//! u64 data length in bytes | rows x dim f32 | sha256 of all preceding bytes.
//! Written atomically; read with the checksum verified before anything is used.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::anomaly::{Calibration, Rect};
use crate::fsutil::{sha256_hex, write_atomic};
use crate::model::{Contract, InputSpec};

pub const MAGIC: &[u8; 8] = b"LGBANK\r\n";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankHeader {
    /// sha256 of the ONNX file the embeddings came from.
    pub model_sha256: String,
    /// File name of that model, for messages.
    pub model_file: String,
    pub taps: Vec<String>,
    pub dim: usize,
    pub rows: usize,
    /// Preprocessing the embeddings were made with.
    pub input: InputSpec,
    /// Region of interest in frame pixels, if one was set.
    pub roi: Option<Rect>,
    /// Gaussian blur sigma of the anomaly map, in map pixels.
    pub blur_sigma: f32,
    /// Image score above which a part is NG.
    pub threshold: f32,
    pub calibration: Calibration,
    pub image_count: usize,
    pub patches_total: usize,
    pub coreset_fraction: f32,
    pub projection_dim: usize,
    pub seed: u64,
    /// RFC 3339 creation time.
    pub created_at: String,
    pub producer: String,
}

#[derive(Debug, Clone)]
pub struct Bank {
    pub header: BankHeader,
    /// rows x dim, row-major.
    pub data: Vec<f32>,
    /// sha256 of the file body; the bank's identity.
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error("{path}: cannot {action} the bank: {source}")]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
    #[error("{path}: not a lineguard bank file (bad magic bytes)")]
    NotABank { path: PathBuf },
    #[error("{path}: bank format version {found}; this lineguard reads version {FORMAT_VERSION}: re-enroll")]
    Version { path: PathBuf, found: u32 },
    #[error("{path}: the bank is corrupt: {reason}; re-enroll or restore a backup")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{path}: the bank was made with model {bank_model} (sha256 {bank_sha}), but the configured model is {model} \
         (sha256 {model_sha}): re-enroll with this model"
    )]
    ModelMismatch { path: PathBuf, bank_model: String, bank_sha: String, model: PathBuf, model_sha: String },
    #[error("{path}: the bank was made with {what} {bank}, but the configuration asks for {config}: re-enroll")]
    SettingMismatch { path: PathBuf, what: &'static str, bank: String, config: String },
}

impl Bank {
    pub fn new(header: BankHeader, data: Vec<f32>) -> Bank {
        assert_eq!(data.len(), header.rows * header.dim, "bank data must be rows x dim");
        let mut b = Bank { header, data, sha256: String::new() };
        b.sha256 = sha256_hex(&b.body());
        b
    }

    /// Short identity for verdicts and logs.
    pub fn id(&self) -> &str {
        &self.sha256[..12]
    }

    fn body(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&self.header).expect("header serializes");
        let mut out = Vec::with_capacity(24 + header.len() + self.data.len() * 4 + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&((self.data.len() * 4) as u64).to_le_bytes());
        for v in &self.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub fn save(&self, path: &Path) -> Result<(), BankError> {
        let mut bytes = self.body();
        let digest = Sha256::digest(&bytes);
        bytes.extend_from_slice(&digest);
        write_atomic(path, &bytes).map_err(|source| BankError::Io { path: path.into(), action: "write", source })
    }

    pub fn load(path: &Path) -> Result<Bank, BankError> {
        let bytes = std::fs::read(path).map_err(|source| BankError::Io { path: path.into(), action: "read", source })?;
        let corrupt = |reason: String| BankError::Corrupt { path: path.into(), reason };
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(BankError::NotABank { path: path.into() });
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        if version != FORMAT_VERSION {
            return Err(BankError::Version { path: path.into(), found: version });
        }
        if bytes.len() < 32 + 24 {
            return Err(corrupt(format!("only {} bytes", bytes.len())));
        }
        let (body, stored) = bytes.split_at(bytes.len() - 32);
        let digest = Sha256::digest(body);
        if digest.as_slice() != stored {
            return Err(corrupt("checksum mismatch (the file was truncated or altered)".into()));
        }
        let hlen = u32::from_le_bytes(body[12..16].try_into().unwrap()) as usize;
        let header_end = 16 + hlen;
        if body.len() < header_end + 8 {
            return Err(corrupt("header runs past the end".into()));
        }
        let header: BankHeader =
            serde_json::from_slice(&body[16..header_end]).map_err(|e| corrupt(format!("header: {e}")))?;
        let dlen = u64::from_le_bytes(body[header_end..header_end + 8].try_into().unwrap()) as usize;
        let data_bytes = &body[header_end + 8..];
        if dlen != data_bytes.len() || dlen != header.rows * header.dim * 4 || header.rows == 0 {
            return Err(corrupt(format!(
                "{} data bytes for {} rows x {} dims",
                data_bytes.len(),
                header.rows,
                header.dim
            )));
        }
        let data: Vec<f32> = data_bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(corrupt(format!("non-finite value at element {i}")));
        }
        Ok(Bank { header, data, sha256: sha256_hex(body) })
    }

    /// Refuses a bank made with another model, other taps or other preprocessing.
    pub fn check_compatible(&self, path: &Path, contract: &Contract, taps: &[String]) -> Result<(), BankError> {
        let h = &self.header;
        if h.model_sha256 != contract.sha256 {
            return Err(BankError::ModelMismatch {
                path: path.into(),
                bank_model: h.model_file.clone(),
                bank_sha: h.model_sha256[..12.min(h.model_sha256.len())].into(),
                model: contract.path.clone(),
                model_sha: contract.id().into(),
            });
        }
        let mismatch = |what, bank: String, config: String| BankError::SettingMismatch { path: path.into(), what, bank, config };
        if h.taps != taps {
            return Err(mismatch("taps", h.taps.join(","), taps.join(",")));
        }
        if h.input != contract.meta.input {
            return Err(mismatch("preprocessing", format!("{:?}", h.input), format!("{:?}", contract.meta.input)));
        }
        Ok(())
    }
}
