//! bkd's FileSync service driven directly, with this test playing the
//! daemon's part (the fsutil receiver): what a Dockerfile can make the daemon
//! ask for, and what bkd must refuse. Each transfer runs bkd's real service
//! over a real gRPC connection; nothing of bkd is replaced.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use bkd::proto::fsutil::types::{packet::PacketType, Packet, Stat};
use bkd::proto::moby::filesync::v1::file_sync_client::FileSyncClient;
use bkd::session::filesync::{server, LocalDirs};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

#[path = "common/racer.rs"]
mod racer;

const MODE_SYMLINK: u32 = 1 << 27;
const MODE_NAMED_PIPE: u32 = 1 << 25;
const MODE_TYPE: u32 = 0x8F28_0000;
/// Content kept per file; the rest is only counted.
const KEPT: usize = 16 << 20;
const MARKER: &str = "outside-the-context-3141592";

/// Which announced files the fake receiver asks for.
enum Ask {
    /// Every regular file, once.
    AllFiles,
    /// Exactly these ids, whatever was announced.
    Ids(Vec<u32>),
}

/// What one transfer produced.
#[derive(Debug, Default)]
struct Transfer {
    stats: Vec<Stat>,
    /// Content received per announced path (the first [`KEPT`] bytes).
    files: BTreeMap<String, Vec<u8>>,
    /// Bytes received and the last 8 of them, per path.
    sizes: BTreeMap<String, (u64, Vec<u8>)>,
    /// The sender's ERR text, or the gRPC error.
    error: Option<String>,
    fin: bool,
}

impl Transfer {
    fn paths(&self) -> Vec<String> {
        self.stats.iter().map(|s| lossy(&s.path)).collect()
    }

    fn stat(&self, path: &str) -> &Stat {
        self.stats
            .iter()
            .find(|s| s.path == path.as_bytes())
            .unwrap_or_else(|| panic!("{path} not announced: {:?}", self.paths()))
    }

    fn id_of(&self, path: &str) -> u32 {
        self.stats
            .iter()
            .position(|s| s.path == path.as_bytes())
            .unwrap_or_else(|| panic!("{path} not announced: {:?}", self.paths())) as u32
    }

