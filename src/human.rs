//! Numbers as people read them, shared by every report's `Display`.

/// Bytes in binary units: `512 B`, `1.50 KiB`, `2.00 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// A duration in seconds the way people say it: `24 h`, `90 min`, `3 d`, `45 s`.
pub fn duration(secs: i64) -> String {
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s >= 3_600 && s % 3_600 == 0 => format!("{} h", s / 3_600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// A time for a person: local time with its UTC offset, the same in every listing
/// (`snapshots`, `forget`, `ls -l`), so that no column is an unlabelled time zone.
pub fn local_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S %z")
        .to_string()
}

/// Characters a terminal may act on instead of showing: C0 and C1 controls, DEL, and the
/// bidirectional overrides that reorder what is shown ("Trojan Source").
fn is_active(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        '\u{1b}' => out.push_str("\\e"),
        c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
        c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
    }
}

/// A name from a snapshot (file, folder, link target, host, tag, path) as it may reach a
/// terminal: every control character escaped as `ls --quoting-style=escape` does (`\n`, `\e`,
/// `\x07`), and a backslash doubled so the escapes cannot be faked. JSON output keeps names raw.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| is_active(c) || c == '\\') {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if is_active(c) => push_escaped(&mut out, c),
            c => out.push(c),
        }
    }
    out.into()
}

/// [`escape`] for a name that may not be UTF-8: invalid bytes become `\xNN`.
pub fn escape_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        out.push_str(&escape(chunk.valid()));
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

/// A whole message or report line for a terminal: control characters escaped (line breaks
/// kept), so that a name inside it that escaped [`escape`] still cannot drive the terminal.
pub fn terminal_safe(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| is_active(c) && c != '\n') {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_active(c) && c != '\n' {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_escaped_for_terminals() {
        use super::{escape, escape_bytes, terminal_safe};
        assert_eq!(escape("plain name.txt"), "plain name.txt");
        assert_eq!(
            escape("a\u{1b}[31mred\u{7}\nb\\c\u{202e}d\u{9b}"),
            "a\\e[31mred\\x07\\nb\\\\c\\u{202e}d\\x9b"
        );
        assert_eq!(escape_bytes(b"ok\xff\x1b"), "ok\\xff\\e");
        assert_eq!(terminal_safe("line 1\nline\u{1b}2"), "line 1\nline\\e2");
        // Nothing active survives, whatever the input.
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            let e = escape(&c.to_string()).into_owned();
            assert!(!e.chars().any(super::is_active), "{c:?} -> {e:?}");
        }
    }

    #[test]
    fn units() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(1536), "1.50 KiB");
        assert_eq!(super::bytes(3 << 30), "3.00 GiB");
    }
}
