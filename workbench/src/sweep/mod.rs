//! `workbench sweep`: a grid of methods (strategy and estimator choices) over seeds, sharing
//! the cached teacher signals, skipping runs already complete, and writing a comparison table
//! (Markdown and CSV, mean ± std per method) and an SVG bar chart with error bars. The grid is
//! a graph of jobs ([`graph`]) that runs on this machine ([`local`]) or on a Slurm cluster
//! ([`slurm`]); [`status`] tells where each cell stands.

pub mod graph;
pub mod local;
pub mod slurm;
pub mod status;

use std::path::{Path, PathBuf};

use figment::{
    value::{Dict, Map, Value},
    Figment, Metadata, Profile, Provider,
};
use plotters::{
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};
use serde::Deserialize;

use crate::{config, host::Registry, run, Error, Result};

/// `[sweep]`: the seeds and the methods to compare, and where the jobs run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSettings {
    pub seeds: Vec<u64>,
    pub methods: Vec<Method>,
    /// `local` (the default) or `slurm`; `--executor` overrides.
    pub executor: Option<Executor>,
    /// Local workers, each a `workbench` process with its share of the threads; `--jobs`
    /// overrides. 1 (the default) runs the jobs one after another in this process.
    pub jobs: Option<usize>,
    #[serde(default)]
    pub slurm: slurm::SlurmSettings,
}

/// Where a sweep's jobs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Executor {
    Local,
    Slurm,
}

impl std::str::FromStr for Executor {
    type Err = String;

    fn from_str(name: &str) -> std::result::Result<Self, String> {
        match name {
            "local" => Ok(Executor::Local),
            "slurm" => Ok(Executor::Slurm),
            other => Err(format!("no executor `{other}`; use `local` or `slurm`")),
        }
    }
}

/// One method: a strategy table and, when it needs scores, an estimator or a selector table;
/// they replace nothing, so the base config has none of them. A `student` table changes the
/// base config's `[student]` key by key for this method's runs (the folds of a cross-fitted
/// round are methods of one sweep that differ in `holdout_fold`), and `seeds` replaces
/// `sweep.seeds` for them (the folds need one seed, the round they select for three).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Method {
    pub name: String,
    pub strategy: Dict,
    pub estimator: Option<Dict>,
    pub selector: Option<Dict>,
    pub student: Option<Dict>,
    pub seeds: Option<Vec<u64>>,
}

#[derive(Deserialize)]
struct SweepFile {
    name: Option<String>,
    output: Option<PathBuf>,
    sweep: SweepSettings,
}

/// The per-run keys a method and seed set, as a figment provider.
struct RunKeys(Dict);

impl Provider for RunKeys {
    fn metadata(&self) -> Metadata {
        Metadata::named("sweep method")
    }

    fn data(&self) -> std::result::Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.0.clone()))
    }
}

pub(crate) fn slug(name: &str) -> String {
    let slug: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    slug.split('-').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("-")
}

/// Mean and sample standard deviation.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n.max(1.0);
    let variance =
        if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, variance.sqrt())
}

/// One line of the comparison: a method's (or a reference's) test accuracies over the seeds.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub method: String,
    pub accuracies: Vec<f64>,
    /// Teacher-selection accuracy on test and on the student's training texts.
    pub selection: Vec<f64>,
    pub selection_train: Vec<f64>,
    pub per_teacher: Vec<Vec<f64>>,
    pub min_coverage: Vec<f64>,
}

impl Summary {
    fn named(method: &str) -> Self {
        Self { method: method.into(), ..Self::default() }
    }

    fn add(&mut self, row: &crate::evaluate::ResultRow) {
        self.accuracies.push(row.accuracy);
        self.per_teacher.push(row.per_teacher.clone());
    }
}

/// A sweep config read: its base figment, settings and output directory.
pub struct Grid {
    base: Figment,
    name: String,
    pub dir: PathBuf,
    pub settings: SweepSettings,
}