    /// Every byte that crossed the wire as file content.
    fn all_content(&self) -> Vec<u8> {
        self.files.values().flatten().copied().collect()
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Serves bkd's FileSync for `dirs` on a fresh unix socket and runs one
/// DiffCopy of `dir_name` with `headers`, asking for files per `ask`.
/// Between the end of the walk and the requests, `before_requests` runs
/// (to change the tree under the sender's feet).
fn transfer_with(
    dirs: &[(&str, &Path)],
    dir_name: &str,
    headers: &[(&str, &str)],
    ask: Ask,
    before_requests: impl FnOnce(&Transfer),
) -> Transfer {
    let rt = runtime();
    let sock_dir = tempfile::tempdir().expect("socket dir");
    let sock = sock_dir.path().join("fs.sock");
    let mut local = LocalDirs::default();
    for (name, dir) in dirs {
        local.insert(*name, dir.to_path_buf());
    }
    rt.block_on(async move {
        let listener = tokio::net::UnixListener::bind(&sock).expect("bind");
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let serving = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(server(local))
                .serve_with_incoming(incoming),
        );
        let addr =
            bkd::transport::Address::parse(&format!("unix://{}", sock.display())).expect("address");
        let channel = bkd::transport::connect(&addr, &Default::default())
            .await
            .expect("connect to the FileSync server");
        let mut client = FileSyncClient::new(channel);
        let (out_tx, out_rx) = mpsc::channel::<Packet>(64);
        let mut req = tonic::Request::new(ReceiverStream::new(out_rx));
        req.metadata_mut()
            .insert("dir-name", dir_name.parse().expect("header"));
        for (k, v) in headers {
            let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes()).expect("header name");
            req.metadata_mut()
                .append(key, v.parse().expect("header value"));
        }
        let mut result = Transfer::default();
        let call = tokio::time::timeout(Duration::from_secs(120), async {
            let mut inbound = match client.diff_copy(req).await {
                Ok(r) => r.into_inner(),
                Err(status) => {
                    result.error = Some(status.message().to_string());
                    return;
                }
            };
            // The walk.
            loop {
                match inbound.next().await {
                    Some(Ok(p)) if p.r#type == PacketType::PacketStat as i32 => match p.stat {
                        Some(s) => result.stats.push(s),
                        None => break,
                    },
                    Some(Ok(p)) if p.r#type == PacketType::PacketErr as i32 => {
                        result.error = Some(String::from_utf8_lossy(&p.data).into_owned());
                        return;
                    }
                    Some(Ok(p)) => panic!("unexpected packet during the walk: {p:?}"),
                    Some(Err(s)) => {
                        result.error = Some(s.message().to_string());
                        return;
                    }
                    None => {
                        result.error = Some("stream ended during the walk".into());
                        return;
                    }
                }
            }
            before_requests(&result);
            let ids: Vec<u32> = match &ask {
                Ask::AllFiles => (0..result.stats.len() as u32)
                    .filter(|i| {
                        let s = &result.stats[*i as usize];
                        s.mode & MODE_TYPE == 0 && s.linkname.is_empty()
                    })
                    .collect(),
                Ask::Ids(ids) => ids.clone(),
            };
            for id in &ids {
                let p = Packet {
                    r#type: PacketType::PacketReq as i32,
                    id: *id,
                    ..Default::default()
                };
                if out_tx.send(p).await.is_err() {
                    break;
                }
            }
            let mut open: std::collections::BTreeSet<u32> = ids.iter().copied().collect();
            let mut content: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
            let mut sizes: BTreeMap<u32, (u64, Vec<u8>)> = BTreeMap::new();
            while !open.is_empty() {
                match inbound.next().await {
                    Some(Ok(p)) if p.r#type == PacketType::PacketData as i32 => {
                        if p.data.is_empty() {
                            open.remove(&p.id);
                        } else {
                            let kept = content.entry(p.id).or_default();
                            if kept.len() < KEPT {
                                kept.extend_from_slice(&p.data);
                            }
                            let (n, tail) = sizes.entry(p.id).or_default();
                            *n += p.data.len() as u64;
                            tail.extend_from_slice(&p.data[p.data.len().saturating_sub(8)..]);
                            let cut = tail.len().saturating_sub(8);
                            tail.drain(..cut);
                        }
                    }
                    Some(Ok(p)) if p.r#type == PacketType::PacketErr as i32 => {
                        result.error = Some(String::from_utf8_lossy(&p.data).into_owned());
                        break;
                    }
                    Some(Ok(p)) => panic!("unexpected packet: {p:?}"),
                    Some(Err(s)) => {
                        result.error = Some(s.message().to_string());
                        break;
                    }
                    None => {
                        result.error = Some("stream ended before the files".into());
                        break;
                    }
                }
            }
            for (id, size) in sizes {
                if let Some(s) = result.stats.get(id as usize) {
                    result.sizes.insert(lossy(&s.path), size);
                }
            }
            for (id, data) in content {
                if let Some(s) = result.stats.get(id as usize) {
                    result.files.insert(lossy(&s.path), data);
                }
            }
            for id in ids {
                if let Some(s) = result.stats.get(id as usize) {
                    result.files.entry(lossy(&s.path)).or_default();
                }
            }
            if result.error.is_some() {
                return;
            }
            let fin = Packet {
                r#type: PacketType::PacketFin as i32,
                ..Default::default()
            };
            let _ = out_tx.send(fin).await;
            match inbound.next().await {
                Some(Ok(p)) if p.r#type == PacketType::PacketFin as i32 => result.fin = true,
                Some(Ok(p)) if p.r#type == PacketType::PacketErr as i32 => {
                    result.error = Some(String::from_utf8_lossy(&p.data).into_owned())
                }
                other => result.error = Some(format!("no FIN: {other:?}")),
            }
        })
        .await;
        assert!(call.is_ok(), "the transfer hung (120 s): {result:?}");
        serving.abort();
        result
    })
}

fn transfer(dir: &Path, headers: &[(&str, &str)], ask: Ask) -> Transfer {
    transfer_with(&[("context", dir)], "context", headers, ask, |_| {})
}

