//! Files that killed and concurrent runs cannot corrupt: whole-file writes that appear at once
//! (written beside, then renamed) and advisory locks that say who waits for whom.

use std::{
    fs::{File, TryLockError},
    io::Write,
    path::{Path, PathBuf},
};

use crate::{Error, Result};

/// Writes `bytes` to `path` so that readers see the old file or the new one, never a part:
/// a sibling file unique to this process, then a rename. Created with the user's umask.
pub fn write_atomically(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    let partial = partial_sibling(path);
    if let Err(error) = std::fs::write(&partial, bytes) {
        // A full disk leaves no partial file behind.
        let _ = std::fs::remove_file(&partial);
        return Err(Error::Io { context: format!("writing {}", path.display()), source: error });
    }
    std::fs::rename(&partial, path).map_err(Error::io(format!("writing {}", path.display())))
}

/// `<path>.partial-<pid>`: where this process prepares what becomes `path`.
pub fn partial_sibling(path: &Path) -> PathBuf {
    sibling(path, &format!(".partial-{}", std::process::id()))
}

/// `path` with `suffix` appended to its file name: a file or directory beside it.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// An advisory exclusive lock on a file, released when dropped (or when the process dies, so
/// a killed holder never leaves a stale lock).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

fn open_lock_file(path: &Path) -> Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(Error::io(format!("creating {}", parent.display())))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(Error::io(format!("opening lock file {}", path.display())))
}

impl FileLock {
    /// Takes the lock, waiting while another process holds it; `what` says in the log what
    /// the wait is for.
    pub fn acquire(path: &Path, what: &str) -> Result<Self> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                tracing::info!(lock = %path.display(), "waiting for another workbench process: {what}");
                file.lock().map_err(Error::io(format!("locking {}", path.display())))?;
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(format!("locking {}", path.display()))(e)),
        }
        Ok(Self::held(file))
    }

    /// Takes the lock if no other process holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<Self>> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self::held(file))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(Error::io(format!("locking {}", path.display()))(e)),
        }
    }

    /// Records the holder's pid in the file, for whoever finds it locked.
    fn held(mut file: File) -> Self {
        let _ = file.set_len(0).and_then(|()| writeln!(file, "{}", std::process::id()));
        Self { _file: file }
    }
}

/// Appends `record` as one JSON line; a lock beside the file keeps concurrent writers' lines
/// whole (also across nodes whose shared file system honours locks).
pub fn append_json_line(path: &Path, record: &impl serde::Serialize) -> Result<()> {
    let _lock = FileLock::acquire(&sibling(path, ".lock"), &format!("appending to {}", path.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(Error::io(format!("opening {}", path.display())))?;
    let line = serde_json::to_string(record).expect("a record serializes") + "\n";
    file.write_all(line.as_bytes()).map_err(Error::io(format!("writing {}", path.display())))
}

/// A JSON file the workbench wrote, read back through its type; `unusable` turns a parse
/// failure into the error that says what to do about it.
pub fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    unusable: impl FnOnce(serde_json::Error) -> Error,
) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(Error::io(format!("reading {}", path.display())))?;
    serde_json::from_str(&text).map_err(unusable)
}

/// Every line of a JSON-lines file, oldest first; none when the file does not exist.
pub fn read_json_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(Error::io(format!("reading {}", path.display())))?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| Error::Data {
                path: path.to_path_buf(),
                line: i + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Test hook: with `KILL_WORKBENCH_AT=<point>` in the environment the process aborts at that
/// point, as a kill there would (no destructor runs). The kill tests stop runs exactly where
/// a crash does the most harm; the variable is outside the `WORKBENCH_` config prefix.
pub fn kill_point(point: &str) {
    if std::env::var_os("KILL_WORKBENCH_AT").is_some_and(|p| p == point) {
        std::process::abort();
    }
}

/// The pid recorded in a lock file, for messages.
pub fn lock_holder(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_a_second_holder_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.lock");
        let first = FileLock::try_acquire(&path).unwrap().expect("free");
        assert!(FileLock::try_acquire(&path).unwrap().is_none(), "a second handle of the same file is refused");
        assert_eq!(lock_holder(&path), std::process::id().to_string());
        drop(first);
        assert!(FileLock::try_acquire(&path).unwrap().is_some());
    }

    #[test]
    fn atomic_writes_replace_whole_files_with_the_umask_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_atomically(&path, "one").unwrap();
        write_atomically(&path, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no partial file left");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_ne!(mode, 0o600, "written like any other file, not private");
    }
}
