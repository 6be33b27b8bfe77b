//! Grouping runs that differ only in their seed, and the Markdown tables of their scores.
//!
//! Rows are groups (labelled by their sweep point, or by the value of `--by KEY`, one table per
//! value of the other labels); columns are evaluation sets in the order the runs list them.
//! A cell is the mean over the group's seeds ± the sample standard deviation (n - 1 in the
//! denominator). For each metric kind with two or more columns, `mean` is each run's mean over
//! those columns, then mean ± std over seeds. `stability` (main metrics only: F1, accuracy,
//! ROUGE-L) is 1 - std / mean of that per-run score, the coefficient of variation subtracted
//! from 1, and is printed only with at least [`MIN_SEEDS_FOR_STABILITY`] seeds ("n/a"
//! otherwise).

use std::collections::BTreeMap;

use polyadapt::{Error, Result};

use super::runs::{Label, Run};

pub const MIN_SEEDS_FOR_STABILITY: usize = 5;

/// Metric key in `results.json`, title, whether it is a main metric (gets a stability column
/// and the ablation plots): F1 for QA, accuracy for pairs, ROUGE-L for generation.
pub const KINDS: &[(&str, &str, bool)] = &[
    ("f1", "F1", true),
    ("exact_match", "Exact match", false),
    ("accuracy", "Accuracy", true),
    ("rouge_l", "ROUGE-L", true),
    ("bleu", "BLEU", false),
    ("meteor", "METEOR", false),
];

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n - 1); none for one value.
    pub std: Option<f64>,
}

pub fn stats(xs: &[f64]) -> Option<Stats> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len();
    let mean = xs.iter().sum::<f64>() / n as f64;
    let std = (n > 1).then(|| (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64).sqrt());
    Some(Stats { n, mean, std })
}

/// 1 - coefficient of variation, with at least [`MIN_SEEDS_FOR_STABILITY`] values and a
/// positive mean.
pub fn stability(xs: &[f64]) -> Option<f64> {
    let s = stats(xs)?;
    match s.std {
        Some(std) if s.n >= MIN_SEEDS_FOR_STABILITY && s.mean > 0.0 => Some(1.0 - std / s.mean),
        _ => None,
    }
}

/// Runs that differ only in their seed.
pub struct Group<'a> {
    /// The labels that pick the table this group is in (with `--by`: the other labels).
    pub split: Vec<(String, Label)>,
    pub row: String,
    pub runs: Vec<&'a Run>,
}

pub struct Layout<'a> {
    pub row_header: String,
    pub groups: Vec<Group<'a>>,
    /// (task, set) of every evaluation set, in the order the runs list them.
    pub columns: Vec<(String, String)>,
}

impl Layout<'_> {
    pub fn column_name(&self, c: usize) -> String {
        let tasks: std::collections::BTreeSet<&str> = self.columns.iter().map(|(t, _)| t.as_str()).collect();
        let (task, set) = &self.columns[c];
        if tasks.len() > 1 {
            format!("{task}/{set}")
        } else {
            set.clone()
        }
    }

    /// Columns with metric `kind`.
    pub fn columns_with(&self, kind: &str) -> Vec<usize> {
        (0..self.columns.len()).filter(|&c| self.groups.iter().any(|g| g.runs.iter().any(|r| metric(r, &self.columns[c], kind).is_some()))).collect()
    }
}

pub fn metric(run: &Run, column: &(String, String), kind: &str) -> Option<f64> {
    run.scores.iter().find(|s| s.task == column.0 && s.set == column.1).and_then(|s| s.metrics.get(kind).copied())
}

/// A run's mean of `kind` over `cols` (none if it lacks one of them).
pub fn run_mean(run: &Run, layout: &Layout, cols: &[usize], kind: &str) -> Option<f64> {
    let v: Option<Vec<f64>> = cols.iter().map(|&c| metric(run, &layout.columns[c], kind)).collect();
    v.filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64)
}

/// A label of a run: one of its sweep labels, else a configuration key.
pub fn value_of(run: &Run, key: &str) -> Option<Label> {
    run.labels.iter().find(|(n, _)| n == key).map(|(_, v)| v.clone()).or_else(|| run.config.get(key).cloned())
}

