//! A pool of real buildkitd daemons with mTLS on this machine, set up as
//! docs/pool.md tells (tests/common/fleet.rs): builds of one repository
//! stick to one daemon, names are discovered in DNS (A/AAAA and SRV, as a
//! headless Service publishes them), dead and unreachable endpoints are
//! skipped, a build that lost its daemon moves only when no step had
//! started, the context stays warm across client directories, and
//! daemonless builds share a state dir through slots.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bkd::route::{rendezvous, Endpoint};
use bkd::transport::Address;
use common::fleet::*;
use common::spawn::{processes_matching, wait_for};
use common::*;

/// A repository's files: busybox, its own source file, and a Dockerfile
/// whose last step is slow.
fn write_repo(dir: &Path, repo: &str, slow: &str) {
    std::fs::copy("/bin/busybox", dir.join("busybox")).expect("copy busybox");
    write(dir, "app.txt", &format!("source of {repo}\n"));
    write(
        dir,
        "Dockerfile",
        &format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY app.txt /app.txt\n\
             RUN [\"/bin/busybox\",\"sh\",\"-c\",\"{slow} && /bin/busybox cat /app.txt > /built\"]\n"
        ),
    );
}

/// A fresh client directory holding `repo`, as a new CI pod's checkout.
fn checkout(repo: &str, slow: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("bkd-checkout-")
        .tempdir()
        .expect("checkout dir");
    write_repo(dir.path(), repo, slow);
    dir
}

/// The daemon a build went to (its `building on` line).
fn routed_to(run: &Run) -> String {
    run.stderr()
        .lines()
        .find_map(|l| l.strip_prefix("bkd: route: building on "))
        .and_then(|rest| rest.split(' ').next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no routing line\n{}", run.explain()))
}

/// Whether the build ran its RUN step (rather than finding it cached),
/// from the plain progress output.
fn ran_slow_step(run: &Run) -> bool {
    let err = run.stderr();
    let id = err
        .lines()
        .find(|l| l.contains("] RUN [\"/bin/busybox\""))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no RUN step in the output\n{}", run.explain()))
        .to_string();
    !err.lines().any(|l| l == format!("{id} CACHED"))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The endpoints bkd makes of fixed addresses, for computing a key's order.
fn fixed(addrs: &[String]) -> Vec<Endpoint> {
    addrs
        .iter()
        .map(|a| Endpoint {
            id: a.clone(),
            address: Address::parse(a).expect("address"),
            server_name: None,
            origin: None,
        })
        .collect()
}

/// A route key whose order over `endpoints` starts with `first`.
fn key_first_on(endpoints: &[Endpoint], first: &str, tag: &str) -> String {
    (0..10_000)
        .map(|i| format!("{tag}-{i}"))
        .find(|k| rendezvous::order(k, endpoints)[0].id == first)
        .expect("a key for each endpoint")
}

/// How a workload's builds choose their daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The whole pool given to bkd, each build routed by its default key.
    Sticky,
    /// One daemon picked at random and given alone, as a plain load
    /// balancer in front of the pool would.
    Random,
}

/// One build of the routing workload.
#[derive(Debug, Clone)]
pub struct Built {
    pub repo: String,
    /// The daemon's index in its fleet.
    pub daemon: usize,
    pub ran_slow_step: bool,
    /// Dockerfile steps, and how many of them came from the cache.
    pub steps: usize,
    pub cached: usize,
    pub wall: Duration,
}

/// Dockerfile steps in plain progress output (not the frontend's
/// `[internal]` loads): (steps, cached).
fn step_counts(run: &Run) -> (usize, usize) {
    let err = run.stderr();
    let ids: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with('#') && !l.contains(" [internal] "))
        .filter(|l| {
            l.split_once(" [")
                .and_then(|(_, rest)| rest.split_once(']'))
                .is_some_and(|(stage, _)| stage.rsplit(' ').next().is_some_and(|n| n.contains('/')))
        })
        .filter_map(|l| l.split(' ').next())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let cached = ids
        .iter()
        .filter(|id| err.lines().any(|l| l == format!("{id} CACHED")))
        .count();
    (ids.len(), cached)
}

/// A repository's BUILDKITE_REPO, as an agent's checkout sets it.
fn buildkite_repo(repo: &str) -> String {
    format!("git@{}.git", repo.replacen('/', ":", 1))
}

/// One build of `repo` from a fresh checkout, on the daemon of `fleet`
/// that `choice` gives (`pick` for random choice). It must succeed.
fn one_build(fleet: &Fleet, choice: Choice, repo: &str, slow: &str, pick: usize) -> Built {
    let dir = checkout(repo, slow);
    let addr = match choice {
        Choice::Sticky => fleet.addr_list(),
        Choice::Random => fleet.daemons[pick].addr.clone(),
    };
    let mut args = strings(&["build", "--addr", &addr, "--progress", "plain"]);
    args.extend(fleet.tls_flags());
    args.push(".".into());
    let started = Instant::now();
    let run = fleet.bkd(
        &args,
        dir.path(),
        &[
            ("BUILDKITE_REPO", &buildkite_repo(repo)),
            (
                "BUILDKITE_BUILD_CHECKOUT_PATH",
                &dir.path().display().to_string(),
            ),
        ],
    );
    let wall = started.elapsed();
    run.assert_ok();
    let daemon = match choice {
        Choice::Sticky => {
            let to = routed_to(&run);
            fleet
                .daemons
                .iter()
                .position(|d| d.addr == to)
                .unwrap_or_else(|| panic!("routed to {to}, not a daemon of the pool"))
        }
        Choice::Random => pick,
    };
    let (steps, cached) = step_counts(&run);
    Built {
        repo: repo.to_string(),
        daemon,
        ran_slow_step: ran_slow_step(&run),
        steps,
        cached,
        wall,
    }
}

