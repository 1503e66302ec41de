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
    EngineSpec { contract, taps, blur_sigma: cfg.scoring.blur_sigma, threads: cfg.engine.threads, gpu_precision: cfg.engine.gpu_precision }
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
    contract: Arc<Contract>,
    pub station: String,
    pub recipe: String,
    pub threshold: f32,
    /// The bank's calibrated threshold (what a threshold override falls back to).
    bank_threshold: f32,
    threshold_override: Option<f32>,
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
        let engine = engine::create(engine_choice(cfg, ov), &engine_spec(cfg, contract.clone(), taps))?;
        let mut insp = Inspector {
            engine,
            model_id: contract.id().to_owned(),
            contract,
            station: cfg.station.name.clone(),
            recipe: String::new(),
            threshold: 0.0,
            bank_threshold: 0.0,
            threshold_override: None,
            roi: None,
            scoring: cfg.scoring.clone(),
            expected_frame: cfg.frame.as_ref().map(|f| (f.width, f.height, f.pixel_format)),
            bank_id: String::new(),
            run_id: run_id(),
        };
        insp.select_recipe(cfg, ov.recipe.as_deref(), ov.bank.as_deref())?;
        tracing::info!(engine = %insp.engine.description(), model = %insp.contract.path.display(), recipe = %insp.recipe, "station ready");
        Ok(insp)
    }

    /// Loads a recipe's bank (or `bank`) into the engine; on error nothing changes.
    pub fn select_recipe(&mut self, cfg: &Config, name: Option<&str>, bank: Option<&std::path::Path>) -> Result<(), StationError> {
        let (recipe_name, recipe) = cfg.recipe(name)?;
        let bank_path = bank.map(Into::into).unwrap_or_else(|| recipe.bank.clone());
        let b = Bank::load(&bank_path)?;
        b.check_compatible(&bank_path, &self.contract, &cfg.model.taps)?;
        self.engine.set_bank(&b.data, b.header.dim)?;
        self.recipe = recipe_name.to_owned();
        self.bank_threshold = recipe.threshold.unwrap_or(b.header.threshold);
        self.threshold_override = None;
        self.threshold = self.bank_threshold;
        self.roi = recipe.roi.or(b.header.roi);
        self.bank_id = b.id().to_owned();
        self.scoring = cfg.scoring.clone();
        self.expected_frame = cfg.frame.as_ref().map(|f| (f.width, f.height, f.pixel_format));
        Ok(())
    }

    /// Overrides the threshold until the next recipe switch; `None` goes back to the recipe's.
    pub fn set_threshold(&mut self, t: Option<f32>) {
        self.threshold_override = t;
        self.threshold = t.unwrap_or(self.bank_threshold);
    }

    pub fn contract(&self) -> &Arc<Contract> {
        &self.contract
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    pub fn bank_id(&self) -> &str {
        &self.bank_id
    }

    pub fn engine_mut(&mut self) -> &mut dyn Engine {
        self.engine.as_mut()
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
