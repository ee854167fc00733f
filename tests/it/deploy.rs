//! The shipped systemd unit and the README's install example agree: under the unit's
//! read-only file system, the example repository, the job's state folder, its history state
//! and the writer's parent cache are all writable.

fn read(path: &str) -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_string() + path).unwrap()
}

#[test]
fn the_backup_unit_can_write_where_the_readme_says() {
    let unit = read("scripts/systemd/custody-backup.service");
    let readme = read("README.md");
    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(|v| v.to_string())
            .collect()
    };
    assert!(value("ProtectSystem").contains(&"strict".to_string()));
    let mut writable: Vec<String> = value("ReadWritePaths")
        .iter()
        .flat_map(|v| {
            v.split_whitespace()
                .map(|p| p.trim_start_matches('-').to_string())
        })
        .collect();
    writable.extend(
        value("StateDirectory")
            .iter()
            .map(|d| format!("/var/lib/{d}")),
    );
    writable.extend(
        value("CacheDirectory")
            .iter()
            .map(|d| format!("/var/cache/{d}")),
    );
    let under = |p: &str| {
        writable
            .iter()
            .any(|w| p == w || p.starts_with(&format!("{w}/")))
    };

    let repo = readme
        .lines()
        .find_map(|l| l.strip_prefix("CUSTODY_REPOSITORY="))
        .expect("the README's backup-job.env example names a repository");
    assert!(
        under(repo),
        "{repo} is read-only under the unit: {writable:?}"
    );
    let cache = value("Environment")
        .iter()
        .find_map(|e| e.strip_prefix("CUSTODY_CACHE_DIR=").map(str::to_string))
        .expect("the unit sets CUSTODY_CACHE_DIR");
    assert!(
        under(&cache),
        "{cache} is read-only under the unit: {writable:?}"
    );
    assert!(under("/var/lib/custody/summaries"), "{writable:?}");
    // The history state (docs/FORMAT.md §18) goes under the config folder.
    let config = value("Environment")
        .iter()
        .find_map(|e| e.strip_prefix("CUSTODY_CONFIG_DIR=").map(str::to_string))
        .expect("the unit sets CUSTODY_CONFIG_DIR");
    assert!(
        under(&format!("{config}/history")),
        "{config} is read-only under the unit: {writable:?}"
    );
}
