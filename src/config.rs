//! The station configuration (`lineguard.toml`). Unknown keys and bad values
//! are errors that name the file and the key; relative paths are resolved
//! against the directory of the configuration file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::anomaly::Rect;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: key '{key}': {message}")]
    Parse { path: PathBuf, key: String, message: String },
    #[error("{path}: key '{key}': {message}")]
    Invalid { path: PathBuf, key: String, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub station: StationConfig,
    pub model: ModelConfig,
    #[serde(default)]
    pub engine: EngineConfig,
    /// What the camera delivers; frames of another geometry are refused.
    #[serde(default)]
    pub frame: Option<FrameConfig>,
    #[serde(default)]
    pub enroll: EnrollConfig,
    #[serde(default)]
    pub scoring: ScoringConfig,
    /// Products this station inspects, by name; `station.recipe` is active at start.
    pub recipes: BTreeMap<String, RecipeConfig>,
    /// Where frames come from (`lineguard run`).
    #[serde(default)]
    pub capture: Option<crate::capture::CaptureConfig>,
    #[serde(default)]
    pub trigger: TriggerConfig,
    /// The plant's MQTT broker (or the embedded one).
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
    /// Runs an MQTT broker inside lineguard, for a box without one.
    #[serde(default)]
    pub broker: Option<BrokerConfig>,
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Keeps NG frames and their heatmaps on disk.
    #[serde(default)]
    pub archive: Option<ArchiveConfig>,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// Directory of the configuration file; relative paths were resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationConfig {
    /// Station name: appears in verdicts and MQTT topics (letters, digits, '-', '_').
    pub name: String,
    /// The recipe active at start.
    pub recipe: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The encoder, an ONNX file that meets the contract (see `lineguard model import`).
    pub path: PathBuf,
    /// Feature taps (graph outputs) that make up the patch features.
    #[serde(default = "default_taps")]
    pub taps: Vec<String>,
}

fn default_taps() -> Vec<String> {
    vec!["stage3_stride8".into(), "stage4_stride16".into()]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum EngineChoice {
    /// A hardware GPU when there is one, else the CPU.
    #[default]
    Auto,
    Cpu,
    Gpu,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    #[serde(default)]
    pub kind: EngineChoice,
    /// CPU threads for the CPU engine; 0 means one per core.
    #[serde(default)]
    pub threads: usize,
    /// Storage precision of the GPU engine's activations and weights.
    #[serde(default)]
    pub gpu_precision: GpuPrecision,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { kind: EngineChoice::Auto, threads: 0, gpu_precision: GpuPrecision::F32 }
    }
}

