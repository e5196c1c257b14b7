//! Shared helpers of the end-to-end tests: the `workbench` binary, the plugin directory next to
//! it, and the purpose-built broken plugins under `tests/fixtures`.
#![allow(dead_code)]

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

use rand::{rngs::StdRng, seq::IndexedRandom, SeedableRng};

pub const WORKBENCH: &str = env!("CARGO_BIN_EXE_workbench");

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Where the workspace's plugins are built: next to the binary. `cargo test` builds the plugin
/// libraries only as dependencies (not where the host looks), so the workspace is built once
/// per test binary first; with a warm target directory this takes well under a second.
pub fn plugin_dir() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status =
            cargo().args(["build", "--workspace", "--quiet"]).current_dir(repo_root()).status().expect("cargo runs");
        assert!(status.success(), "building the workspace's plugins failed");
    });
    Path::new(WORKBENCH).parent().unwrap().to_path_buf()
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The `workbench` command with a clean environment: no inherited `WORKBENCH_*` or `RUST_LOG`.
pub fn workbench(args: &[&str]) -> Command {
    plugin_dir();
    let mut command = Command::new(WORKBENCH);
    command.args(args).current_dir(repo_root()).env_remove("RUST_LOG");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("WORKBENCH_")) {
        command.env_remove(key);
    }
    command
}

pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(command: &mut Command) -> Run {
    let Output { status, stdout, stderr } = command.output().expect("the workbench binary runs");
    Run { ok: status.success(), stdout: String::from_utf8(stdout).unwrap(), stderr: String::from_utf8(stderr).unwrap() }
}

/// Builds the fixtures workspace (`extra`: cargo arguments that narrow or change the build)
/// into `target` under the test's temporary directory; the directory holding the libraries.
fn build_fixtures(target: &str, extra: &[&str]) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join(target);
    let status = cargo()
        .args(["build", "--quiet"])
        .args(extra)
        .arg("--manifest-path")
        .arg(repo_root().join("tests/fixtures/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building tests/fixtures {extra:?} failed");
    target.join("debug")
}

/// Builds the broken plugins once per test binary, into their own target directory, and returns
/// the directory holding their libraries.
pub fn fixture_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_fixtures("fixtures-target", &[]))
}

pub fn fixture(stem: &str) -> PathBuf {
    fixture_dir().join(library_file(stem))
}

fn library_file(stem: &str) -> String {
    format!("{}{stem}.{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_EXTENSION)
}

/// The `context-echo` fixture built without `configure` (the API crate's `without-configure`
/// feature), in a target directory of its own.
pub fn context_echo_without_configure() -> &'static Path {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let features = ["-p", "context-echo", "--features", "workbench-plugin-api/without-configure"];
        build_fixtures("fixtures-target-without-configure", &features).join(library_file("context_echo"))
    })
}

const SPORT: [&str; 10] =
    ["football", "goal", "match", "team", "coach", "league", "striker", "season", "stadium", "players"];
const SCIENCE: [&str; 10] = [
    "physics",
    "experiment",
    "laboratory",
    "molecule",
    "theory",
    "research",
    "planet",
    "telescope",
    "energy",
    "scientists",
];
const FILLER: [&str; 6] = ["the", "a", "new", "big", "this", "today"];

/// A CSV of `per_class` short texts per topic, drawn from the topic's words.
pub fn write_csv(path: &Path, per_class: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut csv = String::from("text,label\n");
    for _ in 0..per_class {
        for (label, words) in [("sport", &SPORT), ("science", &SCIENCE)] {
            let text: Vec<&str> = (0..6)
                .map(|i| if i % 2 == 0 { *FILLER.choose(&mut rng).unwrap() } else { *words.choose(&mut rng).unwrap() })
                .collect();
            writeln!(csv, "{},{label}", text.join(" ")).unwrap();
        }
    }
    std::fs::write(path, csv).unwrap();
}

pub fn teach_config(dir: &Path, labels: &str) -> std::path::PathBuf {
    write_csv(&dir.join("train.csv"), 40, 1);
    write_csv(&dir.join("test.csv"), 20, 2);
    let config = format!(
        r#"
[teach]
model = "minilm"
layers = 1
{labels}
output = "{out}"
epochs = 3
learning_rate = 5e-4
batch_size = 8
max_length = 16
seed = 3

[data]
dataset = "files"
train = "{train}"
test = "{test}"
"#,
        out = dir.join("teacher").display(),
        train = dir.join("train.csv").display(),
        test = dir.join("test.csv").display(),
    );
    let path = dir.join("teach.toml");
    std::fs::write(&path, config).unwrap();
    path
}

pub const POLITICS: [&str; 10] =
    ["election", "senate", "vote", "minister", "parliament", "policy", "campaign", "president", "law", "party"];
pub const FOOD: [&str; 10] =
    ["recipe", "kitchen", "bread", "cheese", "soup", "chef", "dinner", "garlic", "tomato", "baking"];

/// A CSV of `per_class` short texts for each of four topics.
pub fn write_four_topics(path: &Path, per_class: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut csv = String::from("text,label\n");
    for _ in 0..per_class {
        for (label, words) in [("sport", &SPORT), ("science", &SCIENCE), ("politics", &POLITICS), ("food", &FOOD)] {
            let text: Vec<&str> = (0..6)
                .map(|i| if i % 2 == 0 { *FILLER.choose(&mut rng).unwrap() } else { *words.choose(&mut rng).unwrap() })
                .collect();
            writeln!(csv, "{},{label}", text.join(" ")).unwrap();
        }
    }
    std::fs::write(path, csv).unwrap();
}

/// A small real experiment in `dir`: two one-layer MiniLM teachers (sport+science,
/// politics+food) trained on first use, a one-layer student, a few hundred texts. The signal
/// cache is private to `dir`; the assets come from the shared cache.
pub fn experiment(dir: &Path, student_epochs: usize) -> String {
    write_four_topics(&dir.join("train.csv"), 50, 1);
    write_four_topics(&dir.join("test.csv"), 15, 2);
    let shared = workbench::assets::cache_dir(None);
    workbench::assets::MINILM.ensure(&shared).unwrap();
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(shared.join("assets"), cache.join("assets")).unwrap();
    let teacher = |name: &str, labels: &str| {
        format!(
            "[teachers.{name}]\nplugin = \"bert\"\ncheckpoints = [\"{dir}/teacher-{name}\"]\nmax_length = 16\n\
             teach = {{ layers = 1, labels = {labels}, epochs = 2, learning_rate = 1e-3, batch_size = 16, max_length = 16 }}\n\n",
            dir = dir.display()
        )
    };
    format!(
        "name = \"tiny\"\nseed = 0\noutput = \"{out}\"\ncache = \"{cache}\"\n\n\
         [data]\ndataset = \"files\"\ntrain = \"{train}\"\ntest = \"{test}\"\n\n{a}{b}\
         [student]\nlayers = 1\nepochs = {student_epochs}\nlearning_rate = 1e-3\nbatch_size = 16\nmax_length = 16\n\n",
        out = dir.join("runs").display(),
        cache = cache.display(),
        train = dir.join("train.csv").display(),
        test = dir.join("test.csv").display(),
        a = teacher("a", r#"["science", "sport"]"#),
        b = teacher("b", r#"["food", "politics"]"#),
    )
}
