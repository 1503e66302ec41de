//! The `lineguard` command: argument parsing and printing only; the library
//! does the work.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use lineguard::bench::{self, BenchOptions};
use lineguard::config::{Config, EngineChoice};
use lineguard::engine;
use lineguard::enroll::{self, EnrollParams};
use lineguard::eval::{self, EvalOptions};
use lineguard::frame::Frame;
use lineguard::heatmap;
use lineguard::model::{self, Contract, ImportOptions, import};
use lineguard::progress::Progress;
use lineguard::station::{self, Inspector, Overrides};

#[derive(Parser)]
#[command(name = "lineguard", version, about = "Visual defect inspection for a production line")]
struct Cli {
    /// Log filter (error, warn, info, debug, trace or a tracing filter).
    #[arg(long, global = true, default_value = "info,rumqttd=warn", env = "LINEGUARD_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import, inspect and check encoder models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Build a recipe's memory bank from a folder of good images.
    Enroll(EnrollArgs),
    /// Inspect image files: one verdict JSON per image, heatmap overlays beside them.
    Inspect(InspectArgs),
    /// Evaluate on an MVTec-layout data set: AUROC, F1, latency.
    Eval(EvalArgs),
    /// Per-stage latency over many frames.
    Bench(BenchArgs),
    /// Adapt the encoder to the station: contrastive pretraining, fine-tuning, export to ONNX.
    #[cfg(feature = "train")]
    Train(Box<train_cli::TrainCmd>),
    /// Run the station: capture, inspect, publish verdicts (the service).
    Run(RunArgs),
    /// Write generated parts of the simulated line as PNG files (demo, enrollment).
    Synth(SynthArgs),
    /// Follow a station's verdicts and status on the MQTT broker, one line each.
    Watch(WatchArgs),
    /// List the GPU adapters the GPU engine can use.
    Devices {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct WatchArgs {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Station name (topics are PREFIX/STATION/...).
    #[arg(long)]
    station: String,
    #[arg(long, default_value = "lineguard")]
    prefix: String,
    /// Stop after this many seconds (default: until interrupted).
    #[arg(long)]
    seconds: Option<u64>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    station: Station,
    /// Recipe to start with (default: station.recipe).
    #[arg(long)]
    recipe: Option<String>,
}

#[derive(Args)]
struct SynthArgs {
    /// Folder to write into.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 50)]
    count: u64,
    /// Share of defective parts (0 for enrollment images).
    #[arg(long, default_value_t = 0.0)]
    defect_rate: f32,
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// Seed; use another one than the running line's to get unseen parts.
    #[arg(long, default_value_t = 1000)]
    seed: u64,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Convert a PyTorch checkpoint (legacy or zip format) into the ONNX contract.
    Import {
        /// The .pth checkpoint (EfficientNet-Lite0 state dict).
        checkpoint: PathBuf,
        /// Where to write the ONNX model.
        #[arg(long)]
        out: PathBuf,
        /// Input size in pixels (square, multiple of 32).
        #[arg(long, default_value_t = 224)]
        input_size: usize,
        /// Keep the ImageNet classifier as an extra `logits` output.
        #[arg(long)]
        classifier: bool,
        /// Input normalisation recorded in the contract.
        #[arg(long, value_enum, default_value_t = Normalization::Imagenet)]
        normalization: Normalization,
    },
    /// Print a model's contract metadata.
    Info { model: PathBuf },
    /// ImageNet top-5 of images (models imported with --classifier).
    Classify { model: PathBuf, images: Vec<PathBuf> },
}

#[derive(Clone, Copy, ValueEnum)]
enum Normalization {
    /// ImageNet mean/std (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225).
    Imagenet,
    /// TensorFlow's 127/128 convention: mean 0.5, std 0.5.
    Tf,
}

#[derive(Args)]
struct Station {
    /// Station configuration.
    #[arg(long, env = "LINEGUARD_CONFIG", default_value = "/etc/lineguard/lineguard.toml")]
    config: PathBuf,
    /// Encoder model, instead of the configured one.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Engine, instead of the configured one.
    #[arg(long, value_enum)]
    engine: Option<EngineChoice>,
}

impl Station {
    fn load(&self) -> Result<(Config, Overrides)> {
        let cfg = Config::load(&self.config)?;
        Ok((cfg, Overrides { model: self.model.clone(), engine: self.engine, ..Default::default() }))
    }
}

#[derive(Args)]
struct EnrollArgs {
    #[command(flatten)]
    station: Station,
    /// Folder of good images.
    #[arg(long)]
    images: PathBuf,
    /// Recipe to enroll (default: the active one).
    #[arg(long)]
    recipe: Option<String>,
    /// Write the bank here instead of the recipe's bank path.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct InspectArgs {
    #[command(flatten)]
    station: Station,
    /// Recipe to inspect with (default: the active one).
    #[arg(long)]
    recipe: Option<String>,
    /// Bank file, instead of the recipe's.
    #[arg(long)]
    bank: Option<PathBuf>,
    /// Folder for heatmap overlays (default: beside each image).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Image files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// A station and an MVTec-layout data set to evaluate it on.
#[derive(Args)]
struct DataSet {
    #[command(flatten)]
    station: Station,
    /// MVTec-layout data set root.
    #[arg(long)]
    data: PathBuf,
    /// Comma-separated categories (default: all).
    #[arg(long, value_delimiter = ',')]
    categories: Vec<String>,
    /// Enroll (and train) each category this many times with consecutive
    /// seeds and report the mean AUROC and its range: one coreset draw moves
    /// a texture's image AUROC by up to 0.03, so compare encoders on 3 or more.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=100))]
    repeats: u16,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    set: DataSet,
    /// Print a JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Write eval.json, ROC plots and example heatmaps here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Example heatmaps per defect kind in the report.
    #[arg(long, default_value_t = 3)]
    heatmaps_per_kind: usize,
    /// Move this many defect images per kind out of each test split (into a
    /// few-shot training split that `--train finetune` uses); they are not scored.
    #[arg(long, default_value_t = 0)]
    fewshot: usize,
    #[cfg(feature = "train")]
    #[command(flatten)]
    train: train_cli::EvalTrainArgs,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    station: Station,
    /// Folder of good images to enroll (e.g. a category's train/good).
    #[arg(long)]
    images: PathBuf,
    /// Folder of images to score (default: the enrolled ones; better: unseen ones, e.g. test/good).
    #[arg(long)]
    frames_from: Option<PathBuf>,
    /// Timed frames.
    #[arg(long, default_value_t = 200)]
    frames: usize,
    /// Bank rows to score against.
    #[arg(long, default_value_t = 9408)]
    bank_rows: usize,
    /// Print a JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[cfg(feature = "train")]
mod train_cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line; a cause already quoted by the
/// message before it (our errors include their cause) is not repeated.
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !msg.contains(&s) {
            if !msg.is_empty() {
                msg += ": ";
            }
            msg += &s;
        }
    }
    msg
}

fn run(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Model(m) => model_command(m),
        Command::Enroll(a) => enroll_command(a),
        Command::Inspect(a) => inspect_command(a),
        Command::Eval(a) => eval_command(a),
        Command::Bench(a) => bench_command(a),
        #[cfg(feature = "train")]
        Command::Train(a) => train_cli::train_command(*a),
        Command::Run(a) => {
            let ov = Overrides { model: a.station.model.clone(), engine: a.station.engine, recipe: a.recipe.clone(), bank: None };
            lineguard::daemon::run(&a.station.config, ov, None)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Synth(a) => synth_command(a),
        Command::Devices { json } => devices_command(json),
        Command::Watch(a) => {
            let w = lineguard::watch::Watch { host: a.host, port: a.port, station: a.station, prefix: a.prefix };
            let summary = w.run(a.seconds.map(std::time::Duration::from_secs), &mut std::io::stdout())?;
            eprintln!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn model_command(cmd: ModelCommand) -> Result<ExitCode> {
    match cmd {
        ModelCommand::Import { checkpoint, out, input_size, classifier, normalization } => {
            let (mean, std) = match normalization {
                Normalization::Imagenet => (import::IMAGENET_MEAN, import::IMAGENET_STD),
                Normalization::Tf => (import::TF_MEAN, import::TF_STD),
            };
            let c = model::import_checkpoint(&checkpoint, &out, &ImportOptions { input_size, classifier, mean, std })?;
            println!("wrote {} (sha256 {})", out.display(), c.sha256);
            print_contract(&c);
        }
        ModelCommand::Info { model } => print_contract(&Contract::load(&model)?),
        ModelCommand::Classify { model, images } => {
            let c = Contract::load(&model)?;
            for (i, p) in images.iter().enumerate() {
                let top = model::classify::classify(&c, &Frame::from_image_file(p, i as u64)?, 5)?;
                let s: Vec<String> = top.iter().map(|(k, p)| format!("{k} ({p:.3})")).collect();
                println!("{}: {}", p.display(), s.join(", "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_contract(c: &Contract) {
    let m = &c.meta;
    println!("model: {} ({})", c.path.display(), m.architecture);
    println!("input: '{}' 1x3x{}x{} RGB, mean {:?}, std {:?}", m.input.name, m.input.height, m.input.width, m.input.mean, m.input.std);
    for t in &m.taps {
        println!("tap: {} (stride {}, {} channels)", t.name, t.stride, t.channels);
    }
    if let Some(l) = &m.classifier_output {
        println!("classifier: {l}");
    }
    println!("weights sha256: {}\ngraph sha256: {}\nfile sha256: {}", m.weights_sha256, m.graph_sha256, c.sha256);
    if let Some(t) = m.provenance.get("training") {
        let text = |k: &str| t.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_owned();
        println!(
            "trained from {} on {} good and {} defect images (data sha256 {}); every setting is in the metadata (provenance.training)",
            text("base_model_sha256"),
            t.get("good_images").unwrap_or(&serde_json::Value::Null),
            t.get("defect_images").unwrap_or(&serde_json::Value::Null),
            text("data_sha256")
        );
    }
}

fn enroll_command(a: EnrollArgs) -> Result<ExitCode> {
    let (cfg, ov) = a.station.load()?;
    let (recipe_name, recipe) = cfg.recipe(a.recipe.as_deref())?;
    let out = a.out.clone().unwrap_or_else(|| recipe.bank.clone());
    let images = enroll::list_images(&a.images)?;
    let (contract, taps) = station::load_model(&cfg, &ov)?;
    let mut eng = engine::create(station::engine_choice(&cfg, &ov), &station::engine_spec(&cfg, contract.clone(), taps))?;
    eprintln!("enrolling recipe '{recipe_name}' from {} images in {} ({})", images.len(), a.images.display(), eng.description());
    let params = EnrollParams::from_config(&cfg, recipe.roi);
    let bank = enroll::enroll(eng.as_mut(), &contract, &images, &params, &Progress::stderr())?;
    bank.save(&out)?;
    let h = &bank.header;
    println!(
        "wrote {} (bank {}): {} of {} patches from {} images, threshold {:.4} (good scores: max {:.4}, mean {:.4})",
        out.display(),
        bank.id(),
        h.rows,
        h.patches_total,
        h.image_count,
        h.threshold,
        h.calibration.max_good_score,
        h.calibration.mean_good_score
    );
    Ok(ExitCode::SUCCESS)
}

fn heatmap_path(image: &Path, out: Option<&Path>) -> PathBuf {
    let stem = image.file_stem().unwrap_or_default().to_string_lossy();
    let name = format!("{stem}.heatmap.png");
    match out {
        Some(d) => d.join(name),
        None => image.with_file_name(name),
    }
}

fn inspect_command(a: InspectArgs) -> Result<ExitCode> {
    let (cfg, mut ov) = a.station.load()?;
    ov.recipe = a.recipe.clone();
    ov.bank = a.bank.clone();
    let mut insp = Inspector::open(&cfg, &ov)?;
    let mut failures = 0;
    for (i, path) in a.images.iter().enumerate() {
        let result = (|| -> Result<()> {
            let frame = Frame::from_image_file(path, i as u64)?;
            let r = insp.inspect(&frame)?;
            let over = heatmap::overlay(&frame, &r.scored, r.verdict.threshold, &r.verdict.regions);
            let hp = heatmap_path(path, a.out.as_deref());
            heatmap::save_png(&over, &hp).with_context(|| format!("{}: cannot write the heatmap", hp.display()))?;
            println!("{}", serde_json::to_string(&r.verdict)?);
            Ok(())
        })();
        if let Err(e) = result {
            eprintln!("error: {}", error_chain(&e));
            failures += 1;
        }
    }
    if failures > 0 {
        bail!("{failures} of {} images could not be inspected", a.images.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn eval_command(a: EvalArgs) -> Result<ExitCode> {
    let (cfg, ov) = a.set.station.load()?;
    let (contract, taps) = station::load_model(&cfg, &ov)?;
    let params = EnrollParams::from_config(&cfg, None);
    let opts = EvalOptions {
        categories: a.set.categories,
        report_dir: a.report.clone(),
        heatmaps_per_kind: a.heatmaps_per_kind,
        scoring: cfg.scoring.clone(),
        fewshot: a.fewshot,
        repeats: a.set.repeats.into(),
    };
    let make_engine = |c: &Contract| engine::create(station::engine_choice(&cfg, &ov), &station::engine_spec(&cfg, std::sync::Arc::new(c.clone()), taps.clone()));
    #[cfg(feature = "train")]
    let mut trained = train_cli::trained_encoders(&a.train, &cfg, &contract, &make_engine)?;
    let mut station_encoder;
    let source: &mut dyn eval::EncoderSource = {
        #[cfg(feature = "train")]
        let t = trained.as_mut();
        #[cfg(not(feature = "train"))]
        let t: Option<&mut eval::Encoder> = None;
        match t {
            Some(t) => t,
            None => {
                station_encoder = eval::Encoder { engine: make_engine(&contract)?, contract: (*contract).clone() };
                &mut station_encoder
            }
        }
    };
    let r = eval::evaluate(source, &a.set.data, &params, &opts, &Progress::stderr())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", eval::report::table(&r));
    }
    if let Some(d) = &a.report {
        eprintln!("report written to {}", d.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_command(a: BenchArgs) -> Result<ExitCode> {
    let (cfg, ov) = a.station.load()?;
    let (contract, taps) = station::load_model(&cfg, &ov)?;
    let mut eng = engine::create(station::engine_choice(&cfg, &ov), &station::engine_spec(&cfg, contract.clone(), taps))?;
    if a.frames < 100 {
        bail!("--frames {}: use at least 100 frames, so that the p99 means something", a.frames);
    }
    let images = enroll::list_images(&a.images)?;
    if images.is_empty() {
        bail!("{}: no images to run", a.images.display());
    }
    let frames = match &a.frames_from {
        Some(d) => enroll::list_images(d)?,
        None => images.clone(),
    };
    if frames.is_empty() {
        bail!("{}: no images to score", a.frames_from.as_deref().unwrap_or(&a.images).display());
    }
    let params = EnrollParams::from_config(&cfg, None);
    let opts = BenchOptions { frames: a.frames, bank_rows: a.bank_rows, ..Default::default() };
    let r = bench::bench(eng.as_mut(), &contract, &images, &frames, &params, &opts, &Progress::stderr())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", bench::table(&r));
    }
    Ok(ExitCode::SUCCESS)
}

fn synth_command(a: SynthArgs) -> Result<ExitCode> {
    use lineguard::capture::synthetic::generate;
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}: cannot create", a.out.display()))?;
    let mut kinds = std::collections::BTreeMap::<&str, u64>::new();
    for i in 0..a.count {
        let (rgb, defect) = generate(a.size, a.size, a.seed, i, a.defect_rate);
        let img = image::RgbImage::from_raw(a.size, a.size, rgb).expect("generated size");
        let name = format!("{i:05}-{}.png", defect.unwrap_or("ok"));
        heatmap::save_png(&img, &a.out.join(name)).with_context(|| format!("{}: cannot write", a.out.display()))?;
        *kinds.entry(defect.unwrap_or("ok")).or_default() += 1;
    }
    println!("wrote {} parts to {}: {kinds:?}", a.count, a.out.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "gpu")]
fn devices_command(json: bool) -> Result<ExitCode> {
    let adapters = lineguard::engine::gpu::context::list_adapters();
    if json {
        println!("{}", serde_json::to_string_pretty(&adapters)?);
    } else if adapters.is_empty() {
        println!("no adapters: install a Vulkan driver (without a GPU: Debian's mesa-vulkan-drivers libvulkan1)");
    } else {
        for a in &adapters {
            println!(
                "{} [{}{}] {} driver {}: max storage binding {} MiB, workgroup memory {} KiB, {} invocations/workgroup, timestamps {}, shader-f16 {}",
                a.name,
                a.device_type,
                if a.hardware { "" } else { ", not a hardware GPU: `engine = \"auto\"` will not pick it" },
                a.backend,
                a.driver,
                a.max_storage_buffer_binding_size >> 20,
                a.max_compute_workgroup_storage_size >> 10,
                a.max_compute_invocations_per_workgroup,
                a.timestamp_queries,
                a.shader_f16
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "gpu"))]
fn devices_command(_json: bool) -> Result<ExitCode> {
    bail!("this build has no GPU engine (feature `gpu`)")
}
