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

/// Asserts that `text` has a match of `pattern`, explaining `r` if not.
fn assert_matches(text: &str, pattern: &str, r: &Run) {
    assert!(
        regex::Regex::new(pattern).expect("regex").is_match(text),
        "no match of {pattern}\n{}",
        r.explain()
    );
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

/// The variables that choose a progress view; the tests set the ones they
/// mean and clear the rest, so a CI system running the suite (Buildkite
/// sets BUILDKITE=true) does not choose for them.
const VIEW_VARIABLES: [&str; 5] = [
    "BUILDKITE",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "BKD_PROGRESS",
    "BUILDKIT_PROGRESS",
];

/// Runs `program` with the view variables cleared, then `env` set.
fn run_clean(program: &str, args: &[&str], cwd: &std::path::Path, env: &[(&str, &str)]) -> Run {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null());
    for v in VIEW_VARIABLES {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    Run {
        cmd: format!("{env:?} {program} {}", args.join(" ")),
        cwd: cwd.to_path_buf(),
        out,
    }
}

/// Runs bkd against the test bed with the view variables cleared, then
/// `env` set.
fn bkd_clean(args: &[&str], cwd: &std::path::Path, env: &[(&str, &str)]) -> Run {
    let bed = bed();
    let mut all = vec![args[0], "--addr", &bed.addr];
    all.extend_from_slice(&args[1..]);
    run_clean(env!("CARGO_BIN_EXE_bkd"), &all, cwd, env)
}

fn shell_quote(a: &str) -> String {
    format!("'{}'", a.replace('\'', "'\\''"))
}

/// Runs the shell command `command` under a pseudo-terminal (util-linux
/// `script`) of 120 columns, as a developer or a CI agent would; what the
/// terminal got arrives on stdout.
fn on_terminal(command: &str, cwd: &std::path::Path, env: &[(&str, &str)]) -> Run {
    let mut all = vec![("COLUMNS", "120"), ("LINES", "40"), ("TERM", "xterm")];
    all.extend_from_slice(env);
    run_clean(
        "script",
        &[
            "-qefc",
            &format!("stty cols 120 rows 40; {command}"),
            "/dev/null",
        ],
        cwd,
        &all,
    )
}

/// The command line of bkd against the test bed, quoted for a shell.
fn bkd_command(args: &[&str]) -> String {
    let bed = bed();
    let mut cmd = vec![
        env!("CARGO_BIN_EXE_bkd").to_string(),
        args[0].to_string(),
        "--addr".into(),
        bed.addr.clone(),
    ];
    cmd.extend(args[1..].iter().map(|a| a.to_string()));
    cmd.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs bkd under a pseudo-terminal, with `env` set.
fn bkd_on_terminal_with(args: &[&str], cwd: &std::path::Path, env: &[(&str, &str)]) -> Run {
    on_terminal(&bkd_command(args), cwd, env)
}

/// Runs bkd under a pseudo-terminal, as a developer would at a shell.
fn bkd_on_terminal(args: &[&str], cwd: &std::path::Path) -> Run {
    bkd_on_terminal_with(args, cwd, &[])
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
    assert_matches(
        &out,
        r"✔ #\d+ \[stage-1 1/1\] RUN echo progress-tty .*\(\d+\.\ds\)",
        &r,
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
    // Steps are numbered as they start; a step another build shares
    // on the test bed's daemon can come first.
    assert_matches(
        &err,
        r"\x07--- #\d+ \[internal\] load build definition from Dockerfile\n",
        &r,
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

/// `--progress-record` holds the stream the plain view was drawn from: the
/// same steps, their output, every vertex finished; a link planted at its
/// path is replaced, its target left alone.
#[test]
fn progress_record_holds_the_stream_behind_the_view() {
    let ctx = image_context("record");
    let out = tempfile::tempdir().expect("a temporary directory");
    let record = out.path().join("record.jsonl");
    let victim = out.path().join("victim");
    std::fs::write(&victim, "keep\n").expect("write the victim");
    std::os::unix::fs::symlink(&victim, &record).expect("plant a link");
    let r = bkd_env(
        &[
            "build",
            "--no-cache",
            "--progress=plain",
            "-o",
            "type=tar,dest=/dev/null",
            ".",
        ],
        ctx.path(),
        &[("BKD_PROGRESS_RECORD", record.to_str().expect("utf8 path"))],
    );
    r.assert_ok();
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "keep\n",
        "the link's target was written"
    );
    let text = std::fs::read_to_string(&record).expect("the record");
    assert!(
        text.lines().all(|l| l.starts_with('{')),
        "only JSON lines\n{text}"
    );
    let (updates, _, names) = stream_of(&text);
    let shown: BTreeSet<String> = r
        .stderr()
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix('#')?;
            let (n, name) = rest.split_once(' ')?;
            (n.parse::<u32>().is_ok() && name.starts_with('[')).then(|| name.to_string())
        })
        .collect();
    assert!(!shown.is_empty(), "{}", r.explain());
    assert!(
        shown.is_subset(&names),
        "steps shown but not recorded: {:?}\n{}",
        shown.difference(&names).collect::<Vec<_>>(),
        r.explain()
    );
    let mut finished = std::collections::HashMap::new();
    for u in &updates {
        for v in &u.vertexes {
            let done = v.completed.is_some() || v.cached;
            let e = finished.entry(v.digest.clone()).or_insert(false);
            *e = *e || done;
        }
    }
    assert!(
        finished.values().all(|f| *f),
        "a recorded vertex never finished\n{text}"
    );
    let logged: Vec<u8> = updates
        .iter()
        .flat_map(|u| u.logs.iter().flat_map(|l| l.data.to_vec()))
        .collect();
    assert!(String::from_utf8_lossy(&logged).contains("progress-record\n"));
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
    assert_matches(&err, r"(?m)^#\d+ digest: sha256:[0-9a-f]{64}$", &r);
    assert_matches(&err, r"(?m)^#\d+ inputs: (#\d+ \()?sha256:[0-9a-f]{64}", &r);
    assert_matches(
        &err,
        r"(?m)^#\d+ transferring context: .*\[current=\d+ total=\d+\]$",
        &r,
    );
    assert!(
        err.contains("WARN: ConsistentInstructionCasing"),
        "{}",
        r.explain()
    );
    assert_matches(&err, r"(?m)^#\d+   at Dockerfile:4$", &r);
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

/// A context whose build has a step that prints one line and sleeps, so
/// a view has time to show it live.
fn slow_context(tag: &str, seconds: u32) -> tempfile::TempDir {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "{BUSYBOX_STAGE}FROM bb\nRUN echo {tag}-{} && sleep {seconds}\n",
            nonce()
        ),
    );
    ctx
}

/// `auto` picks the CI system's view even on the pseudo-terminal CI agents
/// run jobs on; without one, the live view.
#[test]
fn auto_picks_the_ci_view_on_a_terminal() {
    let ctx = image_context("auto");
    for (var, marker) in [
        (
            "BUILDKITE",
            r"\x07--- #\d+ \[internal\] load build definition",
        ),
        (
            "GITHUB_ACTIONS",
            r"::group::#\d+ \[internal\] load build definition",
        ),
        (
            "GITLAB_CI",
            r"\[collapsed=true\]\r\x1b\[0K#\d+ \[internal\] load build definition",
        ),
    ] {
        let r = bkd_on_terminal_with(&["build", "."], ctx.path(), &[(var, "true")]);
        r.assert_ok();
        let out = r.stdout();
        // Steps are numbered as they start; a step another build shares
        // on the test bed's daemon can come first.
        let marker = regex::Regex::new(marker).expect("regex");
        assert!(marker.is_match(&out), "{var}: {}", r.explain());
        assert!(!out.contains("[+] Building"), "{var}: {}", r.explain());
    }
    let r = bkd_on_terminal_with(&["build", "."], ctx.path(), &[("BUILDKITE", "false")]);
    r.assert_ok();
    assert!(r.stdout().contains("[+] Building"), "{}", r.explain());
}

/// `--progress` over `BKD_PROGRESS` over `BUILDKIT_PROGRESS` over auto; a
/// bad `BUILDKIT_PROGRESS` is a usage error.
#[test]
fn progress_variables_in_order() {
    let ctx = image_context("vars");
    let load_definition =
        regex::Regex::new(r"#\d+ \[internal\] load build definition").expect("regex");
    let quiet_or_plain = |env: &[(&str, &str)], args: &[&str]| {
        let mut all = vec!["build", "-o", "type=tar,dest=/dev/null"];
        all.extend_from_slice(args);
        all.push(".");
        let r = bkd_clean(&all, ctx.path(), env);
        r.assert_ok();
        let mode = if load_definition.is_match(&r.stderr()) {
            "plain"
        } else if r.stderr().lines().all(|l| l.starts_with('{')) {
            "rawjson"
        } else {
            "quiet"
        };
        // The run itself goes with the answer, for the assertion's message.
        (mode, r.explain())
    };
    let (mode, run) = quiet_or_plain(&[("BUILDKIT_PROGRESS", "quiet")], &[]);
    assert_eq!(mode, "quiet", "{run}");
    let (mode, run) = quiet_or_plain(
        &[("BUILDKIT_PROGRESS", "quiet"), ("BKD_PROGRESS", "plain")],
        &[],
    );
    assert_eq!(mode, "plain", "{run}");
    let (mode, run) = quiet_or_plain(
        &[("BUILDKIT_PROGRESS", "quiet"), ("BKD_PROGRESS", "plain")],
        &["--progress=rawjson"],
    );
    assert_eq!(mode, "rawjson", "{run}");
    // Inside Buildkite too, an explicit variable wins over auto.
    let (mode, run) = quiet_or_plain(
        &[("BUILDKITE", "true"), ("BUILDKIT_PROGRESS", "plain")],
        &[],
    );
    assert_eq!(mode, "plain", "{run}");
    let r = bkd_clean(
        &["build", "."],
        ctx.path(),
        &[("BUILDKIT_PROGRESS", "fancy\nerror: x")],
    );
    assert_eq!(r.code(), Some(2), "{}", r.explain());
    let err = r.stderr();
    assert_eq!(err.lines().count(), 1, "{}", r.explain());
    assert!(
        err.starts_with("error: invalid BUILDKIT_PROGRESS value fancy\\nerror: x"),
        "{}",
        r.explain()
    );
}

/// A failing step that prints 50,000 lines costs the terminal about those
/// lines once (collapsed output, then the failure in full), not a redraw
/// of the live area per line (13.7 MB before).
#[test]
fn tty_bytes_stay_bounded_for_a_busy_step() {
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "{BUSYBOX_STAGE}FROM bb\nRUN seq 1 50000 && echo {} && exit 1\n",
            nonce()
        ),
    );
    let r = bkd_on_terminal(&["build", "--progress=tty", "."], ctx.path());
    assert_eq!(r.code(), Some(1), "{}", r.explain());
    let raw = r.stdout();
    // The numbers the step printed that reached the terminal (the daemon
    // drops some beyond its 200 KiB/s log limit), each once.
    let shown: std::collections::BTreeSet<&str> = regex::Regex::new(r"│ (\d+)")
        .expect("regex")
        .captures_iter(&raw)
        .filter_map(|c| c.get(1).map(|m| m.as_str()))
        .collect();
    assert!(
        shown.len() > 1000,
        "the step's lines are shown\n{}",
        r.explain()
    );
    let logged: usize = shown.iter().map(|l| l.len() + 1).sum();
    assert!(
        raw.len() < 4 * logged + 200_000,
        "{} terminal bytes for {} bytes of step output",
        raw.len(),
        logged
    );
}

