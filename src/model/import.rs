//! `lineguard model import`: PyTorch checkpoint -> ONNX contract.

use std::path::{Path, PathBuf};

use prost::Message;
use tract_onnx::pb;

use super::checkpoint;
use super::contract::{CONTRACT_VERSION, Contract, ContractMeta, InputSpec, METADATA_KEY};
use super::efficientnet::{self, CLASSIFIER_OUTPUT, INPUT};
use super::onnx_build::{IR_VERSION, OPSET, value_info};
use crate::fsutil::{sha256_file, sha256_hex, write_atomic};

/// Mean/std convention of the TF-derived EfficientNet-Lite weights (127/128).
pub const TF_MEAN: [f32; 3] = [0.5, 0.5, 0.5];
pub const TF_STD: [f32; 3] = [0.5, 0.5, 0.5];
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub input_size: usize,
    /// Keep the ImageNet classifier as an extra `logits` output (for checking an import).
    pub classifier: bool,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { input_size: 224, classifier: false, mean: IMAGENET_MEAN, std: IMAGENET_STD }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("{path}: {source}")]
    Architecture { path: PathBuf, source: efficientnet::ArchError },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the imported model does not load back: {0}")]
    Verify(#[from] super::contract::ContractError),
}

/// Converts `checkpoint` into the ONNX contract at `out` (written atomically)
/// and returns the loaded result.
pub fn import_checkpoint(checkpoint_path: &Path, out: &Path, opts: &ImportOptions) -> Result<Contract, ImportError> {
    let sd = checkpoint::load(checkpoint_path)?;
    let weights_sha256 =
        sha256_file(checkpoint_path).map_err(|source| ImportError::Io { path: checkpoint_path.into(), source })?;
    let (g, built) = efficientnet::build(&sd, opts.input_size, opts.classifier)
        .map_err(|source| ImportError::Architecture { path: checkpoint_path.into(), source })?;
    let s = opts.input_size;
    let graph = pb::GraphProto {
        name: "efficientnet_lite0_features".into(),
        node: g.nodes,
        initializer: g.initializers,
        input: vec![value_info(INPUT, &[None, Some(3), Some(s), Some(s)])],
        output: built
            .outputs
            .iter()
            .map(|(name, dims)| {
                let mut d = vec![None];
                d.extend(dims.iter().map(|&x| Some(x)));
                value_info(name, &d)
            })
            .collect(),
        ..Default::default()
    };
    let mut provenance = serde_json::Map::new();
    let source_name = checkpoint_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    provenance.insert("source".into(), source_name.into());
    provenance.insert("producer".into(), format!("lineguard {}", env!("CARGO_PKG_VERSION")).into());
    provenance.insert("batch_norm".into(), format!("folded, eps {}", efficientnet::BN_EPS).into());
    provenance.insert("padding".into(), "tensorflow SAME".into());
    let meta = ContractMeta {
        contract_version: CONTRACT_VERSION,
        architecture: "efficientnet-lite0".into(),
        input: InputSpec { name: INPUT.into(), height: s, width: s, mean: opts.mean, std: opts.std },
        taps: built.taps,
        classifier_output: opts.classifier.then(|| CLASSIFIER_OUTPUT.to_owned()),
        weights_sha256,
        graph_sha256: sha256_hex(&graph.encode_to_vec()),
        provenance,
    };
    let model = pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "lineguard".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props: vec![pb::StringStringEntryProto {
            key: METADATA_KEY.into(),
            value: serde_json::to_string(&meta).expect("metadata serializes"),
        }],
        ..Default::default()
    };
    write_atomic(out, &model.encode_to_vec()).map_err(|source| ImportError::Io { path: out.into(), source })?;
    Ok(Contract::load(out)?)
}
