//! The CPU engine: tract-onnx runs the encoder, the `anomaly` module does the
//! rest. This is the reference implementation.

use std::sync::{Arc, Once};
use std::time::Instant;

use tract_onnx::prelude::*;

use super::{Engine, EngineError, EngineKind, EngineSpec, Scored, StageTimes};
use crate::anomaly::{FeatureAssembler, MapMaker, NearestNeighbour, PatchFeatures, Rect, TapShape};
use crate::frame::Frame;
use crate::model::Contract;
use crate::preprocess::Preprocessor;

static POOL: Once = Once::new();

/// Sizes rayon's global pool (shared by tract, the GEMM and the coreset) once
/// per process; 0 means one thread per core.
pub fn init_threads(threads: usize) {
    POOL.call_once(|| {
        let _ = rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("lineguard-cpu-{i}")).build_global();
        tract_linalg::multithread::set_default_executor(tract_linalg::multithread::Executor::RayonGlobal);
    });
}

/// The encoder as a tract plan with a reusable state, for batch 1.
pub struct CpuEncoder {
    state: TypedSimpleState,
    shape: [usize; 4],
    outputs: Vec<String>,
}

impl std::fmt::Debug for CpuEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuEncoder").field("shape", &self.shape).field("outputs", &self.outputs).finish()
    }
}

impl CpuEncoder {
    /// Plans the contract's graph for the given outputs.
    pub fn new(contract: &Contract, outputs: &[String]) -> Result<CpuEncoder, EngineError> {
        let fail = |e: TractError| EngineError::Load {
            path: contract.path.display().to_string(),
            engine: EngineKind::Cpu,
            reason: format!("{e:#}"),
        };
        let input = &contract.meta.input;
        let shape = [1, 3, input.height, input.width];
        let model = tract_onnx::onnx()
            .model_for_proto_model(&contract.proto)
            .map_err(fail)?
            .with_input_names([input.name.as_str()])
            .map_err(fail)?
            .with_input_fact(0, f32::fact(shape).into())
            .map_err(fail)?;
        let mut model = model;
        model.select_outputs_by_name(outputs.iter().map(String::as_str)).map_err(fail)?;
        let plan = model.into_optimized().map_err(fail)?.into_runnable().map_err(fail)?;
        let state = TypedSimpleState::new(&plan).map_err(fail)?;
        Ok(CpuEncoder { state, shape, outputs: outputs.to_vec() })
    }

    /// Runs one normalised NCHW input; returns the outputs in the requested order.
    pub fn run(&mut self, input: &[f32]) -> TractResult<TVec<TValue>> {
        let t = Tensor::from_shape(&self.shape, input)?;
        self.state.run(tvec!(t.into_tvalue()))
    }
}

pub struct CpuEngine {
    contract: Arc<Contract>,
    encoder: CpuEncoder,
    assembler: FeatureAssembler,
    map: MapMaker,
    knn: Option<NearestNeighbour>,
    threads: usize,
    /// Cached for the last frame geometry and ROI.
    pre: Option<Preprocessor>,
    input: Vec<f32>,
    patch_scores: Vec<f32>,
}

impl CpuEngine {
    pub fn new(spec: &EngineSpec) -> Result<CpuEngine, EngineError> {
        init_threads(spec.threads);
        let c = &spec.contract;
        let names: Vec<String> = spec.taps.iter().map(|t| t.name.clone()).collect();
        let encoder = CpuEncoder::new(c, &names)?;
        let (h, w) = (c.meta.input.height, c.meta.input.width);
        let shapes: Vec<TapShape> = spec
            .taps
            .iter()
            .map(|t| TapShape { channels: t.channels, height: h / t.stride, width: w / t.stride })
            .collect();
        let assembler = FeatureAssembler::new(&shapes);
        let map = MapMaker::new(assembler.grid_h, assembler.grid_w, h, w, spec.blur_sigma);
        Ok(CpuEngine {
            contract: c.clone(),
            encoder,
            patch_scores: vec![0.0; assembler.grid_h * assembler.grid_w],
            assembler,
            map,
            knn: None,
            threads: rayon::current_num_threads(),
            pre: None,
            input: vec![0.0; 3 * h * w],
        })
    }

    fn preprocess(&mut self, frame: &Frame, roi: Option<Rect>) -> Result<Rect, EngineError> {
        let want_roi = roi.unwrap_or(Rect { x: 0, y: 0, width: frame.width, height: frame.height });
        let reusable = self.pre.as_ref().is_some_and(|p| p.frame_size() == (frame.width, frame.height) && p.roi() == want_roi);
        if !reusable {
            let p = Preprocessor::new(frame.width, frame.height, Some(want_roi), &self.contract.meta.input)
                .map_err(|reason| EngineError::Geometry { frame: frame.label(), reason })?;
            self.pre = Some(p);
        }
        self.pre.as_mut().expect("set above").run(frame, &mut self.input)?;
        Ok(want_roi)
    }

    /// Encoder + patch features into a fresh vector, timing both stages.
    fn features(&mut self, frame: &Frame, times: &mut StageTimes) -> Result<Vec<f32>, EngineError> {
        let t = Instant::now();
        let outs = self
            .encoder
            .run(&self.input)
            .map_err(|e| EngineError::Run { frame: frame.label(), reason: format!("{e:#}") })?;
        times.encoder = t.elapsed();
        let t = Instant::now();
        let maps: Vec<&[f32]> = outs
            .iter()
            .map(|t| t.try_as_plain_ram().and_then(|v| v.as_slice::<f32>()))
            .collect::<TractResult<_>>()
            .map_err(|e| EngineError::Run { frame: frame.label(), reason: format!("{e:#}") })?;
        let mut feats = vec![0.0; self.assembler.grid_h * self.assembler.grid_w * self.assembler.dim];
        self.assembler.assemble(&maps, &mut feats);
        times.features = t.elapsed();
        Ok(feats)
    }
}

impl Engine for CpuEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Cpu
    }

    fn description(&self) -> String {
        format!("cpu (tract-onnx, f32, {} threads)", self.threads)
    }

    fn embed(&mut self, frame: &Frame, roi: Option<Rect>) -> Result<PatchFeatures, EngineError> {
        self.preprocess(frame, roi)?;
        let data = self.features(frame, &mut StageTimes::default())?;
        Ok(PatchFeatures { grid_h: self.assembler.grid_h, grid_w: self.assembler.grid_w, dim: self.assembler.dim, data })
    }

    fn set_bank(&mut self, bank: &[f32], dim: usize) -> Result<(), EngineError> {
        if dim != self.assembler.dim {
            return Err(EngineError::BankDim { found: dim, expected: self.assembler.dim });
        }
        self.knn = Some(NearestNeighbour::new(bank.to_vec(), dim));
        Ok(())
    }

    fn score(&mut self, frame: &Frame, roi: Option<Rect>) -> Result<Scored, EngineError> {
        if self.knn.is_none() {
            return Err(EngineError::NoBank);
        }
        let mut times = StageTimes::default();
        let t = Instant::now();
        let roi = self.preprocess(frame, roi)?;
        times.preprocess = t.elapsed();

        let feats = self.features(frame, &mut times)?;

        let t = Instant::now();
        self.knn.as_ref().expect("checked").min_distances(&feats, &mut self.patch_scores);
        times.nearest_neighbour = t.elapsed();

        let t = Instant::now();
        let mut map = vec![0.0; self.map.height * self.map.width];
        let score = self.map.run(&self.patch_scores, &mut map);
        times.map = t.elapsed();

        Ok(Scored { map, map_width: self.map.width, map_height: self.map.height, score, roi, times })
    }
}
