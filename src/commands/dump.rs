//! `dump`: one file of a snapshot to standard output, or a folder as a tar stream.

use std::io::Write;

use super::{Ctx, FilterArgs, Outcome};
use custody::error::{Error, Result};
use custody::format::tree::NodeKind;
use custody::repo::locate::locate;
use custody::repo::restore::write_file;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Snapshot id, unique id prefix, or `latest`.
    pub snapshot: String,
    /// The file inside the snapshot; a folder (or `/`, the whole snapshot) is written as a
    /// tar stream.
    pub path: String,
    #[command(flatten)]
    pub filter: FilterArgs,
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let (_, snap) = repo.resolve_snapshot(&args.snapshot, &args.filter.filter())?;
    let index = repo.load_index()?;
    let found = locate(&repo, &index, &snap, &args.path)?;
    let node = match found.node {
        Some(n) => n,
        // The snapshot's root: a folder with its root tree.
        None => custody::format::tree::Node::folder(snap.tree),
    };
    if node.kind == NodeKind::Dir {
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            return Err(Error::invalid(format!(
                "{} is a folder: dump writes it as a tar stream; redirect it (custody dump {} {} > out.tar)",
                args.path, args.snapshot, args.path
            )));
        }
        let name = found
            .rel
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or(".");
        let budget = custody::repo::walk::Budget::for_snapshot(&snap);
        let stdout = std::io::stdout();
        let out = std::io::BufWriter::new(stdout.lock());
        match custody::repo::dump_tar::write_tar(&repo, &index, budget, name, &node, out) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
                super::stdout_failed(&source)
            }
            r => r?,
        };
        return Ok(Outcome::OK);
    }
    if node.kind != NodeKind::File {
        return Err(Error::invalid(format!(
            "{} is not a regular file",
            args.path
        )));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // A reader that closed the pipe (`dump ... | head`) ends the dump quietly.
    let written = write_file(&repo, &index, &node, &mut out)
        .and_then(|_| out.flush().map_err(|e| Error::io("standard output", e)));
    match written {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            super::stdout_failed(&source)
        }
        r => r?,
    }
    Ok(Outcome::OK)
}
