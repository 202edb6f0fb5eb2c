//! The live progress differential: each scenario's build runs through
//! buildctl and bkd on the test bed's daemon, many times, and bkd's plain
//! progress must match buildctl's step by step (see tests/differential/progress/).
//! Every test prints how many runs matched.

mod common;
#[path = "differential/progress/mod.rs"]
mod differential;

use std::sync::OnceLock;

use common::{bed, nonce};
use differential::{context_with, differential, run_nonce, Build, Scenario};

/// The scenario's own base stage `bb`: busybox under `/bin/NAME/`, so
/// scenarios running at once share no step by accident (shared steps show
/// in both builds' progress).
fn base(name: &str) -> String {
    format!(
        "FROM scratch AS bb\nCOPY busybox /bin/{name}/busybox\nRUN [\"/bin/{name}/busybox\",\"--install\",\"-s\",\"/bin\"]\n"
    )
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// A build that is the same for both tools (no extra arguments).
fn plain_build(dockerfile: String, nonce: String, ok: bool) -> Build {
    Build {
        dir: context_with(&dockerfile),
        bkd: Vec::new(),
        buildctl: Vec::new(),
        nonce,
        ok,
    }
}

/// Three stages on a common base, each printing while the others do.
#[test]
fn parallel_stages() {
    differential(&Scenario {
        name: "parallel",
        base: base("parallel"),
        builds: Box::new(|k| {
            let n = run_nonce(k);
            let stage = |x: &str| {
                format!("FROM bb AS {x}\nRUN for i in 1 2 3 4 5 6; do echo {x}-$i-{n}; sleep 0.05; done; echo {n} > /out\n")
            };
            let dockerfile = format!(
                "{}{}{}{}FROM bb\nCOPY --from=a /out /a\nCOPY --from=b /out /b\nCOPY --from=c /out /c\n",
                base("parallel"),
                stage("a"),
                stage("b"),
                stage("c")
            );
            vec![plain_build(dockerfile, n, true)]
        }),
        timed: Vec::new(),
        concurrent: false,
    });
}

/// The same build again: every step cached.
#[test]
fn cache_hits() {
    static NONCE: OnceLock<String> = OnceLock::new();
    let n = NONCE.get_or_init(nonce).clone();
    let dockerfile = format!(
        "{}FROM bb AS gen\nRUN echo generated-{n} > /g\nFROM bb\nCOPY --from=gen /g /g\nRUN cat /g\n",
        base("cached")
    );
    // Warm the cache once.
    let warm = plain_build(dockerfile.clone(), n.clone(), true);
    let r = differential::run_all(differential::Tool::Buildctl, &[warm], "plain");
    assert_eq!(r[0].code, Some(0), "{}", r[0].explain());
    differential(&Scenario {
        name: "cached",
        base: base("cached"),
        builds: Box::new(move |_| vec![plain_build(dockerfile.clone(), n.clone(), true)]),
        timed: Vec::new(),
        concurrent: false,
    });
}

/// A step fails while another runs beside it (and is canceled).
#[test]
fn failing_step() {
    differential(&Scenario {
        name: "failing",
        base: base("failing"),
        builds: Box::new(|k| {
            let n = run_nonce(k);
            let dockerfile = format!(
                "{}FROM bb AS slow\nRUN for i in $(seq 1 20); do echo slow-$i-{n}; sleep 0.1; done; echo {n} > /out\nFROM bb\nRUN for i in $(seq 1 12); do echo fail-$i-{n}; done; sleep 0.3; exit 3\nCOPY --from=slow /out /x\n",
                base("failing")
            );
            vec![plain_build(dockerfile, n, false)]
        }),
        timed: Vec::new(),
        concurrent: false,
    });
}

/// The image pushed to the test registry, with registry cache: the
/// daemon restarts the export step for the push.
#[test]
fn export_and_push() {
    differential(&Scenario {
        name: "push",
        base: base("push"),
        builds: Box::new(|k| {
            let n = run_nonce(k);
            let reg = &bed().registry;
            // A layer that takes a moment to compress and to push, so the
            // export step's two runs both count in its time.
            let dockerfile = format!(
                "{}FROM bb\nRUN echo pushed-{n} > /p && head -c 8000000 /dev/urandom > /blob\n",
                base("push")
            );
            let image = format!("{reg}/diff/push:{n}");
            let cache = format!("type=registry,ref={reg}/diff/push-cache:{n}");
            vec![Build {
                dir: context_with(&dockerfile),
                bkd: s(&[
                    "-o",
                    &format!("type=image,name={image},push=true"),
                    "--cache-to",
                    &cache,
                ]),
                buildctl: s(&[
                    "--output",
                    &format!("type=image,name={image},push=true"),
                    "--export-cache",
                    &cache,
                ]),
                nonce: n,
                ok: true,
            }]
        }),
        timed: vec!["exporting to image"],
        concurrent: false,
    });
}

/// Steps the daemon runs more than once: a `COPY --link` (a progress
/// group whose merge step restarts), two exporters and inline cache.
#[test]
fn restarted_steps() {
    differential(&Scenario {
        name: "restart",
        base: base("restart"),
        builds: Box::new(|k| {
            let n = run_nonce(k);
            let reg = &bed().registry;
            let dockerfile = format!(
                "{}FROM bb\nRUN echo {n} > /n\nCOPY --link Dockerfile /d\nRUN echo done-{n}\n",
                base("restart")
            );
            let image = format!("{reg}/diff/restart:{n}");
            let dir = context_with(&dockerfile);
            let tar = format!("type=tar,dest={}", dir.path().join("out.tar").display());
            vec![Build {
                bkd: s(&[
                    "-o",
                    &format!("type=image,name={image},push=true"),
                    "-o",
                    &tar,
                    "--cache-to",
                    "type=inline",
                ]),
                buildctl: s(&[
                    "--output",
                    &format!("type=image,name={image},push=true"),
                    "--output",
                    &tar,
                    "--export-cache",
                    "type=inline",
                ]),
                dir,
                nonce: n,
                ok: true,
            }]
        }),
        timed: vec![
            "exporting to image",
            "[stage-1 2/3] COPY --link Dockerfile /d",
        ],
        concurrent: false,
    });
}

/// Two builds at once sharing a step: each shows it (run or joined, or
/// cached), and closes it.
#[test]
fn concurrent_builds_sharing_steps() {
    differential(&Scenario {
        name: "concurrent",
        base: base("concurrent"),
        builds: Box::new(|k| {
            let n = run_nonce(k);
            ["A", "B"]
                .iter()
                .map(|who| {
                    let dockerfile = format!(
                        "{}FROM bb\nRUN for i in 1 2 3 4 5; do echo shared-$i-{n}; sleep 0.1; done\nRUN echo own-{who}-{n}\n",
                        base("concurrent")
                    );
                    plain_build(dockerfile, n.clone(), true)
                })
                .collect()
        }),
        timed: Vec::new(),
        concurrent: true,
    });
}
