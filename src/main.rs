//! The `custody` binary: parse arguments, set up logging and the runtime, run, map errors to
//! the documented exit codes.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
mod cli;
mod commands;
mod environment;
mod profile;

use cli::Cli;
use commands::{exit, exit_code, Ctx};
use environment::Environment;
use secrecy::SecretString;

/// Pack-sized buffers (16 MiB, allocated on one thread and freed on another) should go back
/// to the system when freed: a fixed 8 MiB mmap threshold does that, and two arenas keep
/// freed chunk buffers from piling up per thread. Measured on the 1 GiB bench tree: peak RSS
/// 100-134 MB with glibc's defaults, 80-85 MB with these, same speed.
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; called once before other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Raises the soft limit on open files to the hard one, as Go programs (restic) do at start:
/// a restore keeps up to 256 folders open besides the files and packs each of its threads has
/// open, and 1024, the usual soft limit, would then bound `--threads` to about a hundred.
fn raise_open_files_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the struct given; nothing else
    // depends on the limit yet.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn passphrase(cli: &Cli, env: &Environment) -> anyhow::Result<Option<SecretString>> {
    if let Some(p) = &cli.passphrase_file {
        let s = custody::keyservice::local::read_passphrase_file(p)
            .with_context(|| format!("reading passphrase file {}", p.display()))?;
        return Ok(Some(s));
    }
    if !env.passphrase_set {
        return Ok(None);
    }
    Ok(std::env::var("CUSTODY_KEYRING_PASSPHRASE")
        .ok()
        .map(SecretString::from))
}

fn logging(cli: &Cli) {
    let level = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUSTODY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("custody={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true)
        .init();
}

fn main() -> ExitCode {
    tune_allocator();
    raise_open_files_limit();
    let mut cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let env = Environment::read();
    match profile::load(&env.client.config_dir, cli.profile.as_deref()) {
        Ok(s) => profile::apply(&mut cli, s),
        Err(e) => {
            crate::commands::err_line(format_args!("custody: {e}"));
            return ExitCode::from(exit::USAGE as u8);
        }
    }
    logging(&cli);
    let note = cli.command.interrupted();
    // Ctrl-C: say what was interrupted and what state it left, then exit as a shell expects.
    if let Err(e) = ctrlc::set_handler(move || {
        crate::commands::err_line(format_args!("\ncustody: interrupted: {note}"));
        std::process::exit(130);
    }) {
        tracing::debug!("no interrupt handler: {e}");
    }
    let run = || -> anyhow::Result<i32> {
        if let Some(path) = &cli.audit_log {
            custody::keyservice::audit_log::install(path)?;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let ctx = Ctx {
            rt,
            repo: cli.repo.clone(),
            key_service: cli.key_service.clone(),
            identity: cli.identity.clone(),
            witness: cli.witness.clone(),
            accept_rollback: cli.accept_rollback,
            dry_run: cli.command.dry_run(),
            json: cli.json,
            quiet: cli.quiet,
            verbose: cli.verbose,
            passphrase: passphrase(&cli, &env)?,
            // Asked for only where a person can answer: both ends on a terminal.
            can_prompt: std::io::IsTerminal::is_terminal(&std::io::stdin())
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            prompted: Default::default(),
            env,
        };
        Ok(cli.run(&ctx)?.0)
    };
    match run() {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            let code = e
                .downcast_ref::<custody::Error>()
                .map(exit_code)
                .unwrap_or(exit::ERROR);
            // Each cause once: an error's own message often already holds its source's.
            let root: &(dyn std::error::Error + 'static) = e.as_ref();
            crate::commands::err_line(format_args!(
                "custody: {}",
                custody::error::error_chain(root)
            ));
            ExitCode::from(code as u8)
        }
    }
}
