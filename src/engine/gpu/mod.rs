//! The GPU engine: the whole per-frame path as wgpu compute shaders
//! (shaders/*.wgsl), in one command submission per frame:
//!
//! ```text
//! raw frame bytes -> preprocess (ROI, resize, normalise) -> encoder (the ONNX
//! graph, op by op) -> 3x3 local average, upsample, patch rows -> distance to
//! every bank row (tiled GEMM + row minimum) -> upsample + blur -> max
//! ```
//!
//! Only the map and the score are read back. Pipelines, buffers and bind
//! groups are made when the model loads (the preprocessing ones when a new
//! frame geometry first appears, the search ones when a bank is set); a frame
//! costs an upload, the dispatches and a read-back. The encoder's tensors and
//! weights are f32, or f16 when `gpu_precision` asks for it ("f16", or
//! "auto" on an adapter with shader-f16); arithmetic is f32, and from the patch features on (search,
//! map) everything is f32, because the distance |q|^2 + |b|^2 - 2 q.b
//! cancels digits that f16 does not have. Stage times come from timestamp
//! queries where the adapter has them.

pub mod context;
pub mod graph;
pub mod kernels;

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Engine, EngineError, EngineKind, EngineSpec, Scored, StageTimes};
use crate::anomaly::map::gaussian_kernel;
use crate::anomaly::{PatchFeatures, Rect};
use crate::frame::{Frame, PixelFormat};
use crate::model::Contract;
use crate::preprocess::Preprocessor;
use context::GpuContext;
use graph::EncoderPlan;
use kernels::{Kernels, KnnParams, MapParams, PoolParams, PreprocessParams, ResizeParams, Step, div_up};

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("{0}")]
    NoAdapter(String),
    #[error("GPU device error: {0}")]
    Device(String),
    #[error("{path}: {reason}")]
    Load { path: String, reason: String },
    #[error("{path}: node '{node}' ({op}): not supported on the GPU: {why}")]
    Unsupported { path: String, op: String, node: String, why: String },
}

impl GpuError {
    fn into_engine(self, frame: &str) -> EngineError {
        match self {
            GpuError::NoAdapter(m) => EngineError::Unavailable(EngineKind::Gpu, m),
            GpuError::Device(m) => EngineError::Run { frame: frame.into(), reason: m },
            // The path goes into EngineError::Load's own message; keep it out of the reason.
            GpuError::Load { path, reason } => EngineError::Load { path, engine: EngineKind::Gpu, reason },
            GpuError::Unsupported { path, op, node, why } => {
                EngineError::Load { path, engine: EngineKind::Gpu, reason: format!("node '{node}' ({op}): not supported on the GPU: {why}") }
            }
        }
    }
}

const STAGES: usize = 5;

/// Writes `data` into `buf` at `offset`. Buffer writes must be a multiple of
/// 4 bytes: aligned frames go straight from the frame, others through
/// `staging` with zero padding.
pub(super) fn write_padded(queue: &wgpu::Queue, buf: &wgpu::Buffer, offset: u64, data: &[u8], staging: &mut Vec<u8>) {
    if data.len().is_multiple_of(4) {
        queue.write_buffer(buf, offset, data);
    } else {
        staging.clear();
        staging.extend_from_slice(data);
        staging.resize(data.len().next_multiple_of(4), 0);
        queue.write_buffer(buf, offset, staging);
    }
}
const KNN_CHUNK_ROWS: u32 = 1024;

/// Preprocessing for one frame geometry.
struct PreState {
    key: (u32, u32, PixelFormat, Rect),
    frame: wgpu::Buffer,
    steps: Vec<Step>,
    staging: Vec<u8>,
}

/// Buffers for `score_batch`, grown to the largest batch seen.
struct BatchState {
    frames: wgpu::Buffer,
    readback: wgpu::Buffer,
    capacity: usize,
    frame_bytes: usize,
}

