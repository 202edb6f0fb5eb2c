//! Pod simulation: bkd's own images, built once per test binary by
//! scripts/image.sh and unpacked, run under runc with an OCI config made the
//! way containerd's CRI plugin makes one for a Kubernetes container spec.
//!
//! What the config copies from CRI: the namespaces (pid, ipc, uts, mount;
//! a user namespace with 65536 ids for `hostUsers: false`), the mounts
//! (/proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, read-only /sys and
//! cgroups, /etc/hosts, /etc/hostname, /etc/resolv.conf, emptyDir volumes as
//! bind mounts of 0777 host directories), containerd's default capability
//! set as bounding, effective and permitted sets (a non-root process loses
//! the last two at exec), the masked and read-only /proc paths
//! (`procMount: Default`), seccomp `RuntimeDefault` as Docker's default
//! profile, the image's env, user and working directory, and everything
//! open for `privileged: true`. The container rootfs is an overlay of the
//! unpacked image, as containerd's overlayfs snapshotter makes it.
//!
//! One deliberate difference: the container shares the host's network
//! namespace (as `hostNetwork: true` would), so that the test registry on
//! the host's 127.0.0.1 is reachable; with `hostUsers: false` (which
//! Kubernetes only allows with a pod network) /sys is therefore bound from
//! the host instead of mounted. AppArmor is not simulated: this
//! kernel has none, and runc ignores a profile where AppArmor is off.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The two images scripts/image.sh builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Image {
    Root,
    Rootless,
}

impl Image {
    pub fn tag(self) -> &'static str {
        match self {
            Image::Root => "root",
            Image::Rootless => "rootless",
        }
    }
}

/// An unpacked image: its root filesystem and the config runc needs.
pub struct Unpacked {
    pub rootfs: PathBuf,
    pub env: Vec<String>,
    pub user: String,
    pub workdir: String,
}

/// The images, built and unpacked once per test binary.
pub struct Images {
    pub dir: PathBuf,
    pub root: Unpacked,
    pub rootless: Unpacked,
    /// Where they were pushed: `REPO:root`, `REPO:rootless`.
    pub repo: String,
    /// How long scripts/image.sh took.
    pub build_time: Duration,
}

impl Images {
    pub fn get(&self, image: Image) -> &Unpacked {
        match image {
            Image::Root => &self.root,
            Image::Rootless => &self.rootless,
        }
    }
}

static IMAGES: OnceLock<Result<Images, String>> = OnceLock::new();
static IMAGES_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_images() {
    if keep() {
        return;
    }
    if let Some(dir) = IMAGES_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds both images with scripts/image.sh (the bkd under test inside),
/// pushes them to the test registry and unpacks them.
pub fn images() -> &'static Images {
    // A failed build fails every pod test with its message, once.
    let built = IMAGES.get_or_init(|| {
        std::panic::catch_unwind(build_images).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "building the images panicked".into())
        })
    });
    match built {
        Ok(images) => images,
        Err(e) => panic!("{e}"),
    }
}

fn build_images() -> Images {
    for tool in ["mmdebstrap", "runc", "tar", "strip", "setcap"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{tool} not found: run scripts/setup.sh (the pod tests need the real test bed)"
        );
    }
    let registry = &crate::common::bed().registry;
    let dir = tempfile::Builder::new()
        .prefix("bkd-pod-images-")
        .tempdir_in("/var/tmp")
        .expect("temp dir")
        .keep();
    let _ = IMAGES_DIR.set(dir.clone());
    // SAFETY: registering a plain extern "C" function.
    unsafe {
        libc::atexit(remove_images);
    }
    let repo = format!("{registry}/bkd");
    let started = Instant::now();
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("scripts/image.sh"))
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--push")
        .arg(&repo)
        .arg("--bkd")
        .arg(env!("CARGO_BIN_EXE_bkd"))
        .env("BKD_PROGRESS", "quiet")
        .env_remove("BUILDKIT_HOST");
    if let Some(cache) = std::env::var_os("BKD_POD_BASE_CACHE") {
        // For runs by hand: reuse the mmdebstrap root filesystem.
        cmd.arg("--base-cache").arg(cache);
    }
    let out = cmd.output().expect("run scripts/image.sh");
    assert!(
        out.status.success(),
        "scripts/image.sh failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let build_time = started.elapsed();
    eprintln!(
        "pod images built in {:.1}s\n{}",
        build_time.as_secs_f64(),
        String::from_utf8_lossy(&out.stderr)
    );
    let unpack = |image: Image| {
        unpack_oci(
            &dir.join("out").join(format!("{}.oci.tar", image.tag())),
            &dir.join(image.tag()),
        )
    };
    Images {
        root: unpack(Image::Root),
        rootless: unpack(Image::Rootless),
        dir,
        repo,
        build_time,
    }
}

