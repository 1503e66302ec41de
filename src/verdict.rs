//! The verdict: what the station says about one frame. Serialised as JSON,
//! schema-versioned; the JSON Schema lives in
//! `firmware-config/schemas/verdict.v1.schema.json` and tests validate
//! emitted verdicts against it.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::anomaly::Region;
use crate::engine::StageTimes;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "NG")]
    Ng,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameInfo {
    /// Sequence number from the source.
    pub seq: u64,
    /// Camera, file or generator.
    pub source: String,
    /// Capture time, RFC 3339 UTC.
    pub captured_at: String,
    pub width: u32,
    pub height: u32,
}

/// Milliseconds per stage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// Capture to start of inference (queueing); 0 for files.
    pub queue: f64,
    pub preprocess: f64,
    pub encoder: f64,
    pub features: f64,
    pub nearest_neighbour: f64,
    pub map: f64,
    /// Capture (or file read) to verdict.
    pub total: f64,
}

impl Latency {
    pub fn from_stages(t: &StageTimes, queue_ms: f64) -> Latency {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        Latency {
            queue: queue_ms,
            preprocess: ms(t.preprocess),
            encoder: ms(t.encoder),
            features: ms(t.features),
            nearest_neighbour: ms(t.nearest_neighbour),
            map: ms(t.map),
            total: queue_ms + ms(t.total()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    pub schema_version: u32,
    /// Unique per verdict: `{station}/{run}/{seq}`; subscribers drop repeats by it.
    pub id: String,
    pub station: String,
    pub recipe: String,
    pub frame: FrameInfo,
    pub verdict: Decision,
    /// Image anomaly score: maximum of the anomaly map.
    pub score: f32,
    pub threshold: f32,
    /// Defect regions, strongest first; empty when OK.
    pub regions: Vec<Region>,
    pub latency_ms: Latency,
    pub engine: String,
    /// First 12 hex digits of the model file's sha256.
    pub model_id: String,
    /// First 12 hex digits of the bank's sha256.
    pub bank_id: String,
    /// Echo of the trigger's correlation id, if the frame was triggered with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Id of the archived image and heatmap (NG frames, when archiving is on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_id: Option<String>,
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