/// Interrupted (Ctrl-C) while a step runs, the live view leaves the steps
/// that were running and no frame, then the error line.
#[test]
fn interrupted_tty_leaves_a_clean_screen() {
    let ctx = slow_context("interrupt", 30);
    let command = format!(
        "{} & pid=$!; sleep 4; kill -INT $pid; wait $pid; echo exit=$?",
        bkd_command(&["build", "--progress=tty", "."])
    );
    let r = on_terminal(&command, ctx.path(), &[]);
    let screen = final_screen(&r.stdout(), 120);
    let text = screen.join("\n");
    assert!(text.contains("exit=130"), "{text}\n{}", r.explain());
    assert!(!text.contains("[+] Building"), "{text}\n{}", r.explain());
    assert!(
        regex::Regex::new(
            r"(?m)^- #\d+ \[stage-1 1/1\] RUN echo interrupt-.* \(interrupted after \d+\.\ds\)$"
        )
        .expect("regex")
        .is_match(&text),
        "{text}\n{}",
        r.explain()
    );
    let error_at = screen
        .iter()
        .position(|l| l.starts_with("error: interrupted"))
        .unwrap_or_else(|| panic!("no error line\n{text}"));
    assert!(
        screen[error_at + 1..]
            .iter()
            .all(|l| l.starts_with("exit=")),
        "{text}"
    );
    // The cursor is shown again.
    assert!(r.stdout().trim_end().rfind("\x1b[?25h") > r.stdout().rfind("\x1b[?25l"));
}