fn sh(script: &str) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run sh")
}

fn sh_ok(script: &str) -> String {
    let out = sh(script);
    assert!(
        out.status.success(),
        "`{script}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (algo, hex) = digest.split_once(':').expect("digest algo:hex");
    layout.join("blobs").join(algo).join(hex)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Unpacks an OCI image tarball into `dest/rootfs`, layer by layer with
/// whiteouts applied and extended attributes (file capabilities) kept.
pub fn unpack_oci(tarball: &Path, dest: &Path) -> Unpacked {
    let layout = dest.join("layout");
    let rootfs = dest.join("rootfs");
    std::fs::create_dir_all(&layout).expect("layout dir");
    std::fs::create_dir_all(&rootfs).expect("rootfs dir");
    sh_ok(&format!("tar -xf {} -C {}", quote(tarball), quote(&layout)));
    let index = read_json(&layout.join("index.json"));
    let mut manifest = read_json(&blob(
        &layout,
        index["manifests"][0]["digest"]
            .as_str()
            .expect("index digest"),
    ));
    if manifest["manifests"].is_array() {
        // An index: take the first manifest (this machine's platform).
        manifest = read_json(&blob(
            &layout,
            manifest["manifests"][0]["digest"]
                .as_str()
                .expect("manifest digest"),
        ));
    }
    let config = read_json(&blob(
        &layout,
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    ));
    for layer in manifest["layers"].as_array().expect("layers") {
        let path = blob(&layout, layer["digest"].as_str().expect("layer digest"));
        let listing = sh_ok(&format!("tar -tzf {}", quote(&path)));
        for entry in listing.lines() {
            let entry = entry.trim_start_matches("./");
            let (parent, name) = match entry.rsplit_once('/') {
                Some((p, n)) => (p, n),
                None => ("", entry),
            };
            if name == ".wh..wh..opq" {
                let d = rootfs.join(parent);
                if let Ok(rd) = std::fs::read_dir(&d) {
                    for e in rd.flatten() {
                        let _ = std::fs::remove_dir_all(e.path())
                            .or_else(|_| std::fs::remove_file(e.path()));
                    }
                }
            } else if let Some(hidden) = name.strip_prefix(".wh.") {
                let p = rootfs.join(parent).join(hidden);
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
        }
        sh_ok(&format!(
            "tar --xattrs --xattrs-include='*' --numeric-owner --same-owner -xpzf {} -C {} --exclude='.wh.*'",
            quote(&path),
            quote(&rootfs)
        ));
    }
    let _ = std::fs::remove_dir_all(&layout);
    let cfg = &config["config"];
    Unpacked {
        rootfs,
        env: cfg["Env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        user: cfg["User"].as_str().unwrap_or("").to_string(),
        workdir: cfg["WorkingDir"].as_str().unwrap_or("/").to_string(),
    }
}

/// `securityContext.seccompProfile.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seccomp {
    Unconfined,
    /// Docker's default profile, as containerd's RuntimeDefault applies it.
    RuntimeDefault,
}

/// Where a volume's host side comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeSource {
    /// An emptyDir: a fresh 0777 directory on the node's disk.
    EmptyDir,
    /// A host directory as it is (the checked-out workspace).
    Host(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Volume {
    pub mount_path: String,
    pub source: VolumeSource,
}

/// A container spec, in Kubernetes terms.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub name: String,
    pub image: Image,
    pub privileged: bool,
    /// `runAsUser`/`runAsGroup`; `None`: the image's user.
    pub run_as: Option<(u32, u32)>,
    pub seccomp: Seccomp,
    /// `procMount: Unmasked`.
    pub proc_unmasked: bool,
    /// `hostUsers: false`: a user namespace mapping 65536 ids.
    pub host_users: bool,
    pub env: Vec<(String, String)>,
    pub volumes: Vec<Volume>,
    /// Image change before the run: newuidmap/newgidmap setuid root, as
    /// Debian ships them, instead of file capabilities.
    pub setuid_uidmap: bool,
    /// Image change before the run: a shell command run as root in the
    /// unpacked root filesystem (the working directory).
    pub image_edit: Option<String>,
}

/// The first id of the host range a `hostUsers: false` pod is given.
pub const USERNS_HOST_BASE: u32 = 3_000_000;
pub const USERNS_SIZE: u32 = 65_536;

impl PodSpec {
    fn base(name: &str, image: Image) -> PodSpec {
        PodSpec {
            name: name.into(),
            image,
            privileged: false,
            run_as: None,
            seccomp: Seccomp::Unconfined,
            proc_unmasked: false,
            host_users: true,
            env: Vec::new(),
            volumes: Vec::new(),
            setuid_uidmap: false,
            image_edit: None,
        }
    }

    fn empty_dir(path: &str) -> Volume {
        Volume {
            mount_path: path.into(),
            source: VolumeSource::EmptyDir,
        }
    }

    /// The seed's privileged recipe.
    pub fn privileged() -> PodSpec {
        let mut p = PodSpec::base("privileged", Image::Root);
        p.privileged = true;
        p.env.push(("BUILDKITD_FLAGS".into(), String::new()));
        p.volumes = vec![
            PodSpec::empty_dir("/var/lib/buildkit"),
            PodSpec::empty_dir("/tmp"),
        ];
        p
    }

    /// The seed's rootless recipe.
    pub fn rootless() -> PodSpec {
        let mut p = PodSpec::base("rootless", Image::Rootless);
        p.run_as = Some((1000, 1000));
        p.env.push(("BUILDKITD_FLAGS".into(), String::new()));
        p.volumes = vec![
            PodSpec::empty_dir("/home/user/.local/share/buildkit"),
            PodSpec::empty_dir("/tmp"),
        ];
        p
    }

    /// The seed's strict recipe: no process sandbox, seccomp and AppArmor
    /// Unconfined (the rootless spec's seccomp is already Unconfined, as
    /// Kubernetes leaves it without kubelet's --seccomp-default).
    pub fn rootless_strict() -> PodSpec {
        let mut p = PodSpec::rootless();
        p.name = "rootless-strict".into();
        p.env = vec![(
            "BUILDKITD_FLAGS".into(),
            "--oci-worker-no-process-sandbox".into(),
        )];
        p
    }

    /// The node-side path of the volume mounted at `path`, once running.
    pub fn has_volume(&self, path: &str) -> bool {
        self.volumes.iter().any(|v| v.mount_path == path)
    }
}

/// containerd's default capabilities for a container that is not privileged.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability this kernel knows, for `privileged: true`.
fn all_caps() -> Vec<String> {
    const NAMES: &[&str] = &[
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
    ];
    // Only those in this process's bounding set: runc refuses the others.
    let bnd = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string()))
        })
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(u64::MAX);
    NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| bnd & (1u64 << i) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// containerd's masked paths for `procMount: Default`.
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's read-only paths for `procMount: Default`.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Where scripts/setup.sh puts Docker's default seccomp profile (from
/// Debian's golang-github-docker-docker-dev package).
const SECCOMP_PROFILE: &str = "/usr/local/share/bkd-test/seccomp/docker-default.json";

/// Docker's default seccomp profile in the OCI runtime's form, resolved
/// for x86_64 and the container's capabilities the way containerd and
/// Docker resolve it.
pub fn runtime_default_seccomp(caps: &[String]) -> Value {
    assert!(
        Path::new(SECCOMP_PROFILE).is_file(),
        "{SECCOMP_PROFILE} is missing: run scripts/setup.sh first (the pod tests need the test bed)"
    );
    let profile = read_json(Path::new(SECCOMP_PROFILE));
    let arch = "amd64";
    let has_all = |list: &Value, key: &str, have: &dyn Fn(&str) -> bool| -> bool {
        list.get(key)
            .and_then(|v| v.as_array())
            .is_none_or(|a| a.iter().all(|x| x.as_str().is_some_and(have)))
    };
    let has_any = |list: &Value, key: &str, have: &dyn Fn(&str) -> bool| -> bool {
        list.get(key)
            .and_then(|v| v.as_array())
            .is_some_and(|a| a.iter().any(|x| x.as_str().is_some_and(have)))
    };
    let cap_in = |c: &str| caps.iter().any(|k| k == c);
    let arch_is = |a: &str| a == arch;
    let mut syscalls = Vec::new();
    for rule in profile["syscalls"].as_array().expect("syscalls") {
        let empty = json!({});
        let inc = rule.get("includes").unwrap_or(&empty);
        let exc = rule.get("excludes").unwrap_or(&empty);
        // Every included capability, and any one of the included arches.
        let arch_ok = inc.get("arches").and_then(|v| v.as_array()).is_none()
            || has_any(inc, "arches", &arch_is);
        if !has_all(inc, "caps", &cap_in) || !arch_ok {
            continue;
        }
        if has_any(exc, "caps", &cap_in) || has_any(exc, "arches", &arch_is) {
            continue;
        }
        let mut r = json!({
            "names": rule["names"],
            "action": rule["action"],
        });
        if let Some(args) = rule.get("args").filter(|a| a.is_array()) {
            r["args"] = args.clone();
        }
        if let Some(e) = rule.get("errnoRet") {
            r["errnoRet"] = e.clone();
        }
        syscalls.push(r);
    }
    json!({
        "defaultAction": profile["defaultAction"],
        "defaultErrnoRet": profile["defaultErrnoRet"],
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls,
    })
}

/// What a finished pod left: its combined output and exit status.
pub struct PodRun {
    pub spec: String,
    pub status: Option<i32>,
    pub output: String,
    pub config: String,
}

impl PodRun {
    /// The lines between `== NAME` and the next `== ` marker.
    pub fn section(&self, name: &str) -> String {
        let marker = format!("== {name}");
        let mut inside = false;
        let mut lines = Vec::new();
        for l in self.output.lines() {
            if l.starts_with("== ") {
                inside = l == marker;
                continue;
            }
            if inside {
                lines.push(l);
            }
        }
        lines.join("\n")
    }

    /// The exit code the script printed as `NAME-exit=N`.
    pub fn exit_of(&self, name: &str) -> Option<i32> {
        let key = format!("{name}-exit=");
        self.output
            .lines()
            .find_map(|l| l.strip_prefix(&key)?.trim().parse().ok())
    }

    pub fn explain(&self) -> String {
        format!(
            "pod {} exited {:?}\n--- output ---\n{}\n--- config.json ---\n{}",
            self.spec, self.status, self.output, self.config
        )
    }
}

/// A container bundle being run: removed, with all it mounted, on drop.
struct Bundle {
    dir: PathBuf,
    id: String,
    mounted: Vec<PathBuf>,
    /// The mount commands, for the kept bundle's run.sh.
    mount_commands: Vec<String>,
}

/// `BKD_POD_KEEP=1`: keep the images and each pod's bundle, with a run.sh
/// that runs the pod again by hand.
pub fn keep() -> bool {
    std::env::var("BKD_POD_KEEP").as_deref() == Ok("1")
}

impl Bundle {
    fn runc(&self) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(self.dir.join("runc-state"));
        c
    }

    fn mount_overlay(&mut self, lower: &Path, name: &str) -> PathBuf {
        let base = self.dir.join(name);
        let (upper, work, merged) = (base.join("upper"), base.join("work"), base.join("merged"));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).expect("overlay dirs");
        }
        let command = format!(
            "mount -t overlay overlay -o lowerdir={},upperdir={},workdir={} {}",
            lower.display(),
            upper.display(),
            work.display(),
            quote(&merged)
        );
        sh_ok(&command);
        self.mount_commands.push(command);
        self.mounted.push(merged.clone());
        merged
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = self
            .runc()
            .args(["kill", &self.id, "KILL"])
            .stderr(Stdio::null())
            .status();
        let _ = self
            .runc()
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
        for m in self.mounted.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        if keep() {
            eprintln!(
                "pod bundle kept: {} (run it again: sh {}/run.sh)",
                self.dir.display(),
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Mount points below `dir` in the host's mount table.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.display().to_string();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(String::from)
        .collect()
}

/// Processes whose root directory or working directory lies below `dir`.
pub fn processes_below(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        for link in ["root", "cwd"] {
            if let Ok(target) = std::fs::read_link(e.path().join(link)) {
                if target.starts_with(dir) {
                    let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                    found.push(format!(
                        "pid {name}: {}",
                        String::from_utf8_lossy(&cmd).replace('\0', " ")
                    ));
                    break;
                }
            }
        }
    }
    found
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    sh_ok(&format!("chown -R {uid}:{gid} {}", quote(path)));
}