/// The search against one bank; replaced (and its buffers freed) by the next `set_bank`.
struct KnnState {
    steps: Vec<Step>,
    _buffers: [wgpu::Buffer; 3],
}

pub struct GpuEngine {
    ctx: GpuContext,
    k: Kernels,
    contract: Arc<Contract>,
    encoder: EncoderPlan,
    feature_steps: Vec<Step>,
    features: wgpu::Buffer,
    grid: (usize, usize),
    dim: usize,
    pre: Option<PreState>,
    knn: Option<KnnState>,
    batch: Option<BatchState>,
    dist: wgpu::Buffer,
    map_steps: Vec<Step>,
    map: wgpu::Buffer,
    score: wgpu::Buffer,
    readback: wgpu::Buffer,
    map_size: (usize, usize),
    timestamps: Option<(wgpu::QuerySet, wgpu::Buffer, wgpu::Buffer)>,
    _keep: Vec<wgpu::Buffer>,
}

impl GpuEngine {
    /// Plans the contract on the best adapter; `hardware_only` refuses CPU
    /// implementations such as lavapipe (what `engine = "auto"` wants).
    pub fn new(spec: &EngineSpec, hardware_only: bool) -> Result<GpuEngine, EngineError> {
        let path = spec.contract.path.display().to_string();
        let fail = |e: GpuError| match e {
            GpuError::Device(reason) => EngineError::Load { path: path.clone(), engine: EngineKind::Gpu, reason },
            e => e.into_engine(&path),
        };
        let ctx = GpuContext::new(hardware_only, spec.gpu_precision).map_err(fail)?;
        let k = Kernels::new(&ctx);
        let names: Vec<String> = spec.taps.iter().map(|t| t.name.clone()).collect();
        let encoder = graph::plan(&ctx, &k, &spec.contract, &names).map_err(fail)?;
        let input = &spec.contract.meta.input;

        // Patch features: 3x3 local average per tap, coarser taps upsampled to the grid, rows of `dim`.
        let grid = encoder.taps.iter().map(|t| (t.shape[1], t.shape[2])).max().expect("at least one tap");
        let dim: usize = encoder.taps.iter().map(|t| t.shape[0]).sum();
        let cells = grid.0 * grid.1;
        let features = ctx.storage("features", (cells * dim * 4) as u64);
        let mut feature_steps = Vec::new();
        let mut keep = Vec::new();
        let mut offset = 0;
        for t in &encoder.taps {
            let [c, h, w] = t.shape;
            let pooled = ctx.storage("tap.pooled", (c * h * w * 4) as u64);
            let pp = PoolParams {
                c: c as u32,
                in_h: h as u32,
                in_w: w as u32,
                out_h: h as u32,
                out_w: w as u32,
                k_h: 3,
                k_w: 3,
                stride_h: 1,
                stride_w: 1,
                pad_t: 1,
                pad_l: 1,
                op: 0,
                count_pad: 1,
                ..Default::default()
            };
            feature_steps.push(k.tap_pool.step(&ctx, &pp, &[&t.buffer, &pooled], (div_up((h * w) as u32, 64), c as u32, 1)));
            let on_grid = if (h, w) != grid {
                let up = ctx.storage("tap.upsampled", (c * cells * 4) as u64);
                let rp = ResizeParams::bilinear(c, (h, w), grid, None);
                feature_steps.push(k.bilinear.step(&ctx, &rp, &[&pooled, &up], (div_up(cells as u32, 64), c as u32, 1)));
                keep.push(pooled);
                up
            } else {
                pooled
            };
            let rp = ResizeParams { c: c as u32, in_h: grid.0 as u32, in_w: grid.1 as u32, offset: offset as u32, dim: dim as u32, ..Default::default() };
            feature_steps.push(k.to_patches.step(&ctx, &rp, &[&on_grid, &features], (div_up(cells as u32, 64), c as u32, 1)));
            keep.push(on_grid);
            offset += c;
        }

        // Map: patch distances -> upsample -> blur -> max.
        let (mh, mw) = (input.height, input.width);
        let dist = ctx.storage("dist", (cells * 4) as u64);
        let map = ctx.storage("map", (mh * mw * 4) as u64);
        let tmp = ctx.storage("map.tmp", (mh * mw * 4) as u64);
        let score = ctx.storage("score", 4);
        let kernel = gaussian_kernel(spec.blur_sigma);
        let kbuf = ctx.storage_init("blur.kernel", bytemuck::cast_slice(&kernel));
        let mp = MapParams { gh: grid.0 as u32, gw: grid.1 as u32, h: mh as u32, w: mw as u32, radius: (kernel.len() / 2) as u32, ..Default::default() };
        let pixels = div_up((mh * mw) as u32, 64);
        let map_steps = vec![
            k.bilinear.step(&ctx, &ResizeParams::bilinear(1, grid, (mh, mw), None), &[&dist, &map], (pixels, 1, 1)),
            k.blur_h.step(&ctx, &mp, &[&map, &kbuf, &tmp], (pixels, 1, 1)),
            k.blur_v.step(&ctx, &mp, &[&tmp, &kbuf, &map], (pixels, 1, 1)),
            k.max_reduce.step(&ctx, &mp, &[&map, &kbuf, &score], (1, 1, 1)),
        ];
        keep.extend([tmp, kbuf]);
        let readback = ctx.readback("map.readback", ((mh * mw + 1) * 4) as u64);
        let timestamps = ctx.timestamps.then(|| {
            let qs = ctx.device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("stages"), ty: wgpu::QueryType::Timestamp, count: 2 * STAGES as u32 });
            let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("stages.resolve"),
                size: (16 * STAGES) as u64,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let rb = ctx.readback("stages.readback", (16 * STAGES) as u64);
            (qs, resolve, rb)
        });
        ctx.check().map_err(fail)?;
        tracing::info!(adapter = %ctx.adapter.name, kind = %ctx.adapter.device_type, precision = %ctx.precision, dispatches = ?encoder.dispatches_by_op, "GPU engine planned");
        Ok(GpuEngine {
            ctx,
            k,
            contract: spec.contract.clone(),
            encoder,
            feature_steps,
            features,
            grid,
            dim,
            pre: None,
            knn: None,
            batch: None,
            dist,
            map_steps,
            map,
            score,
            readback,
            map_size: (mh, mw),
            timestamps,
            _keep: keep,
        })
    }

    /// The normalised encoder input for a frame, read back (parity tests).
    pub fn preprocessed(&mut self, frame: &Frame, roi: Option<Rect>) -> Result<Vec<f32>, EngineError> {
        self.upload(frame, roi)?;
        self.ctx.queue.submit([self.record(1).finish()]);
        let input = &self.encoder.input;
        self.ctx.read_values(&input.buffer, input.len(), self.ctx.precision).map_err(|e| e.into_engine(&frame.label()))
    }

    /// Builds the preprocessing for this frame's geometry unless it is the last one's.
    fn prepare(&mut self, frame: &Frame, roi: Option<Rect>) -> Result<Rect, EngineError> {
        let roi = roi.unwrap_or(Rect { x: 0, y: 0, width: frame.width, height: frame.height });
        let key = (frame.width, frame.height, frame.format, roi);
        if self.pre.as_ref().is_none_or(|p| p.key != key) {
            let input = &self.contract.meta.input;
            let pre = Preprocessor::new(frame.width, frame.height, Some(roi), input)
                .map_err(|reason| EngineError::Geometry { frame: frame.label(), reason })?;
            let (rows, cols) = pre.tables();
            let spans: Vec<u32> = cols.spans.iter().chain(&rows.spans).flat_map(|&(s, n)| [s, n]).collect();
            let weights: Vec<f32> = cols.weights.iter().chain(&rows.weights).copied().collect();
            let ctx = &self.ctx;
            let bytes = frame.data.len();
            let fbuf = ctx.storage("frame", bytes as u64);
            let sbuf = ctx.storage_init("resample.spans", bytemuck::cast_slice(&spans));
            let wbuf = ctx.storage_init("resample.weights", bytemuck::cast_slice(&weights));
            let tmp = ctx.storage("preprocess.tmp", (roi.height as usize * input.width * 3 * 4) as u64);
            let p = PreprocessParams {
                frame_w: frame.width,
                frame_h: frame.height,
                format: match frame.format {
                    PixelFormat::Rgb8 => 0,
                    PixelFormat::Grey8 => 1,
                    PixelFormat::Yuyv => 2,
                },
                roi_x: roi.x,
                roi_y: roi.y,
                roi_h: roi.height,
                out_w: input.width as u32,
                out_h: input.height as u32,
                max_taps_x: cols.max_taps as u32,
                max_taps_y: rows.max_taps as u32,
                mean: [input.mean[0], input.mean[1], input.mean[2], 0.0],
                inv_std: [1.0 / input.std[0], 1.0 / input.std[1], 1.0 / input.std[2], 0.0],
                ..Default::default()
            };
            let out = &self.encoder.input.buffer;
            let gx = div_up(input.width as u32, 64);
            let steps = vec![
                self.k.pre_horizontal.step(ctx, &p, &[&fbuf, &sbuf, &wbuf, &tmp, out], (gx, roi.height, 1)),
                self.k.pre_vertical.step(ctx, &p, &[&fbuf, &sbuf, &wbuf, &tmp, out], (gx, input.height as u32, 1)),
            ];
            tracing::debug!(width = frame.width, height = frame.height, format = ?frame.format, "GPU preprocessing planned for a new frame geometry");
            self.pre = Some(PreState { key, frame: fbuf, steps, staging: Vec::new() });
        }
        Ok(roi)
    }

    /// Prepares for the frame's geometry and uploads it.
    fn upload(&mut self, frame: &Frame, roi: Option<Rect>) -> Result<Rect, EngineError> {
        let roi = self.prepare(frame, roi)?;
        let pre = self.pre.as_mut().expect("set above");
        write_padded(&self.ctx.queue, &pre.frame, 0, &frame.data, &mut pre.staging);
        Ok(roi)
    }

    /// Bytes of one result: the map, then the score.
    fn result_bytes(&self) -> u64 {
        ((self.map_size.0 * self.map_size.1 + 1) * 4) as u64
    }

    /// Copies the map and the score into `dst` at `offset` (map, then one f32).
    fn copy_result(&self, enc: &mut wgpu::CommandEncoder, dst: &wgpu::Buffer, offset: u64) {
        let map_bytes = (self.map_size.0 * self.map_size.1 * 4) as u64;
        enc.copy_buffer_to_buffer(&self.map, 0, dst, offset, map_bytes);
        enc.copy_buffer_to_buffer(&self.score, 0, dst, offset + map_bytes, 4);
    }

    /// A result as `copy_result` laid it out.
    fn scored(&self, values: &[f32], roi: Rect, times: StageTimes) -> Scored {
        let (mh, mw) = self.map_size;
        Scored { map: values[..mh * mw].to_vec(), map_width: mw, map_height: mh, score: values[mh * mw], roi, times }
    }

    /// Records the stages `0..upto` into a new command encoder.
    fn record(&self, upto: usize) -> wgpu::CommandEncoder {
        let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("frame") });
        self.record_into(&mut enc, upto, true);
        enc
    }

    /// Records the stages `0..upto` of one frame, with timestamps when asked and available.
    fn record_into(&self, enc: &mut wgpu::CommandEncoder, upto: usize, timestamps: bool) {
        let empty = Vec::new();
        let stages: [&Vec<Step>; STAGES] = [
            self.pre.as_ref().map_or(&empty, |p| &p.steps),
            &self.encoder.steps,
            &self.feature_steps,
            self.knn.as_ref().map_or(&empty, |k| &k.steps),
            &self.map_steps,
        ];
        const NAMES: [&str; STAGES] = ["preprocess", "encoder", "features", "nearest_neighbour", "map"];
        for (i, steps) in stages.iter().enumerate().take(upto) {
            let timestamp_writes = self.timestamps.as_ref().filter(|_| timestamps).map(|(qs, _, _)| wgpu::ComputePassTimestampWrites {
                query_set: qs,
                beginning_of_pass_write_index: Some(2 * i as u32),
                end_of_pass_write_index: Some(2 * i as u32 + 1),
            });
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(NAMES[i]), timestamp_writes });
            for s in steps.iter() {
                s.record(&mut pass);
            }
        }
    }

    fn stage_times(&self, upto: usize, wall: Duration) -> Result<StageTimes, GpuError> {
        let mut d = [Duration::ZERO; STAGES];
        match &self.timestamps {
            Some((_, _, rb)) => {
                let raw = self.ctx.read(rb, (16 * STAGES) as u64)?;
                let ticks: &[u64] = bytemuck::cast_slice(&raw);
                let period = self.ctx.queue.get_timestamp_period() as f64;
                for i in 0..upto {
                    let ns = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period;
                    d[i] = Duration::from_nanos(ns as u64);
                }
            }
            // Without timestamp queries the whole submission's wall time is booked to the encoder.
            None => d[1] = wall,
        }
        Ok(StageTimes { preprocess: d[0], encoder: d[1], features: d[2], nearest_neighbour: d[3], map: d[4] })
    }

    fn resolve_timestamps(&self, enc: &mut wgpu::CommandEncoder) {
        if let Some((qs, resolve, rb)) = &self.timestamps {
            enc.resolve_query_set(qs, 0..2 * STAGES as u32, resolve, 0);
            enc.copy_buffer_to_buffer(resolve, 0, rb, 0, (16 * STAGES) as u64);
        }
    }
}