/// A context inside a parent that also holds a file the build must never
/// see; `/etc/passwd` stands for a host file outside everything.
struct Layout {
    parent: tempfile::TempDir,
}

impl Layout {
    fn new() -> Layout {
        let parent = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(parent.path().join("ctx/sub/deeper")).expect("mkdir");
        std::fs::create_dir_all(parent.path().join("outside")).expect("mkdir");
        std::fs::write(parent.path().join("outside/secret"), MARKER).expect("write");
        std::fs::write(parent.path().join("ctx/Dockerfile"), "FROM scratch\n").expect("write");
        std::fs::write(parent.path().join("ctx/sub/deeper/file"), "inside").expect("write");
        symlink("../../outside", parent.path().join("ctx/sub/escaping-link")).expect("symlink");
        symlink("/etc/passwd", parent.path().join("ctx/absolute")).expect("symlink");
        symlink("../outside/secret", parent.path().join("ctx/to-secret")).expect("symlink");
        Layout { parent }
    }

    fn ctx(&self) -> std::path::PathBuf {
        self.parent.path().join("ctx")
    }
}

fn passwd() -> Vec<u8> {
    std::fs::read("/etc/passwd").expect("/etc/passwd")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn assert_confined(t: &Transfer) {
    for s in &t.stats {
        assert!(
            !s.path.starts_with(b"/")
                && !s
                    .path
                    .split(|b| *b == b'/')
                    .any(|c| c == b".." || c == b"." || c.is_empty()),
            "path outside the root announced: {:?}",
            s.path
        );
    }
    let all = t.all_content();
    assert!(!contains(&all, MARKER.as_bytes()), "outside file sent");
    assert!(!contains(&all, &passwd()), "/etc/passwd sent");
}

#[test]
fn symlinks_are_sent_as_links_and_never_followed_out() {
    let l = Layout::new();
    let t = transfer(&l.ctx(), &[], Ask::AllFiles);
    assert!(t.fin, "{t:?}");
    assert_eq!(
        t.paths(),
        [
            "Dockerfile",
            "absolute",
            "sub",
            "sub/deeper",
            "sub/deeper/file",
            "sub/escaping-link",
            "to-secret"
        ]
    );
    for (path, target) in [
        ("absolute", "/etc/passwd"),
        ("sub/escaping-link", "../../outside"),
        ("to-secret", "../outside/secret"),
    ] {
        let s = t.stat(path);
        assert_ne!(s.mode & MODE_SYMLINK, 0, "{path} not a link: {s:?}");
        assert_eq!(s.linkname, target);
    }
    assert_eq!(t.files["sub/deeper/file"], b"inside");
    assert_confined(&t);
}

#[test]
fn asking_for_a_link_a_directory_or_an_unknown_id_is_refused() {
    let l = Layout::new();
    let walk = transfer(&l.ctx(), &[], Ask::Ids(vec![]));
    for path in ["absolute", "sub/escaping-link", "to-secret", "sub"] {
        let id = walk.id_of(path);
        let t = transfer(&l.ctx(), &[], Ask::Ids(vec![id]));
        let err = t.error.as_deref().unwrap_or_default();
        assert!(
            err.contains(&format!("invalid file id {id}")),
            "{path}: {t:?}"
        );
        assert_confined(&t);
    }
    for id in [walk.stats.len() as u32, 999_999, u32::MAX] {
        let t = transfer(&l.ctx(), &[], Ask::Ids(vec![id]));
        assert!(
            t.error
                .as_deref()
                .unwrap_or_default()
                .contains(&format!("invalid file id {id}")),
            "{t:?}"
        );
    }
    // Each file once: a second request for the same id is refused.
    let id = walk.id_of("sub/deeper/file");
    let t = transfer(&l.ctx(), &[], Ask::Ids(vec![id, id]));
    assert!(
        t.error
            .as_deref()
            .unwrap_or_default()
            .contains("invalid file id"),
        "{t:?}"
    );
}

#[test]
fn excluded_files_are_never_offered_nor_served() {
    let l = Layout::new();
    std::fs::write(l.ctx().join("sub/deeper/ignored.key"), MARKER).expect("write");
    let full = transfer(&l.ctx(), &[], Ask::Ids(vec![]));
    let ignored_id = full.id_of("sub/deeper/ignored.key");
    let headers = [("exclude-patterns", "**/*.key")];
    let t = transfer(&l.ctx(), &headers, Ask::AllFiles);
    assert!(t.fin, "{t:?}");
    assert!(
        !t.paths().iter().any(|p| p == "sub/deeper/ignored.key"),
        "{t:?}"
    );
    assert_confined(&t);
    // Whatever id the excluded file had in an unfiltered walk, asking for
    // it (or anything not offered) in the filtered one is refused.
    let offered = t.stats.len() as u32;
    for id in [ignored_id.max(offered), offered] {
        let t = transfer(&l.ctx(), &headers, Ask::Ids(vec![id]));
        assert!(
            t.error
                .as_deref()
                .unwrap_or_default()
                .contains("invalid file id"),
            "{t:?}"
        );
        assert_confined(&t);
    }
}

#[test]
fn patterns_and_follow_paths_cannot_climb_out() {
    let l = Layout::new();
    let tries: &[&[(&str, &str)]] = &[
        &[("include-patterns", "../outside")],
        &[("include-patterns", "../outside/secret")],
        &[("include-patterns", "/etc/passwd")],
        &[("include-patterns", "../../../../etc")],
        &[("include-patterns", "sub/../../outside")],
        &[("include-patterns", "**")],
        &[("followpaths", "../outside/secret")],
        &[("followpaths", "/etc/passwd")],
        &[("followpaths", "absolute")],
        &[("followpaths", "to-secret")],
        &[("followpaths", "sub/escaping-link/secret")],
        &[("followpaths", "sub/escaping-link")],
        &[("followpaths", "../../../../../../etc/passwd")],
        &[("followpaths", "*")],
        &[("exclude-patterns", "!../outside")],
        &[
            ("exclude-patterns", "*"),
            ("exclude-patterns", "!/etc/passwd"),
        ],
        // URL-escaped values, as the daemon sends non-ASCII patterns.
        &[
            ("followpaths", "%2E%2E%2Foutside%2Fsecret"),
            ("followpaths-encoded", "1"),
        ],
    ];
    for headers in tries {
        let t = transfer(&l.ctx(), headers, Ask::AllFiles);
        assert!(t.error.is_none() || !t.fin, "{headers:?}: {t:?}");
        assert_confined(&t);
        for s in &t.stats {
            assert!(
                std::fs::symlink_metadata(l.ctx().join(lossy(&s.path))).is_ok(),
                "{headers:?}: {:?} is not in the context",
                s.path
            );
        }
    }
    // A followed link still arrives as a link, and its in-context target
    // with it.
    symlink("sub/deeper/file", l.ctx().join("Dockerfile.link")).expect("symlink");
    let t = transfer(
        &l.ctx(),
        &[("followpaths", "Dockerfile.link")],
        Ask::AllFiles,
    );
    assert_eq!(
        t.paths(),
        ["Dockerfile.link", "sub", "sub/deeper", "sub/deeper/file"]
    );
    assert_ne!(t.stat("Dockerfile.link").mode & MODE_SYMLINK, 0);
    assert_eq!(t.files["sub/deeper/file"], b"inside");
}

#[test]
fn only_named_directories_are_served() {
    let l = Layout::new();
    let t = transfer_with(
        &[("context", &l.ctx())],
        "outside",
        &[],
        Ask::AllFiles,
        |_| {},
    );
    assert!(
        t.error
            .as_deref()
            .unwrap_or_default()
            .contains("no access allowed to dir \"outside\""),
        "{t:?}"
    );
    for name in ["../context", "/", "context/..", ""] {
        let t = transfer_with(&[("context", &l.ctx())], name, &[], Ask::AllFiles, |_| {});
        assert!(t.error.is_some() && t.stats.is_empty(), "{name:?}: {t:?}");
    }
}

#[test]
fn special_files_never_block_the_walk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    std::fs::write(d.join("a"), "a").expect("write");
    let fifo =
        std::ffi::CString::new(d.join("fifo").into_os_string().into_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let _sock = std::os::unix::net::UnixListener::bind(d.join("sock")).expect("socket");
    let t = transfer(d, &[], Ask::AllFiles);
    assert!(t.fin, "{t:?}");
    assert_eq!(t.paths(), ["a", "fifo", "sock"]);
    assert_ne!(t.stat("fifo").mode & MODE_NAMED_PIPE, 0);
    // The socket goes as an empty regular file, as buildctl sends it.
    assert_eq!(t.stat("sock").mode & MODE_TYPE, 0);
    assert_eq!(t.files["sock"], b"");
    // A fifo is never readable content: asking for it is refused.
    let t = transfer(d, &[], Ask::Ids(vec![1]));
    assert!(
        t.error
            .as_deref()
            .unwrap_or_default()
            .contains("invalid file id 1"),
        "{t:?}"
    );
}

#[test]
fn a_file_that_vanishes_or_shrinks_after_the_walk_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().to_path_buf();
    std::fs::write(d.join("gone"), "soon gone").expect("write");
    let t = transfer_with(&[("context", &d)], "context", &[], Ask::AllFiles, |_| {
        std::fs::remove_file(d.join("gone")).expect("remove");
    });
    let err = t.error.as_deref().unwrap_or_default();
    assert!(
        err.contains(&d.join("gone").display().to_string()) && err.contains("vanished"),
        "{t:?}"
    );
    std::fs::write(d.join("gone"), "0123456789").expect("write");
    let t = transfer_with(&[("context", &d)], "context", &[], Ask::AllFiles, |_| {
        std::fs::write(d.join("gone"), "01234").expect("truncate");
    });
    let err = t.error.as_deref().unwrap_or_default();
    assert!(
        err.contains(
            "gone changed while the build context was being sent (10 bytes announced, 5 read)"
        ),
        "{t:?}"
    );
    // A file that grows is cut at its announced size: what arrives matches
    // what was announced.
    std::fs::write(d.join("gone"), "0123456789").expect("write");
    let t = transfer_with(&[("context", &d)], "context", &[], Ask::AllFiles, |_| {
        std::fs::write(d.join("gone"), "0123456789 and more").expect("grow");
    });
    assert!(t.fin, "{t:?}");
    assert_eq!(t.files["gone"], b"0123456789");
}

