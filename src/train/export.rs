//! The trained encoder back into the ONNX contract: the base model's file
//! with the trained initializers' values replaced, nothing else in the graph
//! touched, and the training's provenance in the metadata (base model sha256,
//! training data hash, every setting).

use std::path::Path;

use prost::Message;

use super::TrainError;
use crate::fsutil::{sha256_hex, write_atomic};
use crate::model::Contract;
use crate::model::contract::METADATA_KEY;

/// Writes `base` with `weights` (initializer name -> values) to `out`
/// atomically, records `training` under `provenance.training`, and loads it
/// back through the contract's checks.
pub fn export(base: &Contract, weights: &[(String, Vec<f32>)], training: serde_json::Value, out: &Path) -> Result<Contract, TrainError> {
    let mut model = base.proto.clone();
    let graph = model.graph.as_mut().expect("checked at load");
    for (name, values) in weights {
        let t = graph.initializer.iter_mut().find(|t| &t.name == name).ok_or_else(|| TrainError::Config(format!("{}: no initializer '{name}'", base.path.display())))?;
        let expected: i64 = t.dims.iter().product();
        assert_eq!(expected as usize, values.len(), "initializer {name}: trained values do not match its shape");
        t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        t.float_data.clear();
    }
    let mut meta = base.meta.clone();
    meta.graph_sha256 = sha256_hex(&graph.encode_to_vec());
    meta.provenance.insert("training".into(), training);
    meta.provenance.insert("producer".into(), format!("lineguard {} train", env!("CARGO_PKG_VERSION")).into());
    let json = serde_json::to_string(&meta).expect("metadata serializes");
    match model.metadata_props.iter_mut().find(|e| e.key == METADATA_KEY) {
        Some(e) => e.value = json,
        None => model.metadata_props.push(tract_onnx::pb::StringStringEntryProto { key: METADATA_KEY.into(), value: json }),
    }
    write_atomic(out, &model.encode_to_vec()).map_err(|source| TrainError::Write { path: out.into(), source })?;
    Contract::load(out).map_err(|e| TrainError::Config(format!("the exported model does not load back: {e}")))
}
