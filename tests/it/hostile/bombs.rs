//! Amplification by forged trees (issue #13): trees are named by their content, so a writer
//! can make a folder list one subtree many times per level. A few kilobytes then expand to
//! billions of paths. Restore, `ls` and `stats` refuse once a snapshot expands past the
//! folders its manifest records (a restore has then made at most that many folders); `check`
//! reports it; none of them runs out of memory.

use super::*;

/// A tree graph of `levels` levels, each folder listing the next level's folder `fanout`
/// times (fanout^levels paths), over one small file. Returns the root.
fn bomb(w: &Repository, s: &Session, levels: usize, fanout: usize) -> TreeId {
    let junk = b"one small file\n".to_vec();
    let data = upload_pack(w, s, BlobType::Data, std::slice::from_ref(&junk));
    let mut tree = Tree {
        nodes: vec![file_node(
            b"f",
            junk.len() as u64,
            vec![ChunkId(w.chunk_id(&junk))],
        )],
    };
    let mut trees = Vec::new();
    for _ in 0..levels {
        let bytes = tree.encode();
        let id = TreeId(w.chunk_id(&bytes));
        trees.push(bytes);
        let mut nodes = Vec::new();
        for i in 0..fanout {
            let mut n = file_node(format!("d{i}").as_bytes(), 0, vec![]);
            n.kind = NodeKind::Dir;
            n.mode = 0o755;
            n.subtree = Some(id);
            nodes.push(n);
        }
        tree = Tree { nodes };
    }
    let bytes = tree.encode();
    let root = TreeId(w.chunk_id(&bytes));
    trees.push(bytes);
    let trees = upload_pack(w, s, BlobType::Tree, &trees);
    w.save_index_segment(&IndexSegment {
        packs: vec![data, trees],
        provisional: false,
    })
    .unwrap();
    root
}

fn tree_bombs(e: &Estate, f: &mut Findings) {
    let s = Session::start(&e.w).unwrap();
    // 50^6 (1.6e10) paths from 7 trees; and a chain 1100 folders deep (short names, so the
    // file system's own path limit is not what stops it).
    for (levels, fanout, what) in [(6, 50, "wide"), (1100, 1, "deep")] {
        let root = bomb(&e.w, &s, levels, fanout);
        let m = manifest(&s, "alpha", "/bomb", Utc::now(), root);
        let id = e.w.save_snapshot(&s, &m).unwrap().to_hex();
        let target = e.r.sb.path(&format!("bomb-{what}"));
        for args in [
            &["restore", &id, "--target", target.to_str().unwrap()][..],
            &["ls", &id],
            &["stats", &id],
        ] {
            let run = e.r.run(args);
            f.expect(
                run.code == EXIT_INTEGRITY && run.stderr.contains("forged graph"),
                || {
                    format!(
                        "{what} bomb: {args:?} exited {}: {}",
                        run.code,
                        brief(&run.stderr)
                    )
                },
            );
        }
        if let Some(kib) = peak_rss_kib(e, &["ls", &id]) {
            eprintln!("{what} bomb: ls peaked at {} MiB", kib / 1024);
            f.expect(kib < 512 * 1024, || {
                format!("{what} bomb: ls peaked at {} MiB", kib / 1024)
            });
        }
        let run = e.r.run(&["--json", "check"]);
        f.expect(
            run.code == EXIT_INTEGRITY
                && run.out().contains(&id[..8])
                && run.out().contains("forged graph"),
            || {
                format!(
                    "{what} bomb: check exited {}: {}",
                    run.code,
                    brief(&run.out())
                )
            },
        );
        // Genuine snapshots still restore.
        restores(e, &e.kept(), what, f);
        e.r.run(&["forget", &id]).ok();
    }
}

/// The peak resident memory of a command (through `/usr/bin/time`, when installed).
fn peak_rss_kib(e: &Estate, args: &[&str]) -> Option<u64> {
    let time = std::path::Path::new("/usr/bin/time");
    if !time.exists() {
        return None;
    }
    let inner = e.r.sb.cmd(args);
    let mut c = std::process::Command::new(time);
    c.env_clear()
        .args(["-f", "%M"])
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    for (k, v) in e.r.env() {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr.lines().last()?.trim().parse().ok()
}

/// Attack 16: two forged snapshots whose trees expand exponentially (50 folders per level,
/// six levels, all the same subtree) or nest 1100 levels deep where the manifest records none. Expected: restore, `ls` and
/// `stats` refuse each (exit 3, "forged graph") without expanding it, `check` names it, and
/// genuine snapshots still restore.
#[test]
fn forged_tree_graphs_are_refused_before_they_expand() {
    on_both(tree_bombs);
}
