//! Shared fixtures for the integration tests: the real encoder weights, the
//! imported model, and a small generated data set. Missing prerequisites fail
//! with a message that says what to run; nothing is skipped.
#![allow(dead_code)]

pub mod station;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const BIN: &str = env!("CARGO_BIN_EXE_lineguard");

/// Scratch space shared by all test binaries of this build.
pub fn shared_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lineguard");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The EfficientNet-Lite0 checkpoint: $LINEGUARD_WEIGHTS or the cache that
/// deploy/fetch-weights.sh fills.
pub fn weights() -> PathBuf {
    let p = std::env::var_os("LINEGUARD_WEIGHTS").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("LINEGUARD_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"))
                .join("lineguard")
        });
        cache.join("weights/efficientnet-lite0-57934424.pth")
    });
    assert!(
        p.is_file(),
        "EfficientNet-Lite0 weights not found at {}: run deploy/fetch-weights.sh (deploy/test.sh does) \
         or set LINEGUARD_WEIGHTS",
        p.display()
    );
    p
}

/// Runs `f` to make `path` once: into a temporary sibling, then renamed, so
/// concurrent test binaries never see a half-made fixture.
fn make_once(path: &Path, f: impl FnOnce(&Path)) -> PathBuf {
    if !path.exists() {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        f(&tmp);
        if std::fs::rename(&tmp, path).is_err() {
            // Another binary got there first.
            let _ = std::fs::remove_dir_all(&tmp);
            let _ = std::fs::remove_file(&tmp);
        }
    }
    path.to_path_buf()
}

/// The ImageNet encoder imported to the ONNX contract (features only).
pub fn model() -> PathBuf {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| {
        make_once(&shared_dir().join("lite0.onnx"), |tmp| {
            let out = lineguard_cmd(&["model", "import"]).arg(weights()).arg("--out").arg(tmp).output().unwrap();
            assert_success(&out, "model import");
        })
    })
    .clone()
}

/// A small MVTec-layout data set (brick: 20 train, 5 good + 3 per kind in test).
pub fn dataset() -> PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        make_once(&shared_dir().join("data-tiny"), |tmp| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dataset/make_dataset.py");
            let out = Command::new("python3")
                .arg(&script)
                .arg(tmp)
                .args(["--set", "dev", "--categories", "brick", "--train", "20", "--test-good", "5", "--per-kind", "3"])
                .output()
                .expect("python3 is needed for the data set generator: run deploy/install-deps.sh");
            assert_success(&out, "make_dataset.py (needs numpy, scipy, pillow: run deploy/install-deps.sh)");
        })
    })
    .clone()
}

pub fn lineguard_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env("LINEGUARD_LOG", "warn");
    c
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stderr of a command that must fail; asserts a non-zero exit.
pub fn expect_failure(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure, got success; stdout: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A station configuration in `dir` using `model`, with one recipe whose bank is `dir/default.bank`.
pub fn write_config(dir: &Path, model: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"[station]
name = "test-station"
recipe = "default"
[model]
path = "{}"
[engine]
kind = "cpu"
threads = 2
{extra}
[recipes.default]
bank = "default.bank"
"#,
        model.display()
    );
    let p = dir.join("lineguard.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Files in `dir` whose names contain `.tmp` (left-over partial writes).
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".tmp"))
        .collect()
}

/// A validator for `firmware-config/schemas/NAME.v1.schema.json`.
pub fn schema(name: &str) -> jsonschema::Validator {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("firmware-config/schemas/{name}.v1.schema.json"));
    let schema: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Panics with every schema violation of `value`.
pub fn assert_valid(validator: &jsonschema::Validator, value: &serde_json::Value, what: &str) {
    let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{what} does not match its schema: {errors:?}\n{value}");
}