impl Grid {
    pub fn open(files: &[PathBuf], sets: &[String]) -> Result<Self> {
        let base = config::sources(files, sets)?;
        let file: SweepFile = config::extract(&base)?;
        if file.sweep.methods.is_empty() || file.sweep.seeds.is_empty() {
            return Err(Error::InvalidConfig {
                problems: vec!["`sweep.methods` and `sweep.seeds` must not be empty".into()],
            });
        }
        let mut problems = Vec::new();
        let origin = |key: &str| config::key_origin(&base, key);
        if let Some(reason) = file.name.as_deref().and_then(config::run_name_problem) {
            problems.push(format!("{} = {reason}", origin("name")));
        }
        if let Some(reason) =
            file.output.as_ref().and_then(|p| config::control_character_problem(&p.display().to_string()))
        {
            problems.push(format!("{} = {reason}", origin("output")));
        }
        for (key, reason) in file.sweep.slurm.problems() {
            problems.push(format!("{} = {reason}", origin(&format!("sweep.slurm.{key}"))));
        }
        for (i, method) in file.sweep.methods.iter().enumerate() {
            if let Some(reason) = config::control_character_problem(&method.name) {
                problems.push(format!("`sweep.methods`: the name {reason}"));
            }
            if method.seeds.as_ref().is_some_and(Vec::is_empty) {
                problems.push(format!(
                    "`sweep.methods`: `{}` has empty `seeds` (leave it out for `sweep.seeds`)",
                    method.name
                ));
            }
            if let Some(earlier) = file.sweep.methods[..i].iter().find(|m| slug(&m.name) == slug(&method.name)) {
                problems.push(format!(
                    "`sweep.methods`: `{}` and `{}` would share the run directories `{}-seed*`; rename one",
                    earlier.name,
                    method.name,
                    slug(&method.name)
                ));
            }
        }
        if !problems.is_empty() {
            return Err(Error::InvalidConfig { problems });
        }
        let name = file.name.unwrap_or_else(|| "sweep".into());
        let dir = file.output.unwrap_or_else(|| PathBuf::from("runs")).join(&name);
        Ok(Self { base, name, dir, settings: file.sweep })
    }

    /// The seeds of a method's runs.
    pub fn seeds<'a>(&'a self, method: &'a Method) -> &'a [u64] {
        method.seeds.as_deref().unwrap_or(&self.settings.seeds)
    }

    /// The validated config of one method and seed.
    fn resolve(&self, method: &Method, seed: u64, registry: &Registry) -> Result<config::ResolvedConfig> {
        let mut keys = Dict::new();
        keys.insert("name".into(), Value::from(format!("{}-seed{seed}", slug(&method.name))));
        keys.insert("output".into(), Value::from(self.dir.display().to_string()));
        keys.insert("seed".into(), Value::from(seed));
        keys.insert("strategy".into(), Value::from(method.strategy.clone()));
        if let Some(estimator) = &method.estimator {
            keys.insert("estimator".into(), Value::from(estimator.clone()));
        }
        if let Some(selector) = &method.selector {
            keys.insert("selector".into(), Value::from(selector.clone()));
        }
        if let Some(student) = &method.student {
            keys.insert("student".into(), Value::from(student.clone()));
        }
        let figment = Figment::from(self.base.clone()).merge(RunKeys(keys));
        config::LoadedConfig::from_figment(figment, &self.name)?.validate(registry)
    }
}

/// How a job starts as a process of its own: the `workbench` binary, the global options this
/// sweep was started with, and the same config files and `--set`s, so that every job resolves
/// the same config whichever executor starts it.
#[derive(Debug, Clone)]
pub struct JobCommand {
    pub program: PathBuf,
    /// Options before the subcommand (`--plugin-dir DIR`, `--isolate-plugins`, ...).
    pub global: Vec<String>,
    /// Absolute paths: a job may start in another directory or on another node.
    pub files: Vec<PathBuf>,
    pub sets: Vec<String>,
}

impl JobCommand {
    /// `GLOBAL... sweep FILES... --set KEY=VALUE...`
    pub fn base_args(&self) -> Vec<String> {
        let files = self.files.iter().map(|f| f.display().to_string());
        let sets = self.sets.iter().flat_map(|s| ["--set".to_string(), s.clone()]);
        self.global.iter().cloned().chain(["sweep".to_string()]).chain(files).chain(sets).collect()
    }

    /// The arguments of one job with its thread count.
    pub fn job_args(&self, job: &str, threads: &str) -> Vec<String> {
        let mut args = self.base_args();
        args.extend(["--set".into(), format!("threads={threads}"), "--job".into(), job.into()]);
        args
    }
}

/// How `workbench sweep` was asked to run.
pub struct SweepRequest {
    pub executor: Option<Executor>,
    pub jobs: Option<usize>,
    pub dry_run: bool,
    /// Also the config files and `--set`s of the sweep itself.
    pub command: JobCommand,
}

