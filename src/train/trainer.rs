//! The training loop: stages, steps, checkpoints, the time limit, export.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::augment::{self, Cached, View};
use super::checkpoint::{self, Checkpoint, Header, LossPoint};
use super::data::{self, DefectImage};
use super::encoder::{EncoderGraph, ParamSpec};
use super::loss;
use super::optim::{AdamW, clip_factor, schedule};
use super::{Objective, Stage, TrainConfig, TrainDevice, TrainError};
use crate::fsutil::{sha256_hex, write_atomic};
use crate::model::Contract;
use crate::progress::Progress;

/// Fewest good images a run accepts.
pub const MIN_IMAGES: usize = 4;

pub struct TrainRequest {
    pub base: Contract,
    /// The taps the station scores with: training shapes these features.
    pub taps: Vec<String>,
    /// Folder the good images came from (for messages).
    pub good_dir: PathBuf,
    pub good: Vec<PathBuf>,
    pub defects: Vec<DefectImage>,
    pub stages: Vec<Stage>,
    pub config: TrainConfig,
    pub out: PathBuf,
    /// Checkpoint, loss curve and run summary go here.
    pub work_dir: PathBuf,
    pub max_minutes: Option<f64>,
    /// Stop after this many steps in this invocation (like the time limit; a rerun resumes).
    pub max_steps: Option<usize>,
    pub device: TrainDevice,
    /// Ignore (and replace) a checkpoint left in `work_dir`.
    pub fresh: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub stage: String,
    pub steps: usize,
    pub steps_planned: usize,
    pub seconds: f64,
    pub first_loss: f32,
    pub last_loss: f32,
    /// Good images (two views each) per second.
    pub images_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct TrainSummary {
    pub model: PathBuf,
    pub model_sha256: String,
    pub stages: Vec<StageReport>,
    /// The time limit ended training before the planned steps.
    pub stopped_early: bool,
    /// (stage, step) a checkpoint was resumed from.
    pub resumed_from: Option<(String, usize)>,
    pub loss_curve: PathBuf,
    pub checkpoint: PathBuf,
    pub seconds: f64,
}

/// Parameters and optimizer state, all flat tensors in one order: the
/// encoder's parameters, then the projection head's.
struct State {
    params: Vec<Tensor<1>>,
    m: Vec<Tensor<1>>,
    v: Vec<Tensor<1>>,
    anchor: Vec<Tensor<1>>,
}

struct Run {
    req: TrainRequest,
    graph: EncoderGraph,
    specs: Vec<ParamSpec>,
    strides: Vec<usize>,
    device: Device,
    good: Vec<Cached>,
    defects: Vec<Cached>,
    run_id: String,
    data_sha256: String,
}

fn flat(v: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

fn values(t: &Tensor<1>) -> Vec<f32> {
    t.clone().into_data().try_to_vec::<f32>().expect("f32 tensors")
}

/// Projection head weights, Xavier-uniform from the seed.
fn head_init(cfg: &TrainConfig, channels: usize) -> Vec<(ParamSpec, Vec<f32>)> {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6865_6164);
    let mut layer = |name: &str, fan_in: usize, fan_out: usize| {
        let a = (6.0 / (fan_in + fan_out) as f32).sqrt();
        let w: Vec<f32> = (0..fan_in * fan_out).map(|_| rng.random_range(-a..a)).collect();
        vec![
            (ParamSpec { name: format!("head.{name}.weight"), shape: vec![fan_in, fan_out], trainable: true }, w),
            (ParamSpec { name: format!("head.{name}.bias"), shape: vec![fan_out], trainable: true }, vec![0.0; fan_out]),
        ]
    };
    let mut out = layer("hidden", channels, cfg.head_hidden);
    out.extend(layer("out", cfg.head_hidden, cfg.head_out));
    out
}

/// The projection head: Linear, ReLU, Linear.
fn head(p: &[Tensor<1>], specs: &[ParamSpec], x: Tensor<2>) -> Tensor<2> {
    let lin = |x: Tensor<2>, w: usize| {
        let [i, o] = [specs[w].shape[0], specs[w].shape[1]];
        x.matmul(p[w].clone().reshape([i, o])) + p[w + 1].clone().reshape([1, o])
    };
    let n = p.len();
    let h = burn::tensor::activation::relu(lin(x, n - 4));
    lin(h, n - 2)
}

/// Taps on one grid: finer taps average-pooled down to the coarsest stride, concatenated.
fn grid_features(taps: Vec<Tensor<4>>, strides: &[usize]) -> Tensor<4> {
    let coarse = *strides.iter().max().expect("at least one tap");
    let parts = taps
        .into_iter()
        .zip(strides)
        .map(|(t, &s)| {
            let r = coarse / s;
            if r > 1 { avg_pool2d(t, AvgPoolOptions::new([r, r]).with_stride([r, r])) } else { t }
        })
        .collect();
    Tensor::cat(parts, 1)
}

impl Run {
    fn cfg(&self) -> &TrainConfig {
        &self.req.config
    }

