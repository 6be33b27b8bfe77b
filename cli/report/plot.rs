//! PNG plots of the ablation curves: for each label whose values are numbers (prompt length,
//! lambda, ...), the main metric (F1, accuracy, ROUGE-L) against it, error bars one standard deviation
//! over seeds. With no other label, one line per evaluation set (language) and one for their
//! mean; with other labels (a method axis), one line per value of those, on the mean over the
//! evaluation sets. Text uses the font `train/plots.rs` finds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use polyadapt::{Error, Result};

use super::runs::{Label, Run};
use super::table::{metric, run_mean, stats, Layout, KINDS};
use crate::cli::train::plots::font_ready;

/// A line: its name and (x, mean, std) points sorted by x.
type Series = (String, Vec<(f64, f64, f64)>);

/// Writes every ablation plot into `dir`; returns the files written.
pub fn ablation_plots(layout: &Layout, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for axis in numeric_axes(layout) {
        for &(kind, title, main) in KINDS {
            let cols = layout.columns_with(kind);
            if !main || cols.is_empty() {
                continue;
            }
            let series = curves(layout, &axis, kind, &cols);
            if series.is_empty() {
                continue;
            }
            let safe: String = axis.chars().map(|c| if c.is_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
            let path = dir.join(format!("{safe}-{kind}.png"));
            draw(&path, &format!("{title} against {axis}"), &axis, title, &series)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// Labels that every group has, all numbers, with at least two distinct values.
fn numeric_axes(layout: &Layout) -> Vec<String> {
    let Some(first) = layout.groups.first().and_then(|g| g.runs.first()) else { return Vec::new() };
    first
        .labels
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| {
            let values: Option<BTreeSet<u64>> = layout.groups.iter().flat_map(|g| &g.runs).map(|r| label(&r.labels, n).and_then(|l| l.num).map(f64::to_bits)).collect();
            values.is_some_and(|v| v.len() > 1)
        })
        .collect()
}

fn label<'a>(labels: &'a [(String, Label)], name: &str) -> Option<&'a Label> {
    labels.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

/// The runs of one x value (its seeds).
type AtX<'a> = (f64, Vec<&'a Run>);

fn curves(layout: &Layout, axis: &str, kind: &str, cols: &[usize]) -> Vec<Series> {
    // Groups by (the other labels) then x; each group's runs are one x's seeds.
    let mut by_line: BTreeMap<Vec<(String, Label)>, Vec<AtX>> = BTreeMap::new();
    for g in &layout.groups {
        let r0 = g.runs[0];
        let Some(x) = label(&r0.labels, axis).and_then(|l| l.num) else { continue };
        let others: Vec<(String, Label)> = r0.labels.iter().filter(|(n, _)| n != axis).cloned().collect();
        by_line.entry(others).or_default().push((x, g.runs.clone()));
    }
    let point = |runs: &[&Run], f: &dyn Fn(&Run) -> Option<f64>| {
        let xs: Vec<f64> = runs.iter().filter_map(|r| f(r)).collect();
        stats(&xs).map(|s| (s.mean, s.std.unwrap_or(0.0)))
    };
    let mut series: Vec<Series> = Vec::new();
    let lines_per_set = by_line.len() == 1 && by_line.keys().next().is_some_and(|k| k.is_empty());
    for (others, mut xs) in by_line {
        xs.sort_by(|a, b| a.0.total_cmp(&b.0));
        if lines_per_set {
            for &c in cols {
                let pts = xs.iter().filter_map(|(x, runs)| point(runs, &|r| metric(r, &layout.columns[c], kind)).map(|(m, s)| (*x, m, s))).collect();
                series.push((layout.column_name(c), pts));
            }
        }
        if !lines_per_set || cols.len() > 1 {
            let name = if others.is_empty() { "mean".to_string() } else { others.iter().map(|(n, v)| format!("{n}={}", v.text)).collect::<Vec<_>>().join(", ") };
            let pts = xs.iter().filter_map(|(x, runs)| point(runs, &|r| run_mean(r, layout, cols, kind)).map(|(m, s)| (*x, m, s))).collect();
            series.push((name, pts));
        }
    }
    series.retain(|(_, pts): &Series| !pts.is_empty());
    series
}

fn draw(path: &Path, caption: &str, x_name: &str, y_name: &str, series: &[Series]) -> Result<()> {
    let err = |e: String| Error::format(path, format!("cannot draw the plot: {e}"));
    let pts = || series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, m, s) in pts() {
        (x0, x1) = (x0.min(x), x1.max(x));
        (y0, y1) = (y0.min(m - s), y1.max(m + s));
    }
    let xpad = ((x1 - x0) * 0.05).max(1e-6);
    let ypad = ((y1 - y0) * 0.08).max(0.5);
    let labels = font_ready();
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if labels {
        builder.caption(caption, ("sans-serif", 22)).x_label_area_size(35).y_label_area_size(60);
    }
    let mut chart = builder.build_cartesian_2d((x0 - xpad)..(x1 + xpad), (y0 - ypad)..(y1 + ypad)).map_err(|e| err(e.to_string()))?;
    let mut mesh = chart.configure_mesh();
    if labels {
        mesh.x_desc(x_name).y_desc(format!("{y_name} (points)"));
    } else {
        mesh.disable_x_mesh().disable_y_mesh().x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| err(e.to_string()))?;
    let cap = (x1 - x0).max(1e-6) * 0.008;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let line = chart.draw_series(LineSeries::new(pts.iter().map(|&(x, m, _)| (x, m)), color.stroke_width(2))).map_err(|e| err(e.to_string()))?;
        if labels {
            line.label(name.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        chart.draw_series(pts.iter().map(|&(x, m, _)| Circle::new((x, m), 3, color.filled()))).map_err(|e| err(e.to_string()))?;
        // Error bars: a vertical line of +- one std with short caps.
        let bars = pts.iter().filter(|p| p.2 > 0.0).flat_map(|&(x, m, s)| {
            [
                PathElement::new(vec![(x, m - s), (x, m + s)], color.stroke_width(1)),
                PathElement::new(vec![(x - cap, m - s), (x + cap, m - s)], color.stroke_width(1)),
                PathElement::new(vec![(x - cap, m + s), (x + cap, m + s)], color.stroke_width(1)),
            ]
        });
        chart.draw_series(bars).map_err(|e| err(e.to_string()))?;
    }
    if labels {
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw().map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
