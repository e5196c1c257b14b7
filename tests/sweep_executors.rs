//! The sweep's executors end to end: the Slurm executor against a real single-node Slurm
//! (started by scripts/slurm-single-node.sh), the local executor with several workers, a cell
//! that fails without stopping the others, and the scripts `--dry-run` shows.

mod support;

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use support::{experiment, fixture_dir, repo_root, run, workbench};

const METHODS: &str = r#"
[[sweep.methods]]
name = "vanilla-kd"
strategy = { plugin = "vanilla-kd" }

[[sweep.methods]]
name = "muka"
strategy = { plugin = "muka" }
estimator = { plugin = "mc-dropout", passes = 4 }
"#;

/// A sweep of 2 methods x 2 seeds on the tiny experiment; one thread per job, so that every
/// executor computes with the same thread count.
fn sweep_config(dir: &Path, student_epochs: usize, extra: &str) -> PathBuf {
    let config = dir.join("sweep.toml");
    let text = experiment(dir, student_epochs).replace("seed = 0\n", "seed = 0\nthreads = 1\n")
        + "[sweep]\nseeds = [0, 1]\n"
        + extra
        + METHODS;
    std::fs::write(&config, text).unwrap();
    config
}

/// Says on the terminal, past the test harness's capture, that a test did not run.
fn skip_loudly(reason: &str) {
    let message = format!("\n*** SKIPPED (not passed): {reason} ***\n");
    match std::fs::OpenOptions::new().write(true).open("/dev/tty") {
        Ok(mut tty) => {
            let _ = tty.write_all(message.as_bytes());
        }
        Err(_) => {
            // No terminal (CI): the raw stderr descriptor is not captured either.
            use std::os::fd::FromRawFd;
            let mut stderr = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(2) });
            let _ = stderr.write_all(message.as_bytes());
        }
    }
}

/// A single-node Slurm under `dir`, stopped when dropped.
struct Slurm {
    dir: PathBuf,
    conf: PathBuf,
}

