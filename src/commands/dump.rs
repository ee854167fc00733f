//! `dump`: one file of a snapshot to standard output.

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
    /// The file inside the snapshot.
    pub path: String,
    #[command(flatten)]
    pub filter: FilterArgs,
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let (_, snap) = repo.resolve_snapshot(&args.snapshot, &args.filter.filter())?;
    let index = repo.load_index()?;
    let node = locate(&repo, &index, &snap, &args.path)?
        .node
        .ok_or_else(|| Error::invalid("dump needs a file path inside the snapshot"))?;
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