    /// Good images per step: the configured batch, or all images when there are fewer.
    fn batch_size(&self) -> usize {
        self.cfg().batch.min(self.good.len())
    }

    /// Steps per epoch; [`Run::batch_indices`] slices each epoch's permutation by it.
    fn steps_per_epoch(&self) -> usize {
        (self.good.len() / self.batch_size()).max(1)
    }

    fn stage_steps(&self, stage: Stage) -> usize {
        let epochs = match stage {
            Stage::Pretrain => self.cfg().pretrain.epochs,
            Stage::Finetune => self.cfg().finetune.epochs,
        };
        self.steps_per_epoch() * epochs
    }

    /// Images of `step`: each epoch is its own seeded permutation.
    fn batch_indices(&self, stage_index: usize, step: usize) -> Vec<usize> {
        let n = self.good.len();
        let batch = self.batch_size();
        let per_epoch = self.steps_per_epoch();
        let (epoch, j) = (step / per_epoch, step % per_epoch);
        let mut perm: Vec<usize> = (0..n).collect();
        perm.shuffle(&mut ChaCha8Rng::seed_from_u64(self.cfg().seed ^ ((stage_index as u64) << 40) ^ epoch as u64));
        perm[j * batch..(j + 1) * batch].to_vec()
    }

    /// Views as one normalised N x 3 x S x S tensor.
    fn input(&self, views: &[View]) -> Tensor<4> {
        let s = self.cfg().augment.crop_size;
        let (mean, std) = (self.req.base.meta.input.mean, self.req.base.meta.input.std);
        let n = s * s;
        let mut data = Vec::with_capacity(views.len() * 3 * n);
        for v in views {
            for c in 0..3 {
                data.extend(v.pixels[c * n..(c + 1) * n].iter().map(|&p| (p - mean[c]) / std[c]));
            }
        }
        Tensor::from_data(TensorData::new(data, [views.len(), 3, s, s]), &self.device)
    }

    /// Cell pairs (row in view a's grid, row in view b's grid) that see the same place.
    fn pairs(&self, a: &augment::ViewGeometry, b: &augment::ViewGeometry, grid: usize, rng: &mut ChaCha8Rng) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for gy in 0..grid {
            for gx in 0..grid {
                let (x, y) = a.to_image((gx as f32 + 0.5) / grid as f32, (gy as f32 + 0.5) / grid as f32);
                if let Some((u, v)) = b.to_view(x, y) {
                    let (bx, by) = ((u * grid as f32) as usize, (v * grid as f32) as usize);
                    out.push((gy * grid + gx, by.min(grid - 1) * grid + bx.min(grid - 1)));
                }
            }
        }
        out.shuffle(rng);
        out.truncate(self.cfg().dense_pairs);
        out
    }

