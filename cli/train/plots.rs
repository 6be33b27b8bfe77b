//! PNG plots of the loss curves of a run (plotters, bitmap backend).
//!
//! Text is drawn with a TrueType font found on the machine (DejaVu Sans or Liberation Sans in
//! the usual places, or `$POLYADAPT_FONT`); without one the curves are drawn without labels
//! rather than failing the run.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use polyadapt::{Error, Result};

use super::metrics::StepMetrics;

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers a font for plotters once (as "sans-serif"); false when none was found. The
/// report's plots use it too.
pub(crate) fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let env = std::env::var("POLYADAPT_FONT").ok();
        for path in env.iter().map(String::as_str).chain(FONT_CANDIDATES.iter().copied()) {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// One line per named loss (and the total) against the step.
pub fn loss_curves(path: &Path, metrics: &[StepMetrics]) -> Result<()> {
    let err = |e: String| Error::format(path, format!("cannot draw the plot: {e}"));
    let mut series: Vec<(String, Vec<(f64, f64)>)> = vec![("total".into(), metrics.iter().map(|m| (m.step as f64, m.loss)).collect())];
    let mut names: Vec<&String> = metrics.iter().flat_map(|m| m.losses.keys()).collect();
    names.sort();
    names.dedup();
    for n in names {
        series.push((n.clone(), metrics.iter().filter_map(|m| m.losses.get(n).map(|&v| (m.step as f64, v))).collect()));
    }
    let points = series.iter().flat_map(|(_, s)| s.iter());
    let (mut x1, mut y0, mut y1) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x1 = x1.max(x);
        if y.is_finite() {
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let labels = font_ready();
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if labels {
        builder.caption("training losses", ("sans-serif", 22)).x_label_area_size(35).y_label_area_size(60);
    }
    let mut chart = builder.build_cartesian_2d(0f64..x1, (y0 - pad)..(y1 + pad)).map_err(|e| err(e.to_string()))?;
    let mut mesh = chart.configure_mesh();
    if labels {
        mesh.x_desc("step").y_desc("loss");
    } else {
        mesh.disable_x_mesh().disable_y_mesh().x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| err(e.to_string()))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let drawn = chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2))).map_err(|e| err(e.to_string()))?;
        if labels {
            drawn.label(name.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
    }
    if labels {
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw().map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
