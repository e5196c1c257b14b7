//! A sweep as a graph of jobs: one per teacher to train, one per teacher output (teacher x
//! split x sampling plan, so that MC passes are computed once and shared by every method and
//! seed), one per student run (method x seed) and one aggregation. Every executor runs the
//! same jobs through [`execute`], in the `workbench` binary, on the same resolved configs.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Instant,
};

use serde::{Deserialize, Serialize};
use workbench_plugin_api::{ComponentKind, SamplingPlan};

use super::Grid;
use crate::{
    config::ResolvedConfig,
    host::Registry,
    run::{self, SignalRequest},
    signal_cache::Provenance,
    training::learner::saved_state,
    Error, Result,
};

/// What a job does; each kind has its own Slurm resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Teacher,
    Signals,
    Student,
    Aggregate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Trains the teacher under this config key (`teachers.NAME` or `oracle`) when missing.
    Teacher(String),
    /// Computes one teacher output into the signal cache.
    Signals(SignalRequest),
    /// One student run: the index of its cell.
    Student(usize),
    /// The comparison table, CSV and chart of every complete cell.
    Aggregate,
}

impl Job {
    pub fn kind(&self) -> JobKind {
        match self {
            Job::Teacher(_) => JobKind::Teacher,
            Job::Signals(_) => JobKind::Signals,
            Job::Student(_) => JobKind::Student,
            Job::Aggregate => JobKind::Aggregate,
        }
    }

    /// The job's name on the command line (`--job ID`) and in the job log.
    pub fn id(&self) -> String {
        match self {
            Job::Teacher(key) => format!("teacher:{key}"),
            Job::Signals(request) => format!(
                "signals:{}:{}:{}{}",
                request.teacher,
                request.split.name(),
                plan_name(request.plan),
                if request.hidden { ":hidden" } else { "" }
            ),
            Job::Student(cell) => format!("student:{cell}"),
            Job::Aggregate => "aggregate".into(),
        }
    }
}

fn plan_name(plan: SamplingPlan) -> String {
    match plan {
        SamplingPlan::Deterministic => "deterministic".into(),
        SamplingPlan::Members => "members".into(),
        SamplingPlan::Stochastic { passes, top_layers, lower_passes } => {
            format!("mc{passes}-top{top_layers}-lower{lower_passes}")
        }
        SamplingPlan::StochasticShare { passes, per_mille, minimum } => {
            format!("mc{passes}-share{per_mille}-min{minimum}")
        }
    }
}

/// One student run of the grid: a method and a seed.
pub struct Cell {
    pub method: usize,
    pub seed: u64,
    pub config: ResolvedConfig,
    /// The teacher outputs the run reads.
    pub signals: Vec<SignalRequest>,
}

impl Cell {
    pub fn run_dir(&self) -> PathBuf {
        run::run_dir(&self.config)
    }

    pub fn is_complete(&self) -> bool {
        run::is_complete(&self.run_dir())
    }
}

/// Every job of a sweep, whether done or not.
pub struct Graph {
    /// Method-major: all seeds of the first method, then the next method's.
    pub cells: Vec<Cell>,
    /// Config keys of the teachers trained from a `teach` table.
    pub teachers: Vec<String>,
    pub signals: Vec<SignalRequest>,
    /// Per cell, the cells whose students its selector reads, found once when the sweep is
    /// planned (the waves and the pending jobs both follow them).
    producers: Vec<Vec<usize>>,
}

/// The jobs still to do, each with the indices (into `jobs`) of those it waits for. The
/// aggregation is not among them: it waits for every job, failed or not, and each executor
/// runs it last.
pub struct Pending {
    pub jobs: Vec<Job>,
    pub needs: Vec<Vec<usize>>,
}

