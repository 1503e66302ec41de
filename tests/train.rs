//! `lineguard train` for real, on the real ImageNet encoder and a small
//! generated data set: a few steps lower the loss, the export loads as a
//! contract and burn's forward pass matches tract's on it, an interrupted
//! run resumes to the same weights, bad input is refused by name, and
//! `lineguard eval --fewshot --train` trains per category and scores only
//! images it did not train on.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use lineguard::enroll::list_images;
use lineguard::model::Contract;
use lineguard::progress::Progress;
use lineguard::train::{self, AugmentConfig, Stage, StageConfig, TrainConfig, TrainDevice, TrainRequest};
use tract_onnx::prelude::*;

const TAPS: [&str; 2] = ["stage3_stride8", "stage4_stride16"];

/// Small and fast: 64-pixel crops, 4 images a step.
fn tiny_config(pretrain_epochs: usize) -> TrainConfig {
    TrainConfig {
        batch: 4,
        pretrain: StageConfig { epochs: pretrain_epochs, lr: 1e-3, warmup: 0.1 },
        finetune: StageConfig { epochs: 1, lr: 1e-4, warmup: 0.1 },
        checkpoint_every: 2,
        augment: AugmentConfig { crop_size: 64, ..Default::default() },
        ..Default::default()
    }
}

fn good_dir() -> PathBuf {
    dataset().join("brick/train/good")
}

fn request(out: &Path, work: &Path, config: TrainConfig, stages: Vec<Stage>) -> TrainRequest {
    TrainRequest {
        base: Contract::load(&model()).unwrap(),
        taps: TAPS.iter().map(|s| s.to_string()).collect(),
        good_dir: good_dir(),
        good: list_images(&good_dir()).unwrap(),
        defects: vec![],
        stages,
        config,
        out: out.into(),
        work_dir: work.into(),
        max_minutes: None,
        max_steps: None,
        device: TrainDevice::Cpu,
        fresh: false,
    }
}

