//! `tag` (issue #18, docs/FORMAT.md §8): the owner changes tags by writing a new manifest and
//! forgetting the old one in a checkpoint. Played through the CLI: the history stays intact,
//! the data restores, the writer's group and chain carry on, and a writer cannot tag.

use crate::common::*;
use custody::repo::snapshots::SnapshotTable;
use custody::repo::tag::TagReport;

fn listing(sb: &Sandbox) -> SnapshotTable {
    sb.run(&["--json", "snapshots"]).ok().report()
}

fn tags_of(t: &SnapshotTable, id: &str) -> Vec<String> {
    t.0.iter()
        .find(|s| s.id.to_hex() == id)
        .unwrap_or_else(|| panic!("{id} not listed"))
        .tags
        .clone()
}

#[test]
fn tag_add_remove_set_keeps_history_data_and_writer() {
    let sb = Sandbox::new();
    sb.init();
    let w = sb.export_writer("writer", &[]);
    let ks = format!("local:{}", w.display());
    let src = sb.path("src");
    write(&src.join("a.bin"), &random_bytes(300_000, 7));
    write(&src.join("b.txt"), b"hello\n");
    let from_writer = sb
        .backup_json(&[
            "--key-service",
            &ks,
            "--tag",
            "nightly",
            src.to_str().unwrap(),
        ])
        .snapshot_id
        .to_hex();
    let owners = sb
        .backup_json(&[src.to_str().unwrap(), "--force"])
        .snapshot_id
        .to_hex();

    // A writer holds no right to change what it (or anyone) saved.
    let denied = sb
        .run(&["--key-service", &ks, "tag", &from_writer, "--add", "x"])
        .code(2);
    assert!(denied.stderr.contains("owner"), "{}", denied.stderr);

    let r: TagReport = sb
        .run(&["--json", "tag", &from_writer, "--add", "keep,audit"])
        .ok()
        .report();
    assert_eq!(r.changed.len(), 1, "{r:?}");
    let new = r.changed[0].snapshot.expect("a new id").to_hex();
    assert_ne!(new, from_writer);
    let t = listing(&sb);
    assert_eq!(t.0.len(), 2, "the old manifest is gone: {t:?}");
    assert!(!t.0.iter().any(|s| s.id.to_hex() == from_writer));
    assert_eq!(tags_of(&t, &new), ["nightly", "keep", "audit"]);
    assert!(!sb.repo().join("snapshots").join(&from_writer).exists());
    let cat = sb.run(&["--json", "cat", "snapshot", &new]).ok().json();
    assert_eq!(cat["original"], from_writer.as_str(), "{cat}");

    // Already tagged: nothing is rewritten.
    let same: TagReport = sb
        .run(&["--json", "tag", &new, "--add", "keep"])
        .ok()
        .report();
    assert!(
        same.changed.is_empty() && same.unchanged.len() == 1,
        "{same:?}"
    );
    assert!(sb.repo().join("snapshots").join(&new).exists());

    // Without ids: every snapshot the filters select, as restic does.
    let r: TagReport = sb
        .run(&["--json", "tag", "--tag", "keep", "--remove", "nightly"])
        .ok()
        .report();
    assert_eq!(r.changed.len(), 1, "{r:?}");
    let newer = r.changed[0].snapshot.unwrap().to_hex();
    let cat = sb.run(&["--json", "cat", "snapshot", &newer]).ok().json();
    assert_eq!(
        cat["original"],
        from_writer.as_str(),
        "kept through retags: {cat}"
    );
    assert_eq!(tags_of(&listing(&sb), &newer), ["keep", "audit"]);
    let r: TagReport = sb
        .run(&["--json", "tag", &owners, "--set", "a,b"])
        .ok()
        .report();
    let owners2 = r.changed[0].snapshot.unwrap().to_hex();
    let r: TagReport = sb
        .run(&["--json", "tag", &owners2, "--set", ""])
        .ok()
        .report();
    let owners3 = r.changed[0].snapshot.unwrap().to_hex();
    assert!(tags_of(&listing(&sb), &owners3).is_empty());
    let dry: TagReport = sb
        .run(&["--json", "tag", &owners3, "--add", "z", "--dry-run"])
        .ok()
        .report();
    assert!(dry.dry_run && dry.changed[0].snapshot.is_none(), "{dry:?}");
    assert!(tags_of(&listing(&sb), &owners3).is_empty());

    // The writer's chain carries on, the history is intact, everything checks and restores.
    sb.backup_json(&["--key-service", &ks, src.to_str().unwrap(), "--force"]);
    let check = sb.run(&["--json", "check", "--read-data"]).ok().json();
    assert_eq!(
        check["without_reach"], 0,
        "the reach moved with the manifest: {check}"
    );
    let target = sb.path("restored");
    sb.run(&["restore", &newer, "--target", target.to_str().unwrap()])
        .ok();
    assert_same_tree(&src, &restored(&target, &src));

    // forget still groups the retagged snapshot with its writer's, not the owner's.
    let plan = sb
        .run(&["--json", "forget", "--keep-last", "1", "--dry-run"])
        .ok()
        .json();
    let group_of = |id: &str| {
        plan["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| {
                ["keep", "remove"].iter().any(|k| {
                    g[k].as_array()
                        .unwrap()
                        .iter()
                        .any(|e| e["id"].as_str() == Some(id))
                })
            })
            .map(|g| g["writer_name"].clone())
            .unwrap_or_else(|| panic!("{id} in no group: {plan}"))
    };
    assert_eq!(group_of(&newer), "writer", "{plan}");
    assert_eq!(group_of(&owners3), "owner", "{plan}");
}

#[test]
fn fail_tag_without_a_change_or_a_match() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    write(&src.join("a"), b"a");
    let id = sb
        .backup_json(&[src.to_str().unwrap()])
        .snapshot_id
        .to_hex();
    sb.run(&["tag", &id]).code(2);
    sb.run(&["tag", &id, "--set", "a", "--add", "b"]).code(2);
    let none = sb.run(&["tag", "--tag", "nope", "--add", "x"]).code(2);
    assert!(
        none.stderr.contains("no snapshot matches"),
        "{}",
        none.stderr
    );
}