/// What `workbench sweep` did.
pub enum SweepOutcome {
    /// The local executor ran what was left; the comparison is written.
    Ran {
        dir: PathBuf,
        comparison: Comparison,
        /// Cells complete before this sweep started.
        skipped: usize,
        failures: Vec<local::Failure>,
    },
    /// The jobs went to Slurm (or nothing was left to submit).
    Submitted { dir: PathBuf, submitted: slurm::Submitted },
    /// `--dry-run` with the local executor: the jobs it would run, in order.
    Planned(Vec<String>),
}

/// Runs the sweep with its executor: whatever is not complete yet.
pub fn sweep(request: &SweepRequest, registry: &Registry) -> Result<SweepOutcome> {
    let grid = Grid::open(&request.command.files, &request.command.sets)?;
    let graph = graph::Graph::plan(&grid, registry)?;
    match request.executor.or(grid.settings.executor).unwrap_or(Executor::Local) {
        Executor::Slurm => {
            let submitted = slurm::submit(&grid, &graph, &request.command, request.dry_run)?;
            if let slurm::Submitted::Nothing { already_queued: 0 } = submitted {
                // Every cell is complete: the comparison is brought up to date here.
                aggregate(&grid, &graph)?;
            }
            Ok(SweepOutcome::Submitted { dir: grid.dir, submitted })
        }
        Executor::Local => {
            let workers = request.jobs.or(grid.settings.jobs).unwrap_or(1);
            if workers == 0 {
                return Err(Error::InvalidConfig { problems: vec!["`sweep.jobs` (--jobs) must be at least 1".into()] });
            }
            let pending = graph.pending(&[], &graph::succeeded(&grid.dir)?);
            if request.dry_run {
                return Ok(SweepOutcome::Planned(pending.jobs.iter().map(graph::Job::id).collect()));
            }
            let skipped = graph.cells.iter().filter(|c| c.is_complete()).count();
            let failures = local::execute(&grid, &graph, registry, &pending, workers, &request.command)?;
            let comparison = aggregate(&grid, &graph)?;
            Ok(SweepOutcome::Ran { dir: grid.dir, comparison, skipped, failures })
        }
    }
}

/// `workbench config check` of a sweep file: every method's config resolved and validated
/// (with the first seed), all problems at once, each naming its method.
pub fn check(files: &[PathBuf], sets: &[String], registry: &Registry) -> Result<Vec<(String, config::ResolvedConfig)>> {
    let grid = Grid::open(files, sets)?;
    let (mut resolved, mut problems) = (Vec::new(), Vec::new());
    for method in &grid.settings.methods {
        match grid.resolve(method, grid.seeds(method)[0], registry) {
            Ok(config) => resolved.push((method.name.clone(), config)),
            Err(Error::InvalidConfig { problems: found }) => {
                problems.extend(found.into_iter().map(|p| format!("method `{}`: {p}", method.name)))
            }
            Err(other) => problems.push(format!("method `{}`: {other}", method.name)),
        }
    }
    if !problems.is_empty() {
        return Err(Error::InvalidConfig { problems });
    }
    // The graph's own checks: selectors that read their own student, or each other's.
    graph::Graph::plan(&grid, registry)?;
    Ok(resolved)
}

/// `workbench sweep --job ID`: one job of the sweep's graph, in this process.
pub fn run_job(files: &[PathBuf], sets: &[String], registry: &Registry, id: &str) -> Result<graph::Outcome> {
    let grid = Grid::open(files, sets)?;
    let graph = graph::Graph::plan(&grid, registry)?;
    let job = graph.find(id).ok_or_else(|| Error::InvalidConfig {
        problems: vec![format!("the sweep has no job `{id}` (`workbench sweep --dry-run` lists them)")],
    })?;
    graph::execute_and_record(&grid, &graph, &job, registry)
}

/// `workbench sweep --timings`: the phase table, also written to `timings.md`.
pub fn timings(files: &[PathBuf], sets: &[String]) -> Result<String> {
    let grid = Grid::open(files, sets)?;
    let records = graph::records(&grid.dir)?;
    if records.is_empty() {
        return Err(Error::Artefact {
            path: grid.dir.join("jobs.jsonl"),
            reason: "no job of this sweep has run yet, so there is nothing to time: run the sweep first \
                     (`--timings` only reports)"
                .into(),
        });
    }
    let table = status::timings(&records);
    crate::files::write_atomically(&grid.dir.join("timings.md"), &table)?;
    Ok(table)
}