/// The same workload under sticky routing and random choice, side by
/// side: two fresh fleets of `daemons`, the builds interleaved (the
/// order of each pair alternating) so both see the same machine load.
/// `rng` shuffles the order and makes the random picks.
pub fn sticky_against_random(
    repos: &[&str],
    per_repo: usize,
    daemons: usize,
    slow: &str,
    rng: &mut impl rand::Rng,
) -> Comparison {
    let sticky_fleet = Fleet::start(daemons);
    let random_fleet = Fleet::start(daemons);
    let mut order: Vec<&str> = repos
        .iter()
        .flat_map(|r| std::iter::repeat_n(*r, per_repo))
        .collect();
    rand::seq::SliceRandom::shuffle(order.as_mut_slice(), rng);
    let started = Instant::now();
    let (mut sticky, mut random) = (Vec::new(), Vec::new());
    for (n, repo) in order.iter().enumerate() {
        let pick = rng.random_range(0..daemons);
        let mut pair = [Choice::Sticky, Choice::Random];
        if n % 2 == 1 {
            pair.reverse();
        }
        for choice in pair {
            match choice {
                Choice::Sticky => sticky.push(one_build(&sticky_fleet, choice, repo, slow, pick)),
                Choice::Random => random.push(one_build(&random_fleet, choice, repo, slow, pick)),
            }
        }
    }
    let wall = started.elapsed();
    // The daemons' own history agrees: each build ran once, where it was
    // sent, and none failed.
    for (fleet, built) in [(&sticky_fleet, &sticky), (&random_fleet, &random)] {
        for i in 0..daemons {
            let records = fleet.histories(i);
            let here = built.iter().filter(|b| b.daemon == i).count();
            assert_eq!(records.len(), here, "{}", fleet.daemons[i].addr);
            for r in &records {
                assert!(r["record"].get("error").is_none(), "a failed build: {r}");
            }
        }
    }
    Comparison {
        sticky,
        random,
        wall,
        sticky_addrs: sticky_fleet
            .daemons
            .iter()
            .map(|d| d.addr.clone())
            .collect(),
    }
}

/// The two sides of [`sticky_against_random`].
pub struct Comparison {
    pub sticky: Vec<Built>,
    pub random: Vec<Built>,
    /// Both sides, interleaved.
    pub wall: Duration,
    /// The sticky fleet's addresses, in order.
    pub sticky_addrs: Vec<String>,
}

/// Builds that ran the slow step.
pub fn reruns(built: &[Built]) -> usize {
    built.iter().filter(|b| b.ran_slow_step).count()
}

/// The re-runs a daemon's cache allows: the first build of each
/// repository on each daemon, and no other.
fn first_visits(built: &[Built]) -> Vec<bool> {
    let mut seen = std::collections::BTreeSet::new();
    built
        .iter()
        .map(|b| seen.insert((b.repo.clone(), b.daemon)))
        .collect()
}

