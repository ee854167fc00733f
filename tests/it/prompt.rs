//! Passphrases asked for on a terminal, as restic does (issue #18): `init` asks twice for a
//! new keyring's passphrase, commands ask for a sealed keyring's, `key passwd` asks for both.
//! The terminal is a real pseudo-terminal made by util-linux `script`, fed the answers.

use std::process::{Command, Stdio};

use crate::common::*;

/// Runs custody with `args` on a pseudo-terminal, typing `answers` (one per line).
fn on_terminal(sb: &Sandbox, args: &[&str], answers: &[&str]) -> Run {
    let inner = sb.cmd(args);
    let line = std::iter::once(env!("CARGO_BIN_EXE_custody"))
        .chain(args.iter().copied())
        .map(|a| {
            assert!(!a.contains('\''), "{a}");
            format!("'{a}'")
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut c = Command::new("script");
    c.env_clear();
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    // `script` ends with the command's exit code (-e) and keeps no typescript file.
    c.args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("util-linux script");
    let input: String = answers.iter().map(|a| format!("{a}\n")).collect();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        // A terminal has one stream: stdout and stderr arrive together.
        stderr: String::from_utf8_lossy(&out.stdout).into_owned(),
        stdout: out.stdout,
    }
}

#[test]
fn passphrases_are_asked_for_on_a_terminal() {
    let sb = Sandbox::new();
    // Two different answers: refused, and a rerun still works.
    let differ = on_terminal(&sb, &["init"], &["one thing", "another"]);
    assert_eq!(differ.code, EXIT_USAGE, "{}", differ.stderr);
    assert!(differ.stderr.contains("differ"), "{}", differ.stderr);
    let init = on_terminal(&sb, &["init"], &["tr0ub4dor", "tr0ub4dor"]);
    assert_eq!(init.code, EXIT_OK, "{}", init.stderr);
    assert!(
        init.stderr.contains("sealed with your passphrase"),
        "{}",
        init.stderr
    );

    // Without a terminal nothing is asked, and the error says how to give it.
    let r = sb.run(&["snapshots"]).code(EXIT_KEY_SERVICE);
    assert!(r.stderr.contains("run on a terminal"), "{}", r.stderr);
    let ok = on_terminal(&sb, &["snapshots"], &["tr0ub4dor"]);
    assert_eq!(ok.code, EXIT_OK, "{}", ok.stderr);
    assert!(ok.stderr.contains("passphrase for "), "{}", ok.stderr);
    let wrong = on_terminal(&sb, &["snapshots"], &["Tr0ub4dor"]);
    assert_eq!(wrong.code, EXIT_KEY_SERVICE, "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("wrong passphrase"),
        "{}",
        wrong.stderr
    );

    // key passwd: the current one, then the new one twice.
    let pw = on_terminal(
        &sb,
        &["key", "passwd"],
        &["tr0ub4dor", "staple battery", "staple battery"],
    );
    assert_eq!(pw.code, EXIT_OK, "{}", pw.stderr);
    assert!(
        pw.stderr.contains("sealed with the new passphrase"),
        "{}",
        pw.stderr
    );
    let old = on_terminal(&sb, &["snapshots"], &["tr0ub4dor"]);
    assert_eq!(old.code, EXIT_KEY_SERVICE, "{}", old.stderr);
    let pass = sb.path("pass");
    std::fs::write(&pass, "staple battery\n").unwrap();
    sb.run(&["--passphrase-file", pass.to_str().unwrap(), "snapshots"])
        .ok();
    // Off a terminal, key passwd needs to be told.
    sb.run(&["--passphrase-file", pass.to_str().unwrap(), "key", "passwd"])
        .code(EXIT_USAGE);

    // An empty answer at init leaves the keyring unsealed, and init says so.
    let sb2 = Sandbox::new();
    let open = on_terminal(&sb2, &["init"], &[""]);
    assert_eq!(open.code, EXIT_OK, "{}", open.stderr);
    assert!(open.stderr.contains("NOT protected"), "{}", open.stderr);
    sb2.run(&["snapshots"]).ok();
}