/// `workbench sweep --status`: every cell's state.
pub fn status(files: &[PathBuf], sets: &[String], registry: &Registry) -> Result<Vec<status::CellStatus>> {
    let grid = Grid::open(files, sets)?;
    let graph = graph::Graph::plan(&grid, registry)?;
    status::cells(&grid, &graph)
}

/// The comparison of the complete cells, as written to the sweep directory.
pub struct Comparison {
    pub summaries: Vec<Summary>,
    /// The cells without results, as `method seed N`.
    pub missing: Vec<String>,
}

/// Reads every complete cell's results and writes the comparison (Markdown, CSV, chart); the
/// cells without results are listed as missing.
pub fn aggregate(grid: &Grid, graph: &graph::Graph) -> Result<Comparison> {
    let mut summaries: Vec<Summary> = grid.settings.methods.iter().map(|m| Summary::named(&m.name)).collect();
    let mut missing = Vec::new();
    // The references do not depend on the method: read from each seed's first complete run.
    let (mut concat, mut oracle) = (Summary::named("teacher-concat (reference)"), Summary::named("all-label oracle"));
    let mut referenced = Vec::new();
    for cell in &graph.cells {
        let method = &grid.settings.methods[cell.method];
        if !cell.is_complete() {
            missing.push(format!("`{}` seed {}", method.name, cell.seed));
            continue;
        }
        let results = run::RunResults::load(&cell.run_dir())?;
        let summary = &mut summaries[cell.method];
        summary.add(&results.student);
        summary.min_coverage.push(results.min_coverage);
        if let Some(s) = results.selection.estimator {
            summary.selection.push(s.test);
            summary.selection_train.extend(s.train);
        }
        if !referenced.contains(&cell.seed) {
            referenced.push(cell.seed);
            concat.add(&results.teacher_concat);
            concat.selection.push(results.selection.concat_argmax.test);
            concat.selection_train.extend(results.selection.concat_argmax.train);
            if let Some(row) = &results.oracle {
                oracle.add(row);
            }
        }
    }
    // Rows that are no student: the teacher-concat ensemble (with the concat-argmax selector's
    // accuracy) and the all-label oracle, when configured.
    let references: Vec<Summary> =
        std::iter::once(concat).chain(Some(oracle).filter(|o| !o.accuracies.is_empty())).collect();
    let teachers: Vec<String> = graph.cells[0].config.teachers.keys().cloned().collect();
    write_table(&grid.dir, &summaries, &references, &teachers, &missing)?;
    write_chart(&grid.dir.join("comparison.svg"), &summaries, &references, &teachers)?;
    Ok(Comparison { summaries, missing })
}