#[test]
fn sticky_routing_reruns_the_slow_step_at_most_half_as_often_as_random_choice() {
    use rand::SeedableRng;
    let repos = [
        "github.com/org/api",
        "github.com/org/web",
        "github.com/org/worker",
        "github.com/org/cli",
        "github.com/org/docs",
    ];
    // A fixed seed: the shuffled order and the random picks are the same in
    // every run (random choice re-runs 13 of 20 with it), so the bound is
    // tested, not the luck of the draw.
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let Comparison {
        sticky,
        random,
        sticky_addrs,
        ..
    } = sticky_against_random(&repos, 4, 3, "sleep 1", &mut rng);
    let show = |b: &[Built]| {
        b.iter()
            .map(|b| {
                format!(
                    "{}@{}{}",
                    b.repo,
                    b.daemon,
                    if b.ran_slow_step { " ran" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!(
        "sticky re-ran the slow step in {} of {} builds, random choice in {}",
        reruns(&sticky),
        sticky.len(),
        reruns(&random)
    );
    // The bound of the measurement: sticky routing re-runs the slow step at
    // most half as often as random choice does.
    assert!(
        2 * reruns(&sticky) <= reruns(&random),
        "sticky re-ran {} of {}, random {}:\nsticky: {}\nrandom: {}",
        reruns(&sticky),
        sticky.len(),
        reruns(&random),
        show(&sticky),
        show(&random)
    );
    // Under both, a step re-ran exactly where a daemon had not built that
    // repository before: the cache is per daemon, and reached from fresh
    // checkouts.
    for built in [&sticky, &random] {
        let ran: Vec<bool> = built.iter().map(|b| b.ran_slow_step).collect();
        assert_eq!(ran, first_visits(built), "{}", show(built));
    }
    assert_eq!(reruns(&sticky), repos.len(), "{}", show(&sticky));
    // Each repository went where rendezvous hashing of its default key
    // (repository from BUILDKITE_REPO, the Dockerfile's path in the
    // checkout, no target or platform) puts it: not merely to one daemon.
    let endpoints = fixed(&sticky_addrs);
    for b in &sticky {
        let key = format!("{}:Dockerfile::", b.repo);
        let expected = &rendezvous::order(&key, &endpoints)[0].id;
        assert_eq!(
            &sticky_addrs[b.daemon],
            expected,
            "{}: {}",
            b.repo,
            show(&sticky)
        );
        assert_eq!(b.steps, 3, "{b:?}");
    }
}

#[test]
fn a_headless_services_a_aaaa_and_srv_records_name_the_pool() {
    let fleet = Fleet::start_with_dns(3);
    let port = fleet.shared_port;
    let dir = checkout("github.com/org/dns", "true");

    // A and AAAA: every record of the Service's short name, through the
    // pod's search domains; the key is one whose first choice is [::1].
    let records: Vec<String> = (0..3)
        .map(|i| format!("tcp://{}:{port}", record_ip(i)))
        .chain([format!("tcp://[::1]:{port}")])
        .collect();
    let key = key_first_on(&fixed(&records), &format!("tcp://[::1]:{port}"), "aaaa");
    let mut args = strings(&[
        "build",
        "--debug",
        "--addr",
        &format!("dns://buildkitd:{port}"),
    ]);
    args.extend(fleet.tls_flags());
    args.extend(strings(&["--route-key", &key, "."]));
    let run = fleet.bkd(&args, dir.path(), &[]);
    run.assert_ok();
    let err = run.stderr();
    let gave = err
        .lines()
        .find(|l| l.contains(&format!("dns://buildkitd:{port} gave ")))
        .unwrap_or_else(|| panic!("no discovery line\n{}\n{}", run.explain(), fleet.dns_log()));
    assert!(gave.contains("gave 4 endpoint(s)"), "{gave}");
    for r in &records {
        assert!(gave.contains(r.as_str()), "{r} missing: {gave}");
    }
    assert_eq!(
        routed_to(&run),
        format!("tcp://[::1]:{port}"),
        "{}",
        run.explain()
    );

    // SRV: the pods' own names, each on its port; the key's order over
    // those names decides.
    let targets: Vec<String> = fleet
        .daemons
        .iter()
        .map(|d| format!("tcp://{}:{}", d.pod, d.port))
        .collect();
    for (n, target) in targets.iter().enumerate() {
        let key = key_first_on(&fixed(&targets), target, &format!("srv{n}"));
        let mut args = strings(&[
            "build",
            "--debug",
            "--addr",
            "srv://_buildkitd._tcp.buildkitd",
        ]);
        args.extend(fleet.tls_flags());
        args.extend(strings(&["--route-key", &key, "."]));
        let run = fleet.bkd(&args, dir.path(), &[]);
        run.assert_ok();
        assert!(
            run.stderr()
                .contains("srv://_buildkitd._tcp.buildkitd gave 3 endpoint(s)"),
            "{}\n{}",
            run.explain(),
            fleet.dns_log()
        );
        assert_eq!(&routed_to(&run), target, "{}", run.explain());
    }

    // The pipeline step of docs/pool.md, as written: BKD_ADDR and the
    // command's flags (its certificates under /certs are the test's).
    let step = doc_block("pipeline");
    let bkd_addr = step
        .lines()
        .skip_while(|l| !l.contains("name: BKD_ADDR"))
        .find_map(|l| l.trim().strip_prefix("value: "))
        .expect("the step sets BKD_ADDR")
        .to_string();
    let command: String = step
        .split_once("command: |")
        .expect("the step's command")
        .1
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("      "))
        .collect::<Vec<_>>()
        .join(" ")
        .replace('\\', " ");
    let words: Vec<String> = command
        .split_whitespace()
        .skip_while(|w| *w != "build")
        .take_while(|w| *w != "--push")
        .map(|w| w.replace("/certs/", &format!("{}/", fleet.certs.display())))
        .collect();
    let out = dir.path().join("out.tar");
    let mut args = words.clone();
    args.extend(strings(&["-o", &tar_output(&out), "."]));
    let run = fleet.bkd(&args, dir.path(), &[("BKD_ADDR", &bkd_addr)]);
    run.assert_ok();
    assert!(targets.contains(&routed_to(&run)), "{}", run.explain());
    assert!(tar_file(&out, "built").is_some(), "{}", run.explain());

    // bkd doctor lists the pool's endpoints and that each answers.
    let mut args = strings(&["doctor", "--addr", "srv://_buildkitd._tcp.buildkitd"]);
    args.extend(fleet.tls_flags());
    let doctor = fleet.bkd(&args, dir.path(), &[]);
    let text = doctor.stdout();
    assert!(
        text.contains("a pool of 3 endpoint(s)"),
        "{}",
        doctor.explain()
    );
    for t in &targets {
        assert!(
            text.lines().any(|l| l.starts_with("[ok  ] address")
                && l.contains(t.as_str())
                && l.contains("a daemon answers")),
            "{t}\n{}",
            doctor.explain()
        );
    }
}

/// The build's stderr lines that tell of a daemon lost mid-build.
fn retries(run: &Run) -> Vec<String> {
    run.stderr()
        .lines()
        .filter(|l| l.starts_with("bkd: route: lost "))
        .map(str::to_string)
        .collect()
}

/// Build `n` of the failover test, on `list` with a key whose first choice
/// is `first`: it must succeed on the first live endpoint of the key's
/// order, saying which it skipped (waiting only for `stalled`), and never
/// be retried. Returns where it went.
fn failover_build(
    fleet: &Fleet,
    dir: &Path,
    n: usize,
    list: &[String],
    dead: &[&String],
    first: &String,
    stalled: &str,
) -> String {
    let endpoints = fixed(list);
    let key = key_first_on(&endpoints, first, &format!("failover{n}"));
    let expected = rendezvous::order(&key, &endpoints)
        .into_iter()
        .find(|e| !dead.contains(&&e.id))
        .expect("a live endpoint")
        .id;
    let mut args = strings(&["build", "--addr", &list.join(","), "--route-key", &key]);
    args.extend(fleet.tls_flags());
    args.push(".".into());
    let started = Instant::now();
    let run = fleet.bkd(&args, dir, &[]);
    run.assert_ok();
    assert_eq!(routed_to(&run), expected, "{}", run.explain());
    let stderr = run.stderr();
    let skipped: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("did not answer"))
        .collect();
    let skipped_first = dead.contains(&first);
    assert_eq!(!skipped.is_empty(), skipped_first, "{}", run.explain());
    if skipped_first {
        assert!(
            skipped[0].starts_with(&format!(
                "bkd: route: {first} (1st for this key) did not answer: "
            )),
            "{}",
            run.explain()
        );
    }
    if first == stalled {
        assert!(
            skipped[0].contains("no answer within 5s"),
            "{}",
            run.explain()
        );
    } else {
        // A refused or dead endpoint costs no wait.
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            run.explain()
        );
    }
    assert!(retries(&run).is_empty(), "{}", run.explain());
    expected
}

#[test]
fn dead_refusing_and_stalled_endpoints_are_skipped_and_every_build_succeeds() {
    let mut fleet = Fleet::start(3);
    let pool: Vec<String> = fleet.daemons.iter().map(|d| d.addr.clone()).collect();
    let refused = format!("tcp://127.0.0.1:{}", free_port());
    // Accepts connections (the kernel completes them) but never answers:
    // what an address off this machine is here too, where outgoing
    // connections are answered by the network whatever the address.
    let stalled_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let stalled = format!("tcp://{}", stalled_listener.local_addr().expect("addr"));
    let dir = checkout("github.com/org/failover", "true");
    let mut n = 0;
    let mut build_on = |fleet: &Fleet, list: &[String], dead: &[&String], first: &String| {
        n += 1;
        failover_build(fleet, dir.path(), n, list, dead, first, &stalled)
    };
    // All three up: a build on the one that is about to go.
    assert_eq!(build_on(&fleet, &pool, &[], &pool[1]), pool[1]);
    // One daemon killed, as a node failure would: its keys move to their
    // second choice, the others stay.
    fleet.kill(1);
    let dead = [&pool[1]];
    for first in [&pool[1], &pool[1], &pool[0], &pool[2]] {
        build_on(&fleet, &pool, &dead, first);
    }
    // Then one refusing and one unreachable address in the list as well.
    let mut list = pool.clone();
    list.extend([refused.clone(), stalled.clone()]);
    let dead = [&pool[1], &refused, &stalled];
    for first in [&refused, &stalled, &pool[1], &pool[0], &pool[2]] {
        build_on(&fleet, &list, &dead, first);
    }
    let builds = n;
    // Every build ran once, where bkd said, and none failed there: none was
    // retried after it started (the killed daemon's one build is gone with
    // its history).
    let records: Vec<serde_json::Value> = [0, 2].iter().flat_map(|i| fleet.histories(*i)).collect();
    assert_eq!(records.len(), builds - 1, "{records:?}");
    for r in &records {
        assert!(r["record"].get("error").is_none(), "a failed build: {r}");
        assert!(r["record"].get("CompletedAt").is_some(), "{r}");
    }
    drop(stalled_listener);
}

/// A build of `dir` in the background, its output in files.
struct Background {
    child: std::process::Child,
    out: tempfile::TempDir,
    cmd: String,
    cwd: std::path::PathBuf,
}

impl Background {
    fn start(fleet: &Fleet, args: &[String], dir: &Path) -> Background {
        let out = tempfile::tempdir().expect("out dir");
        let child = fleet
            .command(args, dir, &[])
            .stdout(std::fs::File::create(out.path().join("stdout")).expect("stdout"))
            .stderr(std::fs::File::create(out.path().join("stderr")).expect("stderr"))
            .spawn()
            .expect("start bkd");
        Background {
            child,
            out,
            cmd: format!("bkd {}", args.join(" ")),
            cwd: dir.to_path_buf(),
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.out.path().join("stderr")).unwrap_or_default()
    }

    fn finish(mut self, limit: Duration) -> Run {
        let ended = wait_for(limit, || matches!(self.child.try_wait(), Ok(Some(_))));
        if !ended {
            let _ = self.child.kill();
        }
        let status = self.child.wait().expect("wait for bkd");
        let out = std::process::Output {
            status,
            stdout: std::fs::read(self.out.path().join("stdout")).unwrap_or_default(),
            stderr: std::fs::read(self.out.path().join("stderr")).unwrap_or_default(),
        };
        let run = Run {
            cmd: self.cmd.clone(),
            cwd: self.cwd.clone(),
            out,
        };
        assert!(ended, "bkd did not end within {limit:?}\n{}", run.explain());
        run
    }
}

/// `--daemon-timeout` bounds the whole choice: endpoints that accept and
/// never answer cost at most what is left of it, not 5 s each.
#[test]
fn stalled_endpoints_cost_no_more_than_the_daemon_timeout() {
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let list: Vec<String> = listeners
        .iter()
        .map(|l| format!("tcp://{}", l.local_addr().expect("addr")))
        .collect();
    let dir = checkout("github.com/org/stalled", "true");
    let started = Instant::now();
    let run = common::run(
        env!("CARGO_BIN_EXE_bkd"),
        &[
            "build",
            "--addr",
            &list.join(","),
            "--daemon-timeout",
            "3",
            ".",
        ],
        dir.path(),
        &[],
    );
    let took = started.elapsed();
    assert_ne!(run.code(), Some(0), "{}", run.explain());
    assert!(
        took < Duration::from_secs(8),
        "took {took:?} for a 3 s --daemon-timeout\n{}",
        run.explain()
    );
    assert!(
        run.stderr().contains("--daemon-timeout spent"),
        "{}",
        run.explain()
    );
}

/// Kills daemon `i` under `build`, which must then succeed elsewhere: the
/// run and the one line saying it moved.
fn moved_after_killing(fleet: &mut Fleet, build: Background, i: usize) -> (Run, String) {
    fleet.kill(i);
    let run = build.finish(Duration::from_secs(120));
    run.assert_ok();
    let lost = retries(&run);
    assert_eq!(lost.len(), 1, "{}", run.explain());
    let line = lost[0].clone();
    (run, line)
}

#[test]
fn a_build_moves_to_the_next_daemon_only_if_no_step_had_started() {
    let mut fleet = Fleet::start(4);
    let list: Vec<String> = fleet.daemons.iter().map(|d| d.addr.clone()).collect();
    let endpoints = fixed(&list);
    let tls = fleet.tls_flags();
    let pool_args = |key: &str, extra: &[&str]| {
        let mut args = strings(&["build", "--addr", &list.join(","), "--route-key", key]);
        args.extend(tls.iter().cloned());
        args.extend(strings(extra));
        args.push(".".into());
        args
    };

    // Lost while the context is still being sent: no step had started, so
    // the build moves to the key's second daemon and succeeds there.
    let big = tempfile::tempdir().expect("big context");
    let file = std::fs::File::create(big.path().join("big")).expect("big file");
    file.set_len(800 << 20).expect("800 MB");
    write(big.path(), "Dockerfile", "FROM scratch\nCOPY big /big\n");
    let key = key_first_on(&endpoints, &list[0], "transfer");
    let second = rendezvous::order(&key, &endpoints)[1].id.clone();
    let build = Background::start(&fleet, &pool_args(&key, &["--debug"]), big.path());
    let sending = wait_for(Duration::from_secs(60), || {
        let e = build.stderr();
        e.contains("file sync requested dir=context") && e.contains("\"big\"")
    });
    assert!(
        sending,
        "the context transfer never started:\n{}",
        build.stderr()
    );
    let (run, lost) = moved_after_killing(&mut fleet, build, 0);
    assert!(
        lost.starts_with(&format!(
            "bkd: route: lost {} before any build step started: ",
            list[0]
        )) && lost.ends_with("; retrying on the next daemon"),
        "{}",
        run.explain()
    );
    assert!(
        run.stderr().contains(&format!(
            "bkd: route: building on {second} (2nd of 4 for this key)"
        )),
        "{}",
        run.explain()
    );

    // Lost while a RUN step runs: not retried (exit 4, saying why).
    let marker = format!("sleep 61{}", std::process::id() % 1000);
    fleet.leftovers.push(marker.clone());
    let dir = checkout("github.com/org/lost", &marker);
    let key = key_first_on(&endpoints, &list[1], "lost");
    let build = Background::start(&fleet, &pool_args(&key, &[]), dir.path());
    let running = wait_for(Duration::from_secs(60), || {
        !processes_matching(&marker).is_empty()
    });
    assert!(running, "the step never started:\n{}", build.stderr());
    fleet.kill(1);
    let run = build.finish(Duration::from_secs(60));
    assert_eq!(run.code(), Some(4), "{}", run.explain());
    let last = run.stderr().lines().last().unwrap_or_default().to_string();
    assert!(
        last.starts_with(&format!("error: lost the connection to buildkitd at {}", list[1]))
            && last.ends_with("(not retried on another daemon: a build step had started there; --retry-after-start allows it)"),
        "{}",
        run.explain()
    );
    assert!(retries(&run).is_empty(), "{}", run.explain());

    // The same with --retry-after-start: the build runs again on the next.
    let marker = format!("sleep 4.{}1", std::process::id() % 1000);
    fleet.leftovers.push(marker.clone());
    let dir = checkout("github.com/org/again", &marker);
    let key = key_first_on(&endpoints, &list[2], "again");
    let next = rendezvous::order(&key, &endpoints)
        .into_iter()
        .find(|e| e.id == list[3])
        .map(|e| e.id)
        .expect("the last live daemon");
    let build = Background::start(
        &fleet,
        &pool_args(&key, &["--retry-after-start"]),
        dir.path(),
    );
    let running = wait_for(Duration::from_secs(60), || {
        !processes_matching(&marker).is_empty()
    });
    assert!(running, "the step never started:\n{}", build.stderr());
    let (run, lost) = moved_after_killing(&mut fleet, build, 2);
    assert!(
        lost.starts_with(&format!(
            "bkd: route: lost {} after a build step had started (--retry-after-start): ",
            list[2]
        )),
        "{}",
        run.explain()
    );
    assert!(
        run.stderr()
            .contains(&format!("bkd: route: building on {next} (")),
        "{}",
        run.explain()
    );
}

#[test]
fn prefer_idle_passes_a_daemon_running_a_build_for_the_next_idle_one() {
    let fleet = Fleet::start(3);
    let list: Vec<String> = fleet.daemons.iter().map(|d| d.addr.clone()).collect();
    let endpoints = fixed(&list);
    let key = key_first_on(&endpoints, &list[0], "idle");
    let second = rendezvous::order(&key, &endpoints)[1].id.clone();
    let pool_args = |extra: &[&str]| {
        let mut args = strings(&["build", "--addr", &list.join(","), "--route-key", &key]);
        args.extend(fleet.tls_flags());
        args.extend(strings(extra));
        args.push(".".into());
        args
    };
    // A build whose step runs for a while on the key's first daemon.
    let marker = format!("sleep 9.{}3", std::process::id() % 1000);
    let busy_dir = checkout("github.com/org/busy", &marker);
    let busy = Background::start(&fleet, &pool_args(&[]), busy_dir.path());
    let running = wait_for(Duration::from_secs(60), || {
        !processes_matching(&marker).is_empty()
    });
    assert!(running, "the step never started:\n{}", busy.stderr());

    let dir = checkout("github.com/org/other", "true");
    // Pure stickiness: the busy daemon all the same.
    let sticky = fleet.bkd(&pool_args(&[]), dir.path(), &[]);
    sticky.assert_ok();
    assert_eq!(routed_to(&sticky), list[0], "{}", sticky.explain());
    // --prefer-idle 2: the first is busy, so the key's second daemon.
    let idle = fleet.bkd(&pool_args(&["--prefer-idle", "2"]), dir.path(), &[]);
    idle.assert_ok();
    assert_eq!(routed_to(&idle), second, "{}", idle.explain());
    assert!(
        idle.stderr().contains(&format!(
            "bkd: route: {} (1st for this key) is running 1 build(s); trying the next (--prefer-idle)",
            list[0]
        )),
        "{}",
        idle.explain()
    );
    busy.finish(Duration::from_secs(120)).assert_ok();
    // Once it is idle again, the first daemon is taken.
    let after = fleet.bkd(&pool_args(&["--prefer-idle", "2"]), dir.path(), &[]);
    after.assert_ok();
    assert_eq!(routed_to(&after), list[0], "{}", after.explain());
    assert!(
        !after.stderr().contains("is running"),
        "{}",
        after.explain()
    );
}

/// The context transfer's own account in bkd's debug log: (files, bytes).
fn context_sent(run: &Run) -> (u64, u64) {
    let stderr = run.stderr();
    let line = stderr
        .lines()
        .filter(|l| l.contains("file sync done") && l.contains("dir=context"))
        .find(|l| !l.contains(" entries=0 "))
        .unwrap_or_else(|| panic!("no transfer account\n{}", run.explain()));
    let field = |key: &str| -> u64 {
        line.split(&format!(" {key}="))
            .nth(1)
            .and_then(|v| v.trim_start_matches('"').split(['"', ' ']).next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line}"))
    };
    (field("files"), field("bytes"))
}

#[test]
fn a_second_build_from_a_new_directory_sends_only_the_changed_files() {
    let daemon = PrivateDaemon::start();
    let first = tempfile::tempdir().expect("first checkout");
    let a = first.path().join("app");
    std::fs::create_dir(&a).expect("app");
    let mut total = 0u64;
    for d in 0..10 {
        for f in 0..30 {
            let data: Vec<u8> = (0..(64 << 10) + d * 977 + f * 31)
                .map(|i| (i * 7 + d * 13 + f) as u8)
                .collect();
            total += data.len() as u64;
            write_bytes(&a.join(format!("src/d{d}/f{f}.bin")), &data);
        }
    }
    write(&a, "Dockerfile", "FROM scratch\nCOPY src /src\n");
    let repo = format!("git@example.com:org/warm-{}.git", nonce());
    let build = |dir: &Path, extra: &[&str]| {
        let checkout = dir.display().to_string();
        let mut args = vec!["build", "--addr", &daemon.addr];
        args.extend_from_slice(extra);
        args.push(".");
        let r = run(
            env!("CARGO_BIN_EXE_bkd"),
            &args,
            dir,
            &[
                ("BKD_LOG", "bkd=debug"),
                ("BUILDKITE_REPO", &repo),
                ("BUILDKITE_BUILD_CHECKOUT_PATH", &checkout),
            ],
        );
        r.assert_ok();
        r
    };
    let cold = build(&a, &[]);
    assert_eq!(context_sent(&cold), (300, total), "{}", cold.explain());

    // A new pod's checkout: another directory, the same files with their
    // times, two files changed and one added.
    let second = tempfile::tempdir().expect("second checkout");
    let b = second.path().join("checkout-of-another-agent");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&a)
        .arg(&b)
        .status()
        .expect("cp -a");
    assert!(cp.success());
    let changed = [
        ("src/d3/f7.bin", vec![1u8; 5000]),
        ("src/d9/f0.bin", vec![2u8; 70_001]),
        ("src/d5/new.bin", vec![3u8; 12_345]),
    ];
    for (name, data) in &changed {
        write_bytes(&b.join(name), data);
    }
    let warm = build(&b, &[]);
    let changed_bytes: u64 = changed.iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(
        context_sent(&warm),
        (3, changed_bytes),
        "{}",
        warm.explain()
    );

    // Under another route key the daemon has no copy: everything is sent.
    let other = build(&b, &["--route-key", "another-key"]);
    assert_eq!(context_sent(&other).0, 301, "{}", other.explain());
}

fn write_bytes(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, data).expect("write");
}

