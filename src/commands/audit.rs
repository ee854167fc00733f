//! `audit verify FILE`: checks a local audit log's chain (docs/FORMAT.md §11.5).

use std::path::PathBuf;

use super::{Ctx, Outcome};
use custody::error::Result;
use custody::keyservice::audit_log;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Cmd {
    /// Check that no line of an audit log was edited, removed, inserted or moved (exit 3
    /// naming the first line that breaks the chain).
    Verify {
        /// The log written with --audit-log.
        file: PathBuf,
    },
}

pub fn run(ctx: &Ctx, cmd: &Cmd) -> Result<Outcome> {
    match cmd {
        Cmd::Verify { file } => {
            let v = audit_log::verify(file)?;
            ctx.answer(&v);
            Ok(Outcome::OK)
        }
    }
}
