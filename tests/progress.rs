//! Every `--progress` mode end to end: the real bkd binary against the test
//! bed's buildkitd, checked for what each mode promises (and compared with
//! buildctl for rawjson).

mod common;

use std::collections::BTreeSet;

use bkd::progress::rawjson::from_line;
use bkd::progress::Update;
use common::*;

/// A context whose build runs a step with output, built into an image
/// named `name` (kept in the daemon, not pushed). `tag` makes the steps
/// unique so concurrent tests do not share their cache.
fn image_context(tag: &str) -> tempfile::TempDir {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!("{BUSYBOX_STAGE}FROM bb\nRUN echo progress-{tag} && echo on-stderr-{tag} >&2\n"),
    );
    ctx
}

fn failing_context(tag: &str) -> tempfile::TempDir {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "{BUSYBOX_STAGE}FROM bb\nRUN for i in $(seq 1 30); do echo {tag}-line-$i; done; exit 7\n"
        ),
    );
    ctx
}

fn metadata_digest(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).expect("metadata file");
    let v: serde_json::Value = serde_json::from_str(&text).expect("metadata JSON");
    v["containerimage.digest"]
        .as_str()
        .expect("digest in metadata")
        .to_string()
}

/// Builds an image context tagged `name` with `--progress=MODE`; the run
/// (asserted successful) and the image digest from the metadata file.
fn build_image(mode: &str, name: &str) -> (Run, String) {
    let ctx = image_context(mode);
    let meta = ctx.path().join("meta.json");
    let progress = format!("--progress={mode}");
    let r = bkd(
        &[
            "build",
            &progress,
            "-t",
            name,
            "--metadata-file",
            meta.to_str().expect("utf8 path"),
            ".",
        ],
        ctx.path(),
    );
    r.assert_ok();
    let digest = metadata_digest(&meta);
    (r, digest)
}

fn summary_re() -> regex::Regex {
    regex::Regex::new(
        r"(?m)^Build finished in \d+\.\ds: (\d+) steps \((\d+) run, (\d+) cached\), context \S+ sent in \d+\.\ds$",
    )
    .expect("regex")
}

#[test]
fn plain_ends_with_a_summary_naming_the_image() {
    let name = "bkd.test/progress/plain:1";
    let (r, digest) = build_image("plain", name);
    let err = r.stderr();
    assert!(err.contains(" progress-plain\n"), "{}", r.explain());
    let caps = summary_re()
        .captures(&err)
        .unwrap_or_else(|| panic!("no summary\n{}", r.explain()));
    let (steps, run, cached): (usize, usize, usize) = (
        caps[1].parse().expect("n"),
        caps[2].parse().expect("n"),
        caps[3].parse().expect("n"),
    );
    assert_eq!(steps, run + cached, "{}", r.explain());
    assert!(run >= 1, "the RUN step ran\n{}", r.explain());
    assert!(
        err.contains(&format!("image {name}@{digest}\n")),
        "{}",
        r.explain()
    );
    // The summary comes after the last step.
    let summary_at = err.find("Build finished").expect("summary");
    assert!(!err[summary_at..].contains("\n#"), "{}", r.explain());
}

#[test]
fn quiet_prints_only_the_result_or_the_failure() {
    let name = "bkd.test/progress/quiet:1";
    let (r, digest) = build_image("quiet", name);
    assert_eq!(
        r.stderr(),
        format!("image {name}@{digest}\n"),
        "{}",
        r.explain()
    );
    assert_eq!(r.stdout(), "", "{}", r.explain());

    let bad = failing_context("quiet");
    let r = bkd(&["build", "--progress=quiet", "."], bad.path());
    assert_eq!(r.code(), Some(1), "{}", r.explain());
    let err = r.stderr();
    assert!(err.contains("quiet-line-30"), "{}", r.explain());
    assert!(err.contains("exit code: 7"), "{}", r.explain());
    assert!(!err.contains("#1 "), "no step blocks\n{}", r.explain());
    assert!(!err.contains("Build failed"), "{}", r.explain());
}

/// Runs bkd under a pseudo-terminal (util-linux `script`), as a developer
/// would at a shell, with `--progress=auto`.
fn bkd_on_terminal(args: &[&str], cwd: &std::path::Path) -> Run {
    let bed = bed();
    let mut cmd = vec![
        env!("CARGO_BIN_EXE_bkd").to_string(),
        args[0].to_string(),
        "--addr".into(),
        bed.addr.clone(),
    ];
    cmd.extend(args[1..].iter().map(|a| a.to_string()));
    let quoted: Vec<String> = cmd
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    run(
        "script",
        &["-qefc", &quoted.join(" "), "/dev/null"],
        cwd,
        &[("COLUMNS", "120"), ("TERM", "xterm")],
    )
}

/// What a terminal shows once control sequences are dropped, as plain
/// text (cursor movement ignored, so redrawn frames all appear).
fn screen_text(raw: &str) -> String {
    regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]")
        .expect("regex")
        .replace_all(raw, "\n")
        .replace('\r', "\n")
}

