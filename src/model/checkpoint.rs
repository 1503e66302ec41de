//! PyTorch checkpoints (`torch.save` of a state dict) read without Python:
//! the legacy stream format (PyTorch < 1.6, used by the EfficientNet-Lite0
//! package) and the zip format of current PyTorch.
//!
//! Legacy layout: pickle(magic) pickle(protocol 1001) pickle(sys_info)
//! pickle(state dict; storages as persistent ids) pickle(storage keys), then per
//! key: i64 element count + raw little-endian data.
//! Zip layout: `<root>/data.pkl` (same persistent ids) and `<root>/data/<key>`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::pickle::{self, Value};

const LEGACY_MAGIC: u128 = 0x1950a86a20f9469cfc6c;
const LEGACY_PROTOCOL: i64 = 1001;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct CheckpointError {
    pub path: PathBuf,
    pub reason: String,
}

/// One tensor of a state dict, converted to f32, contiguous (C order).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Tensors by name, in file order.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    pub tensors: Vec<(String, Tensor)>,
}

impl StateDict {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    fn from_storage_name(name: &str) -> Option<DType> {
        Some(match name {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    fn to_f32(self, b: &[u8]) -> f32 {
        match self {
            DType::F32 => f32::from_le_bytes(b.try_into().unwrap()),
            DType::F64 => f64::from_le_bytes(b.try_into().unwrap()) as f32,
            DType::F16 => half_to_f32(u16::from_le_bytes(b.try_into().unwrap())),
            DType::BF16 => f32::from_bits((u16::from_le_bytes(b.try_into().unwrap()) as u32) << 16),
            DType::I64 => i64::from_le_bytes(b.try_into().unwrap()) as f32,
            DType::I32 => i32::from_le_bytes(b.try_into().unwrap()) as f32,
            DType::I16 => i16::from_le_bytes(b.try_into().unwrap()) as f32,
            DType::I8 => b[0] as i8 as f32,
            DType::U8 | DType::Bool => b[0] as f32,
        }
    }
}

fn half_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if frac == 0 => sign,
        0 => {
            // subnormal: renormalise
            let mut e = 127 - 15 + 1;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        0x1f => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// A storage referenced from the pickle, before its bytes are known.
#[derive(Debug, Clone)]
struct StorageRef {
    key: String,
    dtype: DType,
    numel: usize,
}

/// A tensor view onto a storage, as `_rebuild_tensor_v2` describes it.
#[derive(Debug, Clone)]
struct TensorRef {
    storage: StorageRef,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// Reads a checkpoint, telling the two formats apart by their first bytes.
pub fn load(path: &Path) -> Result<StateDict, CheckpointError> {
    let err = |reason: String| CheckpointError { path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if bytes.starts_with(b"PK\x03\x04") {
        load_zip(&bytes).map_err(err)
    } else if bytes.first() == Some(&0x80) {
        load_legacy(&bytes).map_err(err)
    } else {
        Err(err("not a PyTorch checkpoint: neither a zip archive nor a legacy torch.save stream".into()))
    }
}

fn load_legacy(bytes: &[u8]) -> Result<StateDict, String> {
    let mut pos = 0;
    let mut next = |what: &str| -> Result<Value, String> {
        let (v, used) = pickle::read(&bytes[pos..]).map_err(|e| format!("reading the {what}: {e}"))?;
        pos += used;
        Ok(v)
    };
    let magic = next("magic number")?;
    let expected = LEGACY_MAGIC.to_le_bytes()[..10].to_vec();
    if magic != Value::BigInt(expected) {
        return Err("not a legacy torch.save file: wrong magic number".into());
    }
    match next("protocol version")? {
        Value::Int(LEGACY_PROTOCOL) => {}
        other => return Err(format!("unsupported torch protocol version {other:?} (expected {LEGACY_PROTOCOL})")),
    }
    if let Value::Dict(info) = next("system info")? {
        let little = info.iter().find(|(k, _)| k.as_str() == Some("little_endian")).map(|(_, v)| v.clone());
        if little == Some(Value::Bool(false)) {
            return Err("big-endian checkpoints are not supported".into());
        }
    }
    let root = next("state dict")?;
    let keys = next("storage key list")?;
    let keys: Vec<String> = keys
        .as_seq()
        .ok_or("storage key list is not a list")?
        .iter()
        .map(|k| k.as_str().map(str::to_owned).ok_or_else(|| format!("storage key {k:?} is not a string")))
        .collect::<Result<_, _>>()?;

    let refs = tensor_refs(&root)?;
    let mut storages: HashMap<String, StorageRef> = HashMap::new();
    for (_, t) in &refs {
        storages.entry(t.storage.key.clone()).or_insert_with(|| t.storage.clone());
    }
    let mut data: HashMap<String, &[u8]> = HashMap::new();
    for key in keys {
        let st = storages.get(&key).ok_or_else(|| format!("storage '{key}' is listed but no tensor uses it"))?;
        let head = bytes.get(pos..pos + 8).ok_or_else(|| format!("truncated before storage '{key}' (offset {pos})"))?;
        let n = i64::from_le_bytes(head.try_into().unwrap());
        if n < 0 || n as usize != st.numel {
            return Err(format!("storage '{key}': {n} elements in the data, {} in the pickle", st.numel));
        }
        pos += 8;
        let len = st.numel * st.dtype.size();
        let raw = bytes.get(pos..pos + len).ok_or_else(|| {
            format!("truncated in storage '{key}': needs {len} bytes at offset {pos}, file has {}", bytes.len())
        })?;
        data.insert(key, raw);
        pos += len;
    }
    if pos != bytes.len() {
        return Err(format!("{} unexpected bytes after the last storage", bytes.len() - pos));
    }
    materialize(refs, &data)
}

fn load_zip(bytes: &[u8]) -> Result<StateDict, String> {
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| format!("not a readable zip archive: {e}"))?;
    let pkl_name = archive
        .file_names()
        .filter_map(Result::ok)
        .find(|n| n.ends_with("data.pkl"))
        .map(|n| n.into_owned())
        .ok_or("zip archive has no data.pkl: not a torch.save checkpoint")?;
    let root_dir = pkl_name.trim_end_matches("data.pkl").to_owned();
    let mut read_entry = |name: &str| -> Result<Vec<u8>, String> {
        let mut f = archive.by_name(name).map_err(|e| format!("entry '{name}': {e}"))?;
        let mut buf = Vec::with_capacity(f.size() as usize);
        f.read_to_end(&mut buf).map_err(|e| format!("entry '{name}': {e}"))?;
        Ok(buf)
    };
    let pkl = read_entry(&pkl_name)?;
    let (root, _) = pickle::read(&pkl).map_err(|e| format!("{pkl_name}: {e}"))?;
    let refs = tensor_refs(&root)?;
    let mut blobs: HashMap<String, Vec<u8>> = HashMap::new();
    for (_, t) in &refs {
        let key = &t.storage.key;
        if blobs.contains_key(key) {
            continue;
        }
        let blob = read_entry(&format!("{root_dir}data/{key}"))?;
        let need = t.storage.numel * t.storage.dtype.size();
        if blob.len() < need {
            return Err(format!("storage '{key}' is truncated: {} bytes, needs {need}", blob.len()));
        }
        blobs.insert(key.clone(), blob);
    }
    let data: HashMap<String, &[u8]> = blobs.iter().map(|(k, v)| (k.clone(), v.as_slice())).collect();
    materialize(refs, &data)
}

/// Finds the state dict inside the root object (a plain state dict, or a dict
/// with a `state_dict` / `model` entry) and lists its tensors.
fn tensor_refs(root: &Value) -> Result<Vec<(String, TensorRef)>, String> {
    let dict = as_dict(root).ok_or("the checkpoint's root object is not a dict")?;
    for wrapper in ["state_dict", "model"] {
        if let Some((_, inner)) = dict.iter().find(|(k, _)| k.as_str() == Some(wrapper))
            && as_dict(inner).is_some()
        {
            return tensor_refs(inner);
        }
    }
    let mut out = Vec::new();
    for (k, v) in dict {
        let name = k.as_str().ok_or_else(|| format!("state dict key {k:?} is not a string"))?;
        out.push((name.to_owned(), tensor_ref(v).map_err(|e| format!("tensor '{name}': {e}"))?));
    }
    if out.is_empty() {
        return Err("the state dict holds no tensors".into());
    }
    Ok(out)
}

fn as_dict(v: &Value) -> Option<&[(Value, Value)]> {
    match v {
        Value::Dict(d) => Some(d),
        _ => None,
    }
}

fn is_global(v: &Value, module: &str, name: &str) -> bool {
    matches!(v, Value::Global { module: m, name: n } if m == module && n == name)
}

fn tensor_ref(v: &Value) -> Result<TensorRef, String> {
    let Value::Call { callable, args } = v else {
        return Err(format!("not a tensor: {v:?}"));
    };
    let args = args.as_seq().ok_or("rebuild arguments are not a tuple")?;
    if is_global(callable, "torch._utils", "_rebuild_parameter") {
        return tensor_ref(args.first().ok_or("_rebuild_parameter without data")?);
    }
    if !is_global(callable, "torch._utils", "_rebuild_tensor_v2") && !is_global(callable, "torch._utils", "_rebuild_tensor")
    {
        return Err(format!("unsupported object {callable:?} (only plain tensors are read)"));
    }
    let [storage, offset, size, stride, ..] = args else {
        return Err("tensor rebuild takes (storage, offset, size, stride)".into());
    };
    let usize_seq = |v: &Value, what: &str| -> Result<Vec<usize>, String> {
        v.as_seq()
            .ok_or(format!("{what} is not a tuple"))?
            .iter()
            .map(|x| x.as_int().filter(|&i| i >= 0).map(|i| i as usize).ok_or(format!("bad {what} entry {x:?}")))
            .collect()
    };
    Ok(TensorRef {
        storage: storage_ref(storage)?,
        offset: offset.as_int().filter(|&i| i >= 0).ok_or("bad storage offset")? as usize,
        shape: usize_seq(size, "size")?,
        stride: usize_seq(stride, "stride")?,
    })
}

fn storage_ref(v: &Value) -> Result<StorageRef, String> {
    let Value::Persistent(pid) = v else {
        return Err("storage is not a persistent reference".into());
    };
    let pid = pid.as_seq().ok_or("persistent id is not a tuple")?;
    let [tag, ty, key, _location, numel, rest @ ..] = pid else {
        return Err(format!("unexpected persistent id {pid:?}"));
    };
    if tag.as_str() != Some("storage") {
        return Err(format!("unsupported persistent id kind {tag:?}"));
    }
    if rest.first().is_some_and(|v| *v != Value::None) {
        return Err("storage views are not supported".into());
    }
    let dtype = match ty {
        Value::Global { module, name } if module == "torch" => {
            DType::from_storage_name(name).ok_or_else(|| format!("unsupported storage type torch.{name}"))?
        }
        other => return Err(format!("unsupported storage type {other:?}")),
    };
    let key = match key {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => return Err(format!("bad storage key {other:?}")),
    };
    let numel = numel.as_int().filter(|&n| n >= 0).ok_or("bad storage size")? as usize;
    Ok(StorageRef { key, dtype, numel })
}

fn materialize(refs: Vec<(String, TensorRef)>, data: &HashMap<String, &[u8]>) -> Result<StateDict, String> {
    let mut tensors = Vec::with_capacity(refs.len());
    for (name, t) in refs {
        let raw = data.get(&t.storage.key).ok_or_else(|| format!("tensor '{name}': storage '{}' has no data", t.storage.key))?;
        if t.shape.len() != t.stride.len() {
            return Err(format!("tensor '{name}': size and stride differ in rank"));
        }
        let numel: usize = t.shape.iter().product();
        let last = t.offset + t.shape.iter().zip(&t.stride).map(|(&n, &s)| n.saturating_sub(1) * s).sum::<usize>();
        if numel > 0 && last >= t.storage.numel {
            return Err(format!("tensor '{name}': view reaches element {last} of a {}-element storage", t.storage.numel));
        }
        let es = t.storage.dtype.size();
        let mut out = Vec::with_capacity(numel);
        let mut index = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let at = t.offset + index.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            out.push(t.storage.dtype.to_f32(&raw[at * es..at * es + es]));
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < t.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        tensors.push((name, Tensor { shape: t.shape, data: out }));
    }
    Ok(StateDict { tensors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_values_convert_exactly() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x7bff), 65504.0);
        assert_eq!(half_to_f32(0x0001), 2f32.powi(-24));
        assert!(half_to_f32(0x7e00).is_nan());
    }
}