/// `workbench sweep --selection-only`: every method that has an estimator (or a selector) scores
/// the student's training texts, the validation texts and the test split (the first seed's
/// config; the MC seed is the config's own) and the teacher-selection accuracies are compared
/// in `selection.md` and `selection.csv`, without training students. With `export_signals`,
/// each method's signals and gold labels go to `signals/<method>/` in the sweep directory.
pub fn selection_only(
    files: &[PathBuf],
    sets: &[String],
    registry: &Registry,
    export_signals: bool,
) -> Result<PathBuf> {
    let grid = Grid::open(files, sets)?;
    let mut outcomes = Vec::new();
    for method in grid.settings.methods.iter().filter(|m| m.estimator.is_some() || m.selector.is_some()) {
        let resolved = grid.resolve(method, grid.seeds(method)[0], registry)?;
        tracing::info!(method = %method.name, "scoring the test split");
        let export = export_signals.then(|| grid.dir.join("signals").join(slug(&method.name)));
        outcomes.push((method, run::selection_only(&resolved, registry, export.as_deref())?));
    }
    let Some((_, first)) = outcomes.first() else {
        return Err(Error::InvalidConfig {
            problems: vec!["no method in `sweep.methods` has an `estimator` or a `selector`: nothing to compare".into()],
        });
    };
    let teachers: Vec<&str> = first.own_class.iter().map(|(t, _)| t.as_str()).collect();
    let own_class: Vec<String> = first.own_class.iter().map(|(t, a)| format!("`{t}` {a:.3}")).collect();
    let on_labels: String = teachers.iter().map(|t| format!(" test, on `{t}`'s labels |")).collect();
    let mut markdown = format!(
        "Teachers' accuracy on their own classes (test): {}.\n\n\
         | method | estimator | selection (training texts) | selection (validation) | selection (test) |{on_labels} scoring seconds | cost (deterministic passes) |\n|---|---|---|---|---|{}---|---|\n",
        own_class.join(", "),
        "---|".repeat(teachers.len())
    );
    let mut csv = CsvTable::new(
        ["method", "estimator", "selection_train", "selection_validation", "selection_test"]
            .map(String::from)
            .into_iter()
            .chain(teachers.iter().map(|t| format!("on_{t}")))
            .chain(["seconds".to_string(), "cost_passes".to_string()]),
    );
    let optional = |value: Option<f64>, digits: usize| value.map_or(String::new(), |v| format!("{v:.digits$}"));
    // The bar every certainty selector has to clear, from the same deterministic passes.
    let reference = ("concat-argmax (reference)".to_string(), "max-logit (one pass)".to_string(), first.concat_argmax);
    let rows = std::iter::once((reference.0, reference.1, reference.2, None, None, Some(1.0))).chain(
        outcomes.iter().map(|(method, outcome)| {
            let estimator = match (&method.estimator, &method.selector) {
                (_, Some(selector)) => format!("selector: {}", describe(selector)),
                (Some(estimator), None) => describe(estimator),
                (None, None) => String::new(),
            };
            (
                method.name.clone(),
                estimator,
                outcome.estimator,
                Some(&outcome.by_teacher),
                outcome.seconds,
                outcome.cost,
            )
        }),
    );
    for (name, estimator, selection, by_teacher, seconds, cost) in rows {
        let [train, validation] =
            [selection.train, selection.validation].map(|s| s.map_or("–".into(), |t| format!("{t:.4}")));
        let on_cells: String = match by_teacher {
            Some(by_teacher) => by_teacher.iter().map(|a| format!(" {a:.4} |")).collect(),
            None => " – |".repeat(teachers.len()),
        };
        let shown_seconds = match (by_teacher, seconds) {
            (None, _) => "–".to_string(),
            (_, None) => "cached".to_string(),
            (_, Some(s)) => format!("{s:.0}"),
        };
        let shown_cost = cost.map_or("–".into(), |c| format!("{c:.2}"));
        markdown += &format!(
            "| {name} | {estimator} | {train} | {validation} | {:.4} |{on_cells} {shown_seconds} | {shown_cost} |\n",
            selection.test
        );
        let on_values =
            by_teacher.map_or(vec![String::new(); teachers.len()], |b| b.iter().map(|a| format!("{a:.6}")).collect());
        csv.row(
            [
                name,
                estimator,
                optional(selection.train, 6),
                optional(selection.validation, 6),
                format!("{:.6}", selection.test),
            ]
            .into_iter()
            .chain(on_values)
            .chain([optional(seconds, 3), optional(cost, 3)]),
        );
    }
    let points: Vec<(String, f64, f64)> = outcomes
        .iter()
        .filter_map(|(method, outcome)| outcome.cost.map(|cost| (method.name.clone(), cost, outcome.estimator.test)))
        .collect();
    std::fs::create_dir_all(&grid.dir).map_err(Error::io(format!("creating {}", grid.dir.display())))?;
    write_cost_chart(&grid.dir.join("selection.svg"), &points)?;
    std::fs::write(grid.dir.join("selection.md"), markdown).map_err(Error::io("writing selection.md"))?;
    csv.write(&grid.dir.join("selection.csv"))?;
    Ok(grid.dir)
}

/// Teacher-selection accuracy against the scoring cost in deterministic passes, one labelled
/// point per estimator.
fn write_cost_chart(path: &Path, points: &[(String, f64, f64)]) -> Result<()> {
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (640, 440)).into_drawing_area();
        root.fill(&WHITE)?;
        let widest = points.iter().map(|p| p.1).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption("Teacher selection against scoring cost", ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..widest * 1.25 + 0.5, 0.0..1.0f64)?;
        chart
            .configure_mesh()
            .x_desc("cost (deterministic passes)")
            .y_desc("teacher-selection accuracy (test)")
            .draw()?;
        let rows = chart.plotting_area().get_pixel_range().1;
        let offsets = label_offsets(points, f64::from(rows.end - rows.start));
        chart.draw_series(points.iter().zip(offsets).map(|((name, cost, accuracy), dy)| {
            EmptyElement::at((*cost, *accuracy))
                + Circle::new((0, 0), 5, BLUE.filled())
                + PathElement::new(vec![(0, 0), (8, dy)], BLACK.mix(0.4))
                + Text::new(name.clone(), (10, dy - 6), ("sans-serif", 12).into_font())
        }))?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| Error::Chart { path: path.to_path_buf(), reason: e.to_string() })
}

