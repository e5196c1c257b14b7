//! The Slurm executor: the sweep's jobs submitted with sbatch, one script per job (the student
//! runs as one job array), dependencies as `afterok`, the aggregation `afterany` so that it
//! reports whatever completed. Each submission is recorded in `<sweep>/slurm/submissions.jsonl`
//! with its Slurm job ids, which `--status` and the next submission read back.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::Command,
};

use serde::{Deserialize, Serialize};

use super::{
    graph::{Graph, Job, JobKind},
    Grid, JobCommand,
};
use crate::{files::write_atomically, Error, Result};

/// `[sweep.slurm]`: the binary the jobs run and each job kind's resources.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSettings {
    /// The `workbench` binary the jobs run, on a path every node sees; default: this one.
    pub binary: Option<PathBuf>,
    /// Resources of every job kind, unless the kind's own table says otherwise.
    #[serde(default)]
    pub all: JobResources,
    #[serde(default)]
    pub teacher: JobResources,
    #[serde(default)]
    pub signals: JobResources,
    #[serde(default)]
    pub student: JobResources,
    #[serde(default)]
    pub aggregate: JobResources,
}

/// What one kind of job asks Slurm for.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobResources {
    pub partition: Option<String>,
    /// Time limit, as sbatch reads it (`30`, `2:00:00`, `1-00:00:00`).
    pub time: Option<String>,
    /// CPUs per job, also the job's thread count (default 1).
    pub cpus: Option<u32>,
    /// Memory per job, as sbatch reads it (`8G`).
    pub memory: Option<String>,
    /// Further sbatch options, one per entry (`--qos=long`); the kind's follow those of `all`.
    #[serde(default)]
    pub extra: Vec<String>,
    /// A shell line run before the job (`module load ...`, `source env/bin/activate`).
    pub setup: Option<String>,
}

/// Why `value` cannot be given to sbatch as `what`, checked against the grammar sbatch reads (so
/// that nothing but the option reaches a job script's `#SBATCH` lines).
fn grammar_problem(value: &str, what: &str) -> Option<String> {
    let valid = match what {
        // Partition names, comma-separated.
        "partition" => {
            value.split(',').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)))
        }
        // minutes, m:s, h:m:s, d-h, d-h:m, d-h:m:s; or no limit.
        "time" => {
            let (days, clock) = value.split_once('-').map_or((None, value), |(d, rest)| (Some(d), rest));
            let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
            let parts: Vec<&str> = clock.split(':').collect();
            matches!(value, "UNLIMITED" | "INFINITE")
                || (days.is_none_or(digits) && parts.len() <= 3 && parts.iter().all(|p| digits(p)))
        }
        // A size with an optional unit.
        "memory" => {
            let number = value.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
            !number.is_empty() && number.chars().all(|c| c.is_ascii_digit()) && value.len() - number.len() <= 1
        }
        // One option: a dash, then no whitespace.
        "extra" => value.starts_with('-') && !value.chars().any(|c| c.is_whitespace() || c.is_control()),
        _ => !value.chars().any(char::is_control),
    };
    let expected = match what {
        "partition" => "partition names (letters, digits, `_`, `.`, `-`), comma-separated",
        "time" => "a time limit as sbatch reads it: minutes, h:m:s or d-h:m:s (`30`, `2:00:00`, `1-00:00:00`)",
        "memory" => "a size as sbatch reads it: a number with an optional unit K, M, G or T (`8G`)",
        "extra" => "one sbatch option per entry, starting with `-`, without spaces (`--qos=long`)",
        _ => "one line of printable characters",
    };
    (!valid).then(|| {
        let shown: String = value.chars().take(60).collect();
        format!("{shown:?}: expected {expected}")
    })
}

