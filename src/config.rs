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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { kind: EngineChoice::Auto, threads: 0 }
    }
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

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// Parses `text` as if read from `path` (used for messages and relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let parse_err = |key: String, message: String| ConfigError::Parse { path: path.into(), key, message };
        let de = toml::de::Deserializer::parse(text).map_err(|e| parse_err("(syntax)".into(), e.to_string()))?;
        let mut cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            parse_err(key, e.into_inner().to_string().trim().replace('\n', " "))
        })?;
        cfg.source = path.into();
        cfg.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = cfg.base_dir.clone();
        cfg.model.path = resolve(&base, &cfg.model.path);
        for r in cfg.recipes.values_mut() {
            r.bank = resolve(&base, &r.bank);
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
