//! The reference matcher itself, as a child process: oracle/main.go built
//! against moby/patternmatcher v0.6.1 (the version BuildKit v0.32.2 pins,
//! from the Go module cache `scripts/setup.sh` fills) and Go's
//! `filepath.Match`. Used to check bkd's matcher row by row and on
//! generated patterns, far faster than builds can.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{json, Value};

/// One answer of the reference: matched, not matched, or an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Yes,
    No,
    Error,
}

impl Answer {
    fn parse(v: &Value) -> Answer {
        match v.as_str() {
            Some("true") => Answer::Yes,
            Some("false") => Answer::No,
            Some("err") => Answer::Error,
            other => panic!("oracle answered {other:?}"),
        }
    }

    pub fn of<E>(r: Result<bool, E>) -> Answer {
        match r {
            Ok(true) => Answer::Yes,
            Ok(false) => Answer::No,
            Err(_) => Answer::Error,
        }
    }
}

/// The reference's answers for one pattern list.
#[derive(Debug)]
pub struct Answers {
    /// Reading the list failed (`patternmatcher.New`).
    pub new_error: Option<String>,
    /// Per path: `MatchesOrParentMatches`, `MatchesUsingParentResults` with
    /// the parents walked first, and with no parent results.
    pub whole: Vec<Answer>,
    pub walked: Vec<Answer>,
    pub no_context: Vec<Answer>,
}

pub struct Oracle {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Builds the oracle (quick when Go's build cache has it).
fn build() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential/oracle");
    let bin = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bkd-pattern-oracle");
    let out = Command::new("go")
        .args(["build", "-trimpath", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        // Offline, from the module cache, with the Go that built buildctl.
        .env("GOFLAGS", "-mod=readonly")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .output()
        .expect("go (installed by scripts/setup.sh) to build the reference oracle");
    assert!(
        out.status.success(),
        "building the reference oracle failed (run scripts/setup.sh, which fetches moby/patternmatcher into the Go module cache):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

impl Oracle {
    pub fn start() -> Oracle {
        let mut child = Command::new(build())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the reference oracle");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Oracle {
            child,
            stdin,
            stdout,
        }
    }

    fn ask(&mut self, request: Value) -> Value {
        writeln!(self.stdin, "{request}").expect("write to the oracle");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read from the oracle");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("oracle said {line:?}: {e}"))
    }

    /// The reference's answers for `paths` under `patterns`.
    pub fn patterns<P: AsRef<[u8]>, Q: AsRef<[u8]>>(
        &mut self,
        patterns: &[P],
        paths: &[Q],
    ) -> Answers {
        let v = self.ask(json!({
            "patterns": patterns.iter().map(|p| hex(p.as_ref())).collect::<Vec<_>>(),
            "paths": paths.iter().map(|p| hex(p.as_ref())).collect::<Vec<_>>(),
        }));
        let list = |key: &str| -> Vec<Answer> {
            v[key]
                .as_array()
                .map(|a| a.iter().map(Answer::parse).collect())
                .unwrap_or_default()
        };
        let new_error = v["new_err"]
            .as_str()
            .filter(|e| !e.is_empty())
            .map(str::to_string);
        Answers {
            new_error,
            whole: list("whole"),
            walked: list("walked"),
            no_context: list("no_context"),
        }
    }

    /// Go's `filepath.Match(pattern, name)` for each name.
    pub fn glob<Q: AsRef<[u8]>>(&mut self, pattern: &[u8], names: &[Q]) -> Vec<Answer> {
        let v = self.ask(json!({
            "glob": hex(pattern),
            "paths": names.iter().map(|p| hex(p.as_ref())).collect::<Vec<_>>(),
        }));
        v["glob"]
            .as_array()
            .map(|a| a.iter().map(Answer::parse).collect())
            .unwrap_or_default()
    }
}

impl Oracle {
    /// The ranges of Go's `[\p{name}]`, empty when Go rejects the name.
    pub fn unicode(&mut self, name: &str) -> Vec<(u32, u32)> {
        let v = self.ask(json!({ "unicode": name }));
        let runes: Vec<u32> = v["ranges"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_u64())
                    .map(|r| r as u32)
                    .collect()
            })
            .unwrap_or_default();
        runes.chunks(2).map(|p| (p[0], p[1])).collect()
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