/// A `--cache-from` image that does not exist yet (a first build) is a
/// warning with its reason, not a failed step: quiet stays quiet but for
/// that line and the result, and the summary counts it as a warning.
#[test]
fn a_cache_import_that_finds_nothing_is_a_warning() {
    let bed = bed();
    let ctx = image_context(&format!("cache-miss-{}", nonce()));
    let cache = format!(
        "type=registry,ref={}/progress/nothing:{}",
        bed.registry,
        nonce()
    );
    let r = bkd_clean(
        &[
            "build",
            "--progress=quiet",
            "--cache-from",
            &cache,
            "-t",
            "bkd.test/progress/miss:1",
            ".",
        ],
        ctx.path(),
        &[],
    );
    r.assert_ok();
    let err = r.stderr();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.explain());
    assert!(
        lines[0].starts_with(&format!(
            "warning: no build cache imported from {}/progress/nothing:",
            bed.registry
        )) && lines[0].ends_with("not found"),
        "{}",
        r.explain()
    );
    assert!(
        lines[1].starts_with("image bkd.test/progress/miss:1@sha256:"),
        "{}",
        r.explain()
    );
    let export = format!(
        "type=registry,ref={}/progress/cache:{}",
        bed.registry,
        nonce()
    );
    let r = bkd_clean(
        &[
            "build",
            "--progress=plain",
            "--cache-from",
            &cache,
            "--cache-to",
            &export,
            "--no-cache",
            ".",
        ],
        ctx.path(),
        &[],
    );
    r.assert_ok();
    assert_matches(
        &r.stderr(),
        r"(?m)^Build finished in \d+\.\ds: \d+ steps \(\d+ run, \d+ cached\), 1 warning, .*, cache import \d+\.\ds, cache export \d+\.\ds$",
        &r,
    );
}