impl Slurm {
    /// Starts one, or says why it cannot (not root, no apt-get, daemons that do not start).
    fn start(dir: &Path) -> Result<Self, String> {
        let free_port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let script = repo_root().join("scripts/slurm-single-node.sh");
        let out = Command::new("bash")
            .arg(&script)
            .args(["start", dir.to_str().unwrap()])
            .env("SLURMCTLD_PORT", free_port().to_string())
            .env("SLURMD_PORT", free_port().to_string())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        let slurm = Slurm { dir: dir.to_path_buf(), conf: dir.join("slurm.conf") };
        if !out.status.success() {
            return Err(format!(
                "{} start failed ({}): {}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(slurm)
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("SLURM_CONF", &self.conf);
        command
    }

    /// Waits until no job of this cluster is pending or running.
    fn wait_idle(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            let out = self.command("squeue").args(["-h", "-o", "%i %T"]).output().unwrap();
            let queue = String::from_utf8_lossy(&out.stdout).to_string();
            if out.status.success() && queue.trim().is_empty() {
                return;
            }
            assert!(started.elapsed() < limit, "Slurm jobs still queued after {limit:?}: {queue}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("scripts/slurm-single-node.sh"))
            .args(["stop", self.dir.to_str().unwrap()])
            .status();
    }
}

fn job_log(sweep: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(sweep.join("jobs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// How often each job of `kind` ended with `outcome`, by job.
fn outcomes(log: &[serde_json::Value], kind: &str, outcome: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in log.iter().filter(|r| r["job"].as_str().unwrap().starts_with(kind)) {
        *counts.entry(record["job"].as_str().unwrap().to_string()).or_default() +=
            usize::from(record["outcome"] == outcome);
    }
    counts
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_sweep_submitted_to_slurm_matches_the_local_executor_and_resumes_a_cancelled_cell() {
    let dir = tempfile::tempdir().unwrap();
    let slurm = match Slurm::start(&dir.path().join("slurm")) {
        Ok(slurm) => slurm,
        Err(reason) => {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root with apt-get, so Slurm must start: {reason}");
            skip_loudly(&format!("the Slurm executor test needs a single-node Slurm: {reason}"));
            return;
        }
    };
    let config = sweep_config(dir.path(), 4, "");
    let config = config.to_str().unwrap();
    let sweep = |name: &str, args: &[&str]| {
        let mut command = workbench(&["sweep", config, "--set", &format!("name={name}")]);
        command.args(args).env("SLURM_CONF", &slurm.conf).current_dir(dir.path());
        run(&mut command)
    };
    let submitted = sweep("slurm", &["--executor", "slurm"]);
    assert!(submitted.ok, "{}", submitted.stderr);
    assert!(submitted.stdout.contains("submission 1: "), "{}", submitted.stdout);
    let runs = dir.path().join("runs/slurm");
    let record: serde_json::Value =
        serde_json::from_str(read(&runs.join("slurm/submissions.jsonl")).lines().next().unwrap()).unwrap();
    assert_eq!(record["cells"].as_object().unwrap().len(), 4, "{record}");
    assert!(record["jobs"]["teacher:teachers.a"].is_string(), "one job per missing teacher: {record}");

    // Cancel the first student run seen mid-training (an epoch saved, no report yet).
    let names = ["vanilla-kd-seed0", "vanilla-kd-seed1", "muka-seed0", "muka-seed1"];
    let started = Instant::now();
    let cancelled = loop {
        let running = (0..4).find(|&i| {
            let run = runs.join(names[i]);
            run.join("state/state.json").is_file() && !run.join("report.md").exists()
        });
        if let Some(cell) = running {
            let task = record["cells"][cell.to_string()].as_str().unwrap().to_string();
            let out = slurm.command("scancel").arg(&task).output().unwrap();
            assert!(out.status.success(), "scancel {task}: {}", String::from_utf8_lossy(&out.stderr));
            break cell;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "no student run started training");
        std::thread::sleep(Duration::from_millis(100));
    };
    slurm.wait_idle(Duration::from_secs(600));
    assert!(!runs.join(names[cancelled]).join("report.md").exists(), "the cancelled run did not complete");
    let status = sweep("slurm", &["--status"]);
    assert!(status.ok, "{}", status.stderr);
    let line = status.stdout.lines().find(|l| l.contains("cancelled")).unwrap_or_else(|| panic!("{}", status.stdout));
    assert!(line.contains("failed") && line.contains("submitting again resumes it"), "{}", status.stdout);
    assert!(status.stdout.contains("4 cells: 3 done, 0 running, 1 failed, 0 pending"), "{}", status.stdout);
    let partial = read(&runs.join("comparison.md"));
    assert!(
        partial.contains("Missing cells (no results yet): "),
        "the aggregation reports the missing cell: {partial}"
    );

    // Submitting again runs the cancelled cell only, from its last saved epoch.
    let again = sweep("slurm", &["--executor", "slurm"]);
    assert!(again.ok, "{}", again.stderr);
    assert!(again.stdout.contains("submission 2: ") && again.stdout.contains(", 1 student runs"), "{}", again.stdout);
    let second: serde_json::Value =
        serde_json::from_str(read(&runs.join("slurm/submissions.jsonl")).lines().nth(1).unwrap()).unwrap();
    let jobs: Vec<&String> = second["jobs"].as_object().unwrap().keys().collect();
    assert_eq!(jobs, ["aggregate", "students"], "the signals its cell reads are done: {second}");
    slurm.wait_idle(Duration::from_secs(600));
    let status = sweep("slurm", &["--status"]);
    assert!(status.stdout.contains("4 cells: 4 done, 0 running, 0 failed, 0 pending"), "{}", status.stdout);
    let log = job_log(&runs);
    let student = format!("student:{cancelled}");
    assert_eq!(outcomes(&log, &student, "resumed")[&student], 1, "{log:?}");
    // Each teacher trained once and each signal computed once, by their own jobs.
    let trained = outcomes(&log, "teacher:", "trained");
    assert_eq!(trained.len(), 2, "{trained:?}");
    assert!(trained.values().all(|&n| n == 1), "{trained:?}");
    let computed = outcomes(&log, "signals:", "computed");
    assert_eq!(computed.len(), 8, "2 teachers x 2 splits x (deterministic, MC): {computed:?}");
    assert!(computed.values().all(|&n| n == 1), "{computed:?}");
    for name in names {
        let manifest: serde_json::Value = serde_json::from_str(&read(&runs.join(name).join("manifest.json"))).unwrap();
        for signal in manifest["signals"].as_array().unwrap() {
            assert_eq!(signal["provenance"], "cached", "{name} read every signal from the cache: {signal}");
        }
    }
    assert!(log.iter().any(|r| r["job"] == "aggregate" && r["slurm_job"].is_string()), "Slurm ran the aggregation");

    // The local executor with two workers: the same table, byte for byte.
    let local = sweep("local", &["--executor", "local", "--jobs", "2"]);
    assert!(local.ok, "{}", local.stderr);
    assert_eq!(read(&dir.path().join("runs/local/comparison.csv")), read(&runs.join("comparison.csv")));
}

#[test]
fn a_failed_cell_does_not_stop_the_others_and_status_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let aborting = "\n[[sweep.methods]]\nname = \"aborting\"\nstrategy = { plugin = \"aborting\" }\n";
    let config = sweep_config(dir.path(), 1, "");
    std::fs::write(&config, read(&config).replace("seeds = [0, 1]", "seeds = [0]") + aborting).unwrap();
    let plugins = fixture_dir().to_str().unwrap();
    // In the workers' own process, where the abort kills the job (an isolated plugin's abort
    // fails its call instead: tests/reliability.rs).
    let sweep = |args: &[&str]| {
        let mut command =
            workbench(&["--in-process-plugins", "--plugin-dir", plugins, "sweep", config.to_str().unwrap()]);
        command.args(args);
        run(&mut command)
    };
    let out = sweep(&["--jobs", "2"]);
    assert!(!out.ok, "a failed cell fails the sweep");
    assert!(
        out.stderr.contains("1 of the sweep's jobs did not complete:\n  - `student:2`: killed by signal 6 (log: "),
        "{}",
        out.stderr
    );
    let runs = dir.path().join("runs/tiny");
    assert!(runs.join("vanilla-kd-seed0/report.md").is_file() && runs.join("muka-seed0/report.md").is_file());
    let table = read(&runs.join("comparison.md"));
    assert!(table.contains("Missing cells (no results yet): `aborting` seed 0."), "{table}");
    assert!(table.contains("| aborting | 0 | – |"), "{table}");
    let status = sweep(&["--status"]);
    assert!(status.ok, "{}", status.stderr);
    assert!(status.stdout.contains("aborting    0     failed   killed by signal 6"), "{}", status.stdout);
    assert!(status.stdout.contains("3 cells: 2 done, 0 running, 1 failed, 0 pending"), "{}", status.stdout);
}

#[test]
fn dry_runs_show_the_jobs_and_the_sbatch_scripts_with_each_kinds_resources() {
    let dir = tempfile::tempdir().unwrap();
    let slurm = r#"
[sweep.slurm]
binary = "/shared/bin/workbench"
all = { partition = "cpu", time = "1:00:00", extra = ["--qos=normal"], setup = "module load rust" }
student = { cpus = 4, memory = "8G", time = "3:00:00", extra = ["--exclusive"] }
"#;
    let config = sweep_config(dir.path(), 1, slurm);
    let config = config.to_str().unwrap();
    let local = run(&mut workbench(&["sweep", config, "--dry-run"]));
    assert!(local.ok, "{}", local.stderr);
    let jobs: Vec<&str> = local.stdout.lines().collect();
    assert_eq!(jobs.len(), 2 + 8 + 4, "{jobs:?}");
    assert_eq!(jobs[..3], ["teacher:teachers.a", "teacher:teachers.b", "signals:teachers.a:train:deterministic"]);
    assert_eq!(jobs[10..], ["student:0", "student:1", "student:2", "student:3"]);

    let out = run(&mut workbench(&["sweep", config, "--executor", "slurm", "--dry-run"]));
    assert!(out.ok, "{}", out.stderr);
    let scripts = out.stdout;
    let student = scripts.split("# sbatch").find(|s| s.contains(" students.sh")).unwrap();
    assert!(student.contains("--dependency=afterok:<teacher:teachers.a>:<teacher:teachers.b>:<signals:"), "{student}");
    for line in [
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --partition=cpu",
        "#SBATCH --time=3:00:00",
        "#SBATCH --mem=8G",
        "#SBATCH --array=0,1,2,3",
        "#SBATCH --qos=normal\n#SBATCH --exclusive",
        "module load rust\nexec /shared/bin/workbench sweep ",
        "--set \"threads=${SLURM_CPUS_PER_TASK:-1}\" --job \"student:${SLURM_ARRAY_TASK_ID}\"",
    ] {
        assert!(student.contains(line), "`{line}` in {student}");
    }
    let teacher = scripts.split("# sbatch").find(|s| s.contains(" teacher-teachers-a.sh")).unwrap();
    assert!(
        teacher.contains("#SBATCH --cpus-per-task=1\n#SBATCH --partition=cpu\n#SBATCH --time=1:00:00\n"),
        "{teacher}"
    );
    assert!(!teacher.contains("--dependency") && !teacher.contains("--mem"), "{teacher}");
    let aggregate = scripts.split("# sbatch").find(|s| s.contains(" aggregate.sh")).unwrap();
    assert!(aggregate.contains("--dependency=afterany:<signals:"), "{aggregate}");
    assert!(!dir.path().join("runs").exists(), "a dry run writes nothing");

    let wrong = run(&mut workbench(&[
        "sweep",
        config,
        "--executor",
        "slurm",
        "--dry-run",
        "--set",
        "sweep.slurm.student.gpus=1",
    ]));
    assert!(!wrong.ok);
    assert!(wrong.stderr.contains("gpus") && wrong.stderr.contains("sweep.slurm.student"), "{}", wrong.stderr);
}

/// Every value that reaches a generated job script is checked against what its field may hold:
/// the five routes by which a newline once ended an `#SBATCH` line and ran the rest as a shell
/// command are each refused, naming the key (or the directory), and nothing runs.
#[test]
fn values_that_would_inject_into_a_job_script_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let attack = "x\ntouch PWNED #";
    let refused = |args: &[&str], cwd: &Path| {
        let mut command = workbench(args);
        let out = run(command.current_dir(cwd));
        assert!(!out.ok, "{args:?} must be refused:\n{}", out.stdout);
        out.stderr
    };
    let one_line =
        "\"x\\ntouch PWNED #\" holds the control character '\\n': it must be one line of printable characters";
    // (Slurm settings in the file, `--set`s, the refusal.)
    let cases: Vec<(&str, Vec<String>, String)> = vec![
        ("", vec!["--set".into(), format!("name={attack}")], format!("`name` (from --set name) = {one_line}")),
        ("", vec!["--set".into(), format!("output={attack}")], format!("`output` (from --set output) = {one_line}")),
        (
            "[sweep.slurm]\nall = { partition = \"x\\ntouch PWNED #\" }\n",
            vec![],
            "`sweep.slurm.all.partition` in FILE = \"x\\ntouch PWNED #\": expected partition names (letters, digits, \
             `_`, `.`, `-`), comma-separated"
                .into(),
        ),
        (
            "[sweep.slurm]\nstudent = { extra = [\"--qos=normal\\ntouch PWNED\"] }\n",
            vec![],
            "`sweep.slurm.student.extra` in FILE = \"--qos=normal\\ntouch PWNED\": expected one sbatch option per entry, \
             starting with `-`, without spaces (`--qos=long`)"
                .into(),
        ),
        (
            "",
            vec!["--set".into(), "sweep.slurm.all.time=2 hours".into()],
            "`sweep.slurm.all.time` (from --set sweep.slurm.all.time) = \"2 hours\": expected a time limit as sbatch \
             reads it: minutes, h:m:s or d-h:m:s (`30`, `2:00:00`, `1-00:00:00`)"
                .into(),
        ),
    ];
    let config = sweep_config(dir.path(), 1, "");
    let base = std::fs::read_to_string(&config).unwrap();
    for (i, (slurm, sets, expected)) in cases.into_iter().enumerate() {
        let case = dir.path().join(format!("case-{i}.toml"));
        std::fs::write(&case, format!("{base}{slurm}")).unwrap();
        let file = case.to_str().unwrap();
        let expected = expected.replace("FILE", file);
        let mut args = vec!["config", "check", file];
        args.extend(sets.iter().map(String::as_str));
        let stderr = refused(&args, dir.path());
        assert!(stderr.contains(&expected), "config check {slurm}{sets:?}: `{expected}` in {stderr}");
        let mut args = vec!["sweep", file, "--executor", "slurm", "--dry-run"];
        args.extend(sets.iter().map(String::as_str));
        let stderr = refused(&args, dir.path());
        assert!(stderr.contains(&expected), "sweep {slurm}{sets:?}: `{expected}` in {stderr}");
    }
    // The fifth route: the directory the sweep is submitted from.
    let bad_cwd = dir.path().join(attack);
    std::fs::create_dir(&bad_cwd).unwrap();
    let stderr = refused(&["sweep", config.to_str().unwrap(), "--executor", "slurm", "--dry-run"], &bad_cwd);
    assert!(
        stderr.contains(&format!(
            "the directory the sweep is submitted from, {:?}, holds a space or a control character",
            bad_cwd.display().to_string()
        )),
        "{stderr}"
    );
    assert!(!dir.path().join("PWNED").exists() && !bad_cwd.join("PWNED").exists());
}

/// The job scripts a dry run prints pass shellcheck (from Debian's package; installed here when
/// it is missing and apt-get can, as CI's root can).
#[test]
fn generated_job_scripts_pass_shellcheck() {
    let available = || Command::new("shellcheck").arg("--version").output().is_ok_and(|o| o.status.success());
    if !available() {
        let installed = Command::new("sh")
            .args(["-c", "command -v apt-get >/dev/null && apt-get install -y -qq shellcheck >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq shellcheck >/dev/null 2>&1)"])
            .status()
            .is_ok_and(|s| s.success());
        if !installed || !available() {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root with apt-get, so shellcheck must install");
            skip_loudly("shellcheck is not installed and apt-get cannot install it here");
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let slurm = "[sweep.slurm]\nall = { partition = \"cpu\", time = \"1:00:00\", extra = [\"--qos=normal\"], setup = \"module load rust\" }\n";
    let config = sweep_config(dir.path(), 1, slurm);
    let out = run(&mut workbench(&["sweep", config.to_str().unwrap(), "--executor", "slurm", "--dry-run"]));
    assert!(out.ok, "{}", out.stderr);
    let scripts: Vec<&str> = out.stdout.split("# sbatch").skip(1).collect();
    assert!(scripts.len() >= 4, "{}", out.stdout);
    for (i, script) in scripts.iter().enumerate() {
        let body = &script[script.find("#!/bin/bash").expect("a script")..];
        let path = dir.path().join(format!("script-{i}.sh"));
        std::fs::write(&path, body).unwrap();
        let checked = Command::new("shellcheck").arg(&path).output().unwrap();
        assert!(checked.status.success(), "shellcheck on\n{body}\n{}", String::from_utf8_lossy(&checked.stdout));
    }
}
