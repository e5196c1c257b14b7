//! The local executor: the sweep's jobs on this machine, in dependency order. One worker runs
//! them one after another in this process; N workers run N `workbench` processes at a time,
//! each with its share of the thread budget and its log under `<sweep>/logs`.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
};

use super::{
    graph::{self, Graph, Job, JobRecord, Pending},
    Grid, JobCommand,
};
use crate::{host::Registry, Error, Result};

/// A job that did not complete, and why.
#[derive(Debug, Clone)]
pub struct Failure {
    pub job: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Waiting,
    Running,
    Done,
    Failed(String),
}

/// Runs the pending jobs with `workers` at a time; a failed job fails the jobs that wait for it
/// and no other. Returns the jobs that did not complete.
pub fn execute(
    grid: &Grid,
    graph: &Graph,
    registry: &Registry,
    pending: &Pending,
    workers: usize,
    command: &JobCommand,
) -> Result<Vec<Failure>> {
    let logs = grid.dir.join("logs");
    if workers > 1 {
        std::fs::create_dir_all(&logs).map_err(Error::io(format!("creating {}", logs.display())))?;
    }
    let budget = crate::host::thread_budget(graph.cells[0].config.threads);
    let threads = (budget / workers).max(1);
    let count = pending.jobs.len();
    let mut state = vec![State::Waiting; count];
    let (done_tx, done_rx) = mpsc::channel::<(usize, std::result::Result<(), String>)>();
    std::thread::scope(|scope| {
        let mut running = 0;
        loop {
            fail_dependents(pending, &mut state);
            while running < workers {
                let ready = (0..count)
                    .find(|&i| state[i] == State::Waiting && pending.needs[i].iter().all(|&d| state[d] == State::Done));
                let Some(i) = ready else { break };
                state[i] = State::Running;
                running += 1;
                let job = pending.jobs[i].clone();
                tracing::info!(job = %job.id(), "job started");
                if workers == 1 {
                    let result =
                        graph::execute_and_record(grid, graph, &job, registry).map(|_| ()).map_err(|e| e.to_string());
                    done_tx.send((i, result)).expect("the scheduler listens");
                } else {
                    let done_tx = done_tx.clone();
                    let (logs, dir) = (logs.as_path(), grid.dir.as_path());
                    scope.spawn(move || {
                        let result = run_process(command, &job, threads, logs, dir);
                        let _ = done_tx.send((i, result));
                    });
                }
            }
            if running == 0 {
                break;
            }
            let (i, result) = done_rx.recv().expect("a running job reports");
            running -= 1;
            let job = &pending.jobs[i];
            let ended = state.iter().filter(|s| matches!(s, State::Done | State::Failed(_))).count() + 1;
            let progress = format!("{ended}/{count}");
            match result {
                Ok(()) => {
                    tracing::info!(job = %job.id(), progress, "job done");
                    state[i] = State::Done;
                    if matches!(job, Job::Student(_)) {
                        crate::files::kill_point("run-complete");
                    }
                }
                Err(reason) => {
                    tracing::error!(job = %job.id(), progress, "job failed: {reason}");
                    state[i] = State::Failed(reason);
                }
            }
        }
    });
    Ok(pending
        .jobs
        .iter()
        .zip(state)
        .filter_map(|(job, state)| match state {
            State::Failed(reason) => Some(Failure { job: job.id(), reason }),
            _ => None,
        })
        .collect())
}

/// Marks every waiting job whose dependency failed (directly or not) as failed.
fn fail_dependents(pending: &Pending, state: &mut [State]) {
    loop {
        let blocked = (0..state.len()).find_map(|i| {
            let failed = pending.needs[i].iter().find(|&&d| matches!(state[d], State::Failed(_)))?;
            (state[i] == State::Waiting).then_some((i, *failed))
        });
        let Some((i, failed)) = blocked else { return };
        state[i] = State::Failed(format!("not run: `{}` failed", pending.jobs[failed].id()));
    }
}

/// Runs one job as a `workbench` process with `threads` threads, its output in its log file.
fn run_process(
    command: &JobCommand,
    job: &Job,
    threads: usize,
    logs: &Path,
    sweep_dir: &Path,
) -> std::result::Result<(), String> {
    let log = logs.join(format!("{}.log", super::slug(&job.id())));
    let file = std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let stderr = file.try_clone().map_err(|e| format!("opening {}: {e}", log.display()))?;
    let mut process = Command::new(&command.program);
    process.args(command.job_args(&job.id(), &threads.to_string()));
    let status = process
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(stderr)
        .status()
        .map_err(|e| format!("starting {}: {e}", command.program.display()))?;
    if status.success() {
        return Ok(());
    }
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let last = output.lines().rev().find(|l| l.starts_with("error:")).unwrap_or("no error message").to_string();
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = status.signal() {
        // The process could not log its own end.
        let entry = JobRecord::new(job, Err(format!("killed by signal {signal}")), 0.0);
        graph::record(sweep_dir, &entry).map_err(|e| e.to_string())?;
        return Err(format!("killed by signal {signal} (log: {})", log.display()));
    }
    Err(format!("{last} (log: {})", log.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_fails_every_job_that_waits_for_it_directly_or_not_and_no_other() {
        let jobs = vec![
            Job::Teacher("teachers.a".into()),
            Job::Teacher("teachers.b".into()),
            Job::Student(0),
            Job::Student(1),
        ];
        // student 0 waits for teacher a; student 1 waits for student 0 and teacher b.
        let pending = Pending { jobs, needs: vec![vec![], vec![], vec![0], vec![2, 1]] };
        let mut state = vec![State::Failed("boom".into()), State::Done, State::Waiting, State::Waiting];
        fail_dependents(&pending, &mut state);
        assert_eq!(
            state,
            [
                State::Failed("boom".into()),
                State::Done,
                State::Failed("not run: `teacher:teachers.a` failed".into()),
                State::Failed("not run: `student:0` failed".into()),
            ]
        );
    }
}
