//! `lineguard train` and `lineguard eval --train`: arguments and printing.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use lineguard::config::Config;
use lineguard::engine;
use lineguard::enroll::{EnrollParams, list_images};
use lineguard::model::Contract;
use lineguard::progress::Progress;
use lineguard::station;
use lineguard::train::compare::{CompareRequest, EngineFactory, TrainedEncoders, compare, markdown};
use lineguard::train::{Objective, Stage, TrainConfig, TrainDevice, TrainRequest, list_defects, train};

use super::{DataSet, Station};

/// Settings shared by every way of training.
#[derive(Args, Clone)]
pub struct Settings {
    /// Training settings (TOML, keys as README "Training" lists; missing keys keep their defaults).
    #[arg(long)]
    settings: Option<PathBuf>,
    /// Contrastive objective, instead of the settings'.
    #[arg(long, value_enum)]
    objective: Option<Objective>,
    /// Epochs of pretraining, instead of the settings'.
    #[arg(long)]
    pretrain_epochs: Option<usize>,
    /// Epochs of fine-tuning, instead of the settings'.
    #[arg(long)]
    finetune_epochs: Option<usize>,
    /// Contrastive temperature (0.1 to 0.5), instead of the settings'.
    #[arg(long)]
    temperature: Option<f32>,
    /// Random seed, instead of the settings'.
    #[arg(long)]
    seed: Option<u64>,
    /// Where training runs: cpu (burn's flex backend), gpu (burn's wgpu backend, feature train-gpu), or
    /// auto: the GPU when this build has train-gpu and a hardware GPU is present, else the CPU.
    #[arg(long, value_enum, default_value_t = TrainDevice::Auto)]
    device: TrainDevice,
}

impl Settings {
    fn config(&self) -> Result<TrainConfig> {
        let mut c = match &self.settings {
            Some(p) => TrainConfig::load(p)?,
            None => TrainConfig::default(),
        };
        if let Some(o) = self.objective {
            c.objective = o;
        }
        if let Some(e) = self.pretrain_epochs {
            c.pretrain.epochs = e;
        }
        if let Some(e) = self.finetune_epochs {
            c.finetune.epochs = e;
        }
        if let Some(t) = self.temperature {
            c.temperature = t;
        }
        if let Some(s) = self.seed {
            c.seed = s;
        }
        c.check()?;
        Ok(c)
    }
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TrainCmd {
    #[command(subcommand)]
    sub: Option<TrainSub>,
    #[command(flatten)]
    run: TrainArgs,
}

#[derive(Subcommand)]
enum TrainSub {
    /// Per category of a data set: ImageNet vs pretrained vs fine-tuned (0 and K defects per kind), image and pixel AUROC.
    Compare(CompareArgs),
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    station: Station,
    /// Folder of good images of the station's parts.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Folder of labelled defect images (NAME.png with NAME_mask.png beside it, or MVTec test/ground_truth layout), for fine-tuning.
    #[arg(long)]
    defects: Option<PathBuf>,
    /// Where the trained model (ONNX contract) goes.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Checkpoint, loss curve and summary (default: OUT.train beside the model).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Stages to run, in order [default: pretrain; pretrain,finetune with --defects]. Fine-tuning on good
    /// images alone added nothing over pretraining on the dev set and made it depend more on the seed (README).
    #[arg(long, value_enum, value_delimiter = ',')]
    stages: Vec<Stage>,
    /// Stop after this many minutes and export what is trained by then.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Stop after this many steps (a rerun resumes from the checkpoint).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Start over even if the work folder holds a checkpoint of this run.
    #[arg(long)]
    fresh: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Args)]
struct CompareArgs {
    #[command(flatten)]
    set: DataSet,
    /// Defect images per kind for the few-shot row (moved out of every row's test split).
    #[arg(long, default_value_t = 5)]
    fewshot: usize,
    /// Trained models, checkpoints and loss curves per category; a rerun reuses finished training.
    #[arg(long)]
    work_dir: PathBuf,
    /// Print JSON instead of the Markdown table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    settings: Settings,
}

/// `lineguard eval --train STAGES`: an encoder trained per category.
#[derive(Args)]
pub struct EvalTrainArgs {
    /// Train an encoder per category on its train split before scoring it (fine-tuning uses the --fewshot defect images).
    #[arg(long = "train", value_enum, value_delimiter = ',')]
    stages: Vec<Stage>,
    /// Fine-tune on good images only, leaving the --fewshot defect images out of training (they stay out of the test split).
    #[arg(long)]
    train_without_defects: bool,
    /// Where per-category training keeps its models and checkpoints.
    #[arg(long, default_value = "lineguard-train")]
    train_work_dir: PathBuf,
    #[command(flatten)]
    settings: Settings,
}

