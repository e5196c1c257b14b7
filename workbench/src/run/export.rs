//! `workbench sweep --selection-only --export-signals`: the teacher outputs an estimator scored
//! and the gold labels, split by split, for analyses outside the workbench (NumPy, R).

use std::{collections::HashMap, path::Path};

use candle_core::{Device, Tensor as CandleTensor};
use workbench_plugin_api::{LabelSpace, Tensor};

use super::{prepare::Teacher, signals::Signals};
use crate::{Error, Result};

/// Writes `<dir>/<split>.safetensors`: for each teacher `<name>.deterministic` `[N, L_t]`,
/// `<name>.hidden` `[N, H]` (the pooled state of the deterministic pass, where the teacher
/// has one) and `<name>.sampled` `[S, N, L_t]` (the estimator's passes); `scores` `[N, T]`
/// (the estimator's certainties, teachers in config order) and `gold` `[N]` (union label
/// indices; none for an unlabelled transfer set).
pub(super) fn write_split(
    dir: &Path,
    split: &str,
    signals: &Signals,
    gold: Option<&[u32]>,
    teachers: &[Teacher],
) -> Result<()> {
    let device = Device::Cpu;
    let plain = |tensor: &Tensor, shape: &[usize]| CandleTensor::from_slice(tensor.data(), shape, &device);
    let mut tensors = HashMap::new();
    for (i, teacher) in teachers.iter().enumerate() {
        let deterministic = &signals.deterministic[i];
        let shape = deterministic.logits.shape();
        tensors.insert(format!("{}.deterministic", teacher.name), plain(&deterministic.logits, &shape[1..])?);
        if let Some(hidden) = &deterministic.hidden {
            tensors.insert(format!("{}.hidden", teacher.name), plain(hidden, hidden.shape())?);
        }
        if let Some(sampled) = signals.sampled.get(i) {
            tensors.insert(format!("{}.sampled", teacher.name), plain(sampled, sampled.shape())?);
        }
    }
    if let Some(scores) = &signals.scores {
        tensors.insert("scores".into(), plain(scores, scores.shape())?);
    }
    if let Some(gold) = gold {
        tensors.insert("gold".into(), CandleTensor::from_slice(gold, gold.len(), &device)?);
    }
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    Ok(workbench_models::save_safetensors(&tensors, &dir.join(format!("{split}.safetensors")))?)
}

/// Writes `<dir>/labels.json`: the union labels and, per teacher, the union index of each of
/// its labels in the order of its logits.
pub(super) fn write_labels(dir: &Path, labels: &LabelSpace, teachers: &[Teacher]) -> Result<()> {
    let teachers: Vec<_> = teachers
        .iter()
        .zip(&labels.maps)
        .map(|(teacher, map)| serde_json::json!({ "name": teacher.name, "labels": map }))
        .collect();
    let json = serde_json::json!({ "labels": labels.labels, "teachers": teachers });
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let path = dir.join("labels.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("JSON serializes"))
        .map_err(Error::io(format!("writing {}", path.display())))
}