/// Float initializers by name.
fn weights(path: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let c = Contract::load(path).unwrap();
    c.graph()
        .initializer
        .iter()
        .filter_map(|t| lineguard::model::onnx_read::tensor_f32(t).map(|v| (t.name.clone(), v)))
        .collect()
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

#[test]
fn pretraining_lowers_the_loss_and_exports_a_contract_that_burn_and_tract_agree_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trained.onnx");
    let s = train::train(request(&out, &dir.path().join("work"), tiny_config(4), vec![Stage::Pretrain]), &Progress::hidden()).unwrap();
    let losses: Vec<f32> = {
        let ck = train::checkpoint::load(&s.checkpoint).unwrap();
        ck.header.losses.iter().map(|l| l.loss).collect()
    };
    assert_eq!(losses.len(), 20, "5 steps an epoch, 4 epochs");
    let (first, last) = (mean(&losses[..4]), mean(&losses[losses.len() - 4..]));
    assert!(last < first * 0.9, "loss should fall: first steps {first:.4}, last steps {last:.4}: {losses:?}");
    assert!(s.loss_curve.is_file() && std::fs::metadata(&s.loss_curve).unwrap().len() > 1000, "loss curve PNG");
    assert!(dir.path().join("work/train.json").is_file());

    // The export: same graph, new weights where training happened, provenance in the metadata.
    let base = Contract::load(&model()).unwrap();
    let trained = Contract::load(&out).unwrap();
    assert_eq!(trained.graph().node, base.graph().node, "the graph is the base model's");
    assert_eq!(trained.meta.taps, base.meta.taps);
    assert_eq!(trained.meta.input, base.meta.input);
    let (bw, tw) = (weights(&model()), weights(&out));
    let changed = bw.iter().filter(|(k, v)| tw[*k] != **v).count();
    assert!(changed > 10, "trained weights differ from ImageNet's ({changed} tensors changed)");
    assert_eq!(tw["_conv_stem.weight_folded"], bw["_conv_stem.weight_folded"], "frozen stem keeps its weights");
    let t = &trained.meta.provenance["training"];
    assert_eq!(t["base_model_sha256"], base.sha256);
    assert_eq!(t["data_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(t["settings"]["temperature"], 0.2_f32 as f64);
    assert_eq!(t["settings"]["augment"]["crop_size"], 64);

    // burn's forward pass against tract's on the exported file, at the model's input size.
    let (h, w) = (trained.meta.input.height, trained.meta.input.width);
    let image: Vec<f32> = (0..3 * h * w).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let taps: Vec<String> = TAPS.iter().map(|s| s.to_string()).collect();
    let ours = train::trainer::forward_taps(&trained, &taps, &image, TrainDevice::Cpu).unwrap();
    let tract = tract_onnx::onnx()
        .model_for_path(&out)
        .unwrap()
        .with_input_fact(0, f32::fact([1, 3, h, w]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = tract_ndarray::Array4::from_shape_vec((1, 3, h, w), image).unwrap();
    let outputs = tract.run(tvec!(Tensor::from(input).into())).unwrap();
    let names = trained.output_names();
    for (tap, mine) in taps.iter().zip(&ours) {
        let k = names.iter().position(|n| n == tap).unwrap();
        let theirs = outputs[k].to_plain_array_view::<f32>().unwrap();
        let theirs: Vec<f32> = theirs.iter().copied().collect();
        assert_eq!(theirs.len(), mine.len(), "{tap}: sizes");
        let scale = theirs.iter().map(|v| v.abs()).fold(0f32, f32::max);
        let err = theirs.iter().zip(mine).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err <= 1e-4 * scale.max(1.0), "{tap}: burn vs tract max difference {err} (largest value {scale})");
    }
}

#[test]
fn an_interrupted_run_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let stages = vec![Stage::Pretrain, Stage::Finetune];
    let straight = dir.path().join("straight.onnx");
    train::train(request(&straight, &dir.path().join("w1"), tiny_config(1), stages.clone()), &Progress::hidden()).unwrap();

    let resumed = dir.path().join("resumed.onnx");
    let work = dir.path().join("w2");
    let mut first = request(&resumed, &work, tiny_config(1), stages.clone());
    first.max_steps = Some(3);
    let s = train::train(first, &Progress::hidden()).unwrap();
    assert!(s.stopped_early);
    assert_eq!(s.stages[0].steps, 3);
    let s = train::train(request(&resumed, &work, tiny_config(1), stages), &Progress::hidden()).unwrap();
    assert!(!s.stopped_early);
    assert_eq!(s.resumed_from, Some(("pretrain".to_string(), 3)));
    // Run once more: everything is done, the model is kept as it is.
    let sha = Contract::load(&resumed).unwrap().sha256;
    let again = train::train(request(&resumed, &work, tiny_config(1), vec![Stage::Pretrain, Stage::Finetune]), &Progress::hidden()).unwrap();
    assert!(again.stages.is_empty());
    assert_eq!(Contract::load(&resumed).unwrap().sha256, sha);
    let (a, b) = (weights(&straight), weights(&resumed));
    for (k, v) in &a {
        let err = v.iter().zip(&b[k]).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(err <= 1e-6, "{k}: resumed run differs from the straight run by {err}");
    }

    // A checkpoint of another run (other settings) is refused, by name.
    let mut other = request(&resumed, &work, tiny_config(2), vec![Stage::Pretrain, Stage::Finetune]);
    other.config.seed = 9;
    let e = train::train(other, &Progress::hidden()).expect_err("another run's checkpoint").to_string();
    assert!(e.contains("train.ckpt") && e.contains("--fresh"), "{e}");
}

#[test]
fn too_few_images_unreadable_files_and_missing_masks_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let few = dir.path().join("few");
    std::fs::create_dir_all(&few).unwrap();
    let src = list_images(&good_dir()).unwrap();
    for p in &src[..3] {
        std::fs::copy(p, few.join(p.file_name().unwrap())).unwrap();
    }
    let mut req = request(&dir.path().join("m.onnx"), &dir.path().join("w"), tiny_config(1), vec![Stage::Pretrain]);
    req.good_dir = few.clone();
    req.good = list_images(&few).unwrap();
    let e = train::train(req, &Progress::hidden()).err().unwrap().to_string();
    assert!(e.contains("few") && e.contains("3 images") && e.contains("at least 4"), "{e}");

    std::fs::copy(&src[3], few.join("d.png")).unwrap();
    std::fs::write(few.join("broken.png"), b"not a png").unwrap();
    let mut req = request(&dir.path().join("m.onnx"), &dir.path().join("w"), tiny_config(1), vec![Stage::Pretrain]);
    req.good = list_images(&few).unwrap();
    let e = train::train(req, &Progress::hidden()).err().unwrap().to_string();
    assert!(e.contains("broken.png"), "{e}");
    assert!(!dir.path().join("m.onnx").exists(), "nothing is written on error");

    let defects = dir.path().join("defects");
    std::fs::create_dir_all(&defects).unwrap();
    std::fs::copy(&src[0], defects.join("crack.png")).unwrap();
    let e = train::list_defects(&defects).err().unwrap().to_string();
    assert!(e.contains("crack.png") && e.contains("crack_mask.png"), "{e}");
}

#[test]
fn cli_trains_with_defects_and_eval_fewshot_scores_only_untrained_images() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &model(), "");
    let settings = dir.path().join("train.toml");
    std::fs::write(&settings, "batch = 4\n[augment]\ncrop_size = 64\n[pretrain]\nepochs = 1\nlr = 0.0001\nwarmup = 0.1\n[finetune]\nepochs = 1\nlr = 0.0001\nwarmup = 0.1\n").unwrap();

    // Defect images with masks beside them.
    let defects = dir.path().join("defects");
    std::fs::create_dir_all(&defects).unwrap();
    let data = dataset();
    for (i, img) in list_images(&data.join("brick/test/hole")).unwrap().iter().take(2).enumerate() {
        let stem = img.file_stem().unwrap().to_string_lossy();
        std::fs::copy(img, defects.join(format!("hole{i}.png"))).unwrap();
        std::fs::copy(data.join(format!("brick/ground_truth/hole/{stem}_mask.png")), defects.join(format!("hole{i}_mask.png"))).unwrap();
    }
    let out = dir.path().join("station.onnx");
    let good = good_dir();
    let args = ["train", "--config", config.to_str().unwrap(), "--images", good.to_str().unwrap(), "--defects", defects.to_str().unwrap()];
    let o = lineguard_cmd(&args).args(["--out", out.to_str().unwrap(), "--settings", settings.to_str().unwrap(), "--json"]).output().unwrap();
    assert_success(&o, "lineguard train");
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["stages"].as_array().unwrap().len(), 2);
    let trained = Contract::load(&out).unwrap();
    assert_eq!(trained.meta.provenance["training"]["defect_images"], 2);
    // --device auto: this build has no train-gpu, so the CPU, and the provenance says which.
    assert_eq!(trained.meta.provenance["training"]["device"], "cpu");
    assert!(dir.path().join("station.onnx.train/loss.png").is_file());
    let o = lineguard_cmd(&["model", "info", out.to_str().unwrap()]).output().unwrap();
    assert_success(&o, "lineguard model info");
    let info = String::from_utf8_lossy(&o.stdout);
    assert!(info.contains(&format!("trained from {} on 20 good and 2 defect images", Contract::load(&model()).unwrap().sha256)), "{info}");

    // Without defect images the default is pretraining only (what measured best).
    let plain = dir.path().join("plain.onnx");
    let o = lineguard_cmd(&args[..5]).args(["--out", plain.to_str().unwrap(), "--settings", settings.to_str().unwrap(), "--json"]).output().unwrap();
    assert_success(&o, "lineguard train without --defects");
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let stages: Vec<&str> = summary["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["pretrain"]);

    // A bad key in the settings is named.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[augment]\ncrop_sise = 64\n").unwrap();
    let o = lineguard_cmd(&args).args(["--out", out.to_str().unwrap(), "--settings", bad.to_str().unwrap()]).output().unwrap();
    let e = expect_failure(&o);
    assert!(e.contains("bad.toml") && e.contains("crop_sise"), "{e}");

    // eval --fewshot 1 --train finetune: one image per kind moves to training, the rest is scored.
    let o = lineguard_cmd(&["eval", "--config", config.to_str().unwrap(), "--data", data.to_str().unwrap(), "--fewshot", "1", "--train", "finetune", "--json"])
        .args(["--train-work-dir", dir.path().join("evaltrain").to_str().unwrap(), "--settings", settings.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success(&o, "lineguard eval --fewshot 1 --train finetune");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let brick = &r["categories"]["brick"];
    // 5 good + 3 per kind (3 kinds) in the tiny set, one per kind moved out.
    assert_eq!(brick["test_images"], 5 + 3 * 2);
    let scored: Vec<String> = brick["images"].as_array().unwrap().iter().map(|i| i["path"].as_str().unwrap().to_owned()).collect();
    let trained_on = Contract::load(&dir.path().join("evaltrain/brick/seed-0/finetune-from-base-3defects/model.onnx")).unwrap();
    assert_eq!(trained_on.meta.provenance["training"]["defect_images"], 3);
    for kind in ["hole", "scratch", "spot"] {
        let first = list_images(&data.join("brick/test").join(kind)).unwrap()[0].display().to_string();
        assert!(!scored.contains(&first), "{first} was trained on and must not be scored");
    }
    assert_eq!(brick["model_sha256"], trained_on.sha256);
    assert!(brick["image_auroc"].as_f64().unwrap() > 0.5);

    // --train-without-defects: the few-shot images stay out of the test split and out of training.
    let o = lineguard_cmd(&["eval", "--config", config.to_str().unwrap(), "--data", data.to_str().unwrap(), "--categories", "brick", "--fewshot", "1", "--train", "finetune"])
        .args(["--train-without-defects", "--json", "--train-work-dir", dir.path().join("evaltrain").to_str().unwrap(), "--settings", settings.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success(&o, "lineguard eval --train-without-defects");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["categories"]["brick"]["test_images"], 5 + 3 * 2);
    let good_only = Contract::load(&dir.path().join("evaltrain/brick/seed-0/finetune-from-base-0defects/model.onnx")).unwrap();
    assert_eq!(good_only.meta.provenance["training"]["defect_images"], 0);
    assert_eq!(r["categories"]["brick"]["model_sha256"], good_only.sha256);
}
