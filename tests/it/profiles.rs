//! Profiles in `$CUSTODY_CONFIG_DIR/config.toml` (issue #18): repository, passphrase file and
//! default excludes from the file; flags and variables win; unknown profiles and settings are
//! refused with the file named.

use crate::common::*;

/// Runs custody without the sandbox's CUSTODY_REPOSITORY, so the profile decides.
fn run(sb: &Sandbox, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut c = sb.cmd(args);
    c.env_remove("CUSTODY_REPOSITORY");
    for (k, v) in env {
        c.env(k, v);
    }
    finish_output(c.output().unwrap())
}

fn finish_output(out: std::process::Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn snapshot_count(r: Run) -> usize {
    r.ok().json().as_array().unwrap().len()
}

#[test]
fn profiles_choose_repository_passphrase_and_excludes() {
    let sb = Sandbox::new();
    let (ra, rb) = (sb.path("repo-a"), sb.path("repo-b"));
    let pass = sb.path("pass");
    std::fs::write(&pass, "profile passphrase\n").unwrap();
    write(
        &sb.path("config/config.toml"),
        format!(
            "exclude = [\"*.tmp\"]\n\n[profile.a]\nrepository = \"{}\"\npassphrase_file = \"{}\"\n\
             exclude = [\"skip-me\"]\n\n[profile.b]\nrepository = \"{}\"\n",
            ra.display(),
            pass.display(),
            rb.display()
        )
        .as_bytes(),
    );
    let init = run(&sb, &[], &["--profile", "a", "init"]).ok().out();
    assert!(init.contains("sealed with your passphrase"), "{init}");
    run(&sb, &[("CUSTODY_PROFILE", "b")], &["init"]).ok();
    assert!(ra.join("config").exists() && rb.join("config").exists());

    let src = sb.path("src");
    write(&src.join("keep.txt"), b"kept");
    write(&src.join("x.tmp"), b"left out by the top level");
    write(&src.join("skip-me"), b"left out by profile a");
    run(
        &sb,
        &[],
        &["--profile", "a", "backup", src.to_str().unwrap()],
    )
    .ok();
    let ls = run(&sb, &[], &["--profile", "a", "ls", "latest"])
        .ok()
        .out();
    assert!(ls.contains("keep.txt"), "{ls}");
    assert!(!ls.contains("x.tmp") && !ls.contains("skip-me"), "{ls}");

    let a = run(&sb, &[], &["--json", "--profile", "a", "snapshots"]);
    assert_eq!(snapshot_count(a), 1);
    let b = run(&sb, &[("CUSTODY_PROFILE", "b")], &["--json", "snapshots"]);
    assert_eq!(snapshot_count(b), 0);
    // A flag wins over the profile.
    let flag = run(
        &sb,
        &[],
        &[
            "--json",
            "--profile",
            "a",
            "--repo",
            rb.to_str().unwrap(),
            "snapshots",
        ],
    );
    assert_eq!(snapshot_count(flag), 0);
    // Without the profile's passphrase file, repository a's keyring stays closed.
    run(&sb, &[], &["--repo", ra.to_str().unwrap(), "snapshots"]).code(EXIT_KEY_SERVICE);

    let missing = run(&sb, &[], &["--profile", "nope", "snapshots"]).code(EXIT_USAGE);
    assert!(
        missing.stderr.contains("no profile \"nope\"") && missing.stderr.contains("a, b"),
        "{}",
        missing.stderr
    );
    write(&sb.path("config/config.toml"), b"repositry = \"/typo\"\n");
    let typo = run(&sb, &[], &["snapshots"]).code(EXIT_USAGE);
    assert!(
        typo.stderr.contains("config.toml") && typo.stderr.contains("repositry"),
        "{}",
        typo.stderr
    );
}
