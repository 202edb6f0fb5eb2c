//! The build context and local exports as the file system sees them,
//! against the real test bed and compared with buildctl on the same daemon:
//! names of any bytes, trees of any depth, any number of `.dockerignore`
//! patterns, local exports as faithful as the tar export, and a root bkd
//! that a local user racing it cannot turn against the host (a directory
//! swapped for a link during the walk, a staging directory hijacked in a
//! shared parent).

mod common;
#[path = "common/racer.rs"]
mod racer;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use bkd::fsync::dirfd::Dir;
use common::*;

/// bkd against the test bed, killed after `secs` so that a hang fails the
/// test instead of stalling the suite.
fn bkd_within(secs: u32, args: &[&str], cwd: &Path) -> Run {
    let bed = bed();
    let secs = secs.to_string();
    let mut all = vec![
        secs.as_str(),
        env!("CARGO_BIN_EXE_bkd"),
        args[0],
        "--addr",
        &bed.addr,
    ];
    all.extend_from_slice(&args[1..]);
    let run = run("timeout", &all, cwd, &[]);
    assert_ne!(run.code(), Some(124), "bkd hung\n{}", run.explain());
    run
}

/// The last stderr line is the only `error:` line and names `needle`.
fn assert_one_error(run: &Run, code: i32, needle: &str) {
    assert_eq!(run.code(), Some(code), "{}", run.explain());
    let stderr = run.stderr();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains(needle),
        "expected the last line to name {needle:?}\n{}",
        run.explain()
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{}",
        run.explain()
    );
    assert!(!stderr.contains("panicked"), "{}", run.explain());
}

/// One entry of an exported tree, as compared between exports.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Node {
    path: Vec<u8>,
    /// `-`, `d`, `l`, `p` (FIFO), `c`, `b`.
    kind: char,
    /// Permission bits with setuid, setgid and sticky.
    mode: u32,
    mtime: i64,
    /// Nanoseconds of the mtime; tar keeps whole seconds only.
    mtime_nsec: i64,
    link: Vec<u8>,
    rdev: (u32, u32),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    content: Vec<u8>,
    /// Paths of the same inode (hard links), regular files only.
    links: usize,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digest: u64 = self.content.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
        write!(
            f,
            "{} {} {:o} {}.{:09} link={} rdev={:?} xattrs={:?} content={}B/{digest:016x} links={}",
            self.path.escape_ascii(),
            self.kind,
            self.mode,
            self.mtime,
            self.mtime_nsec,
            self.link.escape_ascii(),
            self.rdev,
            self.xattrs
                .iter()
                .map(|(k, v)| format!("{}={}", k.escape_ascii(), v.escape_ascii()))
                .collect::<Vec<_>>(),
            self.content.len(),
            self.links
        )
    }
}

/// Fails naming only the entries that differ.
fn assert_same_tree(a: &[Node], b: &[Node], what: &str) {
    let only_a: Vec<&Node> = a.iter().filter(|n| !b.contains(n)).collect();
    let only_b: Vec<&Node> = b.iter().filter(|n| !a.contains(n)).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "{what}\n  only in the first: {only_a:#?}\n  only in the second: {only_b:#?}"
    );
}

impl Node {
    /// What a tar records: the time rounded to whole seconds, as Go's tar
    /// writer rounds it.
    fn as_in_tar(&self) -> Node {
        Node {
            mtime: self.mtime + i64::from(self.mtime_nsec >= 500_000_000),
            mtime_nsec: 0,
            ..self.clone()
        }
    }
}

fn xattrs_of(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    let mut names = vec![0u8; 4096];
    // SAFETY: c is NUL-terminated, names writable for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return Vec::new();
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for key in names.split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let k = std::ffi::CString::new(key).expect("key");
        let mut value = vec![0u8; 65536];
        // SAFETY: both NUL-terminated, value writable for its length.
        let n = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                k.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n >= 0 {
            value.truncate(n as usize);
            out.push((key.to_vec(), value));
        }
    }
    out.sort();
    out
}