/// Groups `runs` (sorted) and names their rows.
pub fn layout<'a>(runs: &'a [Run], by: Option<&str>) -> Result<Layout<'a>> {
    let same_names = runs.windows(2).all(|w| w[0].labels.iter().map(|l| &l.0).eq(w[1].labels.iter().map(|l| &l.0)));
    let row_header = match by {
        Some(k) => k.to_string(),
        None if same_names => runs[0].labels.iter().map(|l| l.0.as_str()).collect::<Vec<_>>().join(", "),
        None => "labels".into(),
    };
    type Key = (Vec<(String, Label)>, Vec<Label>, String);
    let mut groups: BTreeMap<Key, Vec<&Run>> = BTreeMap::new();
    for r in runs {
        let (split, row) = match by {
            Some(k) => {
                let v = value_of(r, k).ok_or_else(|| Error::Usage(format!("--by {k}: the run {} has no such label or configuration key", r.dir.display())))?;
                (r.labels.iter().filter(|(n, _)| n != k).cloned().collect(), vec![v])
            }
            None if same_names => (Vec::new(), r.labels.iter().map(|(_, v)| v.clone()).collect()),
            None => (Vec::new(), r.labels.iter().map(|(n, v)| Label { text: format!("{n}={}", v.text), num: None }).collect()),
        };
        groups.entry((split, row, r.identity.clone())).or_default().push(r);
    }
    let mut out: Vec<Group> = Vec::new();
    let mut seen: BTreeMap<(Vec<(String, Label)>, String), usize> = BTreeMap::new();
    for ((split, row, _), members) in groups {
        let text = row.iter().map(|l| l.text.as_str()).collect::<Vec<_>>().join(", ");
        let count = seen.entry((split.clone(), text.clone())).or_default();
        *count += 1;
        let mut seeds: Vec<u64> = members.iter().map(|r| r.seed).collect();
        seeds.sort_unstable();
        if seeds.windows(2).any(|w| w[0] == w[1]) {
            eprintln!("note: runs labelled `{text}` repeat a seed (the same run given twice?): each counts as one of the n");
        }
        let row = if *count > 1 {
            eprintln!("note: runs labelled `{text}` differ in more than their seed ({} and others): shown as separate rows", members[0].dir.display());
            format!("{text} ({count})")
        } else {
            text
        };
        out.push(Group { split, row, runs: members });
    }
    let mut columns: Vec<(String, String)> = Vec::new();
    for r in runs {
        for s in &r.scores {
            let c = (s.task.clone(), s.set.clone());
            if !columns.contains(&c) {
                columns.push(c);
            }
        }
    }
    Ok(Layout { row_header, groups: out, columns })
}

fn cell(s: Option<Stats>, seeds: usize) -> String {
    let Some(s) = s else { return "-".into() };
    let mut t = match s.std {
        Some(std) => format!("{:.1} ± {std:.1}", s.mean),
        None => format!("{:.1}", s.mean),
    };
    if s.n != seeds {
        t.push_str(&format!(" (n={})", s.n));
    }
    t
}

/// The whole report: a table per metric kind (and per value of the split labels).
pub fn render(layout: &Layout, n_runs: usize) -> String {
    let mut md = format!(
        "# Results\n\n{n_runs} run(s) in {} group(s) of runs that differ only in their seed. Cells: mean ± standard deviation over seeds (sample, n - 1), in points.\n",
        layout.groups.len()
    );
    for &(kind, title, main) in KINDS {
        let cols = layout.columns_with(kind);
        if cols.is_empty() {
            continue;
        }
        let mut splits: Vec<&Vec<(String, Label)>> = layout.groups.iter().map(|g| &g.split).collect();
        splits.dedup();
        for split in splits {
            let where_ = split.iter().map(|(n, v)| format!("{n}={}", v.text)).collect::<Vec<_>>().join(", ");
            md.push_str(&format!("\n## {title}{}\n\n", if where_.is_empty() { String::new() } else { format!(" ({where_})") }));
            let mut header = vec![layout.row_header.clone(), "seeds".into()];
            header.extend(cols.iter().map(|&c| layout.column_name(c)));
            let with_mean = cols.len() > 1;
            if with_mean {
                header.push("mean".into());
            }
            if main {
                header.push("stability".into());
            }
            md.push_str(&format!("| {} |\n", header.join(" | ")));
            md.push_str(&format!("|---|{}\n", "---:|".repeat(header.len() - 1)));
            for g in layout.groups.iter().filter(|g| &g.split == split) {
                let seeds = g.runs.len();
                let mut row = vec![g.row.clone(), seeds.to_string()];
                for &c in &cols {
                    let xs: Vec<f64> = g.runs.iter().filter_map(|r| metric(r, &layout.columns[c], kind)).collect();
                    row.push(cell(stats(&xs), seeds));
                }
                let per_run: Vec<f64> = g.runs.iter().filter_map(|r| run_mean(r, layout, &cols, kind)).collect();
                if with_mean {
                    row.push(cell(stats(&per_run), seeds));
                }
                if main {
                    row.push(stability(&per_run).map_or("n/a".into(), |s| format!("{s:.3}")));
                }
                md.push_str(&format!("| {} |\n", row.join(" | ")));
            }
        }
    }
    md.push_str(&format!(
        "\nmean: each run's mean over the table's columns, then mean ± std over seeds. stability: 1 - std / mean of that per-run score (1 minus the coefficient of variation across seeds), printed with at least {MIN_SEEDS_FOR_STABILITY} seeds.\n"
    ));
    md
}
