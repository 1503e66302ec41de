//! `lineguard bench`: per-stage latency of the per-frame path, median and p99
//! over many frames, on real images and a bank of realistic size.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::engine::{Engine, StageTimes};
use crate::enroll::{EnrollParams, enroll};
use crate::eval::{EvalError, Percentiles, stage_percentiles};
use crate::frame::Frame;
use crate::model::Contract;
use crate::progress::Progress;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Timed frames (at least 100 for a meaningful p99).
    pub frames: usize,
    pub warmup: usize,
    /// Bank size to score against; enrolled rows are repeated (or cut) to reach it.
    pub bank_rows: usize,
    /// Images enrolled to make the bank.
    pub enroll_images: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        // 9,408 rows: 10% of 120 images x 784 patches, the reference's bank.
        BenchOptions { frames: 200, warmup: 10, bank_rows: 9408, enroll_images: 120 }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub engine: String,
    pub model: String,
    pub input: String,
    pub frame: String,
    pub frames: usize,
    pub bank_rows: usize,
    pub dim: usize,
    /// Milliseconds per stage, plus `total`.
    pub stages_ms: BTreeMap<String, Percentiles>,
    /// Frames per second at batch 1, from the wall time of the timed loop.
    pub fps_batch1: f64,
    /// Frames per second with `batch` frames per call (`Engine::score_batch`),
    /// over at least `frames` frames each.
    pub batched: Vec<BatchThroughput>,
    /// Nearest-neighbour median over encoder median.
    pub knn_to_encoder_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchThroughput {
    pub batch: usize,
    pub frames: usize,
    pub fps: f64,
}

/// Batch sizes whose throughput `bench` measures besides batch 1.
pub const BATCH_SIZES: [usize; 2] = [8, 32];

/// Enrolls from `images` and times scoring of `frames` (cycled).
pub fn bench(
    engine: &mut dyn Engine,
    contract: &Contract,
    images: &[PathBuf],
    frame_files: &[PathBuf],
    params: &EnrollParams,
    opts: &BenchOptions,
    progress: &Progress,
) -> Result<BenchReport, EvalError> {
    let enroll_set = &images[..opts.enroll_images.min(images.len())];
    let bank = enroll(engine, contract, enroll_set, params, progress)?;
    let dim = bank.header.dim;
    let rows = opts.bank_rows.max(1);
    // Repeat real rows to the target size; scoring time does not depend on which rows.
    let data: Vec<f32> = bank.data.chunks_exact(dim).cycle().take(rows).flatten().copied().collect();
    engine.set_bank(&data, dim).map_err(|source| EvalError::Engine { path: images[0].clone(), source })?;
    let frames: Vec<Frame> =
        frame_files.iter().enumerate().map(|(i, p)| Frame::from_image_file(p, i as u64)).collect::<Result<_, _>>()?;
    let run = |engine: &mut dyn Engine, i: usize| {
        let f = &frames[i % frames.len()];
        engine.score(f, params.roi).map(|s| s.times).map_err(|source| EvalError::Engine { path: PathBuf::from(&f.source), source })
    };
    for i in 0..opts.warmup {
        run(engine, i)?;
    }
    let bar = progress.bar("bench", opts.frames as u64);
    let mut times: Vec<StageTimes> = Vec::with_capacity(opts.frames);
    let t = Instant::now();
    for i in 0..opts.frames {
        times.push(run(engine, i)?);
        bar.inc(1);
    }
    let wall = t.elapsed().as_secs_f64();
    bar.finish();
    let mut batched = Vec::new();
    for batch in BATCH_SIZES {
        let rounds = opts.frames.div_ceil(batch);
        let bar = progress.bar(&format!("bench batch {batch}"), (rounds * batch) as u64);
        let make = |r: usize| -> Vec<Frame> { (0..batch).map(|i| frames[(r * batch + i) % frames.len()].clone()).collect() };
        let score = |engine: &mut dyn Engine, b: &[Frame]| {
            engine.score_batch(b, params.roi).map_err(|source| EvalError::Engine { path: PathBuf::from(&b[0].source), source })
        };
        score(engine, &make(0))?; // warm-up: sizes the batch buffers
        let mut elapsed = 0.0;
        for r in 0..rounds {
            let b = make(r);
            let t = Instant::now();
            score(engine, &b)?;
            elapsed += t.elapsed().as_secs_f64();
            bar.inc(batch as u64);
        }
        bar.finish();
        batched.push(BatchThroughput { batch, frames: rounds * batch, fps: (rounds * batch) as f64 / elapsed });
    }
    let stages_ms = stage_percentiles(&times);
    let input = &contract.meta.input;
    Ok(BenchReport {
        engine: engine.description(),
        model: contract.path.display().to_string(),
        input: format!("{}x{}", input.width, input.height),
        frame: format!("{}x{} {:?}", frames[0].width, frames[0].height, frames[0].format),
        frames: opts.frames,
        bank_rows: rows,
        dim,
        fps_batch1: opts.frames as f64 / wall,
        batched,
        knn_to_encoder_ratio: stages_ms["nearest_neighbour"].median / stages_ms["encoder"].median,
        stages_ms,
    })
}

/// The table printed by `lineguard bench`.
pub fn table(r: &BenchReport) -> String {
    let mut s = format!(
        "engine: {}\nmodel: {} (input {}), frames {} ({}), bank {} x {}\n{:<18} {:>10} {:>10}\n",
        r.engine, r.model, r.input, r.frames, r.frame, r.bank_rows, r.dim, "stage", "median ms", "p99 ms"
    );
    for name in StageTimes::NAMES.iter().chain(&["total"]) {
        let p = r.stages_ms[*name];
        s += &format!("{:<18} {:>10.2} {:>10.2}\n", name, p.median, p.p99);
    }
    s += &format!("throughput at batch 1: {:.1} frames/s", r.fps_batch1);
    for b in &r.batched {
        s += &format!(", batch {}: {:.1}", b.batch, b.fps);
    }
    s += &format!("\nnearest neighbour / encoder = {:.2}\n", r.knn_to_encoder_ratio);
    s
}
