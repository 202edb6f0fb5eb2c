//! Builds the cases with bkd and with buildctl on the test bed's daemon and
//! compares: the outcome, the exported tree entry by entry, and the bytes
//! the daemon says it received for each transfer (its "transferring"
//! progress, which counts every packet of the file-sync stream).
//!
//! Cases that can share a build do, as named contexts (40 to a build); if
//! such a build fails with either tool, each of its cases is built again
//! alone. Every build runs with `--no-cache`, and every context is sent
//! under a name no other build used, so neither tool finds anything of the
//! other's in the daemon (no cached copy step, no earlier snapshot to send
//! a difference against). Main contexts are the exception: their names are
//! fixed, and buildctl sends them under one shared key, so those builds run
//! one at a time and buildctl's only after its copies are pruned. The two
//! tools build a job one after the other; two jobs of named contexts run at
//! a time, beside the main-context ones.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use super::case::{Case, Output};
use super::tree::{self, Tree};
use crate::common;

/// Cases per shared build.
const BATCH: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    /// The letter that starts the context names this tool sends.
    fn letter(self) -> char {
        match self {
            Tool::Bkd => 'k',
            Tool::Buildctl => 'c',
        }
    }
}

/// One build's result.
struct Outcome {
    code: Option<i32>,
    stderr: String,
    command: String,
    tree: Option<Tree>,
    /// Final size per transfer, by vertex name (context names replaced by
    /// the case's place in the build).
    transfers: BTreeMap<String, String>,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }

    fn error_line(&self) -> &str {
        self.stderr.lines().last().unwrap_or("")
    }

    fn explain(&self, tool: Tool) -> String {
        let tail: Vec<&str> = self.stderr.lines().rev().take(12).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "  {}: {}\n  exit {:?}; stderr ends:\n    {}",
            tool.name(),
            self.command,
            self.code,
            tail.join("\n    ")
        )
    }
}

/// A unit of work: cases built together (or one alone).
struct Job<'a> {
    id: usize,
    cases: Vec<(&'a Case, PathBuf)>,
}

pub struct Harness {
    work: tempfile::TempDir,
    problems: Mutex<Vec<String>>,
    /// Distinct job numbers, so that no two builds share a context name.
    next_job: Mutex<usize>,
}

impl Harness {
    pub fn new() -> Harness {
        Harness {
            work: tempfile::Builder::new()
                .prefix("bkd-differential-")
                .tempdir()
                .expect("work dir"),
            problems: Mutex::new(Vec::new()),
            next_job: Mutex::new(0),
        }
    }

    fn problem(&self, text: String) {
        self.problems.lock().expect("problems").push(text);
    }

    fn job_id(&self) -> usize {
        let mut n = self.next_job.lock().expect("job counter");
        *n += 1;
        *n
    }