#[test]
fn four_concurrent_daemonless_builds_on_one_state_dir_take_slots_and_find_them_warm() {
    use common::spawn::{command, As};
    let root = tempfile::Builder::new()
        .prefix("bkd-slots-")
        .tempdir()
        .expect("state dir");
    let root_text = root.path().display().to_string();
    let step = format!("sleep 2; echo {} > /built", nonce());
    let doctor = || {
        let out = command(
            As::Root,
            &["doctor", "--state-slots", "--root", &root_text],
            root.path(),
            &[],
        )
        .output()
        .expect("bkd doctor");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let round = |n: usize| -> Vec<Run> {
        let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| context()).collect();
        let mut children = Vec::new();
        for d in &dirs {
            write(
                d.path(),
                "Dockerfile",
                &format!("FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"sh\",\"-c\",\"{step}\"]\n"),
            );
            let out = d.path().join("out.tar").display().to_string();
            let args = [
                "build",
                "--state-slots",
                "--root",
                &root_text,
                "--debug",
                "--progress",
                "plain",
                "-o",
                &format!("type=tar,dest={out}"),
                ".",
            ];
            let child = command(As::Root, &args, d.path(), &[])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start bkd");
            children.push((child, d.path().to_path_buf(), args.join(" ")));
        }
        // While the first round runs, doctor names the holders.
        if n == 1 {
            let held = wait_for(Duration::from_secs(60), || doctor().contains("held by pid"));
            assert!(held, "doctor never showed a holder:\n{}", doctor());
        }
        let runs: Vec<Run> = children
            .into_iter()
            .map(|(child, cwd, cmd)| Run {
                cmd: format!("bkd {cmd}"),
                cwd,
                out: child.wait_with_output().expect("wait for bkd"),
            })
            .collect();
        drop(dirs);
        runs
    };
    let slots_of = |runs: &[Run]| -> std::collections::BTreeSet<String> {
        runs.iter()
            .map(|r| {
                r.stderr()
                    .lines()
                    .find_map(|l| l.strip_prefix("bkd: state slot "))
                    .and_then(|s| s.split(' ').next())
                    .unwrap_or_else(|| panic!("no slot line\n{}", r.explain()))
                    .to_string()
            })
            .collect()
    };
    let first = round(1);
    for r in &first {
        r.assert_ok();
        assert!(
            ran_slow_step(r),
            "a cold slot cannot have it cached\n{}",
            r.explain()
        );
    }
    assert_eq!(
        slots_of(&first),
        ["0", "1", "2", "3"].map(String::from).into()
    );
    let mut names: Vec<String> = std::fs::read_dir(root.path())
        .expect("read state dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let want: Vec<String> = (0..4)
        .flat_map(|i| [format!("slot-{i}"), format!("slot-{i}.lock")])
        .collect();
    assert_eq!(names, want);

    let second = round(2);
    for r in &second {
        r.assert_ok();
        assert!(
            !ran_slow_step(r),
            "each slot had the step cached\n{}",
            r.explain()
        );
    }
    assert_eq!(
        slots_of(&second),
        ["0", "1", "2", "3"].map(String::from).into()
    );
    let report = doctor();
    for i in 0..4 {
        assert!(
            report
                .lines()
                .any(|l| l.contains(&format!("slot-{i} ")) && l.ends_with(" free")),
            "slot-{i}:\n{report}"
        );
    }
    unmount_below(root.path());
}

/// The machine, as bench/results.md names it.
fn machine() -> String {
    let text = text_of;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse().ok()))
        .unwrap_or(0);
    format!(
        "{} cores ({cpu}), {:.1} GiB RAM, kernel {}, {}, bkd {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_kib as f64 / 1048576.0,
        text("uname", &["-r"]),
        text("buildkitd", &["--version"]),
        text(
            "git",
            &[
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "rev-parse",
                "--short",
                "HEAD"
            ]
        ),
    )
}

