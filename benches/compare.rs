//! bkd against buildctl / buildctl-daemonless.sh, side by side in one run.
//!
//! Each workload runs once per tool as a warm-up, then `--runs` times per
//! tool, alternating, and reports medians and the bkd/buildctl ratio of:
//! wall time, client CPU (user+sys of the client process and whatever it
//! waited for, from wait4), client peak RSS, and the CPU the shared daemon
//! used meanwhile. Run as root after scripts/setup.sh:
//!
//!   scripts/bench.sh [--runs N] [--only a,b] [--dir DIR] [--no-record]

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BUSYBOX: &str = "/bin/busybox";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    Bkd,
    Buildctl,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Bkd => "bkd",
            Tool::Buildctl => "buildctl",
        }
    }
}

/// What one client run cost.
#[derive(Clone, Debug, Default)]
struct Sample {
    wall: f64,
    cpu: f64,
    rss_mb: f64,
    daemon_cpu: Option<f64>,
    context_step: Option<f64>,
    /// The harness's RSS when it forked the client: the least `rss_mb`
    /// can read.
    harness_rss_mb: f64,
}

struct Options {
    runs: usize,
    only: Option<Vec<String>>,
    dir: PathBuf,
    record: bool,
}

fn options() -> Options {
    let mut o = Options {
        runs: 5,
        only: None,
        dir: PathBuf::from("/var/tmp/bkd-bench"),
        record: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => {
                o.runs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| fail("--runs needs a number"))
            }
            "--only" => {
                o.only = Some(
                    args.next()
                        .unwrap_or_else(|| fail("--only needs names"))
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                )
            }
            "--dir" => {
                o.dir = PathBuf::from(args.next().unwrap_or_else(|| fail("--dir needs a path")))
            }
            "--no-record" => o.record = false,
            // cargo bench passes --bench to harness-less targets.
            "--bench" => {}
            other => fail(&format!("unknown argument {other}")),
        }
    }
    if o.runs < 1 {
        fail("--runs must be at least 1");
    }
    o
}

/// The shared daemon, stopped by [`fail`] too (an exit runs no destructor).
static DAEMON_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

fn fail(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    let pid = DAEMON_PID.swap(0, std::sync::atomic::Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    std::process::exit(2)
}

fn bkd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bkd"))
}

/// Runs a command to completion with stderr in `log`, and measures it with
/// wait4: the rusage covers the process and the children it reaped.
fn measure(cmd: &mut Command, log: &Path) -> (Sample, bool) {
    cmd.stdout(Stdio::null());
    measure_to(cmd, Some(log))
}

/// The harness's own resident memory now, in MB (VmRSS).
fn own_rss_mb() -> f64 {
    own_status_mb("VmRSS:")
}

/// A memory figure of the harness's own status, in MB.
fn own_status_mb(field: &str) -> f64 {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// [`measure`] with stdout as the caller set it, and stderr in `log` if given.
///
/// The child is forked, not spawned with `posix_spawn`: a child that shares
/// the parent's memory until it execs (vfork, which `posix_spawn` uses) is
/// charged the parent's peak RSS at exec, so every figure would be at least
/// the harness's own peak (130 MB after generating a context). A forked
/// child starts from the harness's current RSS instead, which is measured
/// here and must stay below the child's figure (checked in [`alternate`]).
fn measure_to(cmd: &mut Command, log: Option<&Path>) -> (Sample, bool) {
    if let Some(log) = log {
        let err =
            fs::File::create(log).unwrap_or_else(|e| fail(&format!("{}: {e}", log.display())));
        cmd.stderr(err);
    }
    cmd.stdin(Stdio::null());
    // SAFETY: the closure does nothing; having one makes std fork and exec
    // rather than posix_spawn.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || Ok(()));
    }
    let harness_rss = own_rss_mb();
    let started = Instant::now();
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot run {cmd:?}: {e}")));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, not yet waited for; pointers are valid.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed().as_secs_f64();
    std::mem::forget(child);
    if r != pid {
        fail("wait4 failed");
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (
        Sample {
            wall,
            cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
            rss_mb: usage.ru_maxrss as f64 / 1024.0,
            harness_rss_mb: harness_rss,
            ..Default::default()
        },
        ok,
    )
}

/// CPU seconds a process has used so far.
fn proc_cpu(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    (ticks(11) + ticks(12)) / hz
}

/// The duration of the `load build context` step in plain progress, summed
/// over steps of that name (context and named contexts).
fn context_step(log: &Path) -> Option<f64> {
    let text = fs::read_to_string(log).ok()?;
    let mut ids = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('#') {
            if let Some((id, title)) = rest.split_once(' ') {
                if title == "[internal] load build context" {
                    ids.push(id.to_string());
                }
            }
        }
    }
    let mut total = None;
    for id in ids {
        let prefix = format!("#{id} DONE ");
        for line in text.lines() {
            if let Some(t) = line.strip_prefix(&prefix).and_then(|t| t.strip_suffix('s')) {
                if let Ok(v) = t.parse::<f64>() {
                    *total.get_or_insert(0.0) += v;
                }
            }
        }
    }
    total
}

