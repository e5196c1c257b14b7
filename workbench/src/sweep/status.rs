//! `workbench sweep --status`: where each cell (method x seed) stands, from its run directory,
//! the job log and, for cells submitted to Slurm, squeue / sacct.

use super::{
    graph::{self, Graph, Job},
    slurm, Grid,
};
use crate::{files::lock_holder, training::learner::saved_state, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellState {
    Done,
    Running,
    Failed,
    Pending,
}

impl CellState {
    pub fn name(self) -> &'static str {
        match self {
            CellState::Done => "done",
            CellState::Running => "running",
            CellState::Failed => "failed",
            CellState::Pending => "pending",
        }
    }
}

pub struct CellStatus {
    pub method: String,
    pub seed: u64,
    pub state: CellState,
    pub detail: String,
}

/// Whether the last holder of a run's lock is a live workbench process on this host.
fn held_here(run_dir: &std::path::Path) -> Option<String> {
    let lock = run_dir.join(".lock");
    if !lock.is_file() {
        return None;
    }
    let pid = lock_holder(&lock);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline).contains("workbench").then_some(pid)
}

/// Every cell's state, in the table's order.
pub fn cells(grid: &Grid, graph: &Graph) -> Result<Vec<CellStatus>> {
    let slurm_jobs = slurm::latest_cell_jobs(grid)?;
    let states = slurm::job_states(&slurm_jobs.values().cloned().collect::<Vec<_>>());
    let records = graph::records(&grid.dir)?;
    let mut out = Vec::new();
    for (index, cell) in graph.cells.iter().enumerate() {
        let dir = cell.run_dir();
        let slurm_state = slurm_jobs.get(&index).and_then(|id| Some((id, states.get(id)?)));
        let last_record = records.iter().rev().find(|r| r.job == Job::Student(index).id());
        let (state, detail) = if cell.is_complete() {
            let accuracy =
                crate::run::RunResults::load(&dir).map(|r| format!("test accuracy {:.4}", r.student.accuracy));
            (CellState::Done, accuracy.unwrap_or_default())
        } else if let Some((id, job)) = slurm_state.filter(|(_, job)| job.is_active()) {
            match job.state.as_str() {
                "PENDING" => (CellState::Pending, format!("Slurm job {id} pending ({})", job.reason)),
                other => (CellState::Running, format!("Slurm job {id} {}", other.to_lowercase())),
            }
        } else if let Some(pid) = held_here(&dir) {
            (CellState::Running, format!("pid {pid}"))
        } else if let Some((id, job)) = slurm_state.filter(|(_, job)| job.state != "COMPLETED") {
            (CellState::Failed, format!("Slurm job {id} {}; submitting again resumes it", job.state.to_lowercase()))
        } else if let Some(error) = last_record.and_then(|r| r.error.as_ref()) {
            (CellState::Failed, error.clone())
        } else if let Some(state) = saved_state(&dir)? {
            (CellState::Failed, format!("stopped after epoch {}; submitting again resumes it", state.epochs_done))
        } else {
            (CellState::Pending, "not started".into())
        };
        out.push(CellStatus {
            method: grid.settings.methods[cell.method].name.clone(),
            seed: cell.seed,
            state,
            detail,
        });
    }
    Ok(out)
}

/// The statuses as an aligned table with a count per state.
pub fn render(statuses: &[CellStatus]) -> String {
    let width = statuses.iter().map(|s| s.method.len()).max().unwrap_or(0).max("method".len());
    let mut out = format!("{:<width$}  seed  state    detail\n", "method");
    for s in statuses {
        out += &format!("{:<width$}  {:<4}  {:<7}  {}\n", s.method, s.seed, s.state.name(), s.detail);
    }
    let counts: Vec<String> = [CellState::Done, CellState::Running, CellState::Failed, CellState::Pending]
        .iter()
        .map(|state| format!("{} {}", statuses.iter().filter(|s| s.state == *state).count(), state.name()))
        .collect();
    out += &format!("{} cells: {}\n", statuses.len(), counts.join(", "));
    out
}

/// The phases of a sweep, in the order they run.
const PHASES: [&str; 5] =
    ["teacher training", "deterministic signals", "sampled signals (MC, members)", "student runs", "aggregation"];

fn phase(job: &str) -> usize {
    match job.split(':').next().unwrap_or_default() {
        "teacher" => 0,
        "signals" if job.contains(":deterministic") => 1,
        "signals" => 2,
        "student" => 3,
        _ => 4,
    }
}

/// `--timings`: wall time per phase, from the latest successful execution of each job in the
/// job log (a job that found its work done counts with the little time that took).
pub fn timings(records: &[graph::JobRecord]) -> String {
    let mut latest = std::collections::BTreeMap::new();
    for record in records.iter().filter(|r| r.outcome.is_some()) {
        latest.insert(record.job.as_str(), record.seconds);
    }
    let mut out = String::from("| phase | jobs | total seconds | longest job (s) |\n|---|---|---|---|\n");
    let mut total = 0.0;
    for (index, name) in PHASES.iter().enumerate() {
        let seconds: Vec<f64> = latest.iter().filter(|(job, _)| phase(job) == index).map(|(_, s)| *s).collect();
        let sum = seconds.iter().fold(0.0, |a, b| a + b);
        total += sum;
        let longest = seconds.iter().copied().fold(0.0, f64::max);
        out += &format!("| {name} | {} | {sum:.1} | {longest:.1} |\n", seconds.len());
    }
    out += &format!("| all (one worker) | {} | {total:.1} | |\n", latest.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::graph::{JobRecord, Outcome};

    fn record(job: &str, outcome: Option<Outcome>, seconds: f64) -> JobRecord {
        JobRecord { job: job.into(), outcome, error: None, seconds, host: "h".into(), pid: 1, slurm_job: None }
    }

    #[test]
    fn timings_sum_each_phase_from_the_latest_successful_runs() {
        let records = [
            record("teacher:teachers.a", Some(Outcome::Trained), 100.0),
            record("signals:teachers.a:train:deterministic", Some(Outcome::Computed), 10.0),
            record("signals:teachers.a:train:mc8-top0-lower0", Some(Outcome::Computed), 40.0),
            record("student:0", None, 5.0),
            record("student:0", Some(Outcome::Resumed), 30.0),
            record("student:1", Some(Outcome::Completed), 50.0),
        ];
        assert_eq!(
            timings(&records),
            "| phase | jobs | total seconds | longest job (s) |\n|---|---|---|---|\n\
             | teacher training | 1 | 100.0 | 100.0 |\n\
             | deterministic signals | 1 | 10.0 | 10.0 |\n\
             | sampled signals (MC, members) | 1 | 40.0 | 40.0 |\n\
             | student runs | 2 | 80.0 | 50.0 |\n\
             | aggregation | 0 | 0.0 | 0.0 |\n\
             | all (one worker) | 5 | 230.0 | |\n"
        );
    }
}
