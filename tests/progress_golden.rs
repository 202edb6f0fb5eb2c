//! Golden-output tests of every progress renderer, fed from status streams
//! recorded from a real buildkitd (`tests/fixtures/progress/*.jsonl`,
//! re-recorded by `scripts/record-progress-fixtures.sh`). Time comes only
//! from the recorded events; the tty frame is drawn at the latest event
//! time seen so far.
//!
//! The goldens (`*.golden` next to the streams) change only with
//! `BKD_BLESS=1 cargo test --test progress_golden`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bkd::progress::plain::{Clock, Flavor, PlainOptions, PlainPrinter};
use bkd::progress::quiet::Quiet;
use bkd::progress::rawjson::{from_line, to_line, RawJson};
use bkd::progress::summary::latest_time;
use bkd::progress::tty::TtyView;
use bkd::progress::{BuildEnd, Display, Update};

/// Streams recorded by scripts/record-progress-fixtures.sh, then the ones
/// the live differential recorded (`BKD_RECORD=1 cargo test --test
/// differential_progress`), and one whose `COPY --link` merge finished a
/// run and started the next in one message (bkd's rawjson of the
/// restarted-steps build, caught in a loop of 75).
const STREAMS: [&str; 12] = [
    "success",
    "cached",
    "failure",
    "warning",
    "clipped",
    "live-parallel",
    "live-cached",
    "live-failing",
    "live-push",
    "live-restart",
    "live-concurrent",
    "live-restart-split",
];

/// The streams of builds that failed.
fn failed(stream: &str) -> bool {
    stream == "failure" || stream == "live-failing"
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/progress")
}

fn lines(stream: &str) -> Vec<String> {
    let path = fixtures().join(format!("{stream}.jsonl"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines().map(str::to_string).collect()
}

fn updates(stream: &str) -> Vec<Update> {
    lines(stream)
        .iter()
        .enumerate()
        .map(|(i, l)| from_line(l).unwrap_or_else(|e| panic!("{stream}.jsonl line {}: {e}", i + 1)))
        .collect()
}

/// What the CLI would hand over at the end; fixed so goldens are stable.
fn build_end(stream: &str) -> BuildEnd {
    if failed(stream) {
        return BuildEnd {
            total: Duration::from_millis(2_345),
            ..Default::default()
        };
    }
    BuildEnd {
        total: Duration::from_millis(2_345),
        succeeded: true,
        exporter_response: HashMap::from([
            (
                "containerimage.digest".to_string(),
                "sha256:4a3c0f7e1d2b9a8c6e5f4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a"
                    .to_string(),
            ),
            (
                "image.name".to_string(),
                format!("bkd.test/fixture/{stream}:latest"),
            ),
        ]),
        written: vec![PathBuf::from("out.tar")],
    }
}

/// Live, the display redraws at most every 100 ms; replayed, a redraw
/// follows the message that moves the events' clock 100 ms past the last
/// one, so the output is fixed and close to a live run's.
const REDRAW: Duration = Duration::from_millis(100);

/// Whether a redraw is due after a message carrying time `t`.
fn due(last: &mut Option<SystemTime>, t: Option<SystemTime>) -> bool {
    let Some(t) = t else {
        return false;
    };
    match last {
        Some(l) if t.duration_since(*l).unwrap_or_default() < REDRAW => false,
        _ => {
            *last = Some(t);
            true
        }
    }
}

fn replay<D: Display>(mut display: D, stream: &str) -> D {
    let mut last = None;
    for u in updates(stream) {
        display.update(&u);
        if due(&mut last, latest_time(&u)) {
            display.refresh();
        }
    }
    display.finish();
    display.summary(&build_end(stream));
    display
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("renderers write UTF-8")
}

fn render_plain(stream: &str, options: PlainOptions) -> String {
    let options = PlainOptions {
        clock: Clock::Events,
        ..options
    };
    text(replay(PlainPrinter::with_options(Vec::new(), options), stream).into_inner())
}

fn render_flavor(stream: &str, flavor: Flavor) -> String {
    render_plain(
        stream,
        PlainOptions {
            flavor,
            ..Default::default()
        },
    )
}

fn render_tty(stream: &str) -> String {
    let mut view = TtyView::new(100);
    let mut out = String::new();
    let mut now = SystemTime::UNIX_EPOCH;
    let mut last = None;
    for u in updates(stream) {
        if let Some(t) = latest_time(&u) {
            now = now.max(t);
        }
        view.update(&u);
        if !due(&mut last, latest_time(&u)) {
            continue;
        }
        for l in view.take_lines(now, false) {
            out += &format!("{l}\n");
        }
        for l in view.frame(now) {
            out += &format!("  ~ {l}\n");
        }
    }
    for l in view.take_lines(now, true) {
        out += &format!("{l}\n");
    }
    for l in view.summary(&build_end(stream)) {
        out += &format!("{l}\n");
    }
    out
}

/// Compares with the golden file, or rewrites it under `BKD_BLESS=1`.
fn check(stream: &str, mode: &str, actual: &str) {
    let path = fixtures().join(format!("{stream}.{mode}.golden"));
    if std::env::var("BKD_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "read {}: {e} (create it with BKD_BLESS=1 cargo test --test progress_golden)",
            path.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the output, first at line {}:\n  golden: {:?}\n  actual: {:?}\n--- actual output ---\n{actual}\n(re-bless with BKD_BLESS=1 if the change is intended)",
            path.display(),
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first),
        );
    }
}