/// The Dockerfile excerpt in `text` (Buildkite timestamps dropped): the
/// `FILE:LINE` line, the rulers and the numbered lines.
fn excerpt_of(text: &str) -> Vec<String> {
    let stamp = regex::Regex::new(r"\x1b_bk;t=\d+\x07").expect("regex");
    let text = stamp.replace_all(text, "");
    let head = regex::Regex::new(r"^\S+:\d+$").expect("regex");
    let ruler = "--------------------";
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    let Some(at) =
        (0..lines.len()).find(|&i| head.is_match(lines[i]) && lines.get(i + 1) == Some(&ruler))
    else {
        return Vec::new();
    };
    let end = (at + 2..lines.len())
        .find(|&i| lines[i] == ruler)
        .unwrap_or(lines.len() - 1);
    lines[at..=end].iter().map(|l| l.to_string()).collect()
}

/// The `error:` line, cache refs taken out.
fn error_line(text: &str) -> Option<String> {
    let text = regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]")
        .expect("regex")
        .replace_all(text, "");
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))?
        .trim_end_matches('\r')
        .to_string();
    // The daemon's cache refs differ from build to build.
    let refs = regex::Regex::new(r"\b[0-9a-z]{25}::[0-9a-z]{25}\b").expect("regex");
    Some(refs.replace_all(&line, "<ref>").into_owned())
}