/// A copy of `rootfs` with every owner shifted by `base`, for a
/// `hostUsers: false` container on a runc without idmapped mounts; the
/// modes and file capabilities that chown clears are put back.
fn shifted_rootfs(rootfs: &Path, dest: &Path, base: u32) -> PathBuf {
    static SHIFTED: OnceLock<std::sync::Mutex<()>> = OnceLock::new();
    let _guard = SHIFTED
        .get_or_init(|| std::sync::Mutex::new(()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let target = dest.join("rootfs");
    if dest.join("done").exists() {
        return target;
    }
    std::fs::create_dir_all(dest).expect("shift dir");
    sh_ok(&format!(
        "cp -a --preserve=all {} {}",
        quote(rootfs),
        quote(&target)
    ));
    let caps = sh_ok(&format!("getcap -r {} 2>/dev/null || true", quote(&target)));
    shift_owners(&target, base);
    for line in caps.lines() {
        if let Some((file, cap)) = line.rsplit_once(' ') {
            sh_ok(&format!("setcap {cap} {}", quote(Path::new(file))));
        }
    }
    std::fs::write(dest.join("done"), "").expect("stamp");
    target
}

fn shift_owners(path: &Path, base: u32) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(path).expect("lstat");
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::lchown(c.as_ptr(), meta.uid() + base, meta.gid() + base) };
    assert_eq!(r, 0, "lchown {}", path.display());
    if !meta.file_type().is_symlink() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .expect("chmod");
    }
    if meta.is_dir() {
        for e in std::fs::read_dir(path).expect("read_dir").flatten() {
            shift_owners(&e.path(), base);
        }
    }
}

