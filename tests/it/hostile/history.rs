//! Objects only the owner may write in the history and damage folders (docs/FORMAT.md §14d,
//! §18), forged with the writer's own keys: a checkpoint that forgets every genuine snapshot,
//! and a damage record naming every genuine pack. Both are signed by the writer, so the owner
//! ignores them: nothing is hidden, nothing is stored again, nothing is lost.

use custody::format::garbage::DamageRecord;
use custody::format::history::Checkpoint;
use custody::id::CheckpointId;

use super::*;

fn forged_history(e: &Estate, f: &mut Findings) {
    let cp = Checkpoint {
        format: 1,
        generation: 1_000,
        previous: None,
        time: Utc::now(),
        chains: vec![],
        live: vec![],
    };
    e.w.save_object(&CheckpointId::random().unwrap(), &cp)
        .unwrap();
    let packs = e.genuine_listings(BlobType::Data);
    let rec = DamageRecord {
        format: 1,
        time: Utc::now(),
        packs: packs.iter().map(|p| p.pack).collect(),
    };
    e.w.save_object(&MarkId::random().unwrap(), &rec).unwrap();

    // Every genuine snapshot is still listed; the forgery is named (exit 3, as for any).
    let run = e.r.run(&["--json", "snapshots"]);
    f.expect(
        run.code == EXIT_INTEGRITY && run.stderr.contains("history checkpoint"),
        || format!("snapshots exited {}: {}", run.code, brief(&run.stderr)),
    );
    if run.code == EXIT_INTEGRITY {
        let listed: custody::repo::snapshots::SnapshotTable = run.report();
        for g in &e.genuine {
            f.expect(listed.0.iter().any(|s| s.id == g.id), || {
                format!("{} is hidden after a forged checkpoint", g.label())
            });
        }
    }
    owner_routine(e, &[POLICY], false, &[EXIT_OK], f);
    restores(e, &e.kept(), "after", f);
    // Afterwards, a backup reading every file still finds every chunk stored: the forged damage record
    // makes it store nothing again.
    let alpha = &e.genuine[1];
    let run = e.r.run(&[
        "--json",
        "backup",
        "--force",
        "--host",
        alpha.host,
        &alpha.path,
    ]);
    let out: Option<custody::repo::backup::BackupOutput> =
        (run.code == EXIT_OK).then(|| run.report());
    f.expect(out.as_ref().is_some_and(|o| o.bytes_new == 0), || {
        format!(
            "backup after a forged damage record exited {} and stored {:?} new bytes",
            run.code,
            out.as_ref().map(|o| o.bytes_new)
        )
    });
}

/// Attack 17: the writer stores a checkpoint of generation 1000 that keeps no snapshot, and a
/// damage record naming every genuine data pack. Expected: the owner lists every genuine
/// snapshot, a `backup --force` stores nothing new, and after forget and two prunes the kept
/// snapshots restore.
#[test]
fn a_writers_checkpoint_and_damage_record_are_ignored() {
    on_both(forged_history);
}