#[test]
fn plain_goldens() {
    for s in STREAMS {
        check(s, "plain", &render_plain(s, PlainOptions::default()));
    }
}

#[test]
fn debug_goldens() {
    for s in STREAMS {
        let verbose = PlainOptions {
            verbose: true,
            ..Default::default()
        };
        check(s, "debug", &render_plain(s, verbose));
    }
}

#[test]
fn buildkite_goldens() {
    for s in STREAMS {
        check(s, "buildkite", &render_flavor(s, Flavor::Buildkite));
    }
}

#[test]
fn github_goldens() {
    for s in STREAMS {
        check(s, "github", &render_flavor(s, Flavor::GitHub));
    }
}

#[test]
fn gitlab_goldens() {
    for s in STREAMS {
        check(s, "gitlab", &render_flavor(s, Flavor::GitLab));
    }
}

#[test]
fn tty_goldens() {
    for s in STREAMS {
        check(s, "tty", &render_tty(s));
    }
}

#[test]
fn quiet_goldens() {
    for s in STREAMS {
        let out = text(replay(Quiet::new(Vec::new()), s).into_inner());
        check(s, "quiet", &out);
    }
}

/// Drops what the events do not carry: a warning's build definition.
fn without_definitions(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(warnings) = v.get_mut("warnings").and_then(|w| w.as_array_mut()) {
        for w in warnings {
            if let Some(info) = w.get_mut("sourceInfo").and_then(|i| i.as_object_mut()) {
                info.remove("definition");
            }
        }
    }
    v
}

/// The rawjson writer reproduces buildctl's own lines: byte for byte, and
/// for warnings equal as JSON once the build definition is left out.
#[test]
fn rawjson_reproduces_buildctl() {
    for s in STREAMS {
        let recorded = lines(s);
        let ours = text(replay(RawJson::new(Vec::new()), s).into_inner());
        let ours: Vec<&str> = ours.lines().collect();
        assert_eq!(ours.len(), recorded.len(), "{s}: one line per message");
        for (i, (a, b)) in ours.iter().zip(&recorded).enumerate() {
            if b.contains("\"warnings\"") {
                let a: serde_json::Value = serde_json::from_str(a).expect("our JSON");
                let b: serde_json::Value = serde_json::from_str(b).expect("recorded JSON");
                assert_eq!(a, without_definitions(b), "{s}.jsonl line {}", i + 1);
            } else {
                assert_eq!(*a, b.as_str(), "{s}.jsonl line {}", i + 1);
            }
        }
        // And each line read back gives the same events.
        for l in &recorded {
            let u = from_line(l).expect("parses");
            assert_eq!(from_line(&to_line(&u)), Ok(u));
        }
    }
}