/// A buildkitd both clients share, on its own state dir.
struct Daemon {
    child: std::process::Child,
    addr: String,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let state = dir.join("daemon-state");
        let sock = dir.join("buildkitd.sock");
        let _ = fs::remove_file(&sock);
        let log =
            fs::File::create(dir.join("buildkitd.log")).unwrap_or_else(|e| fail(&e.to_string()));
        let addr = format!("unix://{}", sock.display());
        let child = Command::new("buildkitd")
            .arg("--root")
            .arg(&state)
            .arg("--addr")
            .arg(&addr)
            .arg("--otel-socket-path")
            .arg(dir.join("otel.sock"))
            .stdout(log.try_clone().unwrap_or_else(|e| fail(&e.to_string())))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                fail(&format!(
                    "cannot start buildkitd: {e} (run scripts/setup.sh)"
                ))
            });
        DAEMON_PID.store(child.id() as i32, std::sync::atomic::Ordering::SeqCst);
        let d = Daemon { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.buildctl(&["debug", "workers"]) {
            if Instant::now() > deadline {
                fail("buildkitd did not become ready");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn buildctl(&self, args: &[&str]) -> bool {
        Command::new("buildctl")
            .arg("--addr")
            .arg(&self.addr)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn prune(&self) {
        if !self.buildctl(&["prune", "--all"]) {
            fail("buildctl prune failed");
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        DAEMON_PID.store(0, std::sync::atomic::Ordering::SeqCst);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Puts the machine in the same state before each measured run: dirty
/// pages written back, and with `warm`, the page cache dropped and the
/// context read back in. Without this, page-cache and writeback left by the
/// previous run (hundreds of MB written and deleted by the daemon) make
/// later runs several times slower in the daemon's file creation.
fn settle(warm: Option<&Path>) {
    let _ = Command::new("sync").status();
    let Some(dir) = warm else { return };
    let _ = fs::write("/proc/sys/vm/drop_caches", b"3");
    fn read_all(dir: &Path) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => read_all(&p),
                Ok(t) if t.is_file() => {
                    // Streamed: the harness's own RSS is inherited by the
                    // next child until exec and would show as its peak.
                    if let Ok(mut f) = fs::File::open(&p) {
                        let _ = std::io::copy(&mut f, &mut std::io::sink());
                    }
                }
                _ => {}
            }
        }
    }
    read_all(dir);
}

/// Dirty pages written back and the page cache dropped: the next run reads
/// its files from the disk.
fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = fs::write("/proc/sys/vm/drop_caches", b"3");
}

/// Deterministic filler bytes (xorshift), so files differ from each other.
fn fill(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Creates `dir` with `make` unless a previous run completed it.
fn generate(dir: &Path, make: impl FnOnce(&Path)) {
    let done = dir.join(".complete");
    if done.exists() {
        return;
    }
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap_or_else(|e| fail(&e.to_string()));
    eprintln!("bench: generating {}", dir.display());
    make(dir);
    fs::write(done, b"").unwrap_or_else(|e| fail(&e.to_string()));
}

/// A workload directory with busybox and this Dockerfile, made once.
fn busybox_context(dir: &Path, dockerfile: &str) -> PathBuf {
    generate(dir, |d| with_busybox(d, dockerfile));
    dir.to_path_buf()
}

fn write_file(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap_or_else(|e| fail(&e.to_string()));
    }
    fs::write(path, data).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
}

/// The Dockerfile that makes the daemon fetch a whole context while the
/// step itself costs almost nothing.
const BIND_DOCKERFILE: &str = "FROM scratch\nCOPY busybox /bin/busybox\n\
    RUN --mount=type=bind,target=/ctx [\"/bin/busybox\",\"sh\",\"-c\",\"/bin/busybox du -sm /ctx\"]\n";

fn with_busybox(dir: &Path, dockerfile: &str) {
    fs::copy(BUSYBOX, dir.join("busybox")).unwrap_or_else(|e| fail(&format!("{BUSYBOX}: {e}")));
    write_file(&dir.join("Dockerfile"), dockerfile.as_bytes());
}

/// 20,000 files of 1 B to 4 KiB in 200 dirs, and 4 files of 128 MiB.
fn big_context(dir: &Path) {
    with_busybox(dir, BIND_DOCKERFILE);
    for d in 0..200u64 {
        for f in 0..100u64 {
            let n = d * 100 + f;
            let len = 1 + (n * 2654435761 % 4096) as usize;
            write_file(&dir.join(format!("d{d:03}/f{f:03}")), &fill(n, len));
        }
    }
    for b in 0..4u64 {
        write_file(
            &dir.join(format!("big/blob{b}")),
            &fill(1_000_000 + b, 128 << 20),
        );
    }
}

/// 100,000 files of 100 bytes in 100 dirs.
fn many_small(dir: &Path) {
    with_busybox(dir, BIND_DOCKERFILE);
    for d in 0..100u64 {
        for f in 0..1000u64 {
            write_file(
                &dir.join(format!("d{d:03}/f{f:04}")),
                &fill(d * 1000 + f, 100),
            );
        }
    }
}

/// A monorepo: 100 packages, each with 100 source files and a
/// node_modules tree of 900 files in 30 directories, all of ~1 KiB, and a
/// .dockerignore excluding every node_modules: 90% of 100,000 files are
/// excluded, and the walk must find them in every package.
fn monorepo(dir: &Path) {
    with_busybox(dir, BIND_DOCKERFILE);
    write_file(&dir.join(".dockerignore"), b"**/node_modules\n");
    for p in 0..100u64 {
        let pkg = dir.join(format!("packages/p{p:02}"));
        for f in 0..100u64 {
            let n = p * 1000 + f;
            write_file(&pkg.join(format!("src/f{f:03}.js")), &fill(n, 1024));
        }
        for m in 0..30u64 {
            for f in 0..30u64 {
                let n = 1_000_000 + p * 1000 + m * 30 + f;
                write_file(
                    &pkg.join(format!("node_modules/m{m:02}/lib/f{f:02}.js")),
                    &fill(n, 1024),
                );
            }
        }
    }
}

/// One file of 5 GiB (a model or data file), written in pieces so the
/// harness never holds more than one.
fn single_large(dir: &Path) {
    use std::io::Write as _;
    with_busybox(dir, BIND_DOCKERFILE);
    let path = dir.join("data.bin");
    let mut f =
        fs::File::create(&path).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    for piece in 0..80u64 {
        f.write_all(&fill(7_000_000 + piece, 64 << 20))
            .unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    }
}

/// The client command for `tool` building `ctx` on `addr` (a shared daemon).
fn client(
    tool: Tool,
    addr: &str,
    ctx: &Path,
    extra_bkd: &[&str],
    extra_buildctl: &[&str],
) -> Command {
    match tool {
        Tool::Bkd => {
            let mut c = Command::new(bkd_bin());
            c.args(["build", "--addr", addr, "--progress", "plain"])
                .args(extra_bkd)
                .arg(ctx);
            c
        }
        Tool::Buildctl => {
            let mut c = Command::new("buildctl");
            c.args([
                "--addr",
                addr,
                "build",
                "--frontend",
                "dockerfile.v0",
                "--progress",
                "plain",
            ])
            .arg(format!("--local=context={}", ctx.display()))
            .arg(format!("--local=dockerfile={}", ctx.display()))
            .args(extra_buildctl);
            c
        }
    }
}

/// Runs one measured client on the shared daemon, with its CPU counted.
fn on_daemon(daemon: &Daemon, cmd: &mut Command, log: &Path) -> Sample {
    let before = proc_cpu(daemon.pid());
    let (mut s, ok) = measure(cmd, log);
    s.daemon_cpu = Some(proc_cpu(daemon.pid()) - before);
    s.context_step = context_step(log);
    if !ok {
        fail(&format!(
            "{cmd:?} failed; see {}\n{}",
            log.display(),
            fs::read_to_string(log).unwrap_or_default()
        ));
    }
    s
}

struct Workload {
    name: &'static str,
    about: &'static str,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "tiny-cold",
        about: "spawn buildkitd + 2-stage COPY build to tar + stop (bkd vs buildctl-daemonless.sh)",
    },
    Workload {
        name: "context-cold",
        about: "575 MB / 20,005-file context, first upload into an empty daemon state",
    },
    Workload {
        name: "context-incremental",
        about: "the same context with 10 files changed, second upload",
    },
    Workload {
        name: "many-small",
        about: "100,000 files of 100 bytes, first upload",
    },
    Workload {
        name: "monorepo",
        about: "100,000 files of 1 KiB in 100 packages, .dockerignore **/node_modules excluding 90%",
    },
    Workload {
        name: "cold-cache",
        about: "the context-cold context with the page cache dropped before each run (files read from disk)",
    },
    Workload {
        name: "single-5g",
        about: "one 5 GiB file, first upload (at most 3 runs per tool)",
    },
    Workload {
        name: "export-tar",
        about: "1 GiB image exported with type=tar,dest=FILE",
    },
    Workload {
        name: "log-heavy",
        about: "a RUN printing 200,000 lines, plain progress",
    },
];

/// Runs `one(tool, run_index)` alternately for both tools: a warm-up each,
/// then `runs` each.
fn alternate(
    runs: usize,
    mut one: impl FnMut(Tool, usize) -> Sample,
) -> (Vec<Sample>, Vec<Sample>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    one(Tool::Bkd, 0);
    one(Tool::Buildctl, 0);
    for i in 1..=runs {
        let (first, second) = if i % 2 == 1 {
            (Tool::Bkd, Tool::Buildctl)
        } else {
            (Tool::Buildctl, Tool::Bkd)
        };
        for t in [first, second] {
            let s = one(t, i);
            eprintln!(
                "bench:   {:<9} run {i}: wall {:.3}s cpu {:.3}s rss {:.0}MB{}",
                t.name(),
                s.wall,
                s.cpu,
                s.rss_mb,
                s.daemon_cpu
                    .map(|d| format!(" daemon {d:.3}s"))
                    .unwrap_or_default()
            );
            // A figure at the harness's own level is the harness's, not
            // the client's.
            // Equal to the harness's own peak is what a child charged the
            // parent's peak at exec (vfork) reads.
            let harness_peak = own_status_mb("VmHWM:");
            if harness_peak > s.harness_rss_mb * 1.5 && (s.rss_mb - harness_peak).abs() < 0.1 {
                fail(&format!(
                    "{} run {i}: peak RSS {:.1} MB equals the harness's own peak; \
                     the figure would not be the client's",
                    t.name(),
                    s.rss_mb
                ));
            }
            if s.rss_mb <= s.harness_rss_mb * 1.1 {
                fail(&format!(
                    "{} run {i}: peak RSS {:.1} MB is no more than the harness's own {:.1} MB; \
                     the figure would not be the client's",
                    t.name(),
                    s.rss_mb,
                    s.harness_rss_mb
                ));
            }
            if t == Tool::Bkd {
                a.push(s)
            } else {
                b.push(s)
            }
        }
    }
    (a, b)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One value read off a sample.
type Metric = fn(&Sample) -> Option<f64>;

/// Median rows for one workload: (metric, bkd, buildctl).
fn rows(bkd: &[Sample], other: &[Sample]) -> Vec<(&'static str, f64, f64)> {
    let m = |v: &[Sample], f: fn(&Sample) -> Option<f64>| -> Option<f64> {
        let xs: Vec<f64> = v.iter().filter_map(f).collect();
        (!xs.is_empty()).then(|| median(xs))
    };
    let metrics: [(&'static str, Metric); 6] = [
        ("wall s", |s| Some(s.wall)),
        ("client CPU s", |s| Some(s.cpu)),
        ("client peak RSS MB", |s| Some(s.rss_mb)),
        ("harness RSS at fork MB (floor of the row above)", |s| {
            Some(s.harness_rss_mb)
        }),
        ("daemon CPU s", |s| s.daemon_cpu),
        ("load build context s", |s| s.context_step),
    ];
    metrics
        .iter()
        .filter_map(|(name, f)| Some((*name, m(bkd, *f)?, m(other, *f)?)))
        .collect()
}

/// What one workload reports: the side-by-side rows, and rows with one
/// value (reference points and bkd's own diagnostics).
struct Report {
    rows: Vec<(&'static str, f64, f64)>,
    extras: Vec<(&'static str, f64)>,
}

fn run_workload(name: &str, o: &Options, daemon: &Daemon) -> Report {
    let mut extras = Vec::new();
    let logs = o.dir.join("logs");
    fs::create_dir_all(&logs).unwrap_or_else(|e| fail(&e.to_string()));
    let log = |t: Tool, i: usize| logs.join(format!("{name}-{}-{i}.log", t.name()));
    let (a, b) = match name {
        "tiny-cold" => {
            let (ready, stop) = daemon_start_stop(o);
            extras.push(("buildkitd alone, start to READY s", ready));
            extras.push(("buildkitd alone, SIGTERM to exit s", stop));
            let ctx = busybox_context(
                &o.dir.join("tiny"),
                "FROM scratch AS base\nCOPY busybox /bin/busybox\n\
                 FROM scratch\nCOPY --from=base /bin/busybox /bin/busybox\nCOPY Dockerfile /Dockerfile\n",
            );
            let out = o.dir.join("tiny.tar");
            alternate(o.runs, |t, i| {
                let dest = format!("type=tar,dest={}", out.display());
                let mut cmd = match t {
                    Tool::Bkd => {
                        let mut c = Command::new(bkd_bin());
                        c.args(["build", "--progress", "plain", "-o", &dest])
                            .arg(&ctx);
                        c
                    }
                    Tool::Buildctl => {
                        let mut c = Command::new("buildctl-daemonless.sh");
                        c.args([
                            "build",
                            "--frontend",
                            "dockerfile.v0",
                            "--progress",
                            "plain",
                        ])
                        .arg(format!("--local=context={}", ctx.display()))
                        .arg(format!("--local=dockerfile={}", ctx.display()))
                        .args(["--output", &dest]);
                        c
                    }
                };
                cmd.env_remove("BUILDKIT_HOST");
                settle(None);
                let (s, ok) = measure(&mut cmd, &log(t, i));
                if !ok {
                    fail(&format!("{} failed: see {}", t.name(), log(t, i).display()));
                }
                s
            })
        }
        "context-cold" | "many-small" => {
            let ctx = o.dir.join(name);
            generate(
                &ctx,
                if name == "many-small" {
                    many_small
                } else {
                    big_context
                },
            );
            let result = alternate(o.runs, |t, i| {
                daemon.prune();
                settle(Some(&ctx));
                on_daemon(
                    daemon,
                    &mut client(t, &daemon.addr, &ctx, &[], &[]),
                    &log(t, i),
                )
            });
            let floor: Vec<f64> = (0..o.runs)
                .map(|_| {
                    settle(Some(&ctx));
                    pipe_floor(&ctx, &[])
                })
                .collect();
            extras.push((
                "tar of the same files into a pipe, tar CPU s",
                median(floor),
            ));
            daemon.prune();
            settle(Some(&ctx));
            extras.extend(diagnose(daemon, &ctx, &logs, name));
            result
        }
        "monorepo" | "cold-cache" | "single-5g" => {
            let (ctx, runs) = match name {
                "monorepo" => {
                    let ctx = o.dir.join(name);
                    generate(&ctx, monorepo);
                    (ctx, o.runs)
                }
                "cold-cache" => {
                    let ctx = o.dir.join("context-cold");
                    generate(&ctx, big_context);
                    (ctx, o.runs)
                }
                _ => {
                    let ctx = o.dir.join(name);
                    generate(&ctx, single_large);
                    (ctx, o.runs.min(3))
                }
            };
            let cold = name == "cold-cache";
            let result = alternate(runs, |t, i| {
                daemon.prune();
                if cold {
                    drop_caches();
                } else {
                    settle(Some(&ctx));
                }
                on_daemon(
                    daemon,
                    &mut client(t, &daemon.addr, &ctx, &[], &[]),
                    &log(t, i),
                )
            });
            if name != "single-5g" {
                let floor: Vec<f64> = (0..runs)
                    .map(|_| {
                        if cold {
                            drop_caches();
                        } else {
                            settle(Some(&ctx));
                        }
                        // The files the daemon is sent.
                        pipe_floor(
                            &ctx,
                            if name == "monorepo" {
                                &["node_modules"]
                            } else {
                                &[]
                            },
                        )
                    })
                    .collect();
                extras.push((
                    "tar of the same files into a pipe, tar CPU s",
                    median(floor),
                ));
            }
            daemon.prune();
            result
        }
        "context-incremental" => {
            let ctx = o.dir.join("context-cold");
            generate(&ctx, big_context);
            let mut round = 0u64;
            let result = alternate(o.runs, |t, i| {
                let warm = logs.join(format!("{name}-{}-{i}-first.log", t.name()));
                round += 1;
                upload_then_change(daemon, t, &ctx, &warm, round);
                on_daemon(
                    daemon,
                    &mut client(t, &daemon.addr, &ctx, &[], &[]),
                    &log(t, i),
                )
            });
            // The same sequence once more for bkd, the second upload with
            // its debug log.
            let warm = logs.join(format!("{name}-bkd-debug-first.log"));
            upload_then_change(daemon, Tool::Bkd, &ctx, &warm, round + 1);
            extras.extend(diagnose(daemon, &ctx, &logs, name));
            result
        }
        "export-tar" => {
            let ctx = busybox_context(
                &o.dir.join("export"),
                "FROM scratch\nCOPY busybox /bin/busybox\n\
                 RUN [\"/bin/busybox\",\"sh\",\"-c\",\"/bin/busybox head -c 1073741824 /dev/urandom > /big\"]\n",
            );
            let out = o.dir.join("export.tar");
            let dest = format!("type=tar,dest={}", out.display());
            let result = alternate(o.runs, |t, i| {
                let _ = fs::remove_file(&out);
                settle(None);
                on_daemon(
                    daemon,
                    &mut client(t, &daemon.addr, &ctx, &["-o", &dest], &["--output", &dest]),
                    &log(t, i),
                )
            });
            let copy = o.dir.join("export-copy.tar");
            let mut cp_times = Vec::new();
            for _ in 0..o.runs {
                let _ = fs::remove_file(&copy);
                settle(None);
                let started = Instant::now();
                let status = Command::new("cp").arg(&out).arg(&copy).status();
                if !status.map(|s| s.success()).unwrap_or(false) {
                    fail("cp failed");
                }
                cp_times.push(started.elapsed().as_secs_f64());
            }
            let _ = fs::remove_file(&copy);
            extras.push(("cp of the same file, wall s", median(cp_times)));
            result
        }
        "log-heavy" => {
            let ctx = busybox_context(
                &o.dir.join("log-heavy"),
                "FROM scratch\nCOPY busybox /bin/busybox\n\
                 RUN [\"/bin/busybox\",\"seq\",\"1\",\"200000\"]\n",
            );
            alternate(o.runs, |t, i| {
                on_daemon(
                    daemon,
                    &mut client(t, &daemon.addr, &ctx, &["--no-cache"], &["--no-cache"]),
                    &log(t, i),
                )
            })
        }
        other => fail(&format!("unknown workload {other}")),
    };
    Report {
        rows: rows(&a, &b),
        extras,
    }
}

/// The first upload of `ctx` into a pruned daemon, then 10 files changed
/// (contents from `seed`), ready for the measured second upload.
fn upload_then_change(daemon: &Daemon, tool: Tool, ctx: &Path, log: &Path, seed: u64) {
    daemon.prune();
    settle(Some(ctx));
    on_daemon(daemon, &mut client(tool, &daemon.addr, ctx, &[], &[]), log);
    for f in 0..10u64 {
        let path = ctx.join(format!("d{:03}/f000", f * 20));
        write_file(&path, &fill(seed * 1000 + f, 2048));
    }
    settle(Some(ctx));
}

/// The sending side's floor: CPU of `tar` reading the same files and
/// writing them into a pipe (to `cat`, so tar cannot tell the output is
/// discarded and skip reading).
fn pipe_floor(ctx: &Path, exclude: &[&str]) -> f64 {
    let mut sink = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot run cat: {e}")));
    let Some(pipe) = sink.stdin.take() else {
        fail("no pipe to cat")
    };
    let (s, ok) = {
        let mut tar = Command::new("tar");
        tar.arg("cf").arg("-");
        for e in exclude {
            tar.arg(format!("--exclude={e}"));
        }
        tar.arg("-C").arg(ctx).arg(".");
        tar.stdout(pipe);
        measure_to(&mut tar, None)
        // The command holds the pipe's write end until it is dropped here;
        // only then does cat see the end.
    };
    let _ = sink.wait();
    if !ok {
        fail("tar of the context failed");
    }
    s.cpu
}

/// One more bkd run with its debug log, for what it says about the
/// transfer: how long the file sync of the context took, how long bkd had
/// data ready that the daemon was not taking yet, and how long the walk
/// took to announce every entry.
fn diagnose(daemon: &Daemon, ctx: &Path, logs: &Path, workload: &str) -> Vec<(&'static str, f64)> {
    let log = logs.join(format!("{workload}-bkd-debug.log"));
    let mut cmd = client(Tool::Bkd, &daemon.addr, ctx, &[], &[]);
    cmd.env("BKD_LOG", "bkd=debug");
    on_daemon(daemon, &mut cmd, &log);
    let text = fs::read_to_string(&log).unwrap_or_default();
    let field = |line: &str, key: &str| -> Option<f64> {
        let rest = line.split(&format!(" {key}=")).nth(1)?;
        rest.trim_start_matches('"')
            .split(['"', ' '])
            .next()?
            .parse()
            .ok()
    };
    // The context's transfer is the one announcing the most entries.
    let Some(line) = text
        .lines()
        .filter(|l| l.contains("file sync done") && l.contains("dir=context"))
        .max_by_key(|l| field(l, "entries").unwrap_or(0.0) as u64)
    else {
        fail(&format!("no file sync summary in {}", log.display()))
    };
    let mut out = Vec::new();
    for (name, key) in [
        ("bkd debug run: context file sync s", "seconds"),
        (
            "bkd debug run: of which bkd waited for the daemon s",
            "waited_for_daemon_s",
        ),
        ("bkd debug run: walk announcing every entry s", "walk_s"),
    ] {
        if let Some(v) = field(line, key) {
            out.push((name, v));
        }
    }
    out
}

/// buildkitd on its own, as tiny-cold spawns it (privileged, default
/// state dir): the median time from exec to its READY notification, and
/// from SIGTERM to its exit.
fn daemon_start_stop(o: &Options) -> (f64, f64) {
    let dir = o.dir.join("alone");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| fail(&e.to_string()));
    let (mut ready, mut stop) = (Vec::new(), Vec::new());
    for _ in 0..o.runs {
        let notify_path = dir.join("notify.sock");
        let _ = fs::remove_file(&notify_path);
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path)
            .unwrap_or_else(|e| fail(&format!("{}: {e}", notify_path.display())));
        let _ = notify.set_read_timeout(Some(Duration::from_secs(60)));
        let sock = dir.join("buildkitd.sock");
        settle(None);
        let started = Instant::now();
        let mut child = Command::new("buildkitd")
            .arg("--addr")
            .arg(format!("unix://{}", sock.display()))
            .arg("--otel-socket-path")
            .arg(dir.join("otel.sock"))
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot start buildkitd: {e}")));
        let mut buf = [0u8; 512];
        loop {
            match notify.recv(&mut buf) {
                Ok(n) if String::from_utf8_lossy(&buf[..n]).contains("READY=1") => break,
                Ok(_) => {}
                Err(e) => fail(&format!("buildkitd sent no READY: {e}")),
            }
        }
        ready.push(started.elapsed().as_secs_f64());
        let stopping = Instant::now();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
        stop.push(stopping.elapsed().as_secs_f64());
    }
    let _ = fs::remove_dir_all(&dir);
    (median(ready), median(stop))
}

fn command_text(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|k| format!("{:.1} GiB RAM", k as f64 / 1048576.0))
        .unwrap_or_default();
    format!(
        "{} cores ({cpu}), {mem}, kernel {}, {}, bkd {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        command_text("uname", &["-r"]),
        command_text("buildkitd", &["--version"]),
        command_text(
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

fn main() {
    let o = options();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        fail("run as root (the daemons run privileged, as in the privileged pod mode)");
    }
    fs::create_dir_all(&o.dir).unwrap_or_else(|e| fail(&format!("{}: {e}", o.dir.display())));
    let selected: Vec<&Workload> = WORKLOADS
        .iter()
        .filter(|w| {
            o.only
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| n == w.name))
        })
        .collect();
    if selected.is_empty() {
        fail("--only names no workload");
    }
    let daemon = Daemon::start(&o.dir);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| workload | metric | bkd | buildctl | bkd/buildctl |"
    );
    let _ = writeln!(table, "|---|---|---:|---:|---:|");
    for w in selected {
        eprintln!("bench: {} — {}", w.name, w.about);
        let report = run_workload(w.name, &o, &daemon);
        for (metric, a, b) in report.rows {
            let ratio = if b > 0.0 {
                format!("{:.2}", a / b)
            } else {
                "-".into()
            };
            let _ = writeln!(
                table,
                "| {} | {metric} | {a:.3} | {b:.3} | {ratio} |",
                w.name
            );
        }
        for (metric, v) in report.extras {
            let _ = writeln!(table, "| {} | {metric} | {v:.3} | | |", w.name);
        }
    }
    drop(daemon);
    let date = command_text("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let report = format!(
        "## {date}\n\nMachine: {}. Medians of {} runs per tool after one warm-up each, alternating.\n\n{table}\n",
        machine(),
        o.runs
    );
    println!("{report}");
    if o.record {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results.md");
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
        }
        let fresh = !path.exists();
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
        if fresh {
            let _ = writeln!(f, "# Benchmarks: bkd vs buildctl\n\nAppended by `scripts/bench.sh`; see README for what each workload measures.\n");
        }
        let _ = f.write_all(report.as_bytes());
        eprintln!("bench: appended to {}", path.display());
    }
}