/// What the GPU engine stores activations and weights in. Arithmetic is f32
/// either way; the anomaly search is f32 either way. The default is f32: on
/// the dev data set f16 moved a few verdicts (README, "Precision").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuPrecision {
    /// f16 where the adapter has shader-f16, else f32.
    Auto,
    F16,
    #[default]
    F32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PixelFormatName {
    Rgb8,
    Grey8,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameConfig {
    pub width: u32,
    pub height: u32,
    pub pixel_format: PixelFormatName,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollConfig {
    /// Fraction of enrolled patches kept in the bank (greedy k-center coreset).
    #[serde(default = "default_coreset_fraction")]
    pub coreset_fraction: f32,
    /// Dimensions of the random projection used for coreset selection (0: none).
    #[serde(default = "default_projection_dim")]
    pub projection_dim: usize,
    #[serde(default)]
    pub seed: u64,
    /// Target share of good parts called NG; sets the threshold quantile.
    #[serde(default = "default_false_reject_rate")]
    pub false_reject_rate: f32,
    /// Relative margin added to the calibrated threshold.
    #[serde(default = "default_threshold_margin")]
    pub threshold_margin: f32,
}

const fn default_coreset_fraction() -> f32 {
    0.1
}
const fn default_projection_dim() -> usize {
    128
}
const fn default_false_reject_rate() -> f32 {
    0.0
}
const fn default_threshold_margin() -> f32 {
    0.0
}

impl Default for EnrollConfig {
    fn default() -> Self {
        EnrollConfig {
            coreset_fraction: default_coreset_fraction(),
            projection_dim: default_projection_dim(),
            seed: 0,
            false_reject_rate: default_false_reject_rate(),
            threshold_margin: default_threshold_margin(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringConfig {
    /// Gaussian blur of the anomaly map, in map pixels (the map has the model's input size).
    #[serde(default = "default_blur_sigma")]
    pub blur_sigma: f32,
    /// Regions smaller than this many map pixels are not reported.
    #[serde(default = "default_min_region_area")]
    pub min_region_area_px: usize,
    /// At most this many regions per verdict, strongest first.
    #[serde(default = "default_max_regions")]
    pub max_regions: usize,
}

const fn default_blur_sigma() -> f32 {
    2.0
}
const fn default_min_region_area() -> usize {
    4
}
const fn default_max_regions() -> usize {
    16
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            blur_sigma: default_blur_sigma(),
            min_region_area_px: default_min_region_area(),
            max_regions: default_max_regions(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeConfig {
    /// The recipe's memory bank (written by `lineguard enroll`).
    pub bank: PathBuf,
    /// Region of interest in frame pixels; the whole frame when absent.
    #[serde(default)]
    pub roi: Option<Rect>,
    /// Overrides the bank's calibrated threshold.
    #[serde(default)]
    pub threshold: Option<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TriggerMode {
    /// Inspect frames as they come; when inference is busy the newest frame wins.
    #[default]
    FreeRun,
    /// Inspect one frame per `cmd/trigger` message (captured after the trigger).
    Mqtt,
    /// Inspect the newest frame every `interval_ms`.
    Interval,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    #[serde(default)]
    pub mode: TriggerMode,
    /// Period of `interval` mode.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// How long a trigger waits for a frame before it is answered with an error.
    #[serde(default = "default_trigger_timeout_ms")]
    pub timeout_ms: u64,
}

const fn default_interval_ms() -> u64 {
    1000
}
const fn default_trigger_timeout_ms() -> u64 {
    2000
}

impl Default for TriggerConfig {
    fn default() -> Self {
        TriggerConfig { mode: TriggerMode::FreeRun, interval_ms: default_interval_ms(), timeout_ms: default_trigger_timeout_ms() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub host: String,
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// Default `lineguard-{station}`; keep it stable and unique per station.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Topics are `{topic_prefix}/{station}/verdict`, `/status`, `/cmd/...`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Read the password from this file instead (keeps it out of the config).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// Verdicts published but not yet acknowledged, at most.
    #[serde(default = "default_inflight")]
    pub max_inflight: u16,
    /// How often the retained status is refreshed.
    #[serde(default = "default_status_interval")]
    pub status_interval_secs: u64,
    /// When set, commands must carry `"token": "<this>"`; others are refused.
    #[serde(default)]
    pub command_token: Option<String>,
}

const fn default_mqtt_port() -> u16 {
    1883
}
fn default_topic_prefix() -> String {
    "lineguard".into()
}
const fn default_keep_alive() -> u64 {
    10
}
const fn default_inflight() -> u16 {
    16
}
const fn default_status_interval() -> u64 {
    5
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate (PEM) that signed the broker's certificate.
    pub ca: PathBuf,
    /// Client certificate and key (PEM), for brokers that require them.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address the embedded broker listens on.
    #[serde(default = "default_broker_listen")]
    pub listen: std::net::SocketAddr,
}

fn default_broker_listen() -> std::net::SocketAddr {
    "127.0.0.1:1883".parse().expect("valid address")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Default `{daemon.state_dir}/outbox`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Disk budget for undelivered verdicts.
    #[serde(default = "default_outbox_bytes")]
    pub max_bytes: u64,
    /// What to drop when the budget is used up: "drop_oldest" or "drop_newest".
    #[serde(default)]
    pub when_full: crate::publish::outbox::WhenFull,
}

const fn default_outbox_bytes() -> u64 {
    256 << 20
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig { dir: None, max_bytes: default_outbox_bytes(), when_full: Default::default() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Default `{daemon.state_dir}/archive`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Disk budget; the oldest entries are deleted first.
    #[serde(default = "default_archive_bytes")]
    pub max_bytes: u64,
}

const fn default_archive_bytes() -> u64 {
    2 << 30
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `/metrics` (Prometheus) and `/healthz`; absent to disable.
    #[serde(default = "default_http_listen")]
    pub listen: Option<std::net::SocketAddr>,
}

fn default_http_listen() -> Option<std::net::SocketAddr> {
    Some("127.0.0.1:9898".parse().expect("valid address"))
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: default_http_listen() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Outbox, archive and hot-folder state live here (systemd's StateDirectory).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// On SIGTERM, how long to wait for the broker to take what is still in the outbox.
    #[serde(default = "default_flush_secs")]
    pub shutdown_flush_secs: u64,
}

fn default_state_dir() -> PathBuf {
    "/var/lib/lineguard".into()
}
const fn default_flush_secs() -> u64 {
    10
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig { state_dir: default_state_dir(), shutdown_flush_secs: default_flush_secs() }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// Parses `text` as if read from `path` (used for messages and relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = parse_toml(text, path)?;
        cfg.source = path.into();
        cfg.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = cfg.base_dir.clone();
        cfg.model.path = resolve(&base, &cfg.model.path);
        for r in cfg.recipes.values_mut() {
            r.bank = resolve(&base, &r.bank);
        }
        cfg.daemon.state_dir = resolve(&base, &cfg.daemon.state_dir);
        if let Some(m) = cfg.mqtt.as_mut() {
            m.password_file = m.password_file.as_ref().map(|p| resolve(&base, p));
            if let Some(t) = m.tls.as_mut() {
                t.ca = resolve(&base, &t.ca);
                t.client_cert = t.client_cert.as_ref().map(|p| resolve(&base, p));
                t.client_key = t.client_key.as_ref().map(|p| resolve(&base, p));
            }
        }
        cfg.outbox.dir = Some(resolve(&base, &cfg.outbox.dir.clone().unwrap_or_else(|| cfg.daemon.state_dir.join("outbox"))));
        if let Some(a) = cfg.archive.as_mut() {
            a.dir = Some(resolve(&base, &a.dir.clone().unwrap_or_else(|| cfg.daemon.state_dir.join("archive"))));
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { path: self.source.clone(), key: key.into(), message: message.into() }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let name_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok(&self.station.name) {
            return Err(self.invalid("station.name", format!("'{}' must be letters, digits, '-' or '_'", self.station.name)));
        }
        if !self.recipes.contains_key(&self.station.recipe) {
            return Err(self.invalid(
                "station.recipe",
                format!(
                    "no recipe '{}' (defined: {})",
                    self.station.recipe,
                    self.recipes.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if self.model.taps.is_empty() {
            return Err(self.invalid("model.taps", "name at least one feature tap"));
        }
        let e = &self.enroll;
        if !(e.coreset_fraction > 0.0 && e.coreset_fraction <= 1.0) {
            return Err(self.invalid("enroll.coreset_fraction", format!("must be in (0, 1], got {}", e.coreset_fraction)));
        }
        if !(0.0..0.5).contains(&e.false_reject_rate) {
            return Err(self.invalid("enroll.false_reject_rate", format!("must be in [0, 0.5), got {}", e.false_reject_rate)));
        }
        if !(0.0..=10.0).contains(&e.threshold_margin) {
            return Err(self.invalid("enroll.threshold_margin", format!("must be in [0, 10], got {}", e.threshold_margin)));
        }
        if let Some(m) = &self.mqtt {
            if !name_ok(&m.topic_prefix.replace('/', "_")) {
                return Err(self.invalid("mqtt.topic_prefix", "letters, digits, '-', '_' and '/' only (no wildcards)"));
            }
            if m.password.is_some() && m.password_file.is_some() {
                return Err(self.invalid("mqtt.password_file", "set mqtt.password or mqtt.password_file, not both"));
            }
            if (m.password.is_some() || m.password_file.is_some()) && m.username.is_none() {
                return Err(self.invalid("mqtt.username", "a password needs a username"));
            }
            if let Some(t) = &m.tls
                && t.client_cert.is_some() != t.client_key.is_some()
            {
                return Err(self.invalid("mqtt.tls", "client_cert and client_key go together"));
            }
            if m.max_inflight == 0 || m.keep_alive_secs < 2 {
                return Err(self.invalid("mqtt", "max_inflight must be at least 1 and keep_alive_secs at least 2"));
            }
        }
        if self.trigger.interval_ms == 0 {
            return Err(self.invalid("trigger.interval_ms", "must be at least 1"));
        }
        if self.outbox.max_bytes < 4096 {
            return Err(self.invalid("outbox.max_bytes", format!("{} is too small (at least 4096)", self.outbox.max_bytes)));
        }
        let s = &self.scoring;
        if !(0.0..=64.0).contains(&s.blur_sigma) {
            return Err(self.invalid("scoring.blur_sigma", format!("must be in [0, 64] map pixels, got {}", s.blur_sigma)));
        }
        for (name, r) in &self.recipes {
            if !name_ok(name) {
                return Err(self.invalid(format!("recipes.{name}"), "recipe names are letters, digits, '-' or '_'"));
            }
            if let Some(roi) = r.roi {
                if roi.width < 8 || roi.height < 8 {
                    return Err(self.invalid(format!("recipes.{name}.roi"), "width and height must be at least 8 pixels"));
                }
                if let Some(f) = &self.frame
                    && (roi.x + roi.width > f.width || roi.y + roi.height > f.height)
                {
                    return Err(self.invalid(
                        format!("recipes.{name}.roi"),
                        format!("{}x{} at ({}, {}) does not fit the {}x{} frame", roi.width, roi.height, roi.x, roi.y, f.width, f.height),
                    ));
                }
            }
            if let Some(t) = r.threshold
                && !(t.is_finite() && t > 0.0)
            {
                return Err(self.invalid(format!("recipes.{name}.threshold"), format!("must be a positive number, got {t}")));
            }
        }
        Ok(())
    }

    /// The recipe named `name`, or the active one.
    pub fn recipe(&self, name: Option<&str>) -> Result<(&str, &RecipeConfig), ConfigError> {
        let name = name.unwrap_or(&self.station.recipe);
        self.recipes
            .get_key_value(name)
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| self.invalid(format!("recipes.{name}"), "no such recipe"))
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

/// Deserializes TOML `text` (read from `path`); an error names the file and the key.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    let parse_err = |key: String, message: String| ConfigError::Parse { path: path.into(), key, message };
    let de = toml::de::Deserializer::parse(text).map_err(|e| parse_err("(syntax)".into(), e.to_string()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        parse_err(key, e.into_inner().to_string().trim().replace('\n', " "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[station]
name = "s1"
recipe = "a"
[model]
path = "m.onnx"
[recipes.a]
bank = "a.bank"
"#;

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let c = Config::parse(MINIMAL, Path::new("/etc/lineguard/lineguard.toml")).unwrap();
        assert_eq!(c.model.path, Path::new("/etc/lineguard/m.onnx"));
        assert_eq!(c.recipes["a"].bank, Path::new("/etc/lineguard/a.bank"));
        assert_eq!(c.enroll.coreset_fraction, 0.1);
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let text = MINIMAL.replace("[model]", "[model]\ncolour = 1");
        let e = Config::parse(&text, Path::new("x.toml")).unwrap_err().to_string();
        assert!(e.starts_with("x.toml: key 'model.colour'"), "{e}");
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let text = MINIMAL.replace("[recipes.a]", "[enroll]\ncoreset_fraction = \"lots\"\n[recipes.a]");
        let e = Config::parse(&text, Path::new("x.toml")).unwrap_err().to_string();
        assert!(e.contains("key 'enroll.coreset_fraction'"), "{e}");
    }

    #[test]
    fn out_of_range_value_names_the_key() {
        let text = MINIMAL.replace("[recipes.a]", "[enroll]\ncoreset_fraction = 1.5\n[recipes.a]");
        let e = Config::parse(&text, Path::new("x.toml")).unwrap_err().to_string();
        assert_eq!(e, "x.toml: key 'enroll.coreset_fraction': must be in (0, 1], got 1.5");
    }

    #[test]
    fn missing_active_recipe_is_reported() {
        let text = MINIMAL.replace("recipe = \"a\"", "recipe = \"b\"");
        let e = Config::parse(&text, Path::new("x.toml")).unwrap_err().to_string();
        assert!(e.contains("station.recipe") && e.contains("no recipe 'b'"), "{e}");
    }
}
