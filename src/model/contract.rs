//! The ONNX contract between training and the box: input `image` f32 NCHW
//! RGB, normalised as the metadata says; feature taps as named outputs; the
//! metadata (JSON under the `lineguard.contract` key of the model's
//! metadata_props, or a sidecar `<model>.lineguard.json`) records input size,
//! mean/std, taps and the sha256 of weights and graph.

use std::path::{Path, PathBuf};

use prost::Message;
use serde::{Deserialize, Serialize};
use tract_onnx::pb;

use super::onnx_build::dims_of;
use crate::fsutil::sha256_hex;

pub const METADATA_KEY: &str = "lineguard.contract";
pub const CONTRACT_VERSION: u32 = 1;

/// Where the contract's metadata lives when it is not embedded.
pub fn sidecar_path(model: &Path) -> PathBuf {
    let mut s = model.as_os_str().to_owned();
    s.push(".lineguard.json");
    PathBuf::from(s)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Graph input name (`image`).
    pub name: String,
    pub height: usize,
    pub width: usize,
    /// Per-channel mean and std applied to RGB values in [0, 1].
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapSpec {
    /// Graph output name.
    pub name: String,
    /// Input pixels per feature-map cell.
    pub stride: usize,
    pub channels: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractMeta {
    pub contract_version: u32,
    pub architecture: String,
    pub input: InputSpec,
    pub taps: Vec<TapSpec>,
    /// Name of the ImageNet logits output when the classifier was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_output: Option<String>,
    /// sha256 of the checkpoint the weights came from.
    pub weights_sha256: String,
    /// sha256 of the serialized GraphProto (empty in hand-written sidecars).
    #[serde(default)]
    pub graph_sha256: String,
    /// Free-form provenance: source file, producer, training parameters.
    #[serde(default)]
    pub provenance: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("{path}: cannot read the model: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not an ONNX model: {reason}")]
    NotOnnx { path: PathBuf, reason: String },
    #[error(
        "{path}: no lineguard metadata: neither an embedded '{METADATA_KEY}' entry nor a sidecar {sidecar} \
         (import checkpoints with `lineguard model import`, or write the sidecar as the README shows)"
    )]
    NoMetadata { path: PathBuf, sidecar: PathBuf },
    #[error("{path}: bad lineguard metadata: {reason}")]
    BadMetadata { path: PathBuf, reason: String },
    #[error("{path}: graph input '{name}' {problem}")]
    Input { path: PathBuf, name: String, problem: String },
    #[error("{path}: the model has no output '{tap}' (a feature tap); its outputs are: {outputs}")]
    MissingTap { path: PathBuf, tap: String, outputs: String },
    #[error("{path}: graph sha256 {found} differs from the {expected} in its metadata: the file was changed after import")]
    GraphHash { path: PathBuf, expected: String, found: String },
}

/// A loaded, checked contract: the protobuf model plus its metadata.
#[derive(Debug, Clone)]
pub struct Contract {
    pub path: PathBuf,
    /// sha256 of the whole ONNX file: the model's identity for banks.
    pub sha256: String,
    pub meta: ContractMeta,
    pub proto: pb::ModelProto,
}