fn make_engine_for<'a>(cfg: &'a Config, station: &'a Station, taps: &'a [lineguard::model::TapSpec]) -> impl Fn(&Contract) -> Result<Box<dyn engine::Engine>, engine::EngineError> + 'a {
    move |c: &Contract| {
        let ov = lineguard::station::Overrides { engine: station.engine, ..Default::default() };
        engine::create(station::engine_choice(cfg, &ov), &station::engine_spec(cfg, std::sync::Arc::new(c.clone()), taps.to_vec()))
    }
}

pub fn trained_encoders<'a>(a: &EvalTrainArgs, cfg: &Config, base: &Contract, make_engine: EngineFactory<'a>) -> Result<Option<TrainedEncoders<'a>>> {
    if a.stages.is_empty() {
        return Ok(None);
    }
    Ok(Some(TrainedEncoders {
        base: base.clone(),
        taps: cfg.model.taps.clone(),
        stages: a.stages.clone(),
        use_defects: !a.train_without_defects,
        config: a.settings.config()?,
        work_dir: a.train_work_dir.clone(),
        device: a.settings.device,
        max_minutes: None,
        make_engine,
        current: None,
    }))
}

pub fn train_command(cmd: TrainCmd) -> Result<ExitCode> {
    match cmd.sub {
        Some(TrainSub::Compare(a)) => compare_command(a),
        None => run_command(cmd.run),
    }
}

/// The stages asked for, or the measured default: pretraining, and fine-tuning only to use defect images.
fn default_stages(asked: Vec<Stage>, with_defects: bool) -> Vec<Stage> {
    match (asked.is_empty(), with_defects) {
        (false, _) => asked,
        (true, false) => vec![Stage::Pretrain],
        (true, true) => vec![Stage::Pretrain, Stage::Finetune],
    }
}

fn run_command(a: TrainArgs) -> Result<ExitCode> {
    let (Some(images), Some(out)) = (a.images, a.out) else {
        bail!("lineguard train needs --images DIR (good parts) and --out MODEL.onnx; see lineguard train --help");
    };
    let (cfg, ov) = a.station.load()?;
    let (contract, _) = station::load_model(&cfg, &ov)?;
    let good = list_images(&images)?;
    let defects = match &a.defects {
        Some(d) => list_defects(d)?,
        None => vec![],
    };
    let with_defects = !defects.is_empty();
    let work_dir = a.work_dir.unwrap_or_else(|| {
        let mut s = out.as_os_str().to_owned();
        s.push(".train");
        PathBuf::from(s)
    });
    let req = TrainRequest {
        base: (*contract).clone(),
        taps: cfg.model.taps.clone(),
        good_dir: images,
        good,
        defects,
        stages: default_stages(a.stages, with_defects),
        config: a.settings.config()?,
        out,
        work_dir,
        max_minutes: a.max_minutes,
        max_steps: a.max_steps,
        device: a.settings.device,
        fresh: a.fresh,
    };
    let s = train(req, &Progress::stderr())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        for r in &s.stages {
            println!(
                "{:<9} {:>4}/{:<4} steps  loss {:.4} -> {:.4}  {:.1} images/s  {:.0} s",
                r.stage, r.steps, r.steps_planned, r.first_loss, r.last_loss, r.images_per_second, r.seconds
            );
        }
        if s.stopped_early {
            println!("stopped at the limit (--max-minutes or --max-steps): the model holds what was trained by then; a rerun resumes");
        }
        println!("wrote {} (sha256 {}); loss curve {}", s.model.display(), s.model_sha256, s.loss_curve.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn compare_command(a: CompareArgs) -> Result<ExitCode> {
    let (cfg, ov) = a.set.station.load()?;
    let (contract, taps) = station::load_model(&cfg, &ov)?;
    let make_engine = make_engine_for(&cfg, &a.set.station, &taps);
    let req = CompareRequest {
        base: (*contract).clone(),
        taps: cfg.model.taps.clone(),
        data: a.set.data,
        categories: a.set.categories,
        fewshot: a.fewshot,
        repeats: a.set.repeats.into(),
        config: a.settings.config()?,
        work_dir: a.work_dir,
        device: a.settings.device,
        params: EnrollParams::from_config(&cfg, None),
        scoring: cfg.scoring.clone(),
        make_engine: &make_engine,
    };
    let c = compare(&req, &Progress::stderr())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print!("{}", markdown(&c));
    }
    Ok(ExitCode::SUCCESS)
}