impl SlurmSettings {
    /// Values sbatch could not read, or that would reach a job script as more than the option
    /// they are: (key under `sweep.slurm`, reason).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Some(binary) = &self.binary {
            if let Some(reason) = crate::config::control_character_problem(&binary.display().to_string()) {
                problems.push(("binary".to_string(), reason));
            }
        }
        let kinds = [
            ("all", &self.all),
            ("teacher", &self.teacher),
            ("signals", &self.signals),
            ("student", &self.student),
            ("aggregate", &self.aggregate),
        ];
        for (kind, resources) in kinds {
            let mut check = |key: &str, value: Option<&str>, what: &str| {
                if let Some(reason) = value.and_then(|v| grammar_problem(v, what)) {
                    problems.push((format!("{kind}.{key}"), reason));
                }
            };
            check("partition", resources.partition.as_deref(), "partition");
            check("time", resources.time.as_deref(), "time");
            check("memory", resources.memory.as_deref(), "memory");
            check("setup", resources.setup.as_deref(), "line");
            for extra in &resources.extra {
                check("extra", Some(extra), "extra");
            }
        }
        problems
    }

    /// A kind's resources: its own table's, else those of `all`.
    pub fn resources(&self, kind: JobKind) -> JobResources {
        let own = match kind {
            JobKind::Teacher => &self.teacher,
            JobKind::Signals => &self.signals,
            JobKind::Student => &self.student,
            JobKind::Aggregate => &self.aggregate,
        };
        let all = &self.all;
        JobResources {
            partition: own.partition.clone().or_else(|| all.partition.clone()),
            time: own.time.clone().or_else(|| all.time.clone()),
            cpus: own.cpus.or(all.cpus),
            memory: own.memory.clone().or_else(|| all.memory.clone()),
            extra: all.extra.iter().chain(&own.extra).cloned().collect(),
            setup: own.setup.clone().or_else(|| all.setup.clone()),
        }
    }
}

/// One submission: the Slurm id of each job (`teacher:teachers.a` -> `12`) and of each cell's
/// array task (`3` -> `15_3`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubmissionRecord {
    pub submission: usize,
    pub jobs: BTreeMap<String, String>,
    pub cells: BTreeMap<usize, String>,
}

fn submissions_path(grid: &Grid) -> PathBuf {
    grid.dir.join("slurm").join("submissions.jsonl")
}

/// Every submission of this sweep, oldest first.
pub fn submissions(grid: &Grid) -> Result<Vec<SubmissionRecord>> {
    crate::files::read_json_lines(&submissions_path(grid))
}

/// The latest Slurm job (array task) of each cell.
pub fn latest_cell_jobs(grid: &Grid) -> Result<BTreeMap<usize, String>> {
    Ok(submissions(grid)?.into_iter().flat_map(|s| s.cells).collect())
}

/// A Slurm job's state (`RUNNING`, `PENDING`, `CANCELLED`, ...) and squeue's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    pub state: String,
    pub reason: String,
}

impl JobState {
    /// Queued or running: the job has not ended.
    pub fn is_active(&self) -> bool {
        matches!(
            self.state.as_str(),
            "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "REQUEUED" | "RESIZING" | "SUSPENDED" | "STAGE_OUT"
        )
    }
}

/// The states Slurm knows of these jobs: squeue (which keeps ended jobs for a few minutes),
/// then sacct where accounting is on. A job neither knows of is left out.
pub fn job_states(ids: &[String]) -> BTreeMap<String, JobState> {
    let mut states = BTreeMap::new();
    if ids.is_empty() {
        return states;
    }
    let arrays: Vec<&str> = ids.iter().map(|id| id.split('_').next().unwrap_or(id)).collect();
    let joined = arrays.join(",");
    let squeue = Command::new("squeue").args(["-r", "-h", "--states=all", "-o", "%i|%T|%r", "-j", &joined]).output();
    if let Some(output) = squeue.ok().filter(|o| o.status.success()) {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let fields: Vec<&str> = line.split('|').collect();
            if let [id, state, reason] = fields[..] {
                states.insert(id.to_string(), JobState { state: state.into(), reason: reason.into() });
            }
        }
    }
    let unknown: Vec<&str> = arrays.iter().copied().filter(|a| !states.keys().any(|k| k.starts_with(a))).collect();
    if !unknown.is_empty() {
        let sacct =
            Command::new("sacct").args(["-n", "-P", "-X", "-o", "JobID,State", "-j", &unknown.join(",")]).output();
        if let Some(output) = sacct.ok().filter(|o| o.status.success()) {
            for line in String::from_utf8_lossy(&output.stdout).lines() {
                if let Some((id, state)) = line.split_once('|') {
                    // sacct writes `CANCELLED by 0`.
                    let state = state.split_whitespace().next().unwrap_or_default().to_string();
                    states.insert(id.to_string(), JobState { state, reason: String::new() });
                }
            }
        }
    }
    states
}