/// Every entry below `root`, sorted by path.
fn tree(root: &Path) -> Vec<Node> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir") {
            let e = e.expect("entry");
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let ft = m.file_type();
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_dir() {
                todo.push(p.clone());
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_fifo() {
                'p'
            } else if ft.is_char_device() {
                'c'
            } else if ft.is_block_device() {
                'b'
            } else {
                '-'
            };
            let rel = p.strip_prefix(root).expect("below root");
            out.push(Node {
                path: rel.as_os_str().as_bytes().to_vec(),
                kind,
                mode: m.mode() & 0o7777,
                mtime: m.mtime(),
                mtime_nsec: m.mtime_nsec(),
                link: if kind == 'l' {
                    std::fs::read_link(&p)
                        .expect("readlink")
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                } else {
                    Vec::new()
                },
                rdev: if kind == 'c' || kind == 'b' {
                    (libc::major(m.rdev()), libc::minor(m.rdev()))
                } else {
                    (0, 0)
                },
                xattrs: xattrs_of(&p),
                content: if kind == '-' {
                    std::fs::read(&p).expect("read")
                } else {
                    Vec::new()
                },
                links: if kind == '-' { m.nlink() as usize } else { 0 },
            });
        }
    }
    out.sort();
    out
}

/// Every entry of a tar, as [`tree`] would see it extracted (hard links
/// as files with their target's content).
fn tar_tree(path: &Path) -> Vec<Node> {
    let file = std::fs::File::open(path).expect("open tar");
    let mut archive = tar::Archive::new(file);
    let mut out: Vec<Node> = Vec::new();
    let mut hard: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let h = entry.header().clone();
        let path = entry.path_bytes().to_vec();
        let path = path.strip_suffix(b"/").unwrap_or(&path).to_vec();
        let mut xattrs = Vec::new();
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                if let Some(k) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((k.to_vec(), ext.value_bytes().to_vec()));
                }
            }
        }
        xattrs.sort();
        let link = entry
            .link_name_bytes()
            .map(|l| l.strip_suffix(b"/").unwrap_or(&l).to_vec())
            .unwrap_or_default();
        let t = h.entry_type();
        let kind = if t.is_dir() {
            'd'
        } else if t.is_symlink() {
            'l'
        } else if t.is_fifo() {
            'p'
        } else if t.is_character_special() {
            'c'
        } else if t.is_block_special() {
            'b'
        } else {
            '-'
        };
        let mut content = Vec::new();
        if t.is_file() {
            entry.read_to_end(&mut content).expect("content");
        }
        if t.is_hard_link() {
            hard.push((path.clone(), link.clone()));
        }
        out.push(Node {
            path,
            kind,
            mode: h.mode().expect("mode") & 0o7777,
            mtime: h.mtime().expect("mtime") as i64,
            mtime_nsec: 0,
            link: if kind == 'l' { link } else { Vec::new() },
            rdev: (
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0),
            ),
            xattrs,
            content,
            links: usize::from(kind == '-'),
        });
    }
    // Each hard link and its target are one inode of 1 + links paths.
    let mut paths_of: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for (_, target) in &hard {
        *paths_of.entry(target.clone()).or_insert(1) += 1;
    }
    for (path, target) in &hard {
        let content = out
            .iter()
            .find(|n| &n.path == target)
            .map(|n| n.content.clone())
            .expect("hard link target in the tar");
        if let Some(n) = out.iter_mut().find(|n| &n.path == path) {
            n.content = content;
            n.links = paths_of[target];
        }
    }
    for n in out.iter_mut() {
        if let Some(count) = paths_of.get(&n.path) {
            n.links = *count;
        }
    }
    out.sort();
    out
}