/// A measurement's section: to the file `BKD_BENCH_OUT` names (which
/// scripts/bench-pool.sh appends to bench/results.md), and to stdout.
fn record_section(title: &str, body: &str) {
    let now = text_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let section = format!("\n## {now}: {title}\n\nMachine: {}.\n\n{body}", machine());
    println!("{section}");
    if let Ok(path) = std::env::var("BKD_BENCH_OUT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("BKD_BENCH_OUT");
        f.write_all(section.as_bytes()).expect("write the section");
    }
}

fn text_of(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn median_secs(built: &[Built]) -> f64 {
    let mut v: Vec<f64> = built.iter().map(|b| b.wall.as_secs_f64()).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The routing measurement (scripts/bench-pool.sh): 30 builds of 5
/// repositories, each with a 5 s RUN step, from fresh checkouts in random
/// order, under sticky routing and random choice side by side on two
/// fleets of 3 daemons. Not in the default suite (about 4 minutes).
#[test]
#[ignore = "a measurement: scripts/bench-pool.sh"]
fn measure_sticky_against_random_routing() {
    use rand::SeedableRng;
    let repos = [
        "github.com/org/api",
        "github.com/org/web",
        "github.com/org/worker",
        "github.com/org/cli",
        "github.com/org/docs",
    ];
    let seed: u64 = std::env::var("BKD_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let c = sticky_against_random(&repos, 6, 3, "sleep 5", &mut rng);
    let total = |b: &[Built]| b.iter().map(|b| b.wall.as_secs_f64()).sum::<f64>();
    let steps = |b: &[Built]| b.iter().map(|b| b.steps).sum::<usize>();
    let cached = |b: &[Built]| b.iter().map(|b| b.cached).sum::<usize>();
    let (s, r) = (&c.sticky, &c.random);
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "-".into()
        }
    };
    let mut body = format!(
        "30 builds of 5 repositories (`FROM scratch`, COPY busybox, COPY a source file, a RUN \
         step of `sleep 5`), each from a fresh checkout directory with BUILDKITE_REPO set, in \
         one shuffled order (seed {seed}); two fleets of 3 mTLS buildkitds on loopback \
         (tests/common/fleet.rs), one per side, the builds interleaved pairwise. Sticky: \
         `--addr` with the whole pool, the default route key. Random: one daemon picked \
         uniformly and given alone. `cargo test --release --test pool -- --ignored \
         measure_sticky_against_random_routing`.\n\n\
         | metric | sticky | random | sticky/random |\n|---|---:|---:|---:|\n"
    );
    let rows: [(&str, f64, f64, bool); 7] = [
        ("builds", s.len() as f64, r.len() as f64, false),
        (
            "builds that re-ran the slow step",
            reruns(s) as f64,
            reruns(r) as f64,
            true,
        ),
        (
            "slow step cached, ratio of builds",
            (s.len() - reruns(s)) as f64 / s.len() as f64,
            (r.len() - reruns(r)) as f64 / r.len() as f64,
            true,
        ),
        (
            "Dockerfile steps cached, ratio",
            cached(s) as f64 / steps(s).max(1) as f64,
            cached(r) as f64 / steps(r).max(1) as f64,
            true,
        ),
        ("total wall of the builds, s", total(s), total(r), true),
        (
            "median wall of the builds that ran the slow step, s",
            median_secs(
                &s.iter()
                    .filter(|b| b.ran_slow_step)
                    .cloned()
                    .collect::<Vec<_>>(),
            ),
            median_secs(
                &r.iter()
                    .filter(|b| b.ran_slow_step)
                    .cloned()
                    .collect::<Vec<_>>(),
            ),
            true,
        ),
        (
            "median wall of the builds that found it cached, s",
            median_secs(
                &s.iter()
                    .filter(|b| !b.ran_slow_step)
                    .cloned()
                    .collect::<Vec<_>>(),
            ),
            median_secs(
                &r.iter()
                    .filter(|b| !b.ran_slow_step)
                    .cloned()
                    .collect::<Vec<_>>(),
            ),
            true,
        ),
    ];
    for (name, a, b, show_ratio) in rows {
        let fmt = |v: f64| {
            if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        };
        body.push_str(&format!(
            "| {name} | {} | {} | {} |\n",
            fmt(a),
            fmt(b),
            if show_ratio {
                ratio(a, b)
            } else {
                String::new()
            }
        ));
    }
    let bound = 2 * reruns(s) <= reruns(r);
    body.push_str(&format!(
        "\nBoth sides interleaved took {:.1} s. Sticky re-ran the slow step in {} builds, \
         random choice in {}: the bound (sticky at most half of random) {}.\n",
        c.wall.as_secs_f64(),
        reruns(s),
        reruns(r),
        if bound { "holds" } else { "does NOT hold" }
    ));
    record_section("pool routing, sticky against random choice", &body);
    assert!(bound, "{body}");
}

/// The warm-transfer measurement (scripts/bench-pool.sh): the 575 MB,
/// 20,005-file context of benches/compare.rs built once, then from a new
/// directory (another pod's checkout of the same repository, 10 files
/// changed) with the default route key, and from a third directory under
/// a key of its own, which is what a key per directory (bkd before pools)
/// gives a new checkout. Bytes from bkd's own transfer account.
#[test]
#[ignore = "a measurement: scripts/bench-pool.sh"]
fn measure_warm_transfer_of_the_575_mb_context() {
    let daemon = PrivateDaemon::start();
    let top = tempfile::Builder::new()
        .prefix("bkd-warm-")
        .tempdir_in("/var/tmp")
        .expect("work dir");
    let a = top.path().join("agent-a");
    std::fs::create_dir(&a).expect("mkdir");
    std::fs::copy("/bin/busybox", a.join("busybox")).expect("busybox");
    write(
        &a,
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\n\
         RUN --mount=type=bind,target=/ctx [\"/bin/busybox\",\"sh\",\"-c\",\"/bin/busybox du -sm /ctx\"]\n",
    );
    for d in 0..200u64 {
        for f in 0..100u64 {
            let n = d * 100 + f;
            let len = 1 + (n * 2654435761 % 4096) as usize;
            write_bytes(&a.join(format!("d{d:03}/f{f:03}")), &noise(n, len));
        }
    }
    let block = noise(7, 1 << 20);
    for b in 0..4u64 {
        let path = a.join(format!("big/blob{b}"));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let mut f = std::fs::File::create(&path).expect("blob");
        for i in 0..128u64 {
            use std::io::Write;
            let mut chunk = block.clone();
            chunk[..16].copy_from_slice(&[
                (b as u8),
                (i as u8),
                0,
                0,
                0,
                0,
                0,
                0,
                1,
                2,
                3,
                4,
                5,
                6,
                7,
                8,
            ]);
            f.write_all(&chunk).expect("write blob");
        }
    }
    let repo = format!("git@example.com:org/big-{}.git", nonce());
    let build = |dir: &Path, extra: &[&str]| -> (Run, Duration) {
        let checkout = dir.display().to_string();
        let mut args = vec!["build", "--addr", &daemon.addr, "--progress", "plain"];
        args.extend_from_slice(extra);
        args.push(".");
        let started = Instant::now();
        let r = run(
            env!("CARGO_BIN_EXE_bkd"),
            &args,
            dir,
            &[
                ("BKD_LOG", "bkd=debug"),
                ("BUILDKITE_REPO", &repo),
                ("BUILDKITE_BUILD_CHECKOUT_PATH", &checkout),
            ],
        );
        let wall = started.elapsed();
        r.assert_ok();
        (r, wall)
    };
    let copy_changed = |to: &Path| {
        let cp = std::process::Command::new("cp")
            .arg("-a")
            .arg(&a)
            .arg(to)
            .status()
            .expect("cp -a");
        assert!(cp.success());
        for i in 0..10u64 {
            let name = format!("d{:03}/f{:03}", i * 20, i * 7);
            write_bytes(&to.join(name), &noise(900_000 + i, 1000 + i as usize));
        }
    };
    let (cold, cold_wall) = build(&a, &[]);
    let total: u64 = walk_bytes(&a);
    let b = top.path().join("agent-b");
    copy_changed(&b);
    let (warm, warm_wall) = build(&b, &[]);
    let c = top.path().join("agent-c");
    copy_changed(&c);
    let own_key = format!("directory-{}", nonce());
    let (fresh, fresh_wall) = build(&c, &["--route-key", &own_key]);
    let rows = [
        ("first build (empty daemon)", context_sent(&cold), cold_wall),
        (
            "new checkout, 10 files changed, default key",
            context_sent(&warm),
            warm_wall,
        ),
        (
            "new checkout, 10 files changed, a key of its own",
            context_sent(&fresh),
            fresh_wall,
        ),
    ];
    let mut body = format!(
        "The 575 MB context of `context-cold` ({} bytes in 20,006 files: 20,000 of 1 B-4 KiB, \
         4 of 128 MiB, busybox and the Dockerfile), its RUN bind-mounting the context so the \
         daemon needs all of it; one run of each build, in this order. A private buildkitd; bkd with BUILDKITE_REPO set, the bytes \
         and files from bkd's own transfer account (debug log). \"A key of its own\" is what a \
         shared key per directory, bkd's before pools, gives a new checkout. `cargo test \
         --release --test pool -- --ignored measure_warm_transfer_of_the_575_mb_context`.\n\n\
         | build | files sent | bytes sent | wall s |\n|---|---:|---:|---:|\n",
        total
    );
    for (name, (files, bytes), wall) in &rows {
        body.push_str(&format!(
            "| {name} | {files} | {bytes} | {:.2} |\n",
            wall.as_secs_f64()
        ));
    }
    record_section("pool warm context transfer, 575 MB", &body);
    assert_eq!(context_sent(&warm).0, 10, "{body}");
    assert!(context_sent(&fresh).0 > 20_000, "{body}");
}

/// Bytes of the regular files under `dir`.
fn walk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let e = e.expect("entry");
            let meta = e.metadata().expect("metadata");
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}