#[test]
fn names_that_are_not_utf8_are_sent_as_bytes() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    std::fs::write(d.join("ok"), "ok").expect("write");
    let name = std::ffi::OsStr::from_bytes(b"bad\xffname");
    std::fs::create_dir(d.join(name)).expect("mkdir");
    std::fs::write(
        d.join(name).join(std::ffi::OsStr::from_bytes(b"caf\xe9")),
        "latin-1",
    )
    .expect("write");
    symlink(std::ffi::OsStr::from_bytes(b"to\xfe"), d.join("link")).expect("symlink");
    let t = transfer(d, &[], Ask::AllFiles);
    assert!(t.fin, "{t:?}");
    let raw: Vec<&[u8]> = t.stats.iter().map(|s| &s.path[..]).collect();
    assert_eq!(
        raw,
        [&b"bad\xffname"[..], b"bad\xffname/caf\xe9", b"link", b"ok"]
    );
    assert_eq!(&t.stats[2].linkname[..], b"to\xfe");
    assert_eq!(t.files[&lossy(b"bad\xffname/caf\xe9")], b"latin-1");
    // Excluded, it is left out like any other name.
    let t = transfer(d, &[("exclude-patterns", "bad*")], Ask::AllFiles);
    assert!(t.fin, "{t:?}");
    assert_eq!(t.paths(), ["link", "ok"]);
}

