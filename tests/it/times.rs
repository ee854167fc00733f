//! Times shown to a person (issue #18): `snapshots` and `forget` show the same local time,
//! with its offset, under any time zone.

use crate::common::*;

#[test]
fn snapshots_and_forget_show_the_same_local_time_with_its_offset() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    write(&src.join("a"), b"a");
    let id = sb.backup_json(&[src.to_str().unwrap()]).snapshot_id;
    // A POSIX zone string needs no zone database: UTC+05:30.
    let tz = [("TZ", "XYZ-5:30")];
    let list = sb.run_env(&tz, &["snapshots"]).ok().out();
    let plan = sb
        .run_env(&tz, &["forget", "--keep-last", "1", "--dry-run"])
        .ok()
        .out();
    let line = |text: &str| {
        text.lines()
            .find(|l| l.contains(&id.short()))
            .unwrap_or_else(|| panic!("{} not in {text}", id.short()))
            .to_string()
    };
    let (l, p) = (line(&list), line(&plan));
    assert!(l.contains("+0530") && p.contains("+0530"), "{l}\n{p}");
    let time = |s: &str| {
        let at = s.find("+0530").unwrap();
        s[at - 20..at + 5].to_string()
    };
    assert_eq!(time(&l), time(&p));
}