impl Graph {
    pub fn plan(grid: &Grid, registry: &Registry) -> Result<Self> {
        let (mut cells, mut signals) = (Vec::new(), Vec::<SignalRequest>::new());
        for (index, method) in grid.settings.methods.iter().enumerate() {
            let mut requests = None;
            for &seed in grid.seeds(method) {
                let config = grid.resolve(method, seed, registry)?;
                // What a run reads depends on its method, not on its seed.
                let requests = match &requests {
                    Some(requests) => Vec::clone(requests),
                    None => requests.insert(signals_read(&config, registry)?).clone(),
                };
                for request in &requests {
                    if !signals.contains(request) {
                        signals.push(request.clone());
                    }
                }
                cells.push(Cell { method: index, seed, config, signals: requests });
            }
        }
        if cells[0].config.data.as_ref().is_some_and(|data| data.dataset == "files" && data.test.is_none()) {
            return Err(Error::InvalidConfig {
                problems: vec!["a sweep compares its students on labelled test texts: name them in `data.test`".into()],
            });
        }
        let own: Vec<String> = (0..cells.len())
            .filter(|&cell| reads_own_student(&cells[cell]))
            .map(|cell| format!("`{}` ({})", cells[cell].config.name, cells[cell].run_dir().join("student").display()))
            .collect();
        if !own.is_empty() {
            return Err(Error::InvalidConfig {
                problems: vec![format!(
                    "the selector of run {} reads the student that run trains: a run cannot select its teachers \
                     with its own student; name an earlier round's",
                    own.join(", ")
                )],
            });
        }
        let producers = (0..cells.len()).map(|cell| producers(&cells, cell)).collect();
        let teachers = run::taught_teachers(&cells[0].config);
        let graph = Self { cells, teachers, signals, producers };
        graph.waves()?;
        Ok(graph)
    }

    /// Each cell's wave: 0 for a cell that reads no other cell's student, else one more than
    /// the latest wave among the cells it reads. Refused where cells read each other's.
    pub fn waves(&self) -> Result<Vec<usize>> {
        let mut wave = vec![0; self.cells.len()];
        // A chain of n cells settles in n rounds; a round more that still moves is a cycle.
        for _ in 0..=self.cells.len() {
            let next: Vec<usize> =
                self.producers.iter().map(|p| p.iter().map(|&c| wave[c] + 1).max().unwrap_or(0)).collect();
            if next == wave {
                return Ok(wave);
            }
            wave = next;
        }
        let cycle: BTreeSet<String> = (0..self.cells.len())
            .filter(|&c| wave[c] > self.cells.len())
            .map(|c| format!("`{}`", self.cells[c].config.name))
            .collect();
        Err(Error::InvalidConfig {
            problems: vec![format!(
                "the selectors of runs {} read each other's students: none of them can run first",
                cycle.into_iter().collect::<Vec<_>>().join(", ")
            )],
        })
    }

    /// The config teacher and signal jobs run under: every cell's has the same teachers and data.
    fn base(&self) -> &ResolvedConfig {
        &self.cells[0].config
    }

    /// The cell a signal job computes for: the first that reads it.
    fn reader(&self, request: &SignalRequest) -> usize {
        self.cells.iter().position(|c| c.signals.contains(request)).expect("a planned signal has a reader")
    }

    /// The job named `id`, as [`Job::id`] spells it.
    pub fn find(&self, id: &str) -> Option<Job> {
        let teachers = self.teachers.iter().cloned().map(Job::Teacher);
        let signals = self.signals.iter().cloned().map(Job::Signals);
        let students = (0..self.cells.len()).map(Job::Student);
        teachers.chain(signals).chain(students).chain([Job::Aggregate]).find(|job| job.id() == id)
    }

