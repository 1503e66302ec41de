//! The CLI end to end on real weights and real images: enroll, inspect,
//! verdicts valid against the schema, and every kind of bad input refused with
//! an error that names it, a non-zero exit, and nothing stored damaged.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn enroll(config: &Path, images: &Path) -> std::process::Output {
    lineguard_cmd(&["enroll", "--config"]).arg(config).arg("--images").arg(images).output().unwrap()
}

fn inspect(config: &Path, out_dir: &Path, images: &[PathBuf]) -> std::process::Output {
    lineguard_cmd(&["inspect", "--config"]).arg(config).arg("--out").arg(out_dir).args(images).output().unwrap()
}

/// A station enrolled on the tiny brick set; returns (dir, config).
fn enrolled_station(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &model(), extra);
    let out = enroll(&cfg, &dataset().join("brick/train/good"));
    assert_success(&out, "enroll");
    assert!(String::from_utf8_lossy(&out.stdout).contains("threshold"));
    (dir, cfg)
}

#[test]
fn enroll_then_inspect_gives_schema_valid_verdicts_and_heatmaps() {
    let (dir, cfg) = enrolled_station("");
    let data = dataset().join("brick/test");
    let images = vec![data.join("good/000.png"), data.join("hole/000.png"), data.join("scratch/001.png")];
    let heat = dir.path().join("heat");
    let out = inspect(&cfg, &heat, &images);
    assert_success(&out, "inspect");
    let validator = schema("verdict");
    let verdicts: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(verdicts.len(), 3);
    for v in &verdicts {
        assert_valid(&validator, v, "verdict");
    }
    assert_eq!(verdicts[0]["verdict"], "OK", "a good part: {}", verdicts[0]);
    let hole = &verdicts[1];
    assert_eq!(hole["verdict"], "NG", "a hole: {hole}");
    assert!(hole["score"].as_f64().unwrap() > hole["threshold"].as_f64().unwrap());
    assert!(!hole["regions"].as_array().unwrap().is_empty(), "NG verdicts carry regions: {hole}");
    for name in ["000.heatmap.png", "001.heatmap.png"] {
        let img = image::open(heat.join(name)).unwrap();
        assert_eq!((img.width(), img.height()), (256, 256));
    }
    // The mask of the hole overlaps the first region's box.
    let mask = image::open(dataset().join("brick/ground_truth/hole/000_mask.png")).unwrap().to_luma8();
    let r = &hole["regions"][0];
    let [x, y, w, h] = ["x", "y", "width", "height"].map(|k| r[k].as_u64().unwrap() as u32);
    let hit = (y..y + h).any(|yy| (x..x + w).any(|xx| mask.get_pixel(xx, yy).0[0] > 127));
    assert!(hit, "region {r} misses the defect");
}

#[test]
fn bad_images_are_named_and_the_rest_still_inspected() {
    let (dir, cfg) = enrolled_station("[frame]\nwidth = 256\nheight = 256\npixel_format = \"rgb8\"");
    let not_image = dir.path().join("notes.png");
    std::fs::write(&not_image, "operator notes, not a picture").unwrap();
    let small = dir.path().join("small.png");
    image::RgbImage::new(300, 200).save(&small).unwrap();
    let rgba = dir.path().join("alpha.png");
    image::RgbaImage::new(256, 256).save(&rgba).unwrap();
    let good = dataset().join("brick/test/good/001.png");
    let out = inspect(&cfg, dir.path(), &[not_image, small, rgba, good]);
    let err = expect_failure(&out);
    assert!(err.contains("notes.png: not a readable image"), "{err}");
    assert!(err.contains("small.png: 300x200") && err.contains("expects 256x256"), "{err}");
    assert!(err.contains("alpha.png: Rgba8 image"), "{err}");
    assert!(err.contains("3 of 4 images could not be inspected"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1, "the good image still gets its verdict");
}

#[test]
fn corrupt_bank_is_refused_and_left_alone() {
    let (dir, cfg) = enrolled_station("");
    let bank = dir.path().join("default.bank");
    let mut bytes = std::fs::read(&bank).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&bank, &bytes).unwrap();
    let out = inspect(&cfg, dir.path(), &[dataset().join("brick/test/good/000.png")]);
    let err = expect_failure(&out);
    assert!(err.contains("default.bank") && err.contains("corrupt") && err.contains("checksum"), "{err}");
    assert_eq!(std::fs::read(&bank).unwrap(), bytes, "the bank file is not touched");
}

#[test]
fn bank_from_another_model_is_refused_saying_so() {
    let (dir, _) = enrolled_station("");
    // The same weights with other normalisation: another model file, another sha256.
    let other = dir.path().join("other.onnx");
    let out = lineguard_cmd(&["model", "import"]).arg(weights()).args(["--normalization", "tf", "--out"]).arg(&other).output().unwrap();
    assert_success(&out, "import");
    let cfg2 = write_config(dir.path(), &other, "");
    let out = inspect(&cfg2, dir.path(), &[dataset().join("brick/test/good/000.png")]);
    let err = expect_failure(&out);
    assert!(err.contains("default.bank") && err.contains("made with model lite0.onnx") && err.contains("re-enroll"), "{err}");
}

#[test]
fn enrollment_with_a_broken_image_names_it_and_keeps_the_old_bank() {
    let (dir, cfg) = enrolled_station("");
    let bank = dir.path().join("default.bank");
    let before = std::fs::read(&bank).unwrap();
    let imgs = dir.path().join("good");
    std::fs::create_dir(&imgs).unwrap();
    for f in ["000.png", "001.png", "002.png"] {
        std::fs::copy(dataset().join("brick/train/good").join(f), imgs.join(f)).unwrap();
    }
    std::fs::write(imgs.join("003.png"), b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let err = expect_failure(&enroll(&cfg, &imgs));
    assert!(err.contains("003.png"), "{err}");
    assert_eq!(std::fs::read(&bank).unwrap(), before);
    assert!(temp_files(dir.path()).is_empty());

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = expect_failure(&enroll(&cfg, &empty));
    assert!(err.contains("0 images") && err.contains("at least 2"), "{err}");
}

#[test]
fn bad_configuration_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &model(), "[scoring]\nblur_sigmaa = 2.0");
    let err = expect_failure(&enroll(&cfg, &dataset().join("brick/train/good")));
    assert!(err.contains("lineguard.toml") && err.contains("key 'scoring.blur_sigmaa'") && err.contains("unknown field"), "{err}");

    let cfg = write_config(dir.path(), &model(), "[enroll]\ncoreset_fraction = 0");
    let err = expect_failure(&enroll(&cfg, &dataset().join("brick/train/good")));
    assert!(err.contains("key 'enroll.coreset_fraction': must be in (0, 1], got 0"), "{err}");

    let cfg = write_config(dir.path(), &model(), "[frame]\nwidth = 256\nheight = 256\npixel_format = \"rgb16\"");
    let err = expect_failure(&enroll(&cfg, &dataset().join("brick/train/good")));
    assert!(err.contains("lineguard.toml: key 'frame.pixel_format'") && err.contains("unknown variant"), "{err}");
    assert!(!dir.path().join("default.bank").exists());
}

#[test]
fn the_shipped_example_configuration_parses() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/lineguard.toml");
    let c = lineguard::config::Config::load(&p).unwrap();
    assert_eq!(c.station.recipe, "default");
    assert!(c.recipes["default"].roi.is_some());
}