/// The cells whose latest Slurm job is still queued or running.
fn active_cells(grid: &Grid) -> Result<Vec<usize>> {
    let latest = latest_cell_jobs(grid)?;
    let states = job_states(&latest.values().cloned().collect::<Vec<_>>());
    Ok(latest
        .into_iter()
        .filter(|(_, id)| states.get(id).is_some_and(JobState::is_active))
        .map(|(cell, _)| cell)
        .collect())
}

/// One sbatch script and how it is submitted.
struct Script {
    /// The job id (or `students` for the array), for records and messages.
    name: String,
    file: String,
    text: String,
    /// (dependency type, the names of the scripts it waits for).
    after: Option<(&'static str, Vec<String>)>,
}

/// What a submission did.
pub enum Submitted {
    /// Jobs went to Slurm.
    Jobs { record: SubmissionRecord, already_queued: usize, scripts: PathBuf },
    /// Every cell is complete or still queued from an earlier submission: nothing to submit.
    Nothing { already_queued: usize },
    /// `--dry-run`: the scripts and sbatch commands, nothing submitted.
    DryRun(String),
}

/// Submits what is left of the sweep, or with `dry_run` shows what it would submit.
pub fn submit(grid: &Grid, graph: &Graph, command: &JobCommand, dry_run: bool) -> Result<Submitted> {
    let settings = &grid.settings.slurm;
    let queued = if dry_run { Vec::new() } else { active_cells(grid)? };
    let pending = graph.pending(&queued, &super::graph::succeeded(&grid.dir)?);
    if pending.jobs.is_empty() {
        return Ok(Submitted::Nothing { already_queued: queued.len() });
    }
    let cwd = std::env::current_dir().map_err(Error::io("reading the working directory"))?;
    // sbatch reads each #SBATCH line word by word, and a newline would end it: these paths go there.
    for (what, path) in
        [("the directory the sweep is submitted from", &cwd), ("the sweep's directory", &logs_dir(grid))]
    {
        let text = path.display().to_string();
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Error::InvalidConfig {
                problems: vec![format!(
                    "{what}, {text:?}, holds a space or a control character, which a job script's #SBATCH lines \
                     cannot carry: submit from (and write the sweep to) a path without them"
                )],
            });
        }
    }
    let program = settings.binary.clone().unwrap_or_else(|| command.program.clone());
    let base = std::iter::once(program.display().to_string())
        .chain(command.base_args())
        .map(|arg| quote(&arg))
        .collect::<Result<Vec<_>>>()?
        .join(" ");
    let script = |kind: JobKind, name: &str, job_arg: &str, array: Option<&str>| -> Result<String> {
        let resources = settings.resources(kind);
        let logs = logs_dir(grid);
        let mut text = String::from("#!/bin/bash\n");
        let mut directives = vec![
            format!("--job-name=wb-{}-{}", super::slug(&grid.name), super::slug(name)),
            format!("--chdir={}", cwd.display()),
            format!("--output={}/%x-{}.out", logs.display(), if array.is_some() { "%A_%a" } else { "%j" }),
            format!("--cpus-per-task={}", resources.cpus.unwrap_or(1)),
        ];
        directives.extend(resources.partition.map(|p| format!("--partition={p}")));
        directives.extend(resources.time.map(|t| format!("--time={t}")));
        directives.extend(resources.memory.map(|m| format!("--mem={m}")));
        directives.extend(array.map(|a| format!("--array={a}")));
        directives.extend(resources.extra);
        for directive in directives {
            text += &format!("#SBATCH {directive}\n");
        }
        text += "set -euo pipefail\n";
        if let Some(setup) = resources.setup {
            text += &format!("{setup}\n");
        }
        text += &format!("exec {base} --set \"threads=${{SLURM_CPUS_PER_TASK:-1}}\" --job {job_arg}\n");
        Ok(text)
    };
    let mut scripts = Vec::new();
    let (mut teachers, mut signals, mut cells) = (Vec::new(), Vec::new(), Vec::new());
    for job in &pending.jobs {
        let id = job.id();
        let file = format!("{}.sh", super::slug(&id));
        match job {
            Job::Teacher(_) => {
                scripts.push(Script {
                    name: id.clone(),
                    file,
                    text: script(job.kind(), &id, &quote(&id)?, None)?,
                    after: None,
                });
                teachers.push(id);
            }
            Job::Signals(_) => {
                let after = (!teachers.is_empty()).then(|| ("afterok", teachers.clone()));
                scripts.push(Script {
                    name: id.clone(),
                    file,
                    text: script(job.kind(), &id, &quote(&id)?, None)?,
                    after,
                });
                signals.push(id);
            }
            Job::Student(cell) => cells.push(*cell),
            Job::Aggregate => {}
        }
    }
    let mut ended_by = signals.clone();
    // One array per wave: a cell whose selector reads other cells' students starts after them.
    let waves = graph.waves()?;
    let mut waits: Vec<String> = teachers.iter().chain(&signals).cloned().collect();
    let mut array_of = BTreeMap::new();
    for (order, wave) in cells.iter().map(|&c| waves[c]).collect::<BTreeSet<_>>().into_iter().enumerate() {
        let members: Vec<usize> = cells.iter().copied().filter(|&c| waves[c] == wave).collect();
        let array: Vec<String> = members.iter().map(usize::to_string).collect();
        let name = if order == 0 { "students".to_string() } else { format!("students-{}", order + 1) };
        array_of.extend(members.into_iter().map(|c| (c, name.clone())));
        scripts.push(Script {
            name: name.clone(),
            file: format!("{name}.sh"),
            text: script(JobKind::Student, "student", "\"student:${SLURM_ARRAY_TASK_ID}\"", Some(&array.join(",")))?,
            after: (!waits.is_empty()).then_some(("afterok", waits.clone())),
        });
        ended_by.push(name.clone());
        waits.push(name);
    }
    ended_by.extend(teachers.iter().cloned());
    scripts.push(Script {
        name: "aggregate".into(),
        file: "aggregate.sh".into(),
        text: script(JobKind::Aggregate, "aggregate", "aggregate", None)?,
        after: Some(("afterany", ended_by)),
    });
    if dry_run {
        let mut out = String::new();
        for s in &scripts {
            let dependency = s.after.as_ref().map_or(String::new(), |(kind, names)| {
                let ids: Vec<String> = names.iter().map(|n| format!("<{n}>")).collect();
                format!(" --dependency={kind}:{} --kill-on-invalid-dep=yes", ids.join(":"))
            });
            out += &format!("# sbatch --parsable{dependency} {}   (job id <{}>)\n{}\n", s.file, s.name, s.text);
        }
        return Ok(Submitted::DryRun(out));
    }
    let previous = submissions(grid)?;
    let number = previous.len() + 1;
    let dir = grid.dir.join("slurm").join(format!("submission-{number}"));
    for sub in [dir.clone(), logs_dir(grid)] {
        std::fs::create_dir_all(&sub).map_err(Error::io(format!("creating {}", sub.display())))?;
    }
    let mut record = SubmissionRecord { submission: number, ..SubmissionRecord::default() };
    for s in &scripts {
        let path = dir.join(&s.file);
        write_atomically(&path, &s.text)?;
        let mut sbatch = Command::new("sbatch");
        sbatch.arg("--parsable");
        if let Some((kind, names)) = &s.after {
            let ids: Vec<&str> = names.iter().map(|n| record.jobs[n].as_str()).collect();
            sbatch.arg(format!("--dependency={kind}:{}", ids.join(":"))).arg("--kill-on-invalid-dep=yes");
        }
        let output = sbatch.arg(&path).output().map_err(Error::io("running sbatch (is Slurm installed here?)"))?;
        if !output.status.success() {
            return Err(Error::Slurm(format!(
                "sbatch {} failed: {}{}",
                path.display(),
                String::from_utf8_lossy(&output.stderr).trim(),
                if record.jobs.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (jobs already submitted: {})",
                        record.jobs.values().cloned().collect::<Vec<_>>().join(", ")
                    )
                }
            )));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let id = stdout.trim().split(';').next().unwrap_or_default().to_string();
        tracing::info!(job = %s.name, slurm_job = %id, "submitted");
        record.jobs.insert(s.name.clone(), id);
    }
    record.cells = array_of.into_iter().map(|(c, array)| (c, format!("{}_{c}", record.jobs[&array]))).collect();
    crate::files::append_json_line(&submissions_path(grid), &record)?;
    Ok(Submitted::Jobs { record, already_queued: queued.len(), scripts: dir })
}