impl Engine for GpuEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Gpu
    }

    fn description(&self) -> String {
        let a = &self.ctx.adapter;
        format!(
            "gpu (wgpu {} on {} [{}], encoder in {}{}, {})",
            a.backend,
            a.name,
            a.device_type,
            self.ctx.precision,
            if a.shader_f16 { "" } else { " (no shader-f16)" },
            if self.timestamps.is_some() { "stage times from timestamp queries" } else { "no timestamp queries" }
        )
    }

    fn embed(&mut self, frame: &Frame, roi: Option<Rect>) -> Result<PatchFeatures, EngineError> {
        let name = frame.label();
        self.upload(frame, roi)?;
        let enc = self.record(3);
        self.ctx.queue.submit([enc.finish()]);
        let data = self.ctx.read_f32(&self.features, self.grid.0 * self.grid.1 * self.dim).map_err(|e| e.into_engine(&name))?;
        Ok(PatchFeatures { grid_h: self.grid.0, grid_w: self.grid.1, dim: self.dim, data })
    }

    fn set_bank(&mut self, bank: &[f32], dim: usize) -> Result<(), EngineError> {
        if dim != self.dim {
            return Err(EngineError::BankDim { found: dim, expected: self.dim });
        }
        let rows = (bank.len() / dim) as u32;
        let queries = (self.grid.0 * self.grid.1) as u32;
        let bank_sq: Vec<f32> = bank.chunks_exact(dim).map(|r| r.iter().map(|v| v * v).sum()).collect();
        let ctx = &self.ctx;
        let bbuf = ctx.storage_init("bank", bytemuck::cast_slice(bank));
        let sqbuf = ctx.storage_init("bank.sq", bytemuck::cast_slice(&bank_sq));
        let chunks = div_up(rows, KNN_CHUNK_ROWS);
        let partial = ctx.storage("knn.partial", (chunks * queries * 4) as u64);
        let p = KnnParams { queries, rows, dim: dim as u32, chunk_rows: KNN_CHUNK_ROWS, chunks, ..Default::default() };
        let steps = vec![
            self.k.knn_partial.step(ctx, &p, &[&self.features, &bbuf, &sqbuf, &partial, &self.dist], (div_up(queries, 64), chunks, 1)),
            self.k.knn_finalize.step(ctx, &p, &[&self.features, &bbuf, &sqbuf, &partial, &self.dist], (div_up(queries, 64), 1, 1)),
        ];
        self.knn = Some(KnnState { steps, _buffers: [bbuf, sqbuf, partial] });
        ctx.check().map_err(|e| e.into_engine("bank upload"))
    }

    fn score(&mut self, frame: &Frame, roi: Option<Rect>) -> Result<Scored, EngineError> {
        if self.knn.is_none() {
            return Err(EngineError::NoBank);
        }
        let name = frame.label();
        let started = Instant::now();
        let roi = self.upload(frame, roi)?;
        let mut enc = self.record(STAGES);
        self.copy_result(&mut enc, &self.readback, 0);
        self.resolve_timestamps(&mut enc);
        self.ctx.queue.submit([enc.finish()]);
        let bytes = self.ctx.read(&self.readback, self.result_bytes()).map_err(|e| e.into_engine(&name))?;
        let wall = started.elapsed();
        let times = self.stage_times(STAGES, wall).map_err(|e| e.into_engine(&name))?;
        Ok(self.scored(bytemuck::cast_slice(&bytes), roi, times))
    }

    /// All frames in one submission: each frame is copied from a batch
    /// upload buffer into the frame buffer, runs every stage, and its map and
    /// score are copied to its slot of a batch read-back buffer.
    fn score_batch(&mut self, frames: &[Frame], roi: Option<Rect>) -> Result<Vec<Scored>, EngineError> {
        let Some(first) = frames.first() else { return Ok(Vec::new()) };
        if self.knn.is_none() {
            return Err(EngineError::NoBank);
        }
        let name = first.label();
        if let Some(f) = frames.iter().find(|f| (f.width, f.height, f.format) != (first.width, first.height, first.format)) {
            return Err(EngineError::Geometry {
                frame: f.label(),
                reason: format!("a batch needs frames of one geometry; the first is {}x{} {:?}", first.width, first.height, first.format),
            });
        }
        let started = Instant::now();
        let roi = self.prepare(first, roi)?;
        let (mh, mw) = self.map_size;
        let slot = self.result_bytes();
        let frame_bytes = first.data.len().next_multiple_of(4);
        if self.batch.as_ref().is_none_or(|b| b.capacity < frames.len() || b.frame_bytes != frame_bytes) {
            self.batch = Some(BatchState {
                frames: self.ctx.storage("batch.frames", (frames.len() * frame_bytes) as u64),
                readback: self.ctx.readback("batch.readback", frames.len() as u64 * slot),
                capacity: frames.len(),
                frame_bytes,
            });
        }
        let batch = self.batch.as_ref().expect("set above");
        let pre = self.pre.as_mut().expect("prepared above");
        for (i, f) in frames.iter().enumerate() {
            write_padded(&self.ctx.queue, &batch.frames, (i * frame_bytes) as u64, &f.data, &mut pre.staging);
        }
        let pre = self.pre.as_ref().expect("prepared above");
        let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("batch") });
        for i in 0..frames.len() {
            enc.copy_buffer_to_buffer(&batch.frames, (i * frame_bytes) as u64, &pre.frame, 0, frame_bytes as u64);
            self.record_into(&mut enc, STAGES, false);
            self.copy_result(&mut enc, &batch.readback, i as u64 * slot);
        }
        self.ctx.queue.submit([enc.finish()]);
        let bytes = self.ctx.read(&batch.readback, frames.len() as u64 * slot).map_err(|e| e.into_engine(&name))?;
        let values: &[f32] = bytemuck::cast_slice(&bytes);
        let per_frame = started.elapsed() / frames.len() as u32;
        let times = StageTimes { encoder: per_frame, ..Default::default() };
        Ok(values.chunks_exact(mh * mw + 1).map(|v| self.scored(v, roi, times)).collect())
    }
}
