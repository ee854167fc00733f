//! `completions SHELL` and `man`: generated from the command-line definition itself, so they
//! never drift from it.

use std::io::Write;

use clap::CommandFactory;

use super::{Ctx, Outcome};
use custody::error::{Error, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct CompletionArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

pub fn completions(_ctx: &Ctx, args: &CompletionArgs) -> Result<Outcome> {
    let mut cmd = crate::cli::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "custody", &mut out);
    write_stdout(&out)
}

pub fn man(_ctx: &Ctx) -> Result<Outcome> {
    let mut out = Vec::new();
    clap_mangen::Man::new(crate::cli::Cli::command())
        .render(&mut out)
        .map_err(|e| Error::io("the man page", e))?;
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> Result<Outcome> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|_| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => super::stdout_failed(&e),
        r => r.map_err(|e| Error::io("standard output", e))?,
    }
    Ok(Outcome::OK)
}