#[test]
fn a_sparse_file_over_4_gib_arrives_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let huge = dir.path().join("huge");
    let size: u64 = (4 << 30) + 8;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&huge).expect("create");
        f.seek(SeekFrom::Start(size - 8)).expect("seek");
        f.write_all(b"the-tail").expect("write");
    }
    let t = transfer(dir.path(), &[], Ask::AllFiles);
    assert!(t.fin, "{:?}", t.error);
    assert_eq!(t.stat("huge").size as u64, size);
    assert_eq!(t.sizes["huge"], (size, b"the-tail".to_vec()));
}

#[test]
fn a_hardlink_is_announced_as_fsutil_announces_it() {
    // fsutil's walker (stat_unix.go setUnixOpt, then mkstat) names the
    // first path sent for the inode and keeps the file's own size: the
    // size is set after the link is found, so it is not the 0 setUnixOpt
    // writes. Mode and time are the inode's, as for any file.
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    std::fs::write(d.join("a"), "twelve bytes").expect("write");
    std::fs::create_dir(d.join("sub")).expect("mkdir");
    std::fs::hard_link(d.join("a"), d.join("sub/b")).expect("link");
    std::fs::hard_link(d.join("a"), d.join("z")).expect("link");
    let t = transfer(d, &[], Ask::AllFiles);
    assert!(t.fin, "{t:?}");
    let a = t.stat("a");
    for path in ["sub/b", "z"] {
        let s = t.stat(path);
        assert_eq!(&s.linkname[..], b"a", "{path}");
        assert_eq!(s.size, 12, "{path}");
        assert_eq!((s.mode, s.mod_time), (a.mode, a.mod_time), "{path}");
    }
    assert_eq!(a.linkname.len(), 0);
    // Only the first is requested; a link's content is the first's.
    assert_eq!(t.files.keys().collect::<Vec<_>>(), ["a"]);
    // Without the first path, the first one sent stands for the inode.
    let t = transfer(d, &[("exclude-patterns", "a")], Ask::AllFiles);
    assert_eq!(t.stat("sub/b").linkname.len(), 0);
    assert_eq!(&t.stat("z").linkname[..], b"sub/b");
    assert_eq!(t.files["sub/b"], b"twelve bytes");
}