/// Every renderer says plainly that the daemon clipped a step's output.
#[test]
fn clipped_output_is_named_everywhere() {
    let needle = "output clipped by buildkitd: this step logged more than 32KiB";
    let plain = render_plain("clipped", PlainOptions::default());
    assert!(plain.contains(needle), "{plain}");
    let kite = render_flavor("clipped", Flavor::Buildkite);
    assert!(kite.contains(needle), "{kite}");
    let tty = render_tty("clipped");
    assert!(tty.contains("(output clipped at 32KiB)"), "{tty}");
}

/// The failing step's whole output and error reach every human renderer.
#[test]
fn failure_output_is_shown() {
    for out in [
        render_plain("failure", PlainOptions::default()),
        render_tty("failure"),
        text(replay(Quiet::new(Vec::new()), "failure").into_inner()),
        render_flavor("failure", Flavor::Buildkite),
        render_flavor("failure", Flavor::GitHub),
        render_flavor("failure", Flavor::GitLab),
    ] {
        assert!(out.contains("about to fail"), "{out}");
        assert!(out.contains("starting"), "{out}");
    }
    let kite = render_flavor("failure", Flavor::Buildkite);
    let error_line = kite
        .lines()
        .position(|l| l.contains("ERROR: process"))
        .expect("error line");
    assert!(
        kite.lines()
            .nth(error_line + 1)
            .is_some_and(|l| l.ends_with("^^^ +++")),
        "{kite}"
    );
}

/// A restarted step's DONE time covers all its runs, as buildctl's does:
/// checked against the runs in the recorded stream, merged here. A
/// progress group (`COPY --link`) is timed over all its members' runs.
#[test]
fn restarted_steps_are_timed_over_all_their_runs() {
    for (stream, shown) in [
        ("live-push", "exporting to image"),
        ("live-restart", "exporting to image"),
        ("live-restart", "[stage-1 2/3] COPY --link Dockerfile /d"),
        (
            "live-restart-split",
            "[stage-1 2/3] COPY --link Dockerfile /d",
        ),
    ] {
        // Every run of the step's vertices, keyed by start.
        let mut runs: std::collections::BTreeMap<SystemTime, SystemTime> = Default::default();
        for u in updates(stream) {
            let of_step = u.vertexes.iter().filter(|v| match &v.progress_group {
                Some(g) => g.name == shown,
                None => v.name == shown,
            });
            for v in of_step {
                if let (Some(a), Some(b)) = (v.started, v.completed) {
                    runs.insert(a, b);
                }
            }
        }
        assert!(runs.len() >= 2, "{stream}: {shown} ran once");
        let mut total = Duration::ZERO;
        let mut end = SystemTime::UNIX_EPOCH;
        for (a, b) in runs {
            let a = a.max(end);
            if b > a {
                total += b.duration_since(a).unwrap_or_default();
            }
            end = end.max(b);
        }
        let plain = render_plain(stream, PlainOptions::default());
        let number = plain
            .lines()
            .find_map(|l| l.strip_suffix(&format!(" {shown}")))
            .unwrap_or_else(|| panic!("{stream}: no block for {shown}\n{plain}"));
        let done = plain
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(&format!("{number} DONE ")))
            .unwrap_or_else(|| panic!("{stream}: {shown} not done\n{plain}"));
        assert_eq!(
            done,
            format!("{:.1}s", total.as_secs_f64()),
            "{stream}: {shown}\n{plain}"
        );
    }
}
