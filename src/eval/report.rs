//! Evaluation output: the stdout table, eval.json, ROC plots and example
//! heatmaps (PNG).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use super::dataset::TestImage;
use super::{CategoryResult, EvalError, EvalReport};
use crate::anomaly::{MapPlacement, find_regions};
use crate::engine::Scored;
use crate::config::ScoringConfig;
use crate::frame::Frame;
use crate::fsutil::write_atomic;
use crate::heatmap;

/// Debian's fonts-dejavu-core; plots need one font for their labels.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn report_err(path: &Path, e: impl std::fmt::Display) -> EvalError {
    EvalError::Report { path: path.into(), source: std::io::Error::other(e.to_string()) }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.3}"))
}

/// The human-readable table printed by `lineguard eval`.
pub fn table(r: &EvalReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<12} {:>9} {:>9} {:>6} {:>6} {:>6}  {:<40} {:>10} {:>10}", "category", "image", "pixel", "F1", "FRR", "recall", "per kind (image/pixel AUROC)", "enc ms", "knn ms");
    for (name, c) in &r.categories {
        let kinds: Vec<String> = c
            .per_kind
            .iter()
            .map(|(k, v)| format!("{k} {}/{}", fmt_opt(v.image_auroc), fmt_opt(v.pixel_auroc)))
            .collect();
        let _ = writeln!(
            s,
            "{:<12} {:>9} {:>9} {:>6.3} {:>6.3} {:>6.3}  {:<40} {:>10.2} {:>10.2}",
            name,
            fmt_opt(c.image_auroc),
            fmt_opt(c.pixel_auroc),
            c.f1,
            c.false_reject_rate,
            c.recall,
            kinds.join(", "),
            c.latency_ms["encoder"].median,
            c.latency_ms["nearest_neighbour"].median,
        );
    }
    let _ = writeln!(s, "{:<12} {:>9.4} {:>9.4} {:>6.3}", "mean", r.image_auroc_mean, r.pixel_auroc_mean, r.f1_mean);
    if let Some(n) = r.categories.values().map(|c| c.repeats.len()).max().filter(|&n| n > 1) {
        let ranges: Vec<String> = r
            .categories
            .iter()
            .filter_map(|(name, c)| c.image_auroc_range().map(|(lo, hi)| format!("{name} {lo:.3}-{hi:.3}")))
            .collect();
        let _ = writeln!(s, "AUROC: means over {n} repeats (F1 and latencies: the first); image AUROC range: {}", ranges.join(", "));
    }
    let _ = writeln!(s, "engine: {}; model: {} ({}); {:.0} s", r.engine, r.model, r.model_sha256.get(..12).unwrap_or("-"), r.seconds);
    s
}

pub(crate) fn ensure_font() -> Result<(), String> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let bytes = std::fs::read(FONT_PATH)
            .map_err(|e| format!("{FONT_PATH}: {e} (install the Debian package fonts-dejavu-core)"))?;
        plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
            .map_err(|_| format!("{FONT_PATH}: not a usable TrueType font"))
    })
    .clone()
}

/// ROC curves as a PNG: one curve per entry (name, points, area).
pub fn roc_plot(path: &Path, title: &str, curves: &[(String, &[(f64, f64)], Option<f64>)]) -> Result<(), EvalError> {
    ensure_font().map_err(|e| report_err(path, e))?;
    let (w, h) = (640u32, 600u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| report_err(path, e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(|e| report_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc("false positive rate (good parts called NG)")
            .y_desc("true positive rate")
            .draw()
            .map_err(|e| report_err(path, e))?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3)))
            .map_err(|e| report_err(path, e))?;
        for (i, (name, pts, area)) in curves.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let label = format!("{name} (AUROC {})", fmt_opt(*area));
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(|e| report_err(path, e))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| report_err(path, e))?;
        root.present().map_err(|e| report_err(path, e))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).expect("buffer sized for the plot");
    heatmap::save_png(&img, path).map_err(|source| EvalError::Report { path: path.into(), source })
}

pub fn write_category(dir: &Path, name: &str, r: &CategoryResult) -> Result<(), EvalError> {
    let path = dir.join(name).join("roc.png");
    roc_plot(&path, &format!("{name}: image-level ROC"), &[(name.to_owned(), &r.roc, r.image_auroc)])
}

pub fn write_summary(dir: &Path, r: &EvalReport) -> Result<(), EvalError> {
    let json = dir.join("eval.json");
    let text = serde_json::to_vec_pretty(r).map_err(|e| report_err(&json, e))?;
    write_atomic(&json, &text).map_err(|source| EvalError::Report { path: json.clone(), source })?;
    let curves: Vec<(String, &[(f64, f64)], Option<f64>)> =
        r.categories.iter().map(|(n, c)| (n.clone(), c.roc.as_slice(), c.roc_auroc())).collect();
    roc_plot(&dir.join("roc.png"), "image-level ROC per category", &curves)
}

/// `dir/CATEGORY/heatmaps/KIND_NAME.png`: the overlay, plus the mask beside it when there is one.
pub fn write_heatmap(
    dir: &Path,
    category: &str,
    t: &TestImage,
    frame: &Frame,
    s: &Scored,
    threshold: f32,
    scoring: &ScoringConfig,
) -> Result<PathBuf, EvalError> {
    let placement = MapPlacement { roi: s.roi, map_width: s.map_width, map_height: s.map_height };
    let regions = if s.score > threshold {
        find_regions(&s.map, &placement, threshold, scoring.min_region_area_px, scoring.max_regions)
    } else {
        vec![]
    };
    let over = heatmap::overlay(frame, s, threshold, &regions);
    let (w, h) = over.dimensions();
    let mut canvas = image::RgbImage::from_pixel(w * 2 + 4, h, image::Rgb([255, 255, 255]));
    image::imageops::replace(&mut canvas, &image::RgbImage::from_raw(w, h, frame.to_rgb8()).expect("frame"), 0, 0);
    image::imageops::replace(&mut canvas, &over, (w + 4) as i64, 0);
    if let Some(m) = &t.mask
        && let Ok(mask) = Frame::from_image_file(m, 0)
        && (mask.width, mask.height) == (w, h)
    {
        // Outline the ground truth on the original (left) in green.
        let step = mask.format.bytes_per_pixel();
        let on = |x: u32, y: u32| mask.data[((y * w + x) as usize) * step] > 127;
        for y in 0..h {
            for x in 0..w {
                let edge = on(x, y)
                    && (x == 0 || y == 0 || x == w - 1 || y == h - 1 || !on(x - 1, y) || !on(x + 1, y) || !on(x, y - 1) || !on(x, y + 1));
                if edge {
                    canvas.put_pixel(x, y, image::Rgb([0, 255, 0]));
                }
            }
        }
    }
    let stem = t.path.file_stem().unwrap_or_default().to_string_lossy();
    let path = dir.join(category).join("heatmaps").join(format!("{}_{stem}.png", t.kind));
    heatmap::save_png(&canvas, &path).map_err(|source| EvalError::Report { path: path.clone(), source })?;
    Ok(path)
}