impl Contract {
    pub fn load(path: &Path) -> Result<Contract, ContractError> {
        let bytes = std::fs::read(path).map_err(|source| ContractError::Read { path: path.into(), source })?;
        let proto = pb::ModelProto::decode(bytes.as_slice())
            .map_err(|e| ContractError::NotOnnx { path: path.into(), reason: e.to_string() })?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| ContractError::NotOnnx { path: path.into(), reason: "it has no graph".into() })?;
        if graph.node.is_empty() {
            return Err(ContractError::NotOnnx { path: path.into(), reason: "its graph has no nodes".into() });
        }
        let meta = read_meta(path, &proto)?;
        if !meta.graph_sha256.is_empty() {
            let found = sha256_hex(&graph.encode_to_vec());
            if found != meta.graph_sha256 {
                return Err(ContractError::GraphHash { path: path.into(), expected: meta.graph_sha256, found });
            }
        }
        let c = Contract { path: path.into(), sha256: sha256_hex(&bytes), meta, proto };
        c.check()?;
        Ok(c)
    }

    /// Short identity for logs and verdicts.
    pub fn id(&self) -> &str {
        &self.sha256[..12]
    }

    pub fn graph(&self) -> &pb::GraphProto {
        self.proto.graph.as_ref().expect("checked at load")
    }

    pub fn output_names(&self) -> Vec<String> {
        self.graph().output.iter().map(|o| o.name.clone()).collect()
    }

    /// The tap specs for `names`, in that order; unknown names are an error.
    pub fn taps(&self, names: &[String]) -> Result<Vec<TapSpec>, ContractError> {
        names
            .iter()
            .map(|n| {
                self.meta.taps.iter().find(|t| &t.name == n).cloned().ok_or_else(|| ContractError::MissingTap {
                    path: self.path.clone(),
                    tap: n.clone(),
                    outputs: self.meta.taps.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", "),
                })
            })
            .collect()
    }

    fn check(&self) -> Result<(), ContractError> {
        let m = &self.meta;
        let bad = |reason: String| ContractError::BadMetadata { path: self.path.clone(), reason };
        if m.contract_version != CONTRACT_VERSION {
            return Err(bad(format!("contract_version {} (this lineguard reads {CONTRACT_VERSION})", m.contract_version)));
        }
        if m.taps.is_empty() {
            return Err(bad("no feature taps listed".into()));
        }
        if m.input.std.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
            return Err(bad(format!("input.std {:?} must be positive", m.input.std)));
        }
        let g = self.graph();
        let input = g.input.iter().find(|i| i.name == m.input.name).ok_or_else(|| ContractError::Input {
            path: self.path.clone(),
            name: m.input.name.clone(),
            problem: format!(
                "is missing; the graph's inputs are: {}",
                g.input.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        })?;
        let dims = dims_of(input).unwrap_or_default();
        let expected = [None, Some(3), Some(m.input.height), Some(m.input.width)];
        let matches = dims.len() == 4 && dims.iter().zip(&expected).skip(1).all(|(d, e)| d.is_none() || d == e);
        if !matches {
            return Err(ContractError::Input {
                path: self.path.clone(),
                name: m.input.name.clone(),
                problem: format!(
                    "has shape {dims:?}; the metadata says N x 3 x {} x {} (f32 NCHW RGB)",
                    m.input.height, m.input.width
                ),
            });
        }
        let outputs = self.output_names();
        for tap in &m.taps {
            if !outputs.contains(&tap.name) {
                return Err(ContractError::MissingTap {
                    path: self.path.clone(),
                    tap: tap.name.clone(),
                    outputs: outputs.join(", "),
                });
            }
            if tap.stride == 0 || m.input.height % tap.stride != 0 || m.input.width % tap.stride != 0 {
                return Err(bad(format!("tap '{}' has stride {} that does not divide the input size", tap.name, tap.stride)));
            }
        }
        Ok(())
    }
}

fn read_meta(path: &Path, proto: &pb::ModelProto) -> Result<ContractMeta, ContractError> {
    let bad = |reason: String| ContractError::BadMetadata { path: path.into(), reason };
    if let Some(entry) = proto.metadata_props.iter().find(|e| e.key == METADATA_KEY) {
        return serde_json::from_str(&entry.value).map_err(|e| bad(format!("embedded '{METADATA_KEY}': {e}")));
    }
    let sidecar = sidecar_path(path);
    match std::fs::read_to_string(&sidecar) {
        Ok(s) => serde_json::from_str(&s).map_err(|e| bad(format!("{}: {e}", sidecar.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ContractError::NoMetadata { path: path.into(), sidecar })
        }
        Err(e) => Err(bad(format!("{}: {e}", sidecar.display()))),
    }
}
