//! `lineguard eval` and `lineguard bench` on a generated data set with the
//! real encoder.

mod common;

use common::*;

#[test]
fn eval_reports_auroc_per_category_and_kind_with_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &model(), "");
    let report = dir.path().join("report");
    let out = lineguard_cmd(&["eval", "--json", "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(dataset())
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert_success(&out, "eval");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let brick = &r["categories"]["brick"];
    let image = r["image_auroc_mean"].as_f64().unwrap();
    let pixel = r["pixel_auroc_mean"].as_f64().unwrap();
    // Holes and scratches on brick are found; the tiny set leaves room for one miss.
    assert!(image > 0.85, "image AUROC {image}: {brick}");
    assert!(pixel > 0.9, "pixel AUROC {pixel}: {brick}");
    assert_eq!(brick["image_auroc"].as_f64().unwrap(), image, "one category: mean = its figure");
    for kind in ["hole", "scratch", "spot"] {
        assert_eq!(brick["per_kind"][kind]["images"], 8, "5 good + 3 {kind}");
        assert!(brick["per_kind"][kind]["pixel_auroc"].as_f64().is_some());
    }
    assert!(brick["f1"].as_f64().unwrap() > 0.5, "F1 at the calibrated threshold: {brick}");
    assert!(brick["latency_ms"]["encoder"]["median"].as_f64().unwrap() > 0.0);
    for f in ["eval.json", "roc.png", "brick/roc.png", "brick/heatmaps/hole_000.png", "brick/heatmaps/good_000.png"] {
        assert!(report.join(f).is_file(), "report is missing {f}");
    }
    let roc = image::open(report.join("roc.png")).unwrap();
    assert!(roc.width() >= 400);
}

#[test]
fn eval_repeats_enroll_with_consecutive_seeds_and_report_the_mean() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &model(), "[enroll]\nseed = 5\n");
    let out = lineguard_cmd(&["eval", "--json", "--repeats", "2", "--config"]).arg(&cfg).arg("--data").arg(dataset()).output().unwrap();
    assert_success(&out, "eval --repeats 2");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let brick = &r["categories"]["brick"];
    let repeats = brick["repeats"].as_array().unwrap_or_else(|| panic!("no repeats: {brick}"));
    assert_eq!(repeats.iter().map(|x| x["enroll_seed"].as_u64().unwrap()).collect::<Vec<_>>(), vec![5, 6]);
    for key in ["image_auroc", "pixel_auroc"] {
        let mean = (repeats[0][key].as_f64().unwrap() + repeats[1][key].as_f64().unwrap()) / 2.0;
        assert!((brick[key].as_f64().unwrap() - mean).abs() < 1e-9, "{key} is not the mean of the repeats: {brick}");
    }
    let out = lineguard_cmd(&["eval", "--repeats", "0", "--config"]).arg(&cfg).arg("--data").arg(dataset()).output().unwrap();
    let err = expect_failure(&out);
    assert!(err.contains("--repeats"), "{err}");
}

#[test]
fn eval_on_a_folder_that_is_not_a_data_set_says_what_layout_it_wants() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &model(), "");
    let out = lineguard_cmd(&["eval", "--config"]).arg(&cfg).arg("--data").arg(dir.path()).output().unwrap();
    let err = expect_failure(&out);
    assert!(err.contains("no categories") && err.contains("CATEGORY/train/good"), "{err}");
}

#[test]
fn bench_reports_every_stage_over_100_frames() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &model(), "");
    let out = lineguard_cmd(&["bench", "--json", "--engine", "cpu", "--frames", "100", "--bank-rows", "2000", "--config"])
        .arg(&cfg)
        .arg("--images")
        .arg(dataset().join("brick/train/good"))
        .output()
        .unwrap();
    assert_success(&out, "bench");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["frames"], 100);
    assert_eq!(r["bank_rows"], 2000);
    for stage in ["preprocess", "encoder", "features", "nearest_neighbour", "map", "total"] {
        let s = &r["stages_ms"][stage];
        let (med, p99) = (s["median"].as_f64().unwrap(), s["p99"].as_f64().unwrap());
        assert!(med > 0.0 && p99 >= med, "{stage}: {s}");
    }
    assert!(r["fps_batch1"].as_f64().unwrap() > 0.0);
    let batched = r["batched"].as_array().unwrap();
    assert_eq!(batched.iter().map(|b| b["batch"].as_u64().unwrap()).collect::<Vec<_>>(), [8, 32]);
    for b in batched {
        assert!(b["frames"].as_u64().unwrap() >= 100 && b["fps"].as_f64().unwrap() > 0.0, "{b}");
    }

    let out = lineguard_cmd(&["bench", "--engine", "cpu", "--frames", "10", "--config"])
        .arg(&cfg)
        .arg("--images")
        .arg(dataset().join("brick/train/good"))
        .output()
        .unwrap();
    assert!(expect_failure(&out).contains("at least 100 frames"));
}