/// Runs `script` (sh -c) in a container made from `spec` and checks that
/// nothing is left running or mounted on the host afterwards.
pub fn run_pod(spec: &PodSpec, workspace: &Path, script: &str, timeout: Duration) -> PodRun {
    let images = images();
    let image = images.get(spec.image);
    let dir = tempfile::Builder::new()
        .prefix(&format!("bkd-pod-{}-", spec.name))
        .tempdir_in("/var/tmp")
        .expect("pod dir")
        .keep();
    let id = format!(
        "bkd-{}-{}",
        spec.name,
        dir.file_name()
            .map(|n| n
                .to_string_lossy()
                .rsplit('-')
                .next()
                .unwrap_or("")
                .to_string())
            .unwrap_or_default()
    );
    let mut bundle = Bundle {
        dir: dir.clone(),
        id: id.clone(),
        mounted: Vec::new(),
        mount_commands: Vec::new(),
    };
    let shift = if spec.host_users { 0 } else { USERNS_HOST_BASE };
    let lower = if spec.host_users {
        image.rootfs.clone()
    } else {
        shifted_rootfs(
            &image.rootfs,
            &images.dir.join(format!("{}-shifted", spec.image.tag())),
            shift,
        )
    };
    if !spec.host_users {
        // The user namespace's root must reach the bundle, and own the
        // overlay's upper layer (its root directory).
        sh_ok(&format!("chmod 0711 {}", quote(&dir)));
        let upper = dir.join("rootfs").join("upper");
        std::fs::create_dir_all(&upper).expect("upper dir");
        chown_tree(&upper, shift, shift);
        sh_ok(&format!("chmod 0755 {}", quote(&upper)));
    }
    let rootfs = bundle.mount_overlay(&lower, "rootfs");
    if spec.setuid_uidmap {
        sh_ok(&format!(
            "cd {r}/usr/bin && setcap -r newuidmap && setcap -r newgidmap && \
             chown {s}:{s} newuidmap newgidmap && chmod 4755 newuidmap newgidmap",
            r = quote(&rootfs),
            s = shift
        ));
    }

    if let Some(edit) = &spec.image_edit {
        sh_ok(&format!("cd {} && {edit}", quote(&rootfs)));
    }

    let (uid, gid) = spec.run_as.unwrap_or_else(|| {
        let mut parts = image.user.split(':');
        let u = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let g = parts.next().and_then(|s| s.parse().ok()).unwrap_or(u);
        (u, g)
    });

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        if spec.host_users {
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                   "options": ["nosuid", "noexec", "nodev", if spec.privileged { "rw" } else { "ro" }]})
        } else {
            // A user namespace cannot mount sysfs without owning a network
            // namespace, and this simulation keeps the host's (Kubernetes
            // refuses hostUsers: false with hostNetwork): bind it instead.
            json!({"destination": "/sys", "type": "bind", "source": "/sys",
                   "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
        },
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", if spec.privileged { "rw" } else { "ro" }]}),
    ];
    // The files kubelet bind-mounts into every container.
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).expect("etc dir");
    std::fs::write(
        etc.join("hosts"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n",
    )
    .expect("hosts");
    std::fs::write(etc.join("hostname"), format!("{id}\n")).expect("hostname");
    std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n").expect("resolv.conf");
    std::fs::write(etc.join("termination-log"), "").expect("termination-log");
    for (name, dest) in [
        ("hosts", "/etc/hosts"),
        ("hostname", "/etc/hostname"),
        ("resolv.conf", "/etc/resolv.conf"),
        ("termination-log", "/dev/termination-log"),
    ] {
        mounts.push(json!({"destination": dest, "type": "bind",
            "source": etc.join(name), "options": ["rbind", "rprivate", "rw"]}));
    }
    if !spec.host_users {
        chown_tree(&etc, shift, shift);
    }
    for (i, v) in spec.volumes.iter().enumerate() {
        let source = match &v.source {
            VolumeSource::EmptyDir => {
                let d = dir.join("volumes").join(format!("v{i}"));
                std::fs::create_dir_all(&d).expect("emptyDir");
                sh_ok(&format!("chmod 0777 {}", quote(&d)));
                if !spec.host_users {
                    chown_tree(&d, shift, shift);
                }
                d
            }
            VolumeSource::Host(p) => p.clone(),
        };
        mounts.push(json!({"destination": v.mount_path, "type": "bind",
            "source": source, "options": ["rbind", "rprivate", "rw"]}));
    }
    mounts.push(json!({"destination": "/workspace", "type": "bind",
        "source": workspace, "options": ["rbind", "rprivate", "rw"]}));

    let caps: Vec<String> = if spec.privileged {
        all_caps()
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    let mut env = image.env.clone();
    for (k, v) in &spec.env {
        env.retain(|e| !e.starts_with(&format!("{k}=")));
        env.push(format!("{k}={v}"));
    }
    env.push(format!("HOSTNAME={id}"));
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(if uid == 0 { "HOME=/root" } else { "HOME=/" }.to_string());
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    let mut linux = json!({
        "namespaces": [],
        "cgroupsPath": format!("bkd-pods/{id}"),
        "resources": {
            "devices": [{"allow": spec.privileged, "access": "rwm"}]
        },
        "rootfsPropagation": "rprivate",
    });
    if !spec.host_users {
        namespaces.push(json!({"type": "user"}));
        linux["uidMappings"] = json!([{"containerID": 0, "hostID": shift, "size": USERNS_SIZE}]);
        linux["gidMappings"] = json!([{"containerID": 0, "hostID": shift, "size": USERNS_SIZE}]);
    }
    linux["namespaces"] = json!(namespaces);
    if !spec.privileged && !spec.proc_unmasked {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }
    if !spec.privileged && spec.seccomp == Seccomp::RuntimeDefault {
        linux["seccomp"] = runtime_default_seccomp(&caps);
    }
    let config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid, "additionalGids": [gid]},
            "args": ["/bin/sh", "-c", script],
            "env": env,
            "cwd": "/workspace",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": false,
            "oomScoreAdj": 1000,
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": id,
        "mounts": mounts,
        "linux": linux,
    });
    let config_text = serde_json::to_string_pretty(&config).expect("config json");
    std::fs::write(dir.join("config.json"), &config_text).expect("config.json");

    let mut rerun = String::from("#!/bin/sh\n# This pod again, by hand (as root).\nset -e\n");
    for m in &bundle.mount_commands {
        rerun.push_str(&format!("{m}\n"));
    }
    rerun.push_str(&format!(
        "runc --root {}/runc-state run --bundle {} {id} || true\n",
        dir.display(),
        dir.display()
    ));
    for m in bundle.mounted.iter().rev() {
        rerun.push_str(&format!("umount {}\n", quote(m)));
    }
    std::fs::write(dir.join("run.sh"), rerun).expect("run.sh");

    let log_path = dir.join("output.log");
    let log = std::fs::File::create(&log_path).expect("output log");
    let mut child = bundle
        .runc()
        .args(["run", "--bundle"])
        .arg(&dir)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("run runc");
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("wait for runc") {
            Some(s) => break s.code(),
            None if Instant::now() > deadline => {
                let _ = bundle.runc().args(["kill", &id, "KILL"]).status();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let run = PodRun {
        spec: spec.name.clone(),
        status,
        output,
        config: config_text,
    };
    if std::env::var("BKD_POD_SHOW").as_deref() == Ok("1") {
        eprintln!("{}", run.explain());
    }
    assert!(
        status.is_some(),
        "pod {} did not finish within {}s\n{}",
        spec.name,
        timeout.as_secs(),
        run.explain()
    );
    // The container is gone with its init: nothing of it may remain.
    let state = bundle
        .runc()
        .args(["state", &id])
        .stderr(Stdio::null())
        .output()
        .expect("runc state");
    let left_running = processes_below(&rootfs);
    let _ = bundle.runc().args(["delete", "--force", &id]).status();
    let mut left_mounted: Vec<String> = mounts_below(&dir)
        .into_iter()
        .filter(|m| !bundle.mounted.iter().any(|b| Path::new(m) == b))
        .collect();
    for m in bundle.mounted.drain(..).rev().collect::<Vec<_>>() {
        let out = Command::new("umount").arg(&m).output().expect("umount");
        if !out.status.success() {
            left_mounted.push(format!(
                "{} (busy: {})",
                m.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
    assert!(
        left_running.is_empty() && left_mounted.is_empty(),
        "pod {} left behind processes {left_running:?} and mounts {left_mounted:?} (runc state: {})\n{}",
        spec.name,
        String::from_utf8_lossy(&state.stdout),
        run.explain()
    );
    run
}