/// The four kinds of build error (a failing RUN, a parse error, a missing
/// COPY source, an unknown target), a failing heredoc (several ranges), a
/// Dockerfile with another name and a missing file of a named context:
/// every view prints the Dockerfile
/// excerpt exactly as buildctl does (none for an unknown target, where
/// the daemon names no line), and the same error line.
#[test]
fn excerpts_match_buildctl_in_every_view() {
    let n = nonce();
    let base = format!("{BUSYBOX_STAGE}FROM bb AS final\n");
    struct Case {
        name: &'static str,
        file: &'static str,
        dockerfile: String,
        bkd: Vec<String>,
        buildctl: Vec<String>,
    }
    let case = |name, dockerfile: String| Case {
        name,
        file: "Dockerfile",
        dockerfile,
        bkd: Vec::new(),
        buildctl: Vec::new(),
    };
    let cases = vec![
        case(
            "run",
            format!(
                "{base}RUN echo one-{n} && \\\n    echo two && \\\n    exit 3\nRUN echo after\n"
            ),
        ),
        case("parse", format!("{base}RUNN echo {n}\nRUN echo after\n")),
        // The daemon names each line of a heredoc as a range of its own.
        case(
            "heredoc",
            format!("{base}RUN <<EOT\necho {n}\nexit 4\nEOT\nRUN echo after\n"),
        ),
        case(
            "copy",
            format!("{base}COPY missing-{n}.txt /x\nRUN echo after\n"),
        ),
        Case {
            bkd: vec!["--target".into(), "nope".into()],
            buildctl: vec!["--opt".into(), "target=nope".into()],
            ..case("target", format!("{base}RUN echo {n}\n"))
        },
        Case {
            file: "sub/Build.dockerfile",
            bkd: vec!["-f".into(), "sub/Build.dockerfile".into()],
            buildctl: vec![
                "--local".into(),
                "dockerfile=sub".into(),
                "--opt".into(),
                "filename=Build.dockerfile".into(),
            ],
            ..case("filename", format!("{base}RUN echo {n} && false\n"))
        },
        Case {
            bkd: vec!["--build-context".into(), "extra=extra".into()],
            buildctl: vec![
                "--local".into(),
                "extra=extra".into(),
                "--opt".into(),
                "context:extra=local:extra".into(),
            ],
            ..case(
                "named-context",
                format!("{base}COPY --from=extra missing-{n}.txt /x\n"),
            )
        },
    ];
    for c in cases {
        let ctx = context();
        write(ctx.path(), c.file, &c.dockerfile);
        write(ctx.path(), "extra/present.txt", "here\n");
        let mut args: Vec<&str> = vec!["build"];
        args.extend(DOCKERFILE_HERE);
        args.push("--progress=plain");
        args.extend(c.buildctl.iter().map(String::as_str));
        let theirs = buildctl(&fix_locals(&args), ctx.path());
        assert_eq!(theirs.code(), Some(1), "{}: {}", c.name, theirs.explain());
        let want = excerpt_of(&theirs.stderr());
        if c.name != "target" {
            assert!(
                !want.is_empty(),
                "{}: buildctl printed no excerpt\n{}",
                c.name,
                theirs.explain()
            );
        }
        let want_error = error_line(&theirs.stderr());
        for mode in [
            "plain",
            "buildkite",
            "github",
            "gitlab",
            "rawjson",
            "quiet",
            "tty",
        ] {
            let progress = format!("--progress={mode}");
            let mut args = vec!["build", progress.as_str()];
            args.extend(c.bkd.iter().map(String::as_str));
            args.push(".");
            let ours = if mode == "tty" {
                bkd_on_terminal(&args, ctx.path())
            } else {
                bkd_clean(&args, ctx.path(), &[])
            };
            let text = if mode == "tty" {
                final_screen(&ours.stdout(), 120).join("\n")
            } else {
                ours.stderr()
            };
            assert_eq!(
                ours.code(),
                Some(1),
                "{} {mode}: {}",
                c.name,
                ours.explain()
            );
            assert_eq!(
                excerpt_of(&text),
                want,
                "{} {mode}:\n{text}\nbuildctl:\n{}",
                c.name,
                theirs.stderr()
            );
            // The terminal wraps a long line: the error line as written.
            let raw = if mode == "tty" {
                ours.stdout()
            } else {
                ours.stderr()
            };
            assert_eq!(error_line(&raw), want_error, "{} {mode}:\n{text}", c.name);
        }
    }
}

