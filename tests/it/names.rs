//! Names from snapshots reach the terminal escaped (issue #13): file names, link targets,
//! hosts and tags holding escape sequences, bell, line breaks or bidirectional overrides are
//! shown as `\e`, `\x07`, `\n`, `\u{202e}` by `ls`, `snapshots` and `forget`, while `--json`
//! keeps them as they are. A writer or the custodian chooses such names; a terminal must not
//! act on them.

use std::os::unix::ffi::OsStrExt;

use crate::common::*;
use custody::repo::snapshots::{LsEntry, SnapshotTable};

const EVIL: &[u8] = b"evil\x1b[31mRED\x07";
const NEWLINE: &[u8] = b"two\nlines";
const BIDI: &str = "invoice\u{202e}fdp.exe";
const HOST: &str = "host\x1b]0;pwned\x07";
const TAG: &str = "tag\x1b[2J";

/// Nothing a terminal acts on: no C0/C1 control (but the line breaks between lines), no
/// bidirectional override.
fn inert(out: &str) -> bool {
    !out.chars().any(|c| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })
}

#[test]
fn names_with_escape_sequences_are_escaped_on_the_terminal_and_raw_in_json() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for name in [EVIL, NEWLINE, BIDI.as_bytes()] {
        write(&src.join(std::ffi::OsStr::from_bytes(name)), b"x");
    }
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(EVIL), src.join("link")).unwrap();
    sb.run(&[
        "backup",
        "--host",
        HOST,
        "--tag",
        TAG,
        src.to_str().unwrap(),
    ])
    .ok();

    let ls = sb.run(&["ls", "-l", "latest"]).ok().out();
    assert!(inert(&ls), "{ls:?}");
    assert!(ls.contains("evil\\e[31mRED\\x07"), "{ls}");
    assert!(
        ls.contains("two\\nlines") && ls.contains("invoice\\u{202e}fdp.exe"),
        "{ls}"
    );
    assert!(ls.contains("-> evil\\e[31mRED\\x07"), "{ls}");
    // One line per entry: a line break in a name does not make a line.
    let v: Vec<LsEntry> = sb.run(&["--json", "ls", "latest"]).ok().report();
    assert_eq!(ls.lines().count(), v.len());
    let raw = |n: &[u8]| v.iter().any(|e| e.path.as_bytes().ends_with(n));
    assert!(raw(EVIL) && raw(NEWLINE) && raw(BIDI.as_bytes()), "{v:?}");

    let snaps = sb.run(&["snapshots"]).ok().out();
    assert!(inert(&snaps), "{snaps:?}");
    assert!(
        snaps.contains("host\\e]0;pwned\\x07") && snaps.contains("tag\\e[2J"),
        "{snaps}"
    );
    let t: SnapshotTable = sb.run(&["--json", "snapshots"]).ok().report();
    assert_eq!((t.0[0].host.as_str(), t.0[0].tags[0].as_str()), (HOST, TAG));

    let forget = sb
        .run(&["forget", "--keep-last", "1", "--dry-run"])
        .ok()
        .out();
    assert!(
        inert(&forget) && forget.contains("host\\e]0;pwned\\x07"),
        "{forget:?}"
    );

    // Errors that name a file: restoring over a folder that is in the way.
    let target = sb.path("target");
    let blocker = restored(&target, &src).join(std::ffi::OsStr::from_bytes(EVIL));
    std::fs::create_dir_all(blocker.join("in-the-way")).unwrap();
    let run = sb.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(inert(&run.stderr), "{:?}", run.stderr);
    assert!(run.stderr.contains("evil\\e[31mRED\\x07"), "{}", run.stderr);
}
