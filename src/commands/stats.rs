//! `stats`: sizes of the repository, or of one snapshot.

use std::collections::HashSet;

use serde_json::json;

use super::{human_bytes, Ctx, FilterArgs, Outcome};
use custody::error::Result;
use custody::format::tree::NodeKind;
use custody::pack::BlobType;
use custody::repo::walk::{TreeWalker, Visits};
use custody::store::FileKind;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Only this snapshot (id, prefix or `latest`): its restore size and unique data.
    pub snapshot: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let index = repo.load_index()?;
    if let Some(spec) = &args.snapshot {
        let (id, snap) = repo.resolve_snapshot(spec, &args.filter.filter())?;
        let (mut files, mut size) = (0u64, 0u64);
        let mut chunks = HashSet::new();
        // Every path counts: a folder stored once but reached twice is restored twice.
        let mut walker = TreeWalker::new(&repo, &index, Visits::PerPath);
        walker.walk(vec![(snap.tree, ())], |_, _, tree, next| {
            for n in tree?.nodes {
                match n.kind {
                    NodeKind::Dir => next.extend(n.subtree.map(|s| (s, ()))),
                    NodeKind::File => {
                        files += 1;
                        size += n.size;
                        chunks.extend(n.content);
                    }
                    NodeKind::Symlink => {}
                }
            }
            Ok(())
        })?;
        let stored: u64 = chunks
            .iter()
            .filter_map(|c| index.get(c))
            .map(|l| l.entry.length as u64)
            .sum();
        if ctx.json {
            ctx.print_json(
                &json!({"snapshot_id": id, "files": files, "restore_size": size,
                "unique_chunks": chunks.len(), "stored_size": stored}),
            );
        } else {
            println!(
                "snapshot {}: {files} files, {} to restore, {} chunks, {} stored",
                id.short(),
                human_bytes(size),
                chunks.len(),
                human_bytes(stored)
            );
        }
        return Ok(Outcome::OK);
    }
    let packs = repo.store().list(FileKind::Pack)?;
    let pack_bytes: u64 = packs.iter().map(|(_, s)| s).sum();
    let snapshots = repo.snapshot_ids()?.len();
    let (mut data_blobs, mut tree_blobs, mut raw, mut stored) = (0u64, 0u64, 0u64, 0u64);
    for l in index.entries() {
        match l.entry.blob_type {
            BlobType::Data => data_blobs += 1,
            BlobType::Tree => tree_blobs += 1,
        }
        raw += l.entry.raw_length as u64;
        stored += l.entry.length as u64;
    }
    if ctx.json {
        ctx.print_json(
            &json!({"snapshots": snapshots, "packs": packs.len(), "pack_bytes": pack_bytes,
            "data_blobs": data_blobs, "tree_blobs": tree_blobs, "unique_plaintext_bytes": raw,
            "stored_blob_bytes": stored}),
        );
    } else {
        println!("snapshots:        {snapshots}");
        println!(
            "packs:            {} ({})",
            packs.len(),
            human_bytes(pack_bytes)
        );
        println!("blobs:            {data_blobs} data, {tree_blobs} tree");
        println!("unique plaintext: {}", human_bytes(raw));
        println!(
            "stored:           {} ({:.1}% of plaintext)",
            human_bytes(stored),
            if raw > 0 {
                100.0 * stored as f64 / raw as f64
            } else {
                0.0
            }
        );
    }
    Ok(Outcome::OK)
}