#[test]
fn a_local_export_keeps_devices_fifos_modes_times_and_xattrs_as_the_tar_and_buildctl() {
    let ctx = context();
    let d = ctx.path();
    write(d, "xattr-file", "with attributes\n");
    let c = std::ffi::CString::new(d.join("xattr-file").as_os_str().as_bytes()).expect("path");
    for (k, v) in [("user.color", "blue"), ("user.empty", "")] {
        let k = std::ffi::CString::new(k).expect("key");
        // SAFETY: NUL-terminated strings, value valid for its length.
        let rc = unsafe { libc::setxattr(c.as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
        assert_eq!(rc, 0, "setxattr (user attributes on the test file system)");
    }
    write(
        d,
        "Dockerfile",
        &format!(
            "{BUSYBOX_STAGE}RUN mkdir -p /out/d/e && cd /out \
             && mkfifo -m 0640 fifo && mknod -m 0620 null c 1 3 && mknod -m 0604 loop b 7 0 \
             && echo suid > f && chmod 4755 f && ln f hard && ln -s f sym \
             && echo sgid > g && chmod 2711 g && chmod 1750 d && chmod 0555 d/e \
             && touch -d '2001-02-03 04:05:06' fifo null loop f g d/e d \
             && touch -h -d '2002-03-04 05:06:07' sym\n\
             COPY xattr-file /out/d/x\n\
             RUN touch -d '2003-04-05 06:07:08' /out/d/x /out/d\n\
             FROM scratch\nCOPY --from=bb /out /\n"
        ),
    );
    let out = tempfile::tempdir().expect("out dir");
    let ours = out.path().join("bkd");
    let theirs = out.path().join("buildctl");
    let tar = out.path().join("bkd.tar");
    bkd_within(
        120,
        &[
            "build",
            "-o",
            &format!("type=local,dest={}", ours.display()),
            ".",
        ],
        d,
    )
    .assert_ok();
    buildctl_build(
        &["--output", &format!("type=local,dest={}", theirs.display())],
        d,
    )
    .assert_ok();
    bkd_within(120, &["build", "-o", &tar_output(&tar), "."], d).assert_ok();
    let local = tree(&ours);
    let kinds: BTreeMap<String, (char, u32)> = local
        .iter()
        .map(|n| {
            (
                String::from_utf8_lossy(&n.path).into_owned(),
                (n.kind, n.mode),
            )
        })
        .collect();
    for (path, want) in [
        ("fifo", ('p', 0o640)),
        ("null", ('c', 0o620)),
        ("f", ('-', 0o4755)),
        ("g", ('-', 0o2711)),
        ("d", ('d', 0o1750)),
        ("d/e", ('d', 0o555)),
    ] {
        assert_eq!(kinds.get(path), Some(&want), "{path}: {local:#?}");
    }
    let x = local.iter().find(|n| n.path == b"d/x").expect("d/x");
    assert_eq!(
        x.xattrs,
        [
            (b"user.color".to_vec(), b"blue".to_vec()),
            (b"user.empty".to_vec(), Vec::new())
        ]
    );
    let in_tar: Vec<Node> = local.iter().map(Node::as_in_tar).collect();
    assert_same_tree(
        &in_tar,
        &tar_tree(&tar),
        "local export differs from the tar",
    );
    assert_same_tree(
        &local,
        &tree(&theirs),
        "bkd's local export differs from buildctl's",
    );
}

#[test]
fn names_that_are_not_utf8_are_sent_and_exported_as_buildctl_does() {
    let ctx = context();
    let d = ctx.path();
    write(d, "Dockerfile", "FROM scratch\nCOPY . /ctx/\n");
    let dir = d.join(std::ffi::OsStr::from_bytes(b"r\xe9pertoire"));
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(
        dir.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt")),
        "latin-1",
    )
    .expect("write");
    std::fs::write(d.join(std::ffi::OsStr::from_bytes(b"\xff\xfe")), "bom").expect("write");
    std::os::unix::fs::symlink(
        std::ffi::OsStr::from_bytes(b"r\xe9pertoire/caf\xe9.txt"),
        d.join("link"),
    )
    .expect("symlink");
    let out = tempfile::tempdir().expect("out dir");
    let o = out.path();
    bkd_within(
        120,
        &["build", "-o", &tar_output(&o.join("bkd.tar")), "."],
        d,
    )
    .assert_ok();
    buildctl_build(&["--output", &tar_output(&o.join("buildctl.tar"))], d).assert_ok();
    let ours = tar_tree(&o.join("bkd.tar"));
    assert_same_tree(&ours, &tar_tree(&o.join("buildctl.tar")), "tars differ");
    let find = |p: &[u8]| ours.iter().find(|n| n.path == p);
    assert_eq!(
        find(b"ctx/r\xe9pertoire/caf\xe9.txt").map(|n| &n.content[..]),
        Some(&b"latin-1"[..])
    );
    assert_eq!(
        find(b"ctx/link").map(|n| &n.link[..]),
        Some(&b"r\xe9pertoire/caf\xe9.txt"[..])
    );
    let local = |name: &str| format!("type=local,dest={}", o.join(name).display());
    bkd_within(120, &["build", "-o", &local("bkd"), "."], d).assert_ok();
    let tree_ours: Vec<Node> = tree(&o.join("bkd")).iter().map(Node::as_in_tar).collect();
    assert!(
        tree_ours.iter().any(|n| n.path == b"ctx/\xff\xfe"),
        "{tree_ours:?}"
    );
    assert_same_tree(&tree_ours, &ours, "the local export differs from the tar");
    // buildctl's own receiver fails on such a name: its last pass over
    // the destination (Go's io/fs, which takes valid UTF-8 paths only)
    // refuses the directory it has just written. The tar above shows the
    // daemon sent them; bkd writes them.
    let run = buildctl_build(&["--output", &local("buildctl")], d);
    assert!(
        !run.out.status.success() && run.stderr().contains("invalid argument"),
        "buildctl's local export of non-UTF-8 names: {}",
        run.explain()
    );
}

#[test]
fn a_thousand_dockerignore_patterns_apply_and_too_many_are_named() {
    let ctx = context();
    let d = ctx.path();
    write(d, "Dockerfile", "FROM scratch\nCOPY . /ctx/\n");
    let mut ignore = String::new();
    for i in 0..1000 {
        ignore.push_str(&format!("generated/ignored-{i:04}\n"));
    }
    // A re-inclusion at the very end must still win.
    ignore.push_str("!generated/ignored-0500\n");
    write(d, ".dockerignore", &ignore);
    for i in (0..1000).step_by(100).chain([999, 1000, 1001]) {
        write(d, &format!("generated/ignored-{i:04}"), "x");
    }
    let out = tempfile::tempdir().expect("out dir");
    let (ours, theirs) = (out.path().join("bkd.tar"), out.path().join("buildctl.tar"));
    bkd_within(120, &["build", "-o", &tar_output(&ours), "."], d).assert_ok();
    buildctl_build(&["--output", &tar_output(&theirs)], d).assert_ok();
    let names = |t: &Path| -> Vec<String> {
        tar_tree(t)
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n.path).into_owned())
            .filter(|p| p.starts_with("ctx/generated/"))
            .collect()
    };
    assert_eq!(
        names(&ours),
        [
            "ctx/generated/ignored-0500",
            "ctx/generated/ignored-1000",
            "ctx/generated/ignored-1001"
        ]
    );
    assert_same_tree(
        &tar_tree(&ours),
        &tar_tree(&theirs),
        "bkd and buildctl differ",
    );

    // Past what one transfer carries (16 MiB of headers; buildctl's
    // session stops at 1 MiB), the error says where the headers come from.
    let mut huge = String::with_capacity(12 << 20);
    for i in 0..330_000 {
        huge.push_str(&format!("some/longer/pattern-number-{i:07}\n"));
    }
    write(d, ".dockerignore", &huge);
    let run = bkd_within(120, &["build", "-o", &tar_output(&ours), "."], d);
    assert_one_error(&run, 1, "shorten the .dockerignore");
}

