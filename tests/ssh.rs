//! `--ssh` against a real daemon and real ssh-agents: a build step lists
//! the forwarded keys with the real ssh-add, each id reaches its own agent,
//! the step cannot change the agent, and bad or missing ids fail clearly
//! without the private key ever showing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SIGNED_DATA: &str = "signed inside a build step by a forwarded agent\n";

/// An ssh-agent in the foreground on its own socket, holding one fresh
/// ed25519 key. Killed and reaped on drop.
struct Agent {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Agent {
    fn start(comment: &str) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("bkd-agent-")
            .tempdir()
            .expect("agent dir");
        let socket = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent (package openssh-client): run scripts/setup.sh");
        let agent = Agent { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agent.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "ssh-agent did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let key = agent.key();
        run(
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", &key],
            agent.dir.path(),
            &[],
        )
        .assert_ok();
        agent.ssh_add(&[&key]).assert_ok();
        agent
    }

    fn key(&self) -> String {
        self.dir.path().join("id_ed25519").display().to_string()
    }

    fn socket(&self) -> String {
        self.socket.display().to_string()
    }

    fn ssh_add(&self, args: &[&str]) -> Run {
        run(
            "ssh-add",
            args,
            self.dir.path(),
            &[("SSH_AUTH_SOCK", &self.socket())],
        )
    }

    /// `ssh-keygen -l` of the key: "256 SHA256:... COMMENT (ED25519)".
    fn fingerprint(&self) -> String {
        let pubkey = format!("{}.pub", self.key());
        run("ssh-keygen", &["-lf", &pubkey], self.dir.path(), &[])
            .assert_ok()
            .stdout()
            .trim()
            .to_string()
    }

    /// Checks an `ssh-keygen -Y sign -n bkd` signature of `data` by this key.
    fn verify(&self, data: &str, signature: &[u8]) {
        let d = self.dir.path();
        let pubkey = std::fs::read_to_string(format!("{}.pub", self.key())).expect("public key");
        write(d, "allowed_signers", &format!("signer {pubkey}"));
        write(d, "data.sig", &String::from_utf8_lossy(signature));
        let run = Command::new("ssh-keygen")
            .args(["-Y", "verify", "-f", "allowed_signers", "-I", "signer"])
            .args(["-n", "bkd", "-s", "data.sig"])
            .current_dir(d)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                if let Some(mut stdin) = child.stdin.take() {
                    std::io::Write::write_all(&mut stdin, data.as_bytes())?;
                }
                child.wait_with_output()
            })
            .expect("ssh-keygen -Y verify");
        assert!(
            run.status.success(),
            "signature does not verify: {}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }

    /// The private key file's base64 lines, none of which may ever be shown.
    fn private_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.key())
            .expect("read key")
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies a host binary with the shared libraries and loader `ldd` names
/// into `root`, at their host paths, for a `FROM scratch` image.
fn copy_binary_with_libs(binary: &str, root: &Path) {
    std::fs::create_dir_all(root).expect("mkdir");
    let ldd = run("ldd", &[binary], root, &[]).assert_ok().stdout();
    let mut files = vec![binary.to_string()];
    for line in ldd.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            files.push(p.to_string());
        }
    }
    for f in files {
        let dest = root.join(f.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&f, &dest).unwrap_or_else(|e| panic!("copy {f}: {e}"));
    }
}