/// Vertical pixel offsets of the point labels (the y axis spans 0..1 over `height` pixels), so
/// that the labels of points at the same cost stand at least a line apart, in the order of
/// their points' accuracies.
fn label_offsets(points: &[(String, f64, f64)], height: f64) -> Vec<i32> {
    const LINE: f64 = 14.0;
    let mut offsets = vec![0; points.len()];
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| points[a].1.total_cmp(&points[b].1).then(points[b].2.total_cmp(&points[a].2)));
    // Pixel y of the previous label at the same cost (the axis grows downwards in pixels).
    let mut previous: Option<(f64, f64)> = None;
    for i in order {
        let (_, cost, accuracy) = points[i];
        let natural = (1.0 - accuracy) * height;
        let y = match previous {
            Some((last_cost, last_y)) if (last_cost - cost).abs() < 0.05 => natural.max(last_y + LINE),
            _ => natural,
        };
        offsets[i] = (y - natural).round() as i32;
        previous = Some((cost, y));
    }
    offsets
}

/// An estimator table as one line, e.g. `mc-dropout passes=16 top_layers=1`.
fn describe(table: &Dict) -> String {
    let plugin = table.get("plugin").and_then(Value::as_str).unwrap_or("?").to_string();
    let params = table.iter().filter(|(k, _)| k.as_str() != "plugin").map(|(k, v)| match v.as_str() {
        Some(text) => format!("{k}={text}"),
        None => format!("{k}={}", serde_json::to_string(v).unwrap_or_default()),
    });
    std::iter::once(plugin).chain(params).collect::<Vec<_>>().join(" ")
}

fn cell(values: &[f64]) -> String {
    if values.is_empty() {
        return "–".into();
    }
    let (mean, std) = mean_std(values);
    format!("{mean:.4} ± {std:.4}")
}

/// The comparison as Markdown and CSV: union accuracy, accuracy on each teacher's labels (in
/// `teachers` order, as the runs report them), minimum coverage and selection accuracy on test
/// and on the training texts, mean ± std over seeds; the references close the table.
fn write_table(
    dir: &Path,
    summaries: &[Summary],
    references: &[Summary],
    teachers: &[String],
    missing: &[String],
) -> Result<()> {
    let on_labels: String = teachers.iter().map(|t| format!(" on `{t}`'s labels |")).collect();
    let mut markdown = format!(
        "| method | runs | test accuracy (union) |{on_labels} min coverage | selection (test) | selection (training texts) |\n\
         |---|---|---|{}---|---|---|\n",
        "---|".repeat(teachers.len())
    );
    let mut csv = CsvTable::new(
        ["method", "runs", "accuracy_mean", "accuracy_std", "selection_mean", "selection_std"]
            .map(String::from)
            .into_iter()
            .chain(teachers.iter().flat_map(|t| [format!("on_{t}_mean"), format!("on_{t}_std")]))
            .chain(
                ["min_coverage_mean", "min_coverage_std", "selection_train_mean", "selection_train_std"]
                    .map(String::from),
            ),
    );
    let nan_or = |values: &[f64]| if values.is_empty() { (f64::NAN, f64::NAN) } else { mean_std(values) };
    for s in summaries.iter().chain(references) {
        // Accuracy on teacher i's labels, one value per seed.
        let subset = |i: usize| -> Vec<f64> { s.per_teacher.iter().filter_map(|row| row.get(i).copied()).collect() };
        let subsets: String = (0..teachers.len()).map(|i| format!(" {} |", cell(&subset(i)))).collect();
        markdown += &format!(
            "| {} | {} | {} |{subsets} {} | {} | {} |\n",
            s.method,
            s.accuracies.len(),
            cell(&s.accuracies),
            cell(&s.min_coverage),
            cell(&s.selection),
            cell(&s.selection_train)
        );
        let pair = |(mean, std): (f64, f64)| [format!("{mean:.6}"), format!("{std:.6}")];
        let subsets = (0..teachers.len()).flat_map(|i| pair(mean_std(&subset(i))));
        csv.row(
            [s.method.clone(), s.accuracies.len().to_string()]
                .into_iter()
                .chain(pair(mean_std(&s.accuracies)))
                .chain(pair(nan_or(&s.selection)))
                .chain(subsets)
                .chain(pair(nan_or(&s.min_coverage)))
                .chain(pair(nan_or(&s.selection_train))),
        );
    }
    if !missing.is_empty() {
        markdown += &format!(
            "\nMissing cells (no results yet): {}. `workbench sweep --status` tells why; submitting the sweep again runs them.\n",
            missing.join(", ")
        );
    }
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    std::fs::write(dir.join("comparison.md"), markdown).map_err(Error::io("writing comparison.md"))?;
    csv.write(&dir.join("comparison.csv"))
}

