//! Checkpoints that never lose work.
//!
//! A checkpoint is a directory `RUN_DIR/checkpoints/step-<N>/` holding `state.safetensors`
//! (the trainable parameters and the optimiser's moments) and `trainer.json` (the step and the
//! optimiser's counters). It is written under a temporary name, every file fsynced, then
//! renamed into place and the parent fsynced: a directory named `step-<N>` is always complete,
//! whatever moment the process is killed. Older checkpoints are removed only after the new one
//! is in place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use polyadapt::engine::tensor::Tensor;
use polyadapt::models::weights::{sync_dir, write_atomic, write_safetensors, TensorData, Weights};
use polyadapt::{Error, Result};

/// What besides tensors a resumed run needs (the optimiser keeps its counters as tensors).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimiser steps done.
    pub step: usize,
}

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Writes the checkpoint of `state.step` and keeps only the newest `keep` (at least 1).
pub fn save(run_dir: &Path, state: &TrainerState, tensors: &[(String, Tensor)], keep: usize) -> Result<PathBuf> {
    let root = checkpoints_dir(run_dir);
    std::fs::create_dir_all(&root).map_err(|e| Error::io("cannot create", &root, e))?;
    let dest = root.join(format!("step-{}", state.step));
    let tmp = root.join(format!(".tmp-step-{}-{}", state.step, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io("cannot create", &tmp, e))?;
    let data: Vec<(String, TensorData)> = tensors.iter().map(|(n, t)| (n.clone(), TensorData::from_tensor(t))).collect();
    write_safetensors(&tmp.join("state.safetensors"), &data, &BTreeMap::new())?;
    let json = serde_json::to_vec_pretty(state).expect("trainer state serialises");
    write_atomic(&tmp.join("trainer.json"), &json)?;
    sync_dir(Some(&tmp));
    if dest.exists() {
        // The same step saved again (a resumed run reaching it): replace it.
        std::fs::remove_dir_all(&dest).map_err(|e| Error::io("cannot replace", &dest, e))?;
    }
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io("cannot rename into place", &dest, e))?;
    sync_dir(Some(&root));
    prune(&root, keep.max(1))?;
    Ok(dest)
}

/// Steps of the complete checkpoints in `run_dir`, oldest first.
pub fn list(run_dir: &Path) -> Result<Vec<usize>> {
    let root = checkpoints_dir(run_dir);
    let Ok(entries) = std::fs::read_dir(&root) else { return Ok(Vec::new()) };
    let mut steps: Vec<usize> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix("step-")).and_then(|n| n.parse().ok()))
        .collect();
    steps.sort_unstable();
    Ok(steps)
}

fn prune(root: &Path, keep: usize) -> Result<()> {
    let run_dir = root.parent().unwrap_or(Path::new("."));
    let steps = list(run_dir)?;
    for step in &steps[..steps.len().saturating_sub(keep)] {
        let dir = root.join(format!("step-{step}"));
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io("cannot remove", &dir, e))?;
    }
    // Leftovers of a killed save.
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_name().to_string_lossy().starts_with(".tmp-step-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

/// A loaded checkpoint.
pub struct Loaded {
    pub state: TrainerState,
    pub tensors: Weights,
}

pub fn load(run_dir: &Path, step: usize) -> Result<Loaded> {
    let dir = checkpoints_dir(run_dir).join(format!("step-{step}"));
    let path = dir.join("trainer.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("cannot read", &path, e))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| Error::format(&path, e.to_string()))?;
    let tensors = Weights::open_file(&dir.join("state.safetensors"))?;
    Ok(Loaded { state, tensors })
}