#[test]
fn a_directory_swapped_for_a_link_never_takes_the_walk_outside() {
    // The test user owns the context and swaps a directory in it with a
    // link to a directory only root can read, as fast as it can, while
    // root's bkd sends the context: nothing of that directory may be
    // announced or sent.
    // The root-only directory mirrors the names and sizes of `sub`, as an
    // attacker would arrange, so that a file opened by path through the
    // link is found.
    let base = tempfile::tempdir().expect("temp dir");
    let secret = tempfile::tempdir().expect("temp dir");
    std::fs::write(secret.path().join("secret"), MARKER).expect("write");
    std::fs::create_dir(secret.path().join("inner")).expect("mkdir");
    std::fs::write(secret.path().join("inner/more"), MARKER).expect("write");
    let ctx = base.path().join("ctx");
    std::fs::create_dir_all(ctx.join("sub")).expect("mkdir");
    let mirrored = &MARKER[..12];
    for i in 0..40 {
        std::fs::write(
            ctx.join(format!("sub/f{i:02}")),
            format!("public-{i:02}-----"),
        )
        .expect("write");
        std::fs::write(
            secret.path().join(format!("f{i:02}")),
            format!("{mirrored}{i:02}"),
        )
        .expect("write");
    }
    symlink(secret.path(), base.path().join("evil")).expect("symlink");
    for p in [
        base.path(),
        &ctx,
        &ctx.join("sub"),
        &base.path().join("evil"),
    ] {
        racer::give_to_user(p);
    }
    let racer = racer::Racer::exchange(&ctx.join("sub"), &base.path().join("evil"));
    let mut errors = 0;
    for _ in 0..150 {
        let t = transfer(&ctx, &[], Ask::AllFiles);
        for s in &t.stats {
            let p = lossy(&s.path);
            assert!(
                !p.contains("secret") && !p.contains("inner"),
                "an entry of the root-only directory was announced: {p}"
            );
        }
        assert!(
            !contains(&t.all_content(), MARKER.as_bytes()),
            "outside file sent"
        );
        if let Some(e) = &t.error {
            assert!(
                e.contains("changed while the build context was being sent"),
                "{t:?}"
            );
            errors += 1;
        }
    }
    let strikes = racer.strikes();
    drop(racer);
    assert!(strikes > 1000, "the swap ran only {strikes} times");
    eprintln!("{errors} of 150 transfers refused a file that changed; {strikes} swaps");
}
