//! The file-sync path moves bytes unchanged: every file of a context with
//! sizes around the chunk boundaries, many small files and a few large ones
//! comes back byte for byte in the exported image.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use common::*;

/// Every regular file under `dir`, by path relative to it.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read dir") {
            let e = e.expect("entry");
            let path = e.path();
            if e.file_type().expect("type").is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).expect("under base");
                out.insert(
                    rel.display().to_string(),
                    std::fs::read(&path).expect("read"),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Every regular file in the tar under `prefix/`, by the rest of its path.
fn tar_files(tar: &Path, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let file = std::fs::File::open(tar).expect("open tar");
    let mut archive = tar::Archive::new(file);
    let mut out = BTreeMap::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(rel) = path.strip_prefix(prefix) else {
            continue;
        };
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read entry");
        out.insert(rel.to_string(), data);
    }
    out
}

#[test]
fn every_file_arrives_byte_identical() {
    let ctx = context();
    let src = ctx.path().join("src");
    const MIB: usize = 1 << 20;
    const CHUNK: usize = bkd::session::filesync::CHUNK_SIZE;
    let sizes = [
        0,
        1,
        4095,
        4096,
        32 * 1024 - 1,
        32 * 1024,
        32 * 1024 + 1,
        // Files up to 64 KiB are read where their request arrives.
        64 * 1024,
        64 * 1024 + 1,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        2 * CHUNK + 3,
        MIB - 1,
        MIB,
        MIB + 1,
        3 * MIB + 12_345,
        24 * MIB + 7,
    ];
    for (i, size) in sizes.iter().enumerate() {
        let path = src.join(format!("sized/{size}-{i}.bin"));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, noise(i as u64, *size)).expect("write");
    }
    for d in 0..20u64 {
        for f in 0..100u64 {
            let path = src.join(format!("many/d{d:02}/f{f:03}"));
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            let len = 1 + ((d * 100 + f) * 2_654_435_761 % 5000) as usize;
            std::fs::write(&path, noise(1000 + d * 100 + f, len)).expect("write");
        }
    }
    write(ctx.path(), "Dockerfile", "FROM scratch\nCOPY src /src\n");
    let out = ctx.path().join("out.tar");
    let run = bkd_env(
        &["build", "-o", &tar_output(&out), "."],
        ctx.path(),
        &[("BKD_LOG", "bkd=debug")],
    );
    run.assert_ok();

    let sent = files(&src);
    // The transfer's own account, which the benchmark harness reads: every
    // file of the context's transfer (the COPY's source, src/) and its bytes.
    let summary = run
        .stderr()
        .lines()
        .filter(|l| l.contains("file sync done") && l.contains("dir=context"))
        .find(|l| !l.contains(" files=0 "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no transfer summary:\n{}", run.stderr()));
    let field = |key: &str| -> f64 {
        summary
            .split(&format!(" {key}="))
            .nth(1)
            .and_then(|v| v.trim_start_matches('"').split(['"', ' ']).next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {summary}"))
    };
    assert_eq!(field("files") as usize, sent.len(), "{summary}");
    let total: usize = sent.values().map(Vec::len).sum();
    assert_eq!(field("bytes") as usize, total, "{summary}");
    assert!(
        field("waited_for_daemon_s") <= field("seconds"),
        "{summary}"
    );
    assert!(field("walk_s") <= field("seconds"), "{summary}");
    let received = tar_files(&out, "src/");
    assert_eq!(sent.len(), 2018);
    assert_eq!(
        sent.keys().collect::<Vec<_>>(),
        received.keys().collect::<Vec<_>>(),
        "the same files"
    );
    for (name, data) in &sent {
        assert!(
            received[name] == *data,
            "{name}: {} bytes sent, {} received, contents differ",
            data.len(),
            received[name].len()
        );
    }
}

/// Files whose content is not in the page cache go to reader threads, each
/// holding an open descriptor until it is sent: a context of many such
/// files must not run the client out of descriptors (here 128, with 1,500
/// files on their way).
#[test]
fn files_not_in_the_page_cache_never_exhaust_descriptors() {
    use std::os::fd::AsRawFd;
    let ctx = context();
    let src = ctx.path().join("src");
    for d in 0..15u64 {
        for f in 0..100u64 {
            let path = src.join(format!("d{d:02}/f{f:03}"));
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, noise(5000 + d * 100 + f, 4096 + f as usize)).expect("write");
        }
    }
    write(ctx.path(), "Dockerfile", "FROM scratch\nCOPY src /src\n");
    let evict = || {
        for (name, _) in files(&src) {
            let file = std::fs::File::open(src.join(&name)).expect("open");
            file.sync_all().expect("fsync");
            // SAFETY: a valid descriptor; advice only.
            let r =
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            assert_eq!(r, 0, "fadvise {name}");
        }
    };
    evict();
    let out = ctx.path().join("out.tar");
    let bed = bed();
    let run = common::run(
        "prlimit",
        &[
            "--nofile=128:128",
            env!("CARGO_BIN_EXE_bkd"),
            "build",
            "--addr",
            &bed.addr,
            "-o",
            &tar_output(&out),
            ".",
        ],
        ctx.path(),
        &[],
    );
    run.assert_ok();
    let sent = files(&src);
    let received = tar_files(&out, "src/");
    assert_eq!(sent.len(), 1500);
    assert!(received == sent, "the same files with the same content");
}
