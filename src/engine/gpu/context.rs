//! The GPU device: adapter choice, device and queue, buffer helpers,
//! read-back. Built once per engine; every wgpu object is labelled.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use wgpu::util::DeviceExt;

use super::GpuError;
use crate::config::GpuPrecision;

/// One adapter as `lineguard devices` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    /// A real GPU (integrated or discrete), not a CPU implementation.
    pub hardware: bool,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub timestamp_queries: bool,
    pub shader_f16: bool,
}

fn summarize(a: &wgpu::Adapter) -> AdapterSummary {
    let info = a.get_info();
    let limits = a.limits();
    let features = a.features();
    AdapterSummary {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info).trim().to_owned(),
        hardware: rank(info.device_type) <= 1,
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        timestamp_queries: features.contains(wgpu::Features::TIMESTAMP_QUERY),
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
    }
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor { backends: wgpu::Backends::PRIMARY, ..wgpu::InstanceDescriptor::new_without_display_handle() })
}

/// Preference among adapters, lower first; 0 and 1 are hardware GPUs.
fn rank(device_type: wgpu::DeviceType) -> u8 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        _ => 3,
    }
}

/// All adapters wgpu can see, best first.
fn ranked_adapters() -> Vec<wgpu::Adapter> {
    let mut adapters = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::PRIMARY));
    adapters.sort_by_key(|a| rank(a.get_info().device_type));
    adapters
}

/// All adapters wgpu can see, best first (discrete, integrated, others).
pub fn list_adapters() -> Vec<AdapterSummary> {
    ranked_adapters().iter().map(summarize).collect()
}

/// The element type of the encoder's tensors (activations and weights) in
/// GPU memory. Arithmetic is f32 in every kernel; f16 halves the bytes each
/// layer reads and writes, which is what bounds these kernels on a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
}

impl Precision {
    pub fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }

    /// The WGSL scalar type.
    pub fn wgsl(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }

    /// `values` as this precision's little-endian bytes (f16: round to nearest even).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Precision::F32 => bytemuck::cast_slice(values).to_vec(),
            Precision::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
        }
    }

    /// Bytes written by the GPU in this precision, as f32.
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Precision::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect(),
            Precision::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.wgsl())
    }
}

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub timestamps: bool,
    /// What the encoder's tensors are stored in on this device.
    pub precision: Precision,
    /// The first uncaptured device error, if any (checked after each submission).
    error: Arc<Mutex<Option<String>>>,
}

impl GpuContext {
    /// Opens the best adapter; with `hardware_only` a CPU implementation
    /// (lavapipe, llvmpipe, WARP) is refused. `precision`: f16 needs the
    /// adapter's shader-f16 (auto falls back to f32 without it).
    pub fn new(hardware_only: bool, precision: GpuPrecision) -> Result<GpuContext, GpuError> {
        let Some(adapter) = ranked_adapters().into_iter().next() else {
            return Err(GpuError::NoAdapter(
                "wgpu found no adapter: install a Vulkan driver (on Debian without a GPU: mesa-vulkan-drivers libvulkan1)".into(),
            ));
        };
        let summary = summarize(&adapter);
        if hardware_only && !summary.hardware {
            return Err(GpuError::NoAdapter(format!("no hardware GPU (the best adapter is {} {})", summary.device_type, summary.name)));
        }
        let timestamps = summary.timestamp_queries;
        let precision = match (precision, summary.shader_f16) {
            (GpuPrecision::F32, _) | (GpuPrecision::Auto, false) => Precision::F32,
            (GpuPrecision::F16, true) | (GpuPrecision::Auto, true) => Precision::F16,
            (GpuPrecision::F16, false) => {
                return Err(GpuError::NoAdapter(format!("gpu_precision = \"f16\" but {} has no shader-f16; use \"auto\" or \"f32\"", summary.name)));
            }
        };
        let mut required_features = wgpu::Features::empty();
        if timestamps {
            required_features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        if precision == Precision::F16 {
            required_features |= wgpu::Features::SHADER_F16;
        }
        let al = adapter.limits();
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: al.max_storage_buffer_binding_size,
            max_buffer_size: al.max_buffer_size,
            max_storage_buffers_per_shader_stage: al.max_storage_buffers_per_shader_stage.min(16),
            max_compute_workgroup_storage_size: al.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: al.max_compute_invocations_per_workgroup,
            max_compute_workgroup_size_x: al.max_compute_workgroup_size_x,
            max_compute_workgroups_per_dimension: al.max_compute_workgroups_per_dimension,
            ..wgpu::Limits::downlevel_defaults()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("lineguard"),
            required_features,
            required_limits: limits,
            ..Default::default()
        }))
        .map_err(|e| GpuError::NoAdapter(format!("{}: cannot open the device: {e}", summary.name)))?;
        let error = Arc::new(Mutex::new(None));
        let sink = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut g = sink.lock().expect("gpu error lock");
            if g.is_none() {
                *g = Some(e.to_string());
            }
        }));
        Ok(GpuContext { device, queue, adapter: summary, timestamps, precision, error })
    }

    /// Fails with the first device error since the last check.
    pub fn check(&self) -> Result<(), GpuError> {
        match self.error.lock().expect("gpu error lock").take() {
            Some(e) => Err(GpuError::Device(e)),
            None => Ok(()),
        }
    }

    pub fn storage(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(16).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    pub fn storage_init(&self, label: &str, data: &[u8]) -> wgpu::Buffer {
        let mut padded = data.to_vec();
        padded.resize(data.len().max(16).next_multiple_of(4), 0);
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: &padded,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        })
    }

    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::bytes_of(value),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        })
    }

    pub fn readback(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(16).next_multiple_of(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Maps `buf` (after its copy was submitted), copies `len` bytes out, unmaps.
    pub fn read(&self, buf: &wgpu::Buffer, len: u64) -> Result<Vec<u8>, GpuError> {
        let slice = buf.slice(..len.max(4).next_multiple_of(4));
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Device(e.to_string()))?;
        rx.recv().map_err(|e| GpuError::Device(e.to_string()))?.map_err(|e| GpuError::Device(e.to_string()))?;
        let out = {
            let view = slice.get_mapped_range().map_err(|e| GpuError::Device(e.to_string()))?;
            view[..len as usize].to_vec()
        };
        buf.unmap();
        self.check()?;
        Ok(out)
    }

    /// Records `steps` into one compute pass and submits it (kernel tests, tools).
    pub fn run(&self, steps: &[&super::kernels::Step]) {
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("run") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("run"), timestamp_writes: None });
            for s in steps {
                s.record(&mut pass);
            }
        }
        self.queue.submit([enc.finish()]);
    }

    /// Reads f32 values from a storage buffer (copy, submit, map). For tests and enrollment.
    pub fn read_f32(&self, src: &wgpu::Buffer, count: usize) -> Result<Vec<f32>, GpuError> {
        self.read_values(src, count, Precision::F32)
    }

    /// Reads `count` values stored in `precision`, as f32.
    pub fn read_values(&self, src: &wgpu::Buffer, count: usize, precision: Precision) -> Result<Vec<f32>, GpuError> {
        let bytes = (count * precision.bytes()) as u64;
        let rb = self.readback("read_f32", bytes);
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("read_f32") });
        enc.copy_buffer_to_buffer(src, 0, &rb, 0, bytes.max(4).next_multiple_of(4));
        self.queue.submit([enc.finish()]);
        Ok(precision.decode(&self.read(&rb, bytes)?))
    }
}
