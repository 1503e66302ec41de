//! The encoder: PyTorch checkpoint import and the ONNX contract.
//!
//! Everything about the model file lives here; engines receive a checked
//! [`Contract`] and never parse protobuf themselves.

pub mod checkpoint;
pub mod contract;
pub mod efficientnet;
pub mod import;
pub mod onnx_build;
pub mod onnx_read;
pub mod classify;
pub mod pickle;

pub use contract::{Contract, ContractError, ContractMeta, InputSpec, TapSpec};
pub use import::{ImportError, ImportOptions, import_checkpoint};