/// buildctl's `--local dockerfile=.` replaced by the case's own
/// `--local dockerfile=...` when it gives one.
fn fix_locals<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let own = args.iter().filter(|a| a.starts_with("dockerfile=")).count() > 1;
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if own && args[i] == "--local" && args.get(i + 1) == Some(&"dockerfile=.") {
            i += 2;
            continue;
        }
        out.push(args[i]);
        i += 1;
    }
    out
}

/// In the CI views, steps running side by side still get one group each
/// (before: a group for every switch between them, about 8 per step).
#[test]
fn ci_views_give_each_step_one_group() {
    let n = nonce();
    let stage = |x: &str| {
        format!("FROM bb AS {x}\nRUN for i in 1 2 3 4 5 6 7 8; do echo {x}-$i-{n}; sleep 0.1; done; echo {n} > /out\n")
    };
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "{BUSYBOX_STAGE}{}{}{}FROM bb\nCOPY --from=a /out /a\nCOPY --from=b /out /b\nCOPY --from=c /out /c\n",
            stage("a"),
            stage("b"),
            stage("c")
        ),
    );
    for (var, open) in [
        (
            "BUILDKITE",
            regex::Regex::new(r"(?m)\x07--- #(\d+) ").expect("regex"),
        ),
        (
            "GITHUB_ACTIONS",
            regex::Regex::new(r"(?m)^::group::#(\d+) ").expect("regex"),
        ),
        (
            "GITLAB_CI",
            regex::Regex::new(r"(?m)\x1b\[0K#(\d+) ").expect("regex"),
        ),
    ] {
        let r = bkd_clean(&["build", "--no-cache", "."], ctx.path(), &[(var, "true")]);
        r.assert_ok();
        let err = r.stderr();
        let mut groups: std::collections::BTreeMap<String, usize> = Default::default();
        for c in open.captures_iter(&err) {
            *groups.entry(c[1].to_string()).or_default() += 1;
        }
        assert!(groups.len() >= 9, "{var}: {groups:?}\n{}", r.explain());
        assert!(
            groups.values().all(|n| *n == 1),
            "{var}: {groups:?}\n{}",
            r.explain()
        );
        // Each stage's lines are together, in its group.
        for x in ["a", "b", "c"] {
            let lines: Vec<usize> = err
                .lines()
                .enumerate()
                .filter(|(_, l)| {
                    l.contains(&format!(" {x}-")) && l.contains(&n) && !l.contains(" RUN ")
                })
                .map(|(i, _)| i)
                .collect();
            assert_eq!(lines.len(), 8, "{var}: {x}\n{}", r.explain());
            assert_eq!(lines[7] - lines[0], 7, "{var}: {x} split\n{}", r.explain());
        }
    }
}