    /// What is left: missing teachers, the cells not complete (minus `except`, those another
    /// submission is still running) and the signals those cells read, less those a job has
    /// computed or found already (`succeeded`, from the job log) from a teacher that is not
    /// trained again, and less those whose reader waits for other cells' students (its run
    /// computes them). A run computes any signal it finds missing all the same. A cell waits
    /// for the cells whose students its selector reads.
    pub fn pending(&self, except: &[usize], succeeded: &BTreeSet<String>) -> Pending {
        let cells: Vec<usize> =
            (0..self.cells.len()).filter(|i| !except.contains(i) && !self.cells[*i].is_complete()).collect();
        let teachers: Vec<Job> = self
            .teachers
            .iter()
            .filter(|key| !run::teacher_is_ready(self.base(), key))
            .cloned()
            .map(Job::Teacher)
            .collect();
        let retrained = |request: &SignalRequest| teachers.contains(&Job::Teacher(request.teacher.clone()));
        let signals: Vec<&SignalRequest> = self
            .signals
            .iter()
            .filter(|r| cells.iter().any(|&c| self.cells[c].signals.contains(r)))
            .filter(|r| retrained(r) || !succeeded.contains(&Job::Signals((*r).clone()).id()))
            .filter(|r| self.producers[self.reader(r)].is_empty())
            .collect();
        let mut jobs = teachers.clone();
        let mut needs = vec![Vec::new(); teachers.len()];
        let all_teachers: Vec<usize> = (0..teachers.len()).collect();
        for request in &signals {
            jobs.push(Job::Signals((*request).clone()));
            needs.push(all_teachers.clone());
        }
        let signal_index =
            |request: &SignalRequest| signals.iter().position(|r| *r == request).map(|i| teachers.len() + i);
        let first_student = jobs.len();
        let student_index = |cell: usize| cells.iter().position(|&c| c == cell).map(|i| first_student + i);
        for &cell in &cells {
            jobs.push(Job::Student(cell));
            let mut waits: Vec<usize> = self.cells[cell].signals.iter().filter_map(signal_index).collect();
            waits.extend(&all_teachers);
            waits.extend(self.producers[cell].iter().copied().filter_map(student_index));
            needs.push(waits);
        }
        Pending { jobs, needs }
    }
}

/// Whether the selector of `cell` names that cell's own `student` directory.
fn reads_own_student(cell: &Cell) -> bool {
    let Some(selector) = &cell.config.selector else { return false };
    let own = std::path::absolute(cell.run_dir().join("student")).ok();
    selector.texts().filter_map(|text| std::path::absolute(text).ok()).any(|named| Some(named) == own)
}

/// The cells whose students the selector of `cells[cell]` reads (one of its parameters names their
/// `student` directory): the fold students of a cross-fitted round, made in the same sweep.
fn producers(cells: &[Cell], cell: usize) -> Vec<usize> {
    let Some(selector) = &cells[cell].config.selector else { return Vec::new() };
    let named: Vec<PathBuf> = selector.texts().filter_map(|text| std::path::absolute(text).ok()).collect();
    let student = |c: &Cell| std::path::absolute(c.run_dir().join("student")).ok();
    (0..cells.len())
        .filter(|&other| other != cell && student(&cells[other]).is_some_and(|dir| named.contains(&dir)))
        .collect()
}

/// The teacher outputs a run of `config` reads: its estimator's sampling plan, and hidden
/// states when its strategy needs them.
fn signals_read(config: &ResolvedConfig, registry: &Registry) -> Result<Vec<SignalRequest>> {
    let plan = match &config.estimator {
        Some(e) => Some(registry.create_estimator(&e.component, e.library.as_deref(), &e.params)?.plan()?),
        None => None,
    };
    let (_, strategy) =
        registry.find(ComponentKind::Strategy, &config.strategy.component, config.strategy.library.as_deref())?;
    Ok(run::signal_requests(config, plan, strategy.signals.hidden_states))
}

/// What a job found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A teacher was trained.
    Trained,
    /// A teacher was already complete.
    Present,
    /// A teacher output was computed into the cache.
    Computed,
    /// A teacher output was in the cache already.
    Cached,
    /// A student run was trained and evaluated from its start.
    Completed,
    /// A stopped student run was continued from its last epoch.
    Resumed,
    /// A student run was complete already.
    AlreadyComplete,
    /// The comparison was written.
    Aggregated,
}