/// What stays on a terminal of `width` columns (and endless height, its
/// scrollback included) once `raw` is written to it: printable text,
/// newline, carriage return, cursor up (`ESC[nA`), erase below (`ESC[J`)
/// and erase to end of line (`ESC[K`); other sequences change nothing
/// visible. Each redrawn frame replaces the last, as on a real terminal.
fn final_screen(raw: &str, width: usize) -> Vec<String> {
    let mut rows: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                row += 1;
                col = 0;
                if rows.len() <= row {
                    rows.push(Vec::new());
                }
            }
            '\r' => col = 0,
            '\x1b' => {
                let mut seq = String::new();
                if chars.peek() == Some(&'[') {
                    chars.next();
                    while let Some(&n) = chars.peek() {
                        chars.next();
                        if n.is_ascii_alphabetic() {
                            seq.push(n);
                            break;
                        }
                        seq.push(n);
                    }
                } else {
                    // Buildkite's APC timestamps and the like: to BEL.
                    for n in chars.by_ref() {
                        if n == '\x07' {
                            break;
                        }
                    }
                    continue;
                }
                let (arg, cmd) = seq.split_at(seq.len().saturating_sub(1));
                let n: usize = arg.parse().unwrap_or(1);
                match cmd {
                    "A" => row = row.saturating_sub(n),
                    "J" => {
                        rows[row].truncate(col);
                        rows.truncate(row + 1);
                    }
                    "K" => rows[row].truncate(col),
                    _ => {}
                }
            }
            c if c.is_control() => {}
            c => {
                if col >= width {
                    row += 1;
                    col = 0;
                    if rows.len() <= row {
                        rows.push(Vec::new());
                    }
                }
                let line = &mut rows[row];
                while line.len() < col {
                    line.push(' ');
                }
                if col < line.len() {
                    line[col] = c;
                } else {
                    line.push(c);
                }
                col += 1;
            }
        }
    }
    let mut out: Vec<String> = rows.into_iter().map(|r| r.into_iter().collect()).collect();
    while out.last().is_some_and(|l| l.trim().is_empty()) {
        out.pop();
    }
    out
}

#[test]
fn tty_collapses_steps_and_shows_a_failure_in_full() {
    let ctx = image_context("tty");
    let r = bkd_on_terminal(&["build", "."], ctx.path());
    r.assert_ok();
    // Under `script` everything the terminal got arrives on stdout.
    let out = screen_text(&r.stdout());
    assert!(
        regex::Regex::new(r"✔ #\d+ \[stage-1 1/1\] RUN echo progress-tty .*\(\d+\.\ds\)")
            .expect("regex")
            .is_match(&out),
        "{}",
        r.explain()
    );
    assert!(
        out.contains("[+] Building "),
        "a live frame\n{}",
        r.explain()
    );
    assert!(summary_re().is_match(&out), "{}", r.explain());
    // Finished steps collapse: no plain blocks, no step output, no frame
    // left on the screen at the end.
    let screen = final_screen(&r.stdout(), 80).join("\n");
    assert!(
        !screen.lines().any(|l| l.ends_with("on-stderr-tty")),
        "{screen}\n{}",
        r.explain()
    );
    assert!(!screen.contains("#1 DONE"), "{screen}\n{}", r.explain());
    assert!(
        !screen.contains("[+] Building"),
        "{screen}\n{}",
        r.explain()
    );
    assert!(summary_re().is_match(&screen), "{screen}\n{}", r.explain());

    let bad = failing_context("tty");
    let r = bkd_on_terminal(&["build", "--progress=tty", "."], bad.path());
    assert_eq!(r.code(), Some(1), "{}", r.explain());
    let out = screen_text(&r.stdout());
    assert!(out.contains("✘ #"), "{}", r.explain());
    // Every line of the failing step, not just the last ten.
    for i in 1..=30 {
        assert!(
            out.contains(&format!("│ tty-line-{i} ")) || out.contains(&format!("│ tty-line-{i}\n")),
            "line {i} missing\n{}",
            r.explain()
        );
    }
    assert!(out.contains("Build failed after"), "{}", r.explain());
}

#[test]
fn buildkite_groups_steps_and_expands_the_failure() {
    let ctx = image_context("kite");
    // auto picks buildkite on a Buildkite agent.
    let r = bkd_env(&["build", "."], ctx.path(), &[("BUILDKITE", "true")]);
    r.assert_ok();
    let err = r.stderr();
    let timestamp = regex::Regex::new(r"^\x1b_bk;t=\d{13}\x07").expect("regex");
    assert!(
        err.lines().all(|l| timestamp.is_match(l)),
        "every line timestamped\n{}",
        r.explain()
    );
    assert!(
        err.contains("\x07--- #1 [internal] load build definition from Dockerfile\n"),
        "{}",
        r.explain()
    );
    assert!(err.contains("\x07+++ Build summary\n"), "{}", r.explain());

    let bad = failing_context("kite");
    let r = bkd_env(&["build", "--progress=buildkite", "."], bad.path(), &[]);
    assert_eq!(r.code(), Some(1), "{}", r.explain());
    let err = r.stderr();
    let lines: Vec<&str> = err.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(" ERROR: process"))
        .unwrap_or_else(|| panic!("no error line\n{}", r.explain()));
    assert!(
        lines
            .get(at + 1)
            .is_some_and(|l| l.ends_with("\x07^^^ +++")),
        "{}",
        r.explain()
    );
}

