//! `restore --dry-run`: the same walk and the same choices (`--include`, `--exclude`,
//! `--overwrite`, `--delete`) as a restore, counted instead of made. Nothing is created, not
//! even the target; what is there now is only looked at.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::format::tree::NodeKind;
use crate::repo::walk::{Budget, TreeWalker, Visits};
use crate::repo::{Index, Repository};

use super::select::Filter;
use super::{within_source, Overwrite, RestoreOptions, RestoreReport};

pub(super) fn dry_run(
    repo: &Repository,
    index: &Index,
    snap: &Snapshot,
    opts: &RestoreOptions,
    filter: &Filter,
) -> Result<RestoreReport> {
    let mut report = RestoreReport::default();
    let target = &opts.target;
    let mut walker =
        TreeWalker::new(repo, index, Visits::PerPath).with_budget(Budget::for_snapshot(snap));
    let root = (snap.tree, (Vec::new(), !filter.partial()));
    walker.walk(vec![root], |_, (rel, whole), loaded, next| {
        let tree = match loaded {
            Ok(t) => t,
            Err(e) => {
                report
                    .failed
                    .push((String::from_utf8_lossy(rel).into_owned(), e));
                return Ok(());
            }
        };
        let here = target.join(OsStr::from_bytes(rel));
        if opts.delete && *whole && within_source(snap, rel) {
            let names: HashSet<_> = tree.nodes.iter().map(|n| n.name.to_os()).collect();
            if let Ok(entries) = std::fs::read_dir(&here) {
                report.deleted += entries
                    .flatten()
                    .filter(|e| !names.contains(&e.file_name()))
                    .count() as u64;
            }
        }
        for node in tree.nodes {
            let child = super::child_path(rel, &node.name.0);
            let (restore_it, descend) = filter.decide(&child, node.kind == NodeKind::Dir);
            if !descend {
                continue;
            }
            if node.kind == NodeKind::Dir {
                report.dirs += 1;
                if let Some(sub) = node.subtree {
                    next.push((sub, (child, restore_it)));
                }
                continue;
            }
            if !restore_it {
                continue;
            }
            if opts.overwrite != Overwrite::Always {
                let existing = crate::fs_at::lstat(&here.join(node.name.as_os()));
                if existing.is_ok_and(|st| !opts.overwrite.replaces(&st, &node)) {
                    report.kept += 1;
                    continue;
                }
            }
            match node.kind {
                NodeKind::File => {
                    report.files += 1;
                    report.bytes += node.size;
                }
                NodeKind::Symlink => report.symlinks += 1,
                _ => report.specials += 1,
            }
        }
        Ok(())
    })?;
    Ok(report)
}