/// A context with busybox, ssh-add and ssh-keygen (`sshroot/`), and a
/// Dockerfile whose `body` follows the setup lines.
fn ssh_context(body: &str) -> tempfile::TempDir {
    let ctx = context();
    let root = ctx.path().join("sshroot");
    copy_binary_with_libs("/usr/bin/ssh-add", &root);
    copy_binary_with_libs("/usr/bin/ssh-keygen", &root);
    // ssh-keygen looks up the user it runs as.
    write(&root, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
    write(
        ctx.path(),
        "Dockerfile",
        &format!("FROM scratch\nCOPY busybox /bin/busybox\nCOPY sshroot/ /\n{body}"),
    );
    ctx
}

/// A step script in exec form, run by busybox sh.
fn sh_step(mounts: &str, script: &str) -> String {
    format!("RUN {mounts} [\"/bin/busybox\",\"sh\",\"-c\",\"{script}\"]\n")
}

fn assert_hidden(agent: &Agent, haystacks: &[(&str, &[u8])]) {
    for line in agent.private_lines() {
        for (name, hay) in haystacks {
            assert!(
                !hay.windows(line.len()).any(|w| w == line.as_bytes()),
                "private key material in {name}"
            );
        }
    }
}

#[test]
fn steps_reach_the_agent_of_each_id_read_only() {
    let first = Agent::start("bkd-default-key");
    let second = Agent::start("bkd-deploy-key");
    let step = sh_step(
        "--mount=type=ssh,required=true,target=/run/a.sock \
         --mount=type=ssh,id=deploy,required=true,target=/run/b.sock",
        "\
         SSH_AUTH_SOCK=/run/a.sock /usr/bin/ssh-add -l > /default.txt 2>&1; \
         SSH_AUTH_SOCK=/run/b.sock /usr/bin/ssh-add -l > /deploy.txt 2>&1; \
         SSH_AUTH_SOCK=/run/a.sock /usr/bin/ssh-keygen -Y sign -n bkd -f /sign/key.pub /sign/data > /sign.txt 2>&1; \
         SSH_AUTH_SOCK=/run/a.sock /usr/bin/ssh-add -D > /delete.txt 2>&1; echo $? > /delete.rc",
    );
    let ctx = ssh_context(&format!("COPY sign/ /sign/\n{step}"));
    let d = ctx.path();
    // The step signs with the default agent's key; the signature is checked here.
    let pubkey = std::fs::read_to_string(format!("{}.pub", first.key())).expect("public key");
    write(d, "sign/key.pub", &pubkey);
    write(d, "sign/data", SIGNED_DATA);
    let out = d.join("out.tar");
    let deploy = format!("deploy={}", second.socket());
    let run = bkd_env(
        &[
            "build",
            "--debug",
            "--no-cache",
            "--ssh",
            "default",
            "--ssh",
            &deploy,
            "-o",
            &tar_output(&out),
            ".",
        ],
        d,
        &[("SSH_AUTH_SOCK", &first.socket())],
    );
    run.assert_ok();
    let file = |name: &str| {
        let bytes = tar_file(&out, name)
            .unwrap_or_else(|| panic!("{name} in the output\n{}", run.explain()));
        String::from_utf8_lossy(&bytes).trim().to_string()
    };
    assert_eq!(
        file("default.txt"),
        first.fingerprint(),
        "{}",
        run.explain()
    );
    assert_eq!(
        file("deploy.txt"),
        second.fingerprint(),
        "{}",
        run.explain()
    );
    let signature = tar_file(&out, "sign/data.sig")
        .unwrap_or_else(|| panic!("no signature: {}", file("sign.txt")));
    first.verify(SIGNED_DATA, &signature);
    // Removing keys is refused inside the step and the agent still holds its key.
    assert_ne!(file("delete.rc"), "0", "{}", file("delete.txt"));
    assert_eq!(
        first.ssh_add(&["-l"]).assert_ok().stdout().trim(),
        first.fingerprint()
    );
    let tar = std::fs::read(&out).expect("read tar");
    for agent in [&first, &second] {
        assert_hidden(
            agent,
            &[
                ("stdout", run.out.stdout.as_slice()),
                ("stderr", run.out.stderr.as_slice()),
                ("the output", tar.as_slice()),
            ],
        );
    }
}

#[test]
fn a_mount_for_an_id_not_given_fails_naming_it() {
    let agent = Agent::start("bkd-other-key");
    let ctx = ssh_context(&sh_step(
        "--mount=type=ssh,id=deploy,required=true",
        "/usr/bin/ssh-add -l",
    ));
    let given = format!("default={}", agent.socket());
    for args in [
        vec!["build", "--ssh", given.as_str(), "."],
        vec!["build", "."],
    ] {
        let run = bkd(&args, ctx.path());
        assert_eq!(run.code(), Some(1), "{}", run.explain());
        let last = run.stderr().trim().lines().last().unwrap_or("").to_string();
        assert!(
            last.contains("\"deploy\"") && last.contains("--ssh deploy="),
            "{}",
            run.explain()
        );
    }
}

/// bkd with SSH_AUTH_SOCK removed from its environment.
fn bkd_without_agent(args: &[&str], cwd: &Path) -> Run {
    let mut all = vec![args[0], "--addr", &bed().addr];
    all.extend_from_slice(&args[1..]);
    let out = Command::new(env!("CARGO_BIN_EXE_bkd"))
        .args(&all)
        .current_dir(cwd)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .expect("run bkd");
    Run {
        cmd: format!("bkd {}", all.join(" ")),
        cwd: cwd.to_path_buf(),
        out,
    }
}

#[test]
fn bad_ssh_flags_fail_before_the_build() {
    let ctx = context();
    write(ctx.path(), "Dockerfile", "FROM scratch\n");
    let d = ctx.path();

    let run = bkd_without_agent(&["build", "--ssh", "default", "."], d);
    assert_eq!(run.code(), Some(3), "{}", run.explain());
    assert_eq!(
        run.stderr().trim(),
        "error: --ssh default: SSH_AUTH_SOCK is not set; start ssh-agent or give --ssh default=SOCKET"
    );

    let run = bkd(&["build", "--ssh", "x=/no/such/agent.sock", "."], d);
    assert_eq!(run.code(), Some(3), "{}", run.explain());
    assert_eq!(
        run.stderr().trim(),
        "error: --ssh x: cannot use /no/such/agent.sock: no such file or directory"
    );

    let run = bkd(&["build", "--ssh", "x=/a,", "."], d);
    assert_eq!(run.code(), Some(2), "{}", run.explain());
    let run = bkd(&["build", "--ssh", "x", "--ssh", "x=/b", "."], d);
    assert_eq!(run.code(), Some(2), "{}", run.explain());
    assert!(run.stderr().contains("--ssh x is given twice"));

    // A key file is refused by name, its content never shown.
    let agent = Agent::start("bkd-file-key");
    let key_spec = format!("k={}", agent.key());
    let run = bkd(&["build", "--ssh", &key_spec, "."], d);
    assert_eq!(run.code(), Some(3), "{}", run.explain());
    assert!(
        run.stderr().contains("key files are not supported yet"),
        "{}",
        run.explain()
    );
    assert_hidden(
        &agent,
        &[
            ("stdout", run.out.stdout.as_slice()),
            ("stderr", run.out.stderr.as_slice()),
        ],
    );
}
