//! bkd's FileSend service for a `local` output driven directly, with this
//! test playing a hostile daemon: packet sequences the real daemon never
//! sends (a path announced twice, out of order, a file then a symlink of
//! the same name, links leading out), which must never make bkd touch
//! anything outside the output, and must fail the transfer. Each runs bkd's
//! real service over a real gRPC connection; nothing of bkd is replaced.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bkd::proto::fsutil::types::{packet::PacketType, Packet, Stat};
use bkd::session::filesend::{
    FileSendServer, FileSendService, OutputTarget, RawCodec, StagedOutputs, DIFF_COPY_PATH,
};
use bytes::Bytes;
use prost::Message;
use tokio_stream::StreamExt;

const MODE_DIR: u32 = 1 << 31;
const MODE_SYMLINK: u32 = 1 << 27;
const MODE_SETUID: u32 = 1 << 23;

fn stat(path: &str, mode: u32, link: &str) -> Packet {
    Packet {
        r#type: PacketType::PacketStat as i32,
        stat: Some(Stat {
            path: path.to_string().into(),
            mode,
            mod_time: 1_000_000_000,
            linkname: link.to_string().into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A setuid file open to all: what a chmod through a link would do to its
/// target.
fn file(path: &str) -> Packet {
    stat(path, MODE_SETUID | 0o777, "")
}

fn dir(path: &str) -> Packet {
    stat(path, MODE_DIR | 0o777, "")
}

fn link(path: &str, target: &Path) -> Packet {
    stat(path, MODE_SYMLINK | 0o777, &target.display().to_string())
}

fn data(id: u32, d: &[u8]) -> Packet {
    Packet {
        r#type: PacketType::PacketData as i32,
        id,
        data: Bytes::copy_from_slice(d),
        ..Default::default()
    }
}

fn end_of_walk() -> Packet {
    Packet {
        r#type: PacketType::PacketStat as i32,
        ..Default::default()
    }
}

fn fin() -> Packet {
    Packet {
        r#type: PacketType::PacketFin as i32,
        ..Default::default()
    }
}

/// What a transfer left: the error bkd answered with, and what committing
/// the staged outputs gave.
#[derive(Debug)]
struct Outcome {
    error: Option<String>,
    committed: Result<Vec<PathBuf>, String>,
}

/// Serves bkd's FileSend with one `local` output at `dest` on a fresh
/// socket, sends `packets` as a daemon would (all of them, whatever bkd
/// answers), then commits what was staged.
fn send_to(dest: &Path, packets: Vec<Packet>) -> Outcome {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let sock_dir = tempfile::tempdir().expect("socket dir");
    let sock = sock_dir.path().join("fs.sock");
    let staged = StagedOutputs::default();
    let service = FileSendService::new(
        HashMap::from([(0, OutputTarget::Dir(dest.to_path_buf()))]),
        staged.clone(),
    );
    let error = rt.block_on(async {
        let listener = tokio::net::UnixListener::bind(&sock).expect("bind");
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let serving = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(FileSendServer::new(service))
                .serve_with_incoming(incoming),
        );
        let addr =
            bkd::transport::Address::parse(&format!("unix://{}", sock.display())).expect("address");
        let channel = bkd::transport::connect(&addr, &Default::default())
            .await
            .expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let raw: Vec<Bytes> = packets.iter().map(|p| p.encode_to_vec().into()).collect();
        let request = tonic::Request::new(tokio_stream::iter(raw));
        let path = http::uri::PathAndQuery::from_static(DIFF_COPY_PATH);
        let result = tokio::time::timeout(Duration::from_secs(30), async {
            match grpc.streaming(request, path, RawCodec).await {
                Err(status) => Some(status.message().to_string()),
                Ok(response) => {
                    let mut inbound = response.into_inner();
                    while let Some(msg) = inbound.next().await {
                        if let Err(status) = msg {
                            return Some(status.message().to_string());
                        }
                    }
                    None
                }
            }
        })
        .await
        .expect("the transfer hung");
        // Let the service's own task finish its part.
        tokio::time::sleep(Duration::from_millis(100)).await;
        serving.abort();
        result
    });
    let committed =
        staged
            .commit()
            .map_err(|e| e.to_string())
            .and_then(|done| match staged.write_failure() {
                Some(f) => Err(f),
                None => Ok(done),
            });
    Outcome { error, committed }
}

/// Everything about a directory tree that a hostile sender must not
/// change: names, types, modes, times, content.
fn snapshot(root: &Path) -> Vec<(PathBuf, u32, i64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).expect("lstat");
        if m.is_dir() {
            for e in std::fs::read_dir(&p).expect("read_dir") {
                todo.push(e.expect("entry").path());
            }
        }
        let content = if m.is_file() {
            std::fs::read(&p).expect("read")
        } else {
            Vec::new()
        };
        out.push((p, m.mode(), m.mtime(), m.mtime_nsec(), content));
    }
    out.sort();
    out
}

/// A victim outside the output: a 0700 directory and a 0600 file, both
/// root's, with an old time.
struct Scene {
    base: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let base = tempfile::tempdir().expect("temp dir");
        let victim = base.path().join("victim");
        std::fs::create_dir(&victim).expect("mkdir");
        std::fs::write(victim.join("precious"), "root only").expect("write");
        std::fs::set_permissions(
            victim.join("precious"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::fs::create_dir(base.path().join("out-parent")).expect("mkdir");
        Scene { base }
    }

    fn victim(&self) -> PathBuf {
        self.base.path().join("victim")
    }

    fn dest(&self) -> PathBuf {
        self.base.path().join("out-parent/out")
    }
}

#[test]
fn a_hostile_sender_never_changes_anything_outside_the_output() {
    type Sequence = fn(&Path) -> Vec<Packet>;
    let cases: &[(&str, Sequence, &str)] = &[
        (
            "a file, then a symlink of the same name, then the file's end",
            |v| {
                vec![
                    file("x"),
                    link("x", &v.join("precious")),
                    data(0, b""),
                    end_of_walk(),
                    fin(),
                ]
            },
            "out of order",
        ),
        (
            "a directory, then a symlink of the same name, then the end",
            |v| vec![dir("d"), link("d", v), end_of_walk(), fin()],
            "out of order",
        ),
        (
            "a directory, then a symlink of the same name, then a file in it",
            |v| vec![dir("d"), link("d", v), file("d/precious"), end_of_walk()],
            "out of order",
        ),
        (
            "a symlink, then a file below it",
            |v| vec![link("l", v), file("l/precious"), end_of_walk()],
            "out of order",
        ),
        (
            "the same directory twice",
            |_| vec![dir("d"), dir("d"), end_of_walk(), fin()],
            "out of order",
        ),
        (
            "paths out of order",
            |_| vec![file("b"), file("a"), end_of_walk(), fin()],
            "out of order",
        ),
        (
            "a hard link to a symlink leading out",
            |v| {
                vec![
                    link("l", &v.join("precious")),
                    stat("m", MODE_SETUID | 0o777, "l"),
                    end_of_walk(),
                    fin(),
                ]
            },
            "not a file it sent before",
        ),
        (
            "a hard link out of the output",
            |v| {
                vec![
                    stat("m", 0o644, &v.join("precious").display().to_string()),
                    stat("n", 0o644, "../victim/precious"),
                    end_of_walk(),
                ]
            },
            "not a file it sent before",
        ),
        (
            "an escaping path",
            |_| vec![file("../../victim/precious"), end_of_walk()],
            "unsafe path",
        ),
        (
            "data for a file never asked for",
            |_| vec![data(7, b"x"), end_of_walk()],
            "unknown file id 7",
        ),
    ];
    for (what, sequence, expected) in cases {
        let scene = Scene::new();
        let before = snapshot(&scene.victim());
        let outcome = send_to(&scene.dest(), sequence(&scene.victim()));
        assert_eq!(
            snapshot(&scene.victim()),
            before,
            "{what}: the victim changed ({outcome:?})"
        );
        let error = outcome.error.clone().unwrap_or_default();
        assert!(error.contains(expected), "{what}: {outcome:?}");
        assert!(
            outcome.committed.as_ref().map_or(true, |d| d.is_empty()),
            "{what}: an output was committed: {outcome:?}"
        );
        assert!(!scene.dest().exists(), "{what}: something is at dest");
        let left: Vec<_> = std::fs::read_dir(scene.base.path().join("out-parent"))
            .expect("read")
            .collect();
        assert!(left.is_empty(), "{what}: left behind: {left:?}");
    }
}

#[test]
fn an_honest_sequence_is_received_and_committed() {
    let scene = Scene::new();
    let outcome = send_to(
        &scene.dest(),
        vec![
            dir("d"),
            file("d/f"),
            stat("d/g", 0o644, "d/f"),
            link("l", Path::new("d/f")),
            end_of_walk(),
            data(1, b"content"),
            data(1, b""),
            fin(),
        ],
    );
    assert!(outcome.error.is_none(), "{outcome:?}");
    assert_eq!(outcome.committed.as_deref(), Ok(&[scene.dest()][..]));
    let f = scene.dest().join("d/f");
    assert_eq!(std::fs::read(&f).expect("read"), b"content");
    assert_eq!(
        std::fs::read(scene.dest().join("d/g")).expect("read"),
        b"content"
    );
    let m = std::fs::metadata(&f).expect("stat");
    assert_eq!(m.mode() & 0o7777, 0o4777);
    assert_eq!(m.mtime(), 1);
    assert_eq!(
        std::fs::metadata(scene.dest().join("d"))
            .expect("stat")
            .mode()
            & 0o7777,
        0o777
    );
}