    /// Builds every case with both tools (`workers` jobs at a time) and
    /// returns the problems found, one paragraph each. Cases that share
    /// builds are built `passes` times, in other company each time (the
    /// order turned around), so that what depends on timing shows.
    pub fn run(&self, cases: &[Case], workers: usize, passes: usize) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        for c in cases {
            assert!(seen.insert(&c.name), "two cases are named {:?}", c.name);
        }
        let contexts = self.work.path().join("contexts");
        let mut placed = Vec::new();
        for (i, case) in cases.iter().enumerate() {
            let dir = contexts.join(i.to_string());
            std::fs::create_dir_all(&dir).expect("case dir");
            case.write(&dir);
            placed.push((case, dir));
        }
        let (main, named): (Vec<_>, Vec<_>) = placed
            .into_iter()
            .partition(|(c, _)| c.dockerfile.is_some());
        let (mut shared, alone): (Vec<_>, Vec<_>) =
            named.into_iter().partition(|(c, _)| c.batchable());
        let mut jobs: Vec<Vec<(&Case, PathBuf)>> = Vec::new();
        for pass in 0..passes.max(1) {
            if pass > 0 {
                shared.reverse();
            }
            jobs.extend(shared.chunks(BATCH).map(|c| c.to_vec()));
        }
        jobs.extend(alone.into_iter().map(|c| vec![c]));
        let queue = Mutex::new(jobs);
        std::thread::scope(|s| {
            for _ in 0..workers.max(1) {
                s.spawn(|| loop {
                    let Some(cases) = queue.lock().expect("queue").pop() else {
                        return;
                    };
                    self.run_job(cases);
                });
            }
            // Main contexts go under fixed names (`context`, `dockerfile`),
            // and buildctl keeps one copy of each for all its builds: these
            // run one at a time, buildctl's after its copies are pruned.
            s.spawn(|| {
                for case in main {
                    self.run_job(vec![case]);
                }
            });
        });
        std::mem::take(&mut *self.problems.lock().expect("problems"))
    }

    fn run_job(&self, cases: Vec<(&Case, PathBuf)>) {
        let job = Job {
            id: self.job_id(),
            cases,
        };
        // One tool after the other: the daemon merges identical steps of
        // builds that run at the same time, which would let one tool's
        // result stand for the other's.
        let bkd = self.build(&job, Tool::Bkd);
        let buildctl = self.build(&job, Tool::Buildctl);
        if job.cases.len() > 1 && !(bkd.ok() && buildctl.ok()) {
            // Someone failed: find out who, one case at a time.
            for case in job.cases {
                self.run_job(vec![case]);
            }
            return;
        }
        for (n, (case, _)) in job.cases.iter().enumerate() {
            // Without a Dockerfile of its own, a case is copied to /<n>/.
            let copied = case.dockerfile.is_none();
            self.compare(case, n, copied, &bkd, &buildctl);
        }
    }

    /// The context name `tool` sends the `n`th case of `job` under.
    fn context_name(job: &Job, tool: Tool, n: usize) -> String {
        format!("{}{}x{}", tool.letter(), job.id, n)
    }

    fn build(&self, job: &Job, tool: Tool) -> Outcome {
        // bkd keeps a copy per context directory, and each case has its own.
        if tool == Tool::Buildctl && job.cases[0].0.dockerfile.is_some() {
            let prune = ["prune", "--all", "--filter", "type==source.local"];
            common::buildctl(&prune, self.work.path()).assert_ok();
        }
        let dir = self
            .work
            .path()
            .join(format!("job-{}-{}", job.id, tool.name()));
        std::fs::create_dir_all(&dir).expect("job dir");
        let (first, first_dir) = &job.cases[0];
        let output = if job.cases.len() == 1 {
            first.output
        } else {
            Output::Tar
        };
        let dest = dir.join(match output {
            Output::Tar => "out.tar",
            Output::Local => "out",
        });
        let out_spec = match output {
            Output::Tar => format!("type=tar,dest={}", dest.display()),
            Output::Local => format!("type=local,dest={}", dest.display()),
        };
        let mut args: Vec<String> = vec![
            "build".into(),
            "--no-cache".into(),
            "--progress=plain".into(),
        ];
        let names: Vec<String> = (0..job.cases.len())
            .map(|n| Self::context_name(job, tool, n))
            .collect();
        let cwd: PathBuf;
        if let (1, Some((file, _))) = (job.cases.len(), &first.dockerfile) {
            // The case's own Dockerfile, its directory the main context.
            cwd = first_dir.clone();
            match tool {
                Tool::Bkd => args.extend([
                    "-f".into(),
                    first_dir.join(file).display().to_string(),
                    ".".into(),
                ]),
                Tool::Buildctl => args.extend(
                    common::DOCKERFILE_HERE
                        .iter()
                        .map(|s| s.to_string())
                        .chain(["--opt".into(), format!("filename={file}")]),
                ),
            }
        } else {
            // Each case a named context, copied to /<n>/ of the image.
            let mut dockerfile = String::from("FROM scratch\n");
            for (n, name) in names.iter().enumerate() {
                dockerfile.push_str(&format!("COPY --from={name} / /{n}/\n"));
            }
            let df = dir.join("dockerfile");
            std::fs::create_dir_all(&df).expect("dockerfile dir");
            std::fs::write(df.join("Dockerfile"), dockerfile).expect("Dockerfile");
            cwd = df.clone();
            match tool {
                Tool::Bkd => {
                    for (name, (_, ctx)) in names.iter().zip(&job.cases) {
                        args.extend([
                            "--build-context".into(),
                            format!("{name}={}", ctx.display()),
                        ]);
                    }
                    args.push(".".into());
                }
                Tool::Buildctl => {
                    args.extend(common::DOCKERFILE_HERE.iter().map(|s| s.to_string()));
                    for (name, (_, ctx)) in names.iter().zip(&job.cases) {
                        args.extend([
                            "--local".into(),
                            format!("{name}={}", ctx.display()),
                            "--opt".into(),
                            format!("context:{name}=local:{name}"),
                        ]);
                    }
                }
            }
        }
        match tool {
            Tool::Bkd => args.extend(["-o".into(), out_spec]),
            Tool::Buildctl => args.extend(["--output".into(), out_spec]),
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = match (tool, std::env::var("BKD_DIFFERENTIAL_BKD")) {
            // Another bkd binary (an older build, to see what it got wrong).
            (Tool::Bkd, Ok(bin)) => {
                let addr = common::bed().addr.clone();
                let mut all = vec![argv[0], "--addr", &addr];
                all.extend_from_slice(&argv[1..]);
                common::run(&bin, &all, &cwd, &[])
            }
            (Tool::Bkd, Err(_)) => common::bkd(&argv, &cwd),
            (Tool::Buildctl, _) => common::buildctl(&argv, &cwd),
        };
        let stderr = run.stderr();
        let tree = (run.out.status.success()).then(|| match output {
            Output::Tar => tree::from_tar(&dest),
            Output::Local => tree::from_dir(&dest),
        });
        let transfers = transfers(&stderr, &names);
        // Nothing of a job is needed once it is compared.
        let _ = std::fs::remove_dir_all(&dir);
        Outcome {
            code: run.code(),
            stderr,
            command: run.cmd,
            tree,
            transfers,
        }
    }

    /// Compares the `n`th case of a build.
    fn compare(&self, case: &Case, n: usize, copied: bool, bkd: &Outcome, buildctl: &Outcome) {
        let mut found = Vec::new();
        if bkd.ok() != buildctl.ok() {
            found.push(format!(
                "buildctl {}, bkd {}",
                if buildctl.ok() { "builds" } else { "fails" },
                if bkd.ok() { "builds" } else { "fails" }
            ));
        }
        match case.fails {
            Some(true) if buildctl.ok() => {
                found.push("the case expects buildctl to fail; it builds".into())
            }
            Some(false) if !buildctl.ok() => {
                found.push("the case expects buildctl to build; it fails".into())
            }
            _ => {}
        }
        if !bkd.ok() {
            let line = bkd.error_line();
            if !line.starts_with("error: ") {
                found.push(format!("bkd's last line is not an error line: {line:?}"));
            }
            for text in &case.bkd_error {
                if !line.contains(text.as_str()) {
                    found.push(format!("bkd's error line lacks {text:?}: {line:?}"));
                }
            }
        }
        if let (Some(theirs), Some(ours)) = (&buildctl.tree, &bkd.tree) {
            let (theirs, ours) = if copied {
                let top = n.to_string();
                (
                    tree::subtree(theirs, top.as_bytes()),
                    tree::subtree(ours, top.as_bytes()),
                )
            } else {
                (theirs.clone(), ours.clone())
            };
            found.extend(tree::differences(&theirs, &ours, &case.build_time_dirs));
            for p in &case.present {
                if !theirs.contains_key(p) {
                    found.push(format!(
                        "the case expects {} in buildctl's result; it is not",
                        tree::show(p)
                    ));
                }
            }
            for p in &case.absent {
                if theirs.contains_key(p) {
                    found.push(format!(
                        "the case expects no {} in buildctl's result; it is there",
                        tree::show(p)
                    ));
                }
            }
        }
        if bkd.ok() && buildctl.ok() {
            let marker = format!("#{n}]");
            let mine = |t: &BTreeMap<String, String>| -> BTreeMap<String, String> {
                t.iter()
                    .filter(|(k, _)| !copied || k.contains(&marker))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            let (theirs, ours) = (mine(&buildctl.transfers), mine(&bkd.transfers));
            if theirs != ours {
                found.push(format!(
                    "bytes received by the daemon differ: buildctl {theirs:?}, bkd {ours:?}"
                ));
            }
        }
        if !found.is_empty() {
            let ignore = case
                .dockerignore
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            self.problem(format!(
                "case {:?}{}:\n  .dockerignore: {ignore:?}\n  - {}\n{}\n{}",
                case.name,
                if copied {
                    format!(" (context #{n} of its build)")
                } else {
                    String::new()
                },
                found.join("\n  - "),
                buildctl.explain(Tool::Buildctl),
                bkd.explain(Tool::Bkd),
            ));
        }
    }
}

/// The daemon's final "transferring" size per vertex, from plain progress;
/// each context name in `names` is replaced by `#<its place>`.
fn transfers(stderr: &str, names: &[String]) -> BTreeMap<String, String> {
    let mut vertex_names: BTreeMap<&str, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    let normalize = |text: &str| -> String {
        // Longest names first: `k3x12` must not be read as `k3x1`.
        let mut order: Vec<(usize, &String)> = names.iter().enumerate().collect();
        order.sort_by_key(|(_, n)| std::cmp::Reverse(n.len()));
        let mut text = text.to_string();
        for (i, name) in order {
            text = text.replace(name.as_str(), &format!("#{i}"));
        }
        text
    };
    for line in stderr.lines() {
        let Some((id, rest)) = line.strip_prefix('#').and_then(|l| l.split_once(' ')) else {
            continue;
        };
        if !id.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        vertex_names.entry(id).or_insert_with(|| normalize(rest));
        let Some(done) = rest
            .strip_prefix("transferring ")
            .and_then(|r| r.strip_suffix(" done"))
        else {
            continue;
        };
        let Some((_, size)) = done.rsplit_once(": ") else {
            continue;
        };
        // "75B" or "100.13kB 0.0s": the size is the first word.
        let size = size.split(' ').next().unwrap_or("").to_string();
        if let Some(vertex) = vertex_names.get(id) {
            out.insert(vertex.clone(), size);
        }
    }
    out
}