/// Runs one job in this process.
pub fn execute(grid: &Grid, graph: &Graph, job: &Job, registry: &Registry) -> Result<Outcome> {
    match job {
        Job::Teacher(key) => {
            Ok(if run::train_teacher(graph.base(), key)? { Outcome::Trained } else { Outcome::Present })
        }
        Job::Signals(request) => {
            let cell = &graph.cells[graph.reader(request)];
            Ok(match run::teacher_signals(&cell.config, registry, request)? {
                Provenance::Computed => Outcome::Computed,
                Provenance::Cached => Outcome::Cached,
            })
        }
        Job::Student(index) => {
            let cell = graph.cells.get(*index).ok_or_else(|| Error::InvalidConfig {
                problems: vec![format!("the sweep has {} cells; there is no cell {index}", graph.cells.len())],
            })?;
            let dir = cell.run_dir();
            if run::is_complete(&dir) {
                return Ok(Outcome::AlreadyComplete);
            }
            let resume = saved_state(&dir)?.is_some();
            tracing::info!(method = %grid.settings.methods[cell.method].name, seed = cell.seed, resume, "sweep run");
            run::run(&cell.config, registry, resume)?;
            Ok(if resume { Outcome::Resumed } else { Outcome::Completed })
        }
        Job::Aggregate => {
            super::aggregate(grid, graph)?;
            Ok(Outcome::Aggregated)
        }
    }
}

/// One line of the job log, `jobs.jsonl` in the sweep directory: every execution of every
/// job, whichever executor ran it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub job: String,
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
    pub seconds: f64,
    pub host: String,
    pub pid: u32,
    /// `SLURM_JOB_ID` (with the array task) when Slurm ran it.
    pub slurm_job: Option<String>,
}

fn log_path(sweep_dir: &Path) -> PathBuf {
    sweep_dir.join("jobs.jsonl")
}

/// Appends a record to the job log.
pub fn record(sweep_dir: &Path, record: &JobRecord) -> Result<()> {
    crate::files::append_json_line(&log_path(sweep_dir), record)
}

/// Every record of the job log, oldest first.
pub fn records(sweep_dir: &Path) -> Result<Vec<JobRecord>> {
    crate::files::read_json_lines(&log_path(sweep_dir))
}

/// The jobs whose latest execution succeeded.
pub fn succeeded(sweep_dir: &Path) -> Result<BTreeSet<String>> {
    let mut latest = std::collections::BTreeMap::new();
    for record in records(sweep_dir)? {
        latest.insert(record.job, record.outcome.is_some());
    }
    Ok(latest.into_iter().filter(|(_, ok)| *ok).map(|(job, _)| job).collect())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// Runs one job and logs what it did, or why it failed.
pub fn execute_and_record(grid: &Grid, graph: &Graph, job: &Job, registry: &Registry) -> Result<Outcome> {
    let started = Instant::now();
    let result = execute(grid, graph, job, registry);
    let ended = result.as_ref().copied().map_err(ToString::to_string);
    record(&grid.dir, &JobRecord::new(job, ended, started.elapsed().as_secs_f64()))?;
    result
}

impl JobRecord {
    /// What this process says of `job`: its outcome or error, on this host, in the Slurm job
    /// (and array task) this process runs in, if any.
    pub fn new(job: &Job, ended: std::result::Result<Outcome, String>, seconds: f64) -> Self {
        let slurm_job = match (std::env::var("SLURM_ARRAY_JOB_ID"), std::env::var("SLURM_ARRAY_TASK_ID")) {
            (Ok(array), Ok(task)) => Some(format!("{array}_{task}")),
            _ => std::env::var("SLURM_JOB_ID").ok(),
        };
        JobRecord {
            job: job.id(),
            outcome: ended.as_ref().ok().copied(),
            error: ended.err(),
            seconds,
            host: host_name(),
            pid: std::process::id(),
            slurm_job,
        }
    }
}