/// An argument quoted for the shell.
fn quote(arg: &str) -> Result<String> {
    shlex::try_quote(arg)
        .map(|quoted| quoted.into_owned())
        .map_err(|e| Error::Slurm(format!("cannot write `{arg}` into a job script: {e}")))
}

/// Where the jobs' output goes.
fn logs_dir(grid: &Grid) -> PathBuf {
    grid.dir.join("slurm").join("logs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kinds_own_resources_win_over_all_and_extra_options_add_up() {
        let settings: SlurmSettings = toml::from_str(
            r#"
            all = { partition = "cpu", time = "1:00:00", cpus = 2, extra = ["--qos=normal"], setup = "module load gcc" }
            student = { cpus = 8, memory = "16G", extra = ["--exclusive"], setup = "source env" }
            "#,
        )
        .unwrap();
        let student = settings.resources(JobKind::Student);
        assert_eq!(
            student,
            JobResources {
                partition: Some("cpu".into()),
                time: Some("1:00:00".into()),
                cpus: Some(8),
                memory: Some("16G".into()),
                extra: vec!["--qos=normal".into(), "--exclusive".into()],
                setup: Some("source env".into()),
            }
        );
        let teacher = settings.resources(JobKind::Teacher);
        assert_eq!((teacher.cpus, teacher.memory, teacher.extra), (Some(2), None, vec!["--qos=normal".to_string()]));
        assert!(toml::from_str::<SlurmSettings>("student = { gpus = 1 }").is_err(), "unknown keys are refused");
    }

    #[test]
    fn queued_and_running_jobs_are_active_and_ended_ones_are_not() {
        let state = |s: &str| JobState { state: s.into(), reason: String::new() };
        for active in ["PENDING", "RUNNING", "COMPLETING"] {
            assert!(state(active).is_active(), "{active}");
        }
        for ended in ["COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY"] {
            assert!(!state(ended).is_active(), "{ended}");
        }
    }

    #[test]
    fn arguments_are_quoted_for_the_shell_only_where_needed() {
        assert_eq!(quote("teacher:teachers.a").unwrap(), "teacher:teachers.a");
        assert_eq!(quote("name=my run").unwrap(), "'name=my run'");
        assert_eq!(quote("it's").unwrap(), "\"it's\"");
    }
}