/// Makes `depth` nested directories `a` below `dir` through descriptors
/// (a path that deep is too long for the kernel), with `leaf` at the
/// bottom.
fn nest(dir: &Path, depth: usize) {
    let mut cur = Dir::open(dir).expect("open");
    for _ in 0..depth {
        cur.mkdir_at(b"a", 0o755).expect("mkdir");
        cur = cur.open_dir(b"a").expect("open");
    }
    let fd = cur
        .open_at(b"leaf", libc::O_WRONLY | libc::O_CREAT, 0o644)
        .expect("create leaf");
    std::io::Write::write_all(&mut std::fs::File::from(fd), b"at the bottom").expect("write");
}

/// Removes a nest (std's removal recurses once per level).
fn unnest(dir: &Path) {
    bkd::fsync::dirfd::raise_open_files_limit();
    Dir::open(dir)
        .expect("open")
        .remove_tree_at(b"a")
        .expect("remove the nest");
}

#[test]
fn a_tree_2000_deep_is_sent_and_a_deeper_one_fails_cleanly() {
    let ctx = context();
    let d = ctx.path();
    nest(d, 2000);
    write(
        d,
        "Dockerfile",
        &format!(
            "{BUSYBOX_STAGE}RUN --mount=type=bind,target=/ctx sh -c \
             'find /ctx/a | wc -l > /count; find /ctx/a -name leaf -exec cat {{}} \\; > /leaf'\n\
             FROM scratch\nCOPY --from=bb /count /leaf /\n"
        ),
    );
    let out = tempfile::tempdir().expect("out dir");
    let dest = out.path().join("out");
    let output = format!("type=local,dest={}", dest.display());
    bkd_within(240, &["build", "-o", &output, "."], d).assert_ok();
    assert_eq!(
        std::fs::read_to_string(dest.join("count"))
            .expect("count")
            .trim(),
        "2001"
    );
    assert_eq!(
        std::fs::read(dest.join("leaf")).expect("leaf"),
        b"at the bottom"
    );
    unnest(d);

    // 2,100 levels: a path of more than 4,096 bytes, which the kernel (and
    // the daemon) cannot take. buildctl fails the same way ("lstat
    // a/a/…/a: file name too long"); so it does at 50,000 levels.
    nest(d, 2100);
    write(d, "Dockerfile", "FROM scratch\nCOPY . /\n");
    let run = bkd_within(
        240,
        &["build", "-o", &tar_output(&out.path().join("x.tar")), "."],
        d,
    );
    assert_one_error(&run, 1, "/a/a/a: file name too long");
    unnest(d);
}