/// Field names used anywhere in a rawjson stream, as `path.name`.
fn field_names(v: &serde_json::Value, path: &str, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let p = format!("{path}.{k}");
                out.insert(p.clone());
                field_names(v, &p, out);
            }
        }
        serde_json::Value::Array(a) => {
            for v in a {
                field_names(v, path, out);
            }
        }
        _ => {}
    }
}

fn stream_of(text: &str) -> (Vec<Update>, BTreeSet<String>, BTreeSet<String>) {
    let mut updates = Vec::new();
    let mut fields = BTreeSet::new();
    let mut names = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        field_names(&v, "", &mut fields);
        let u = from_line(line).expect("a SolveStatus line");
        names.extend(u.vertexes.iter().map(|v| v.name.clone()));
        updates.push(u);
    }
    (updates, fields, names)
}

#[test]
fn rawjson_has_buildctls_shape() {
    let ctx = image_context("json");
    // Selected through the environment variable.
    let ours = bkd_env(
        &["build", "--no-cache", "-o", "type=tar,dest=/dev/null", "."],
        ctx.path(),
        &[("BKD_PROGRESS", "rawjson")],
    );
    ours.assert_ok();
    let theirs = buildctl_build(
        &[
            "--progress=rawjson",
            "--opt",
            "no-cache=",
            "--output",
            "type=tar,dest=/dev/null",
        ],
        ctx.path(),
    );
    theirs.assert_ok();
    let err = ours.stderr();
    assert!(
        err.lines().all(|l| l.starts_with('{')),
        "only JSON lines, no summary\n{}",
        ours.explain()
    );
    let (updates, our_fields, our_names) = stream_of(&err);
    let (_, their_fields, their_names) = stream_of(&theirs.stderr());
    assert_eq!(our_names, their_names, "{}", ours.explain());
    assert!(
        our_fields.is_subset(&their_fields),
        "fields buildctl never writes: {:?}\n{}",
        our_fields.difference(&their_fields).collect::<Vec<_>>(),
        ours.explain()
    );
    for f in [
        ".vertexes.digest",
        ".vertexes.started",
        ".logs.data",
        ".statuses.current",
    ] {
        assert!(our_fields.contains(f), "{f} missing\n{}", ours.explain());
    }
    let logged: Vec<u8> = updates
        .iter()
        .flat_map(|u| u.logs.iter().flat_map(|l| l.data.to_vec()))
        .collect();
    let logged = String::from_utf8_lossy(&logged);
    assert!(logged.contains("progress-json\n"), "{}", ours.explain());
    assert!(logged.contains("on-stderr-json\n"), "{}", ours.explain());
}

#[test]
fn debug_shows_digests_status_numbers_and_warning_locations() {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!("{BUSYBOX_STAGE}from bb as final\nRUN echo debug-run\n"),
    );
    let r = bkd(
        &[
            "build",
            "--debug",
            "--progress=plain",
            "-o",
            "type=tar,dest=/dev/null",
            ".",
        ],
        ctx.path(),
    );
    r.assert_ok();
    let err = r.stderr();
    assert!(
        regex::Regex::new(r"(?m)^#\d+ digest: sha256:[0-9a-f]{64}$")
            .expect("regex")
            .is_match(&err),
        "{}",
        r.explain()
    );
    assert!(
        regex::Regex::new(r"(?m)^#\d+ inputs: (#\d+ \()?sha256:[0-9a-f]{64}")
            .expect("regex")
            .is_match(&err),
        "{}",
        r.explain()
    );
    assert!(
        regex::Regex::new(r"(?m)^#\d+ transferring context: .*\[current=\d+ total=\d+\]$")
            .expect("regex")
            .is_match(&err),
        "{}",
        r.explain()
    );
    assert!(
        err.contains("WARN: ConsistentInstructionCasing"),
        "{}",
        r.explain()
    );
    assert!(
        regex::Regex::new(r"(?m)^#\d+   at Dockerfile:4$")
            .expect("regex")
            .is_match(&err),
        "{}",
        r.explain()
    );
    assert!(err.contains("4 | from bb as final"), "{}", r.explain());
}

#[test]
fn clipped_step_output_is_announced() {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!("{BUSYBOX_STAGE}FROM bb\nRUN yes 'clip test line' | head -c 3000000\n"),
    );
    let r = bkd(
        &[
            "build",
            "--progress=plain",
            "-o",
            "type=tar,dest=/dev/null",
            ".",
        ],
        ctx.path(),
    );
    r.assert_ok();
    let err = r.stderr();
    assert!(
        regex::Regex::new(r"(?m)^#\d+ NOTE: output clipped by buildkitd: this step logged (more|faster) than \S+; (later )?lines are missing")
            .expect("regex")
            .is_match(&err),
        "{}",
        &err[err.len().saturating_sub(3000)..]
    );
}