/// A CSV table, quoted by the csv crate.
struct CsvTable(csv::Writer<Vec<u8>>);

impl CsvTable {
    fn new(header: impl IntoIterator<Item = String>) -> Self {
        let mut table = CsvTable(csv::Writer::from_writer(Vec::new()));
        table.row(header);
        table
    }

    fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        self.0.write_record(cells.into_iter().collect::<Vec<_>>()).expect("writing to memory cannot fail");
    }

    fn write(self, path: &Path) -> Result<()> {
        let bytes = self.0.into_inner().expect("writing to memory cannot fail");
        crate::files::write_atomically(path, bytes)
    }
}

/// Per method, a group of bars: the union accuracy (mean ± std over seeds) and the accuracy on
/// each teacher's labels beside it; a dashed line across all groups for each reference. The
/// y axis leaves room above 1.0 for the legend.
fn write_chart(path: &Path, summaries: &[Summary], references: &[Summary], teachers: &[String]) -> Result<()> {
    let groups = summaries.len();
    let bars = 1 + teachers.len();
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let width = 180 + (groups * (40 + 36 * bars)) as u32;
        let root = SVGBackend::new(path, (width.max(520), 460)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Student test accuracy (mean ± std over seeds)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..groups as f64, 0.0..1.3f64)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .y_labels(14)
            .y_label_formatter(&|y| if *y <= 1.0 + 1e-9 { format!("{y:.1}") } else { String::new() })
            .y_desc("accuracy")
            .draw()?;
        // Each group fills 80% of its unit: `bars` bars side by side, gaps between groups.
        let bar_width = 0.8 / bars as f64;
        let left = |group: usize, bar: usize| group as f64 + 0.1 + bar as f64 * bar_width;
        // Okabe-Ito colours after the union's blue, told apart with colour-blind eyes too.
        let palette = [RGBColor(230, 159, 0), RGBColor(86, 180, 233), RGBColor(204, 121, 167), RGBColor(213, 94, 0)];
        let colors: Vec<RGBColor> =
            std::iter::once(BLUE).chain((0..teachers.len()).map(|i| palette[i % palette.len()])).collect();
        let mean_on = |s: &Summary, teacher: usize| {
            mean_std(&s.per_teacher.iter().filter_map(|row| row.get(teacher).copied()).collect::<Vec<_>>()).0
        };
        for bar in 0..bars {
            let color = colors[bar];
            let rectangles = summaries.iter().enumerate().map(|(group, s)| {
                let height = if bar == 0 { mean_std(&s.accuracies).0 } else { mean_on(s, bar - 1) };
                let x = left(group, bar);
                Rectangle::new(
                    [(x, 0.0), (x + bar_width * 0.9, height)],
                    color.mix(if bar == 0 { 0.7 } else { 0.5 }).filled(),
                )
            });
            let label = if bar == 0 { "union".to_string() } else { format!("on {}'s labels", teachers[bar - 1]) };
            chart
                .draw_series(rectangles)?
                .label(label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.mix(0.6).filled()));
        }
        for (group, s) in summaries.iter().enumerate() {
            let (mean, std) = mean_std(&s.accuracies);
            let x = left(group, 0) + bar_width * 0.45;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x, (mean - std).max(0.0)), (x, (mean + std).min(1.0))],
                BLACK.stroke_width(2),
            )))?;
        }
        for (reference, color) in references.iter().zip([RED, GREEN]) {
            let (mean, _) = mean_std(&reference.accuracies);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.0, mean), (groups as f64, mean)],
                    8,
                    6,
                    color.stroke_width(2),
                ))?
                .label(format!("{} {mean:.3}", reference.method))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
        // Method names under their groups, in pixels below the axis.
        for (group, s) in summaries.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(group as f64 + 0.5, 0.0));
            let style = TextStyle::from(("sans-serif", 12)).pos(Pos::new(HPos::Center, VPos::Top));
            root.draw(&Text::new(s.method.clone(), (x, y + 8), style))?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| Error::Chart { path: path.to_path_buf(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std_by_hand() {
        // mean 2, deviations -1, 0, 1: sample variance 2 / 2 = 1
        assert_eq!(mean_std(&[1.0, 2.0, 3.0]), (2.0, 1.0));
        assert_eq!(mean_std(&[0.5]), (0.5, 0.0));
    }

    #[test]
    fn labels_of_points_at_one_cost_stand_a_line_apart() {
        // 340 px for 0..1: accuracies 0.61, 0.60, 0.59 at cost 1 sit at 132.6, 136.0, 139.4 px;
        // their labels go to 132.6, 146.6, 160.6 (14 px apart), offsets 0, 10.6, 21.2 -> 0, 11, 21.
        // The point at cost 3.3 keeps its own place, and so does one far below at cost 1.
        let point = |name: &str, cost: f64, accuracy: f64| (name.to_string(), cost, accuracy);
        let points = [
            point("b", 1.0, 0.60),
            point("far", 3.3, 0.60),
            point("a", 1.0, 0.61),
            point("c", 1.0, 0.59),
            point("low", 1.0, 0.2),
        ];
        assert_eq!(label_offsets(&points, 340.0), vec![11, 0, 0, 21, 0]);
    }

    #[test]
    fn charts_draw_one_or_several_methods_with_their_references() {
        let dir = tempfile::tempdir().unwrap();
        let method = |name: &str, accuracy: f64| Summary { accuracies: vec![accuracy], ..Summary::named(name) };
        let concat = method("teacher-concat (reference)", 0.468);
        for count in [1, 3] {
            let summaries: Vec<Summary> =
                (0..count).map(|i| method(&format!("method {i}"), 0.4 + 0.01 * i as f64)).collect();
            let path = dir.path().join(format!("chart-{count}.svg"));
            write_chart(&path, &summaries, std::slice::from_ref(&concat), &["a".to_string(), "b".to_string()]).unwrap();
            let svg = std::fs::read_to_string(&path).unwrap();
            assert!(svg.contains(&format!("method {}", count - 1)), "every method is labelled");
            assert!(svg.contains("teacher-concat (reference) 0.468"), "the reference line has its legend");
            assert!(svg.contains("on b&apos;s labels"), "each teacher's subset has its bars");
            // One rectangle per method and bar (union, a, b), plus the legend's and backgrounds.
            assert!(svg.matches("<rect").count() >= 3 * count, "{svg}");
        }
    }

    #[test]
    fn a_job_starts_with_the_sweeps_options_files_and_sets_then_its_threads_and_id() {
        let command = JobCommand {
            program: "/bin/workbench".into(),
            global: vec!["--plugin-dir".into(), "/p".into()],
            files: vec!["/c/a.toml".into(), "/c/b.toml".into()],
            sets: vec!["name=x".into()],
        };
        assert_eq!(
            command.job_args("student:3", "2"),
            [
                "--plugin-dir",
                "/p",
                "sweep",
                "/c/a.toml",
                "/c/b.toml",
                "--set",
                "name=x",
                "--set",
                "threads=2",
                "--job",
                "student:3"
            ]
        );
    }

    #[test]
    fn csv_cells_are_quoted_where_they_need_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = CsvTable::new(["method", "accuracy"].map(String::from));
        table.row(["MUKA (soft, \"rank\")".to_string(), "0.500000".to_string()]);
        table.row(["uhc".to_string(), "NaN".to_string()]);
        let path = dir.path().join("t.csv");
        table.write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "method,accuracy\n\"MUKA (soft, \"\"rank\"\")\",0.500000\nuhc,NaN\n"
        );
    }

    #[test]
    fn the_cost_chart_labels_each_estimator() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("selection.svg");
        let points = [("entropy".to_string(), 1.0, 0.56), ("mc-dropout 16".to_string(), 16.0, 0.58)];
        write_cost_chart(&path, &points).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("mc-dropout 16") && svg.contains("entropy"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 2, "{svg}");
    }

    #[test]
    fn method_names_become_directory_names() {
        assert_eq!(slug("MUKA (MC, soft, margin)"), "muka-mc-soft-margin");
    }
}
