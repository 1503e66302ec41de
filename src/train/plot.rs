//! The loss curve of a run as a PNG, one line per stage.

use std::path::Path;

use plotters::prelude::*;

use super::TrainError;
use super::checkpoint::LossPoint;
use crate::eval::report::ensure_font;
use crate::heatmap;

pub fn loss_curve(path: &Path, title: &str, losses: &[LossPoint]) -> Result<(), TrainError> {
    let err = |e: String| TrainError::Image { path: path.into(), reason: format!("cannot draw the loss curve: {e}") };
    ensure_font().map_err(err)?;
    let mut stages: Vec<&str> = Vec::new();
    for p in losses {
        if !stages.contains(&p.stage.as_str()) {
            stages.push(&p.stage);
        }
    }
    // Stages follow each other on one step axis.
    let mut offset = 0usize;
    let mut series: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
    for s in &stages {
        let pts: Vec<(f64, f64)> = losses.iter().filter(|p| p.stage == *s).map(|p| ((offset + p.step) as f64, p.loss as f64)).collect();
        offset += losses.iter().filter(|p| p.stage == *s).map(|p| p.step + 1).max().unwrap_or(0);
        series.push((s, pts));
    }
    let ymax = losses.iter().map(|p| p.loss as f64).filter(|v| v.is_finite()).fold(0.0, f64::max).max(1e-3) * 1.05;
    let (w, h) = (720u32, 420u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..offset.max(1) as f64, 0f64..ymax)
            .map_err(|e| err(e.to_string()))?;
        chart.configure_mesh().x_desc("step").y_desc("loss").draw().map_err(|e| err(e.to_string()))?;
        for (i, (name, pts)) in series.into_iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).expect("buffer sized for the plot");
    heatmap::save_png(&img, path).map_err(|source| TrainError::Write { path: path.into(), source })
}