/// A context the test user owns, inside a directory it owns, with a
/// directory `sub` it can swap for `evil`, a link to a directory only root
/// can read. That directory holds files of the same names and sizes as
/// `sub`'s, marked [`MARKER`] (an attacker would mirror the names, so that
/// a file opened by path through the link is found), and one more.
struct SwapLayout {
    base: tempfile::TempDir,
    secret: tempfile::TempDir,
}

const MARKER: &str = "ROOT-ONLY";

impl SwapLayout {
    fn new() -> SwapLayout {
        let base = tempfile::Builder::new()
            .prefix("bkd-swap-")
            .tempdir()
            .expect("temp dir");
        let secret = tempfile::Builder::new()
            .prefix("bkd-root-only-")
            .tempdir()
            .expect("temp dir");
        let ctx = base.path().join("ctx");
        std::fs::create_dir_all(ctx.join("sub")).expect("mkdir");
        write(&ctx, "Dockerfile", "FROM scratch\nCOPY . /\n");
        for i in 0..40 {
            write(&ctx, &format!("sub/f{i:02}"), &format!("public-{i:02}--"));
            write(
                secret.path(),
                &format!("f{i:02}"),
                &format!("{MARKER}{i:02}"),
            );
        }
        write(secret.path(), "secret", MARKER);
        for e in std::fs::read_dir(secret.path()).expect("read") {
            let p = e.expect("entry").path();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        std::os::unix::fs::symlink(secret.path(), base.path().join("evil")).expect("symlink");
        spawn::chown_tree(base.path());
        SwapLayout { base, secret }
    }

    fn ctx(&self) -> std::path::PathBuf {
        self.base.path().join("ctx")
    }
}

#[test]
fn a_directory_swapped_for_a_link_during_the_walk_never_exports_a_root_only_file() {
    let l = SwapLayout::new();
    let racer = racer::Racer::exchange(&l.ctx().join("sub"), &l.base.path().join("evil"));
    let out = tempfile::tempdir().expect("out dir");
    let mut refused = 0;
    let mut exported = 0;
    for i in 0..30 {
        let tar = out.path().join(format!("{i}.tar"));
        let run = bkd_within(120, &["build", "-o", &tar_output(&tar), "."], &l.ctx());
        if run.out.status.success() {
            exported += 1;
            let bytes = std::fs::read(&tar).expect("tar");
            assert!(
                !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
                "build {i} exported the root-only file"
            );
            for n in tar_tree(&tar) {
                assert!(
                    !n.path.ends_with(b"secret"),
                    "build {i} announced an entry of the root-only directory"
                );
            }
        } else {
            assert_one_error(&run, 1, "changed while the build context was being sent");
            refused += 1;
        }
    }
    let strikes = racer.strikes();
    drop(racer);
    assert!(strikes > 1000, "the swap ran only {strikes} times");
    eprintln!("{exported} exports, {refused} refused, {strikes} swaps");
    drop(l.secret);
}

#[test]
fn a_local_export_into_a_shared_parent_cannot_be_redirected() {
    // A world-writable parent without the sticky bit: the test user can
    // rename and replace anything in it, and tries to put a link to a
    // root-only directory in place of bkd's staging directory.
    let shared = tempfile::Builder::new()
        .prefix("bkd-shared-")
        .tempdir()
        .expect("temp dir");
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let victim = tempfile::Builder::new()
        .prefix("bkd-victim-")
        .tempdir()
        .expect("temp dir");
    std::fs::write(victim.path().join("precious"), "untouched").expect("write");
    std::fs::set_permissions(
        victim.path().join("precious"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let before = tree(victim.path());
    let victim_mode = std::fs::metadata(victim.path()).expect("stat").mode();

    let ctx = context();
    write(ctx.path(), "precious", "from the build");
    let mut dockerfile = String::from("FROM scratch\nCOPY precious /precious\n");
    for i in 0..50 {
        write(ctx.path(), &format!("many/f{i:02}"), "x");
    }
    dockerfile.push_str("COPY many /many\n");
    write(ctx.path(), "Dockerfile", &dockerfile);

    let racer = racer::Racer::hijack_staging(shared.path(), victim.path());
    let dest = shared.path().join("outdir");
    let output = format!("type=local,dest={}", dest.display());
    let mut ok = 0;
    for _ in 0..10 {
        let run = bkd_within(120, &["build", "-o", &output, "."], ctx.path());
        let meta = std::fs::symlink_metadata(&dest);
        if run.out.status.success() {
            ok += 1;
            let meta = meta.expect("dest exists after a successful build");
            assert!(meta.is_dir() && !meta.file_type().is_symlink(), "{meta:?}");
            assert_eq!(
                std::fs::read(dest.join("precious")).expect("precious"),
                b"from the build"
            );
        } else {
            assert_one_error(&run, 5, "cannot");
        }
        assert_eq!(tree(victim.path()), before, "the victim directory changed");
        let _ = std::fs::remove_dir_all(&dest);
    }
    let strikes = racer.strikes();
    drop(racer);
    assert!(strikes > 0, "the staging directory was never seen");
    eprintln!("{ok} of 10 exports done, {strikes} staging directories hijacked");
    assert_eq!(
        std::fs::metadata(victim.path()).expect("stat").mode(),
        victim_mode
    );

    // A link planted at dest itself is refused, never written through.
    std::os::unix::fs::symlink(victim.path(), &dest).expect("symlink");
    let run = bkd_within(120, &["build", "-o", &output, "."], ctx.path());
    assert_one_error(&run, 5, "exists and is not a directory");
    assert_eq!(tree(victim.path()), before, "written through the link");
}
