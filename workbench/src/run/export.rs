//! `workbench sweep --selection-only --export-signals`: the teacher outputs an estimator scored
//! and the gold labels, split by split, for analyses outside the workbench (NumPy, R).

use std::{collections::HashMap, path::Path};

use candle_core::{Device, Tensor as CandleTensor};
use workbench_plugin_api::LabelSpace;

use super::{prepare::Teacher, signals::Signals};
use crate::{training::loss::to_candle, Error, Result};

/// One split to export: its name, its signals and its gold labels (none for an unlabelled
/// transfer set).
pub(super) struct Split<'a> {
    pub name: &'a str,
    pub signals: &'a Signals,
    pub gold: Option<&'a [u32]>,
}

/// Writes `<dir>/labels.json` (the union labels and, per teacher, the union index of each of
/// its labels in the order of its logits) and, per split, `<dir>/<split>.safetensors`: for
/// each teacher `<name>.deterministic` `[N, L_t]`, `<name>.hidden` `[N, H]` (the pooled state
/// of the deterministic pass, where the teacher has one), `<name>.sampled` `[S, M, L_t]`
/// (the estimator's passes over M of the N texts, all of them but under a share plan) and
/// `<name>.sampled_rows` `[M]` (which texts, ascending); `scores` `[N, T]` (the estimator's certainties, teachers in
/// config order) and `gold` `[N]` (union label indices).
pub(super) fn write(dir: &Path, labels: &LabelSpace, teachers: &[Teacher], splits: &[Split<'_>]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let listed: Vec<_> = teachers
        .iter()
        .zip(&labels.maps)
        .map(|(teacher, map)| serde_json::json!({ "name": teacher.name, "labels": map }))
        .collect();
    let json = serde_json::json!({ "labels": labels.labels, "teachers": listed });
    let path = dir.join("labels.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("JSON serializes"))
        .map_err(Error::io(format!("writing {}", path.display())))?;
    for split in splits {
        write_split(dir, split, teachers)?;
    }
    Ok(())
}

fn write_split(dir: &Path, split: &Split<'_>, teachers: &[Teacher]) -> Result<()> {
    let device = Device::Cpu;
    let mut tensors = HashMap::new();
    for (i, teacher) in teachers.iter().enumerate() {
        let deterministic = &split.signals.deterministic[i];
        // `[1, N, L_t]`: one pass.
        tensors
            .insert(format!("{}.deterministic", teacher.name), to_candle(&deterministic.logits, &device)?.squeeze(0)?);
        if let Some(hidden) = &deterministic.hidden {
            tensors.insert(format!("{}.hidden", teacher.name), to_candle(hidden, &device)?);
        }
        if let Some(sampled) = split.signals.sampled.get(i) {
            tensors.insert(format!("{}.sampled", teacher.name), to_candle(&sampled.logits, &device)?);
            let rows = sampled.rows.as_slice();
            tensors
                .insert(format!("{}.sampled_rows", teacher.name), CandleTensor::from_slice(rows, rows.len(), &device)?);
        }
    }
    if let Some(scores) = &split.signals.scores {
        tensors.insert("scores".into(), to_candle(scores, &device)?);
    }
    if let Some(gold) = split.gold {
        tensors.insert("gold".into(), CandleTensor::from_slice(gold, gold.len(), &device)?);
    }
    Ok(workbench_models::save_safetensors(&tensors, &dir.join(format!("{}.safetensors", split.name)))?)
}
