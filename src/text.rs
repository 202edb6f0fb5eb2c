//! Text that reaches a log: names and paths come from repositories, daemons
//! and users, so every one printed goes through here. A name can then never
//! start a line of its own (no raw newline, carriage return or other control
//! character survives), which keeps forged `error:` lines and CI log
//! commands (`::group::`, `+++`, `section_start`) out of bkd's output.

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A byte name made safe for one log line: printable UTF-8 is kept as is,
/// backslash becomes `\\`, common controls `\n` `\r` `\t`, other control
/// characters `\u{..}`, and bytes that are not UTF-8 `\xNN`.
pub fn escape_bytes(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// [`escape_bytes`] for a string.
pub fn escape_str(name: &str) -> String {
    escape_bytes(name.as_bytes())
}

/// [`escape_bytes`] for a path.
pub fn escape_path(path: &Path) -> String {
    escape_bytes(path.as_os_str().as_bytes())
}

/// A message from elsewhere (the daemon's error text) kept to one log line:
/// control characters and line separators are escaped as in
/// [`escape_bytes`], everything else (backslashes included) is left as is,
/// so quoting the message already has stays readable.
pub fn one_line(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        match c {
            '\\' => out.push(c),
            c => push_char(&mut out, c),
        }
    }
    out
}

/// Text shown as it reads (a step's name, a Dockerfile line), with only
/// what could break the line made visible: newlines, carriage returns and
/// other control characters as in [`escape_str`]. Backslashes and tabs
/// stay, so the text matches its source and what buildctl prints.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '\t' => out.push(c),
            c => push_char(&mut out, c),
        }
    }
    out
}

fn push_char(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        // C0/C1 controls and DEL, plus the Unicode line and paragraph
        // separators some log viewers break lines on.
        c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_names_are_unchanged() {
        for name in [
            "a",
            "dir/file.txt",
            "a☺b",
            "éé.txt",
            "with space",
            "::group::x",
        ] {
            assert_eq!(escape_str(name), name);
        }
    }

    #[test]
    fn no_escaped_name_can_start_a_line() {
        let forged = "x\nerror: injected fake line (exit 0)\r\n+++ group\u{2028}::set-output";
        let out = escape_str(forged);
        assert!(!out.contains('\n') && !out.contains('\r') && !out.contains('\u{2028}'));
        assert_eq!(
            out,
            "x\\nerror: injected fake line (exit 0)\\r\\n+++ group\\u{2028}::set-output"
        );
    }

    #[test]
    fn one_line_keeps_quoting_and_breaks_no_line() {
        let daemon = "process \"/bin/sh -c echo \\\"x\\\"\" failed\nerror: forged";
        assert_eq!(
            one_line(daemon),
            "process \"/bin/sh -c echo \\\"x\\\"\" failed\\nerror: forged"
        );
    }

    #[test]
    fn shown_text_keeps_backslashes_and_tabs() {
        assert_eq!(
            escape_controls("RUN printf 'a\\n'\t|\n+++ x\r\u{1b}[2J"),
            "RUN printf 'a\\n'\t|\\n+++ x\\r\\u{1b}[2J"
        );
    }

    #[test]
    fn controls_backslashes_and_invalid_bytes_are_visible() {
        assert_eq!(
            escape_bytes(b"a\\b\tc\x1b[31m\x7f"),
            "a\\\\b\\tc\\u{1b}[31m\\u{7f}"
        );
        assert_eq!(escape_bytes(b"caf\xe9\xff.txt"), "caf\\xe9\\xff.txt");
        assert_eq!(escape_path(Path::new("/tmp/\u{85}x")), "/tmp/\\u{85}x");
    }
}
