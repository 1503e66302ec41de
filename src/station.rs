//! A station ready to inspect: configuration + model + engine + the active
//! recipe's bank. The CLI, the evaluation and the daemon all score frames
//! through [`Inspector::inspect`]; there is one way to score a frame.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::anomaly::{MapPlacement, Rect, find_regions};
use crate::bank::{Bank, BankError};
use crate::config::{Config, ConfigError, EngineChoice, PixelFormatName, ScoringConfig};
use crate::engine::{self, Engine, EngineError, EngineSpec, Scored};
use crate::frame::{Frame, PixelFormat};
use crate::model::{Contract, ContractError, TapSpec};
use crate::verdict::{Decision, FrameInfo, Latency, SCHEMA_VERSION, Verdict, rfc3339};

/// Command-line overrides of the configuration.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub model: Option<PathBuf>,
    pub engine: Option<EngineChoice>,
    pub recipe: Option<String>,
    pub bank: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum StationError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Model(#[from] ContractError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Bank(#[from] BankError),
    #[error("frame {frame}: {problem} (config key 'frame')")]
    FrameMismatch { frame: String, problem: String },
}

/// The model and taps a configuration (plus overrides) selects.
pub fn load_model(cfg: &Config, ov: &Overrides) -> Result<(Arc<Contract>, Vec<TapSpec>), StationError> {
    let path = ov.model.clone().unwrap_or_else(|| cfg.model.path.clone());
    let contract = Contract::load(&path)?;
    let taps = contract.taps(&cfg.model.taps)?;
    Ok((Arc::new(contract), taps))
}

/// Engine specification from the configuration.
pub fn engine_spec(cfg: &Config, contract: Arc<Contract>, taps: Vec<TapSpec>) -> EngineSpec {
    EngineSpec { contract, taps, blur_sigma: cfg.scoring.blur_sigma, threads: cfg.engine.threads }
}

/// The engine choice after overrides.
pub fn engine_choice(cfg: &Config, ov: &Overrides) -> EngineChoice {
    ov.engine.unwrap_or(cfg.engine.kind)
}

pub struct Inspection {
    pub verdict: Verdict,
    pub scored: Scored,
}

pub struct Inspector {
    engine: Box<dyn Engine>,
    pub station: String,
    pub recipe: String,
    pub threshold: f32,
    pub roi: Option<Rect>,
    scoring: ScoringConfig,
    expected_frame: Option<(u32, u32, PixelFormatName)>,
    model_id: String,
    bank_id: String,
    run_id: String,
}

impl Inspector {
    /// Opens the model, the engine and the recipe's bank, refusing a bank that
    /// does not belong to this model.
    pub fn open(cfg: &Config, ov: &Overrides) -> Result<Inspector, StationError> {
        let (contract, taps) = load_model(cfg, ov)?;
        let (recipe_name, recipe) = cfg.recipe(ov.recipe.as_deref())?;
        let bank_path = ov.bank.clone().unwrap_or_else(|| recipe.bank.clone());
        let bank = Bank::load(&bank_path)?;
        bank.check_compatible(&bank_path, &contract, &cfg.model.taps)?;
        let mut engine = engine::create(engine_choice(cfg, ov), &engine_spec(cfg, contract.clone(), taps))?;
        tracing::info!(engine = %engine.description(), model = %contract.path.display(), bank = %bank_path.display(), "station ready");
        engine.set_bank(&bank.data, bank.header.dim)?;
        Ok(Inspector {
            engine,
            station: cfg.station.name.clone(),
            recipe: recipe_name.to_owned(),
            threshold: recipe.threshold.unwrap_or(bank.header.threshold),
            roi: recipe.roi.or(bank.header.roi),
            scoring: cfg.scoring.clone(),
            expected_frame: cfg.frame.as_ref().map(|f| (f.width, f.height, f.pixel_format)),
            model_id: contract.id().to_owned(),
            bank_id: bank.id().to_owned(),
            run_id: run_id(),
        })
    }

    pub fn engine(&self) -> &dyn Engine {
        self.engine.as_ref()
    }

    /// Refuses frames that do not match the configured camera geometry.
    fn check_frame(&self, frame: &Frame) -> Result<(), StationError> {
        let Some((w, h, fmt)) = self.expected_frame else { return Ok(()) };
        let fmt_ok = matches!(
            (fmt, frame.format),
            (PixelFormatName::Rgb8, PixelFormat::Rgb8 | PixelFormat::Yuyv) | (PixelFormatName::Grey8, PixelFormat::Grey8)
        );
        if (frame.width, frame.height) != (w, h) || !fmt_ok {
            return Err(StationError::FrameMismatch {
                frame: frame.source.clone(),
                problem: format!(
                    "{}x{} {:?}, but the station expects {w}x{h} {fmt:?}",
                    frame.width, frame.height, frame.format
                ),
            });
        }
        Ok(())
    }

    pub fn inspect(&mut self, frame: &Frame) -> Result<Inspection, StationError> {
        self.check_frame(frame)?;
        let queue_ms = frame.arrived.elapsed().as_secs_f64() * 1e3;
        let scored = self.engine.score(frame, self.roi)?;
        let verdict = self.verdict(frame, &scored, queue_ms);
        Ok(Inspection { verdict, scored })
    }

    fn verdict(&self, frame: &Frame, s: &Scored, queue_ms: f64) -> Verdict {
        let decision = if s.score > self.threshold { Decision::Ng } else { Decision::Ok };
        let regions = if decision == Decision::Ng {
            let placement = MapPlacement { roi: s.roi, map_width: s.map_width, map_height: s.map_height };
            find_regions(&s.map, &placement, self.threshold, self.scoring.min_region_area_px, self.scoring.max_regions)
        } else {
            vec![]
        };
        Verdict {
            schema_version: SCHEMA_VERSION,
            id: format!("{}/{}/{}", self.station, self.run_id, frame.seq),
            station: self.station.clone(),
            recipe: self.recipe.clone(),
            frame: FrameInfo {
                seq: frame.seq,
                source: frame.source.clone(),
                captured_at: rfc3339(frame.captured_at),
                width: frame.width,
                height: frame.height,
            },
            verdict: decision,
            score: s.score,
            threshold: self.threshold,
            regions,
            latency_ms: Latency::from_stages(&s.times, queue_ms.max(0.0)),
            engine: self.engine.kind().to_string(),
            model_id: self.model_id.clone(),
            bank_id: self.bank_id.clone(),
            correlation_id: None,
            archive_id: None,
        }
    }
}

/// Identifies one run of the process: start time in ms, hex.
fn run_id() -> String {
    let ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    format!("{ms:x}")
}