    /// The loss of one step (tracked by autodiff through `p`).
    fn step_loss(&self, stage: Stage, stage_index: usize, step: usize, p: &[Tensor<1>], anchor: &[Tensor<1>]) -> Tensor<1> {
        let cfg = self.cfg();
        let sid = stage_index * 1_000_000 + step;
        let idx = self.batch_indices(stage_index, step);
        let b = idx.len();
        let views: Vec<View> = (0..2 * b)
            .into_par_iter()
            .map(|k| {
                let (i, view) = (idx[k % b], k / b);
                augment::view(&cfg.augment, &self.good[i], &mut augment::rng_for(cfg.seed, sid, i, view))
            })
            .collect();
        let n_enc = self.graph.params.len();
        let (rows, grid) = self.cell_features(&views, p);
        let [_, channels] = rows.dims();
        let cells = grid * grid;
        let (mut ia, mut ib) = (Vec::new(), Vec::new());
        for k in 0..b {
            let mut rng = augment::rng_for(cfg.seed, sid, idx[k], 2);
            for (ca, cb) in self.pairs(&views[k].geometry, &views[b + k].geometry, grid, &mut rng) {
                ia.push(k * cells + ca);
                ib.push((b + k) * cells + cb);
            }
        }
        let good_a = rows.clone().select(0, loss::indices(&ia, &self.device));
        let good_b = rows.clone().select(0, loss::indices(&ib, &self.device));
        let mut total = match cfg.objective {
            Objective::Dense => {
                let (za, zb) = (head(p, &self.specs, good_a.clone()), head(p, &self.specs, good_b.clone()));
                loss::dense_info_nce(za, zb, cfg.temperature)
            }
            Objective::Global => {
                let pooled = rows.clone().reshape([2 * b, cells, channels]).mean_dim(1).reshape([2 * b, channels]);
                loss::nt_xent(head(p, &self.specs, pooled), cfg.temperature)
            }
        };
        if stage == Stage::Finetune {
            let trainable: Vec<bool> = self.graph.params.iter().map(|s| s.trainable).collect();
            if let Some(l2) = loss::l2_sp(&p[..n_enc], &anchor[..n_enc], &trainable) {
                total = total + l2 * cfg.anchor;
            }
            if let Some(d) = self.defect_rows(sid, step, p) {
                total = total + loss::defect_margin(d, good_a, good_b, cfg.defect_margin) * cfg.defect_weight;
            }
        }
        total
    }

    /// The encoder's tap features of `views` on one grid, a row per cell
    /// (view-major, then row, column), and the grid's side.
    fn cell_features(&self, views: &[View], p: &[Tensor<1>]) -> (Tensor<2>, usize) {
        let feats = grid_features(self.graph.forward(&p[..self.graph.params.len()], self.input(views)), &self.strides);
        let [n, channels, grid, _] = feats.dims();
        (feats.permute([0, 2, 3, 1]).reshape([n * grid * grid, channels]), grid)
    }

    /// Features of the defect cells (more than half defect pixels) in this step's defect views.
    fn defect_rows(&self, sid: usize, step: usize, p: &[Tensor<1>]) -> Option<Tensor<2>> {
        let cfg = self.cfg();
        let n = self.defects.len();
        if n == 0 {
            return None;
        }
        let ids: Vec<usize> = (0..cfg.defect_batch.min(n)).map(|j| (step * cfg.defect_batch + j) % n).collect();
        let views: Vec<View> = ids
            .par_iter()
            .map(|&i| augment::view(&cfg.augment, &self.defects[i], &mut augment::rng_for(cfg.seed, sid, 1 << 20 | i, 0)))
            .collect();
        let (rows, grid) = self.cell_features(&views, p);
        let s = cfg.augment.crop_size;
        let cell = s / grid;
        let mut picked = Vec::new();
        for (k, v) in views.iter().enumerate() {
            let mask = v.mask.as_ref().expect("defect views carry masks");
            for gy in 0..grid {
                for gx in 0..grid {
                    let hits = (0..cell).flat_map(|y| (0..cell).map(move |x| (gy * cell + y) * s + gx * cell + x)).filter(|&i| mask[i]).count();
                    if 2 * hits > cell * cell {
                        picked.push(k * grid * grid + gy * grid + gx);
                    }
                }
            }
        }
        if picked.is_empty() {
            return None;
        }
        Some(rows.select(0, loss::indices(&picked, &self.device)))
    }

    fn checkpoint_path(&self) -> PathBuf {
        self.req.work_dir.join("train.ckpt")
    }

