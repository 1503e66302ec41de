//! `lineguard model import` on the real EfficientNet-Lite0 weights: the
//! imported network classifies real photos right through tract, both
//! checkpoint formats give the same graph, and bad inputs are refused cleanly.

mod common;

use std::path::Path;

use common::*;
use lineguard::frame::Frame;
use lineguard::model::{Contract, ImportOptions, classify::classify, import, import_checkpoint};
use prost::Message;

fn photo(name: &str) -> Frame {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/photos").join(name);
    Frame::from_image_file(&p, 0).unwrap()
}

#[test]
fn imported_classifier_gets_imagenet_top5_right_on_real_photos() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cls.onnx");
    let opts = ImportOptions { classifier: true, mean: import::TF_MEAN, std: import::TF_STD, ..Default::default() };
    let c = import_checkpoint(&weights(), &out, &opts).unwrap();
    assert_eq!(c.meta.taps.iter().map(|t| (t.stride, t.channels)).collect::<Vec<_>>(), vec![(8, 40), (16, 80), (16, 112)]);

    let cat = classify(&c, &photo("chelsea.png"), 5).unwrap();
    let cat_classes = [281, 282, 285];
    assert!(cat_classes.contains(&cat[0].0), "chelsea top-5 {cat:?}");
    let p_cats: f32 = cat.iter().filter(|(k, _)| (281..=285).contains(k)).map(|(_, p)| p).sum();
    assert!(p_cats > 0.8, "chelsea: probability on cat classes 281-285 is {p_cats}: {cat:?}");

    let cup = classify(&c, &photo("coffee.png"), 5).unwrap();
    assert_eq!(cup[0].0, 967, "coffee top-5 {cup:?}");
    assert!(cup[0].1 > 0.8, "espresso should be confident: {cup:?}");
    assert!(cup.iter().any(|(k, _)| *k == 968 || *k == 504), "cup or coffee mug in the top 5: {cup:?}");
}

#[test]
fn zip_format_checkpoint_imports_to_the_same_graph() {
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("zip.pth");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_zip_checkpoint.py");
    let out = std::process::Command::new("python3").arg(script).arg(weights()).arg(&zip).output().unwrap();
    assert_success(&out, "make_zip_checkpoint.py");
    assert_eq!(&std::fs::read(&zip).unwrap()[..4], b"PK\x03\x04");

    let legacy = import_checkpoint(&weights(), &dir.path().join("a.onnx"), &ImportOptions::default()).unwrap();
    let zipped = import_checkpoint(&zip, &dir.path().join("b.onnx"), &ImportOptions::default()).unwrap();
    assert_eq!(legacy.meta.graph_sha256, zipped.meta.graph_sha256);
    assert_ne!(legacy.meta.weights_sha256, zipped.meta.weights_sha256, "different checkpoint files");
}

fn import_cli(pth: &Path, out: &Path) -> std::process::Output {
    lineguard_cmd(&["model", "import"]).arg(pth).arg("--out").arg(out).output().unwrap()
}

#[test]
fn truncated_checkpoint_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(weights()).unwrap();
    let pth = dir.path().join("cut.pth");
    std::fs::write(&pth, &bytes[..bytes.len() / 2]).unwrap();
    let out = dir.path().join("m.onnx");
    let err = expect_failure(&import_cli(&pth, &out));
    assert!(err.contains("cut.pth") && err.contains("truncated"), "{err}");
    assert!(!out.exists());
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn garbage_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("noise.pth");
    std::fs::write(&pth, (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>()).unwrap();
    let err = expect_failure(&import_cli(&pth, &dir.path().join("m.onnx")));
    assert!(err.contains("noise.pth") && err.contains("not a PyTorch checkpoint"), "{err}");
    // A pickle that is not a state dict: the legacy magic check names it.
    std::fs::write(&pth, b"\x80\x02K\x05.").unwrap();
    let err = expect_failure(&import_cli(&pth, &dir.path().join("m.onnx")));
    assert!(err.contains("noise.pth") && err.contains("magic"), "{err}");
}

#[test]
fn onnx_without_the_taps_is_refused_naming_the_tap() {
    let dir = tempfile::tempdir().unwrap();
    let good = Contract::load(&model()).unwrap();
    let mut proto = good.proto.clone();
    let graph = proto.graph.as_mut().unwrap();
    graph.output.retain(|o| o.name != "stage3_stride8");
    // Keep the metadata's graph hash honest so the tap check is what fails.
    let meta_entry = proto.metadata_props.iter_mut().find(|e| e.key == "lineguard.contract").unwrap();
    let mut meta: serde_json::Value = serde_json::from_str(&meta_entry.value).unwrap();
    meta["graph_sha256"] = "".into();
    meta_entry.value = meta.to_string();
    let bad = dir.path().join("notaps.onnx");
    std::fs::write(&bad, proto.encode_to_vec()).unwrap();
    let out = lineguard_cmd(&["model", "info"]).arg(&bad).output().unwrap();
    let err = expect_failure(&out);
    assert!(err.contains("notaps.onnx") && err.contains("no output 'stage3_stride8'"), "{err}");
}

#[test]
fn altered_graph_and_non_onnx_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut proto = Contract::load(&model()).unwrap().proto;
    proto.graph.as_mut().unwrap().initializer[3].raw_data[0] ^= 1;
    let altered = dir.path().join("altered.onnx");
    std::fs::write(&altered, proto.encode_to_vec()).unwrap();
    let err = expect_failure(&lineguard_cmd(&["model", "info"]).arg(&altered).output().unwrap());
    assert!(err.contains("altered.onnx") && err.contains("changed after import"), "{err}");

    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"this is not protobuf at all \xff\xff\xff").unwrap();
    let err = expect_failure(&lineguard_cmd(&["model", "info"]).arg(&junk).output().unwrap());
    assert!(err.contains("junk.onnx") && err.contains("not an ONNX model"), "{err}");
}