    fn save(&self, st: &State, stages_done: &[String], stage: Stage, step: usize, losses: &[LossPoint]) -> Result<(), TrainError> {
        let mut tensors = Vec::new();
        for group in [&st.params, &st.m, &st.v, &st.anchor] {
            tensors.extend(group.iter().map(values));
        }
        let header = Header {
            run_id: self.run_id.clone(),
            stages_done: stages_done.to_vec(),
            stage: stage.name().into(),
            step,
            losses: losses.to_vec(),
            lengths: tensors.iter().map(Vec::len).collect(),
        };
        checkpoint::save(&self.checkpoint_path(), &Checkpoint { header, tensors })
    }
}

/// Trains, exports the model to `req.out`, writes the loss curve and summary.
pub fn train(req: TrainRequest, progress: &Progress) -> Result<TrainSummary, TrainError> {
    let started = Instant::now();
    let deadline = req.max_minutes.map(|m| started + std::time::Duration::from_secs_f64(m * 60.0));
    req.config.check()?;
    if req.stages.is_empty() {
        return Err(TrainError::Config("no training stage selected".into()));
    }
    if req.good.len() < MIN_IMAGES {
        return Err(TrainError::TooFew { path: req.good_dir.clone(), found: req.good.len(), needed: MIN_IMAGES });
    }
    if !req.defects.is_empty() && !req.stages.contains(&Stage::Finetune) {
        return Err(TrainError::Config("defect images are used by fine-tuning: add the finetune stage".into()));
    }
    let device_kind = req.device.resolve();
    let device = device_kind.burn_device()?;
    tracing::info!(device = ?device_kind, "training device");
    let graph = EncoderGraph::from_contract(&req.base, &req.taps, req.config.freeze_blocks)?;
    let tap_specs = req.base.taps(&req.taps).map_err(|e| TrainError::Config(e.to_string()))?;
    let strides: Vec<usize> = tap_specs.iter().map(|t| t.stride).collect();
    let coarse = *strides.iter().max().unwrap_or(&1);
    if !req.config.augment.crop_size.is_multiple_of(coarse) {
        return Err(TrainError::Config(format!("augment.crop_size {} is not a multiple of the taps' stride {coarse}", req.config.augment.crop_size)));
    }
    let channels: usize = tap_specs.iter().map(|t| t.channels).sum();
    let head = head_init(&req.config, channels);
    let mut specs = graph.params.clone();
    specs.extend(head.iter().map(|(s, _)| s.clone()));

    let data_sha256 = data::data_hash(&req.good, &req.defects)?;
    let settings = serde_json::json!({
        "base": req.base.sha256, "data": data_sha256, "taps": req.taps,
        "stages": req.stages.iter().map(|s| s.name()).collect::<Vec<_>>(), "config": req.config,
    });
    let run_id = sha256_hex(settings.to_string().as_bytes());
    let bar = progress.bar("decode", 1);
    let good = data::load_good(&req.good, &req.base.meta.input)?;
    let defects = data::load_defects(&req.defects, &req.base.meta.input)?;
    bar.inc(1);
    bar.finish();

    let run = Run { graph, specs, strides, device: device.clone(), good, defects, run_id, data_sha256, req };
    let mut initial: Vec<Vec<f32>> = run.graph.initial.clone();
    initial.extend(head.into_iter().map(|(_, v)| v));
    let zeros = |v: &Vec<f32>| flat(vec![0.0; v.len()], &device);
    let mut st = State {
        m: initial.iter().map(zeros).collect(),
        v: initial.iter().map(zeros).collect(),
        anchor: initial.iter().map(|v| flat(v.clone(), &device)).collect(),
        params: initial.into_iter().map(|v| flat(v, &device)).collect(),
    };
    let mut losses: Vec<LossPoint> = Vec::new();
    let mut stages_done: Vec<String> = Vec::new();
    let mut resume_at: Option<(String, usize)> = None;
    let ckpt = run.checkpoint_path();
    if ckpt.exists() && !run.req.fresh {
        let c = checkpoint::load(&ckpt)?;
        if c.header.run_id != run.run_id {
            return Err(TrainError::Checkpoint {
                path: ckpt,
                reason: "it belongs to another run (other base model, images or settings); pass --fresh to start over and replace it, or use another --work-dir".into(),
            });
        }
        let n = st.params.len();
        if c.tensors.len() != 4 * n {
            return Err(TrainError::Checkpoint { path: ckpt, reason: "its tensors do not match this model".into() });
        }
        let mut it = c.tensors.into_iter().map(|v| flat(v, &device));
        for group in [&mut st.params, &mut st.m, &mut st.v, &mut st.anchor] {
            *group = it.by_ref().take(n).collect();
        }
        losses = c.header.losses;
        stages_done = c.header.stages_done;
        resume_at = Some((c.header.stage, c.header.step));
        tracing::info!(checkpoint = %ckpt.display(), stage = %resume_at.as_ref().unwrap().0, step = resume_at.as_ref().unwrap().1, "resuming");
    }
    let resumed_from = resume_at.clone();
    if let Some(done) = finished_model(&run, &stages_done) {
        tracing::info!(model = %run.req.out.display(), "this run finished before: keeping its model");
        return Ok(TrainSummary {
            model: run.req.out.clone(),
            model_sha256: done.sha256,
            stages: vec![],
            stopped_early: false,
            resumed_from,
            loss_curve: run.req.work_dir.join("loss.png"),
            checkpoint: run.checkpoint_path(),
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    let mut reports = Vec::new();
    let mut stopped_early = false;
    let mut steps_taken = 0usize;
    let trainable: Vec<bool> = run.specs.iter().map(|s| s.trainable).collect();
    let decays: Vec<bool> = run.specs.iter().map(|s| s.shape.len() > 1).collect();
    for &stage in &run.req.stages {
        // Random streams follow the stage, not its position, so a fine-tuning
        // run on its own sees what it sees after pretraining in one run.
        let stage_index = stage as usize;
        if stages_done.iter().any(|s| s == stage.name()) {
            continue;
        }
        let total = run.stage_steps(stage);
        let sc = match stage {
            Stage::Pretrain => run.cfg().pretrain.clone(),
            Stage::Finetune => run.cfg().finetune.clone(),
        };
        let warmup = ((total as f32 * sc.warmup) as usize).max(1);
        let opt = AdamW { lr: sc.lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: run.cfg().weight_decay };
        let mut start = 0;
        match resume_at.take() {
            Some((s, step)) if s == stage.name() => start = step,
            _ => {
                // A new stage starts with fresh moments, anchored where it starts.
                st.anchor = st.params.clone();
                st.m = st.m.iter().map(|t| t.zeros_like()).collect();
                st.v = st.v.iter().map(|t| t.zeros_like()).collect();
            }
        }
        let bar = progress.bar(stage.name(), total as u64);
        bar.set_position(start as u64);
        let t0 = Instant::now();
        let batch = run.batch_size();
        let mut step = start;
        let mut first = None;
        while step < total {
            if deadline.is_some_and(|d| Instant::now() >= d) || run.req.max_steps.is_some_and(|m| steps_taken >= m) {
                stopped_early = true;
                tracing::warn!(stage = stage.name(), step, planned = total, "limit reached: stopping and exporting what is trained so far (a rerun resumes)");
                break;
            }
            steps_taken += 1;
            let p: Vec<Tensor<1>> = st.params.iter().zip(&trainable).map(|(t, &tr)| if tr { t.clone().autodiff().require_grad() } else { t.clone() }).collect();
            let l = run.step_loss(stage, stage_index, step, &p, &st.anchor);
            let value = values(&l.clone().inner())[0];
            if !value.is_finite() {
                return Err(TrainError::Config(format!("{} step {step}: the loss is {value}; lower train.{}.lr", stage.name(), stage.name())));
            }
            let grads = l.backward();
            let g: Vec<Option<Tensor<1>>> = p.iter().zip(&trainable).map(|(t, &tr)| if tr { t.grad(&grads) } else { None }).collect();
            drop(grads);
            let (factor, _norm) = clip_factor(&g, run.cfg().clip_norm);
            let lr = schedule(sc.lr, step, total, warmup);
            for (i, gi) in g.into_iter().enumerate() {
                if let Some(gi) = gi {
                    st.params[i] = opt.update(st.params[i].clone(), gi * factor, &mut st.m[i], &mut st.v[i], step + 1, lr, decays[i]);
                }
            }
            first.get_or_insert(value);
            losses.push(LossPoint { stage: stage.name().into(), step, loss: value });
            step += 1;
            bar.set_position(step as u64);
            let rate = (step - start) as f64 * batch as f64 / t0.elapsed().as_secs_f64();
            bar.set_message(format!("loss {value:.4}  {rate:.1} img/s"));
            if step % 10 == 0 || step == total {
                tracing::info!(stage = stage.name(), step, of = total, loss = format!("{value:.4}"), images_per_second = format!("{rate:.2}"), "training");
            }
            if step % run.cfg().checkpoint_every == 0 && step < total {
                run.save(&st, &stages_done, stage, step, &losses)?;
            }
        }
        bar.finish();
        let seconds = t0.elapsed().as_secs_f64();
        reports.push(StageReport {
            stage: stage.name().into(),
            steps: step,
            steps_planned: total,
            seconds,
            first_loss: first.unwrap_or(f32::NAN),
            last_loss: losses.last().map_or(f32::NAN, |l| l.loss),
            images_per_second: (step - start) as f64 * batch as f64 / seconds.max(1e-9),
        });
        if stopped_early {
            run.save(&st, &stages_done, stage, step, &losses)?;
            break;
        }
        stages_done.push(stage.name().into());
        run.save(&st, &stages_done, stage, step, &losses)?;
    }

    let loss_curve = run.req.work_dir.join("loss.png");
    super::plot::loss_curve(&loss_curve, &format!("lineguard train: {}", run.req.good_dir.display()), &losses)?;
    let weights: Vec<(String, Vec<f32>)> =
        run.graph.params.iter().enumerate().filter(|(_, s)| s.trainable).map(|(i, s)| (s.name.clone(), values(&st.params[i]))).collect();
    let training = serde_json::json!({
        "run_id": run.run_id,
        "base_model_sha256": run.req.base.sha256,
        "data_sha256": run.data_sha256,
        "good_images": run.good.len(),
        "defect_images": run.defects.len(),
        "stages": reports,
        "stopped_early": stopped_early,
        "taps": run.req.taps,
        "settings": run.req.config,
        "device": format!("{device_kind:?}").to_lowercase(),
    });
    let model = super::export::export(&run.req.base, &weights, training, &run.req.out)?;
    let summary = TrainSummary {
        model: run.req.out.clone(),
        model_sha256: model.sha256.clone(),
        stages: reports,
        stopped_early,
        resumed_from,
        loss_curve,
        checkpoint: run.checkpoint_path(),
        seconds: started.elapsed().as_secs_f64(),
    };
    write_summary(&run.req.work_dir.join("train.json"), &summary)?;
    Ok(summary)
}

/// The model of this very run when its checkpoint has every stage done and
/// the model file records the same run: a rerun then changes nothing.
fn finished_model(run: &Run, stages_done: &[String]) -> Option<Contract> {
    if !run.req.stages.iter().all(|s| stages_done.iter().any(|d| d == s.name())) {
        return None;
    }
    let model = Contract::load(&run.req.out).ok()?;
    (model.meta.provenance.get("training")?.get("run_id")?.as_str()? == run.run_id).then_some(model)
}

fn write_summary(path: &Path, s: &TrainSummary) -> Result<(), TrainError> {
    let json = serde_json::to_vec_pretty(s).expect("summary serializes");
    write_atomic(path, &json).map_err(|source| TrainError::Write { path: path.into(), source })
}

/// Burn's forward pass of `contract` at its own input size on `image`
/// (3 x H x W, normalised), every tap; for the parity check against tract.
pub fn forward_taps(contract: &Contract, taps: &[String], image: &[f32], device: TrainDevice) -> Result<Vec<Vec<f32>>, TrainError> {
    let device = device.burn_device()?;
    let graph = EncoderGraph::from_contract(contract, taps, 0)?;
    let params = graph.initial_tensors(&device);
    let (h, w) = (contract.meta.input.height, contract.meta.input.width);
    let x = Tensor::<4>::from_data(TensorData::new(image.to_vec(), [1, 3, h, w]), &device);
    Ok(graph.forward(&params, x).into_iter().map(|t| t.into_data().try_to_vec::<f32>().expect("f32 tensors")).collect())
}
