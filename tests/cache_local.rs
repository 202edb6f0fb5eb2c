//! `--cache-to type=local` / `--cache-from type=local` against real daemons:
//! the exported OCI layout is complete and verifiable, a daemon with empty
//! state builds from it without running the step again, and caches written
//! by bkd and by buildctl are interchangeable.

mod common;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bkd::oci_layout::sha256;
use common::spawn::{bkd_as, As};
use common::*;

/// A context whose last step prints a marker no other build uses, so that
/// step is never in any daemon's cache before the test.
fn marked_context(name: &str) -> (tempfile::TempDir, String) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let marker = format!("{name}-{}-{nanos}", std::process::id());
    let ctx = context();
    write(
        ctx.path(),
        "Dockerfile",
        &format!("{BUSYBOX_STAGE}RUN echo {marker} > /marker\n"),
    );
    (ctx, marker)
}

fn cache_to(dest: &Path, extra: &str) -> String {
    format!("type=local,dest={}{extra}", dest.display())
}

fn cache_from(src: &Path, extra: &str) -> String {
    format!("type=local,src={}{extra}", src.display())
}

fn read_json(path: &Path) -> serde_json::Value {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&data).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
    dir.join("blobs/sha256").join(hex)
}

/// Checks that `desc` names a blob of `dir` with that size and digest.
fn check_blob(dir: &Path, desc: &serde_json::Value) -> Vec<u8> {
    let digest = desc["digest"].as_str().expect("descriptor digest");
    let path = blob_path(dir, digest);
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("blob {digest} missing: {e}"));
    assert_eq!(
        Some(data.len() as u64),
        desc["size"].as_u64(),
        "size of {digest}"
    );
    assert_eq!(sha256(&data).to_string(), digest, "content of {digest}");
    data
}

/// The whole layout: `oci-layout`, one tagged cache manifest in
/// `index.json`, the manifest's config and layers present and intact,
/// every file under `blobs/` named by its digest, nothing half-written.
/// Returns the manifest's descriptor.
fn check_layout(dir: &Path, tag: &str) -> serde_json::Value {
    assert_eq!(
        read_json(&dir.join("oci-layout")),
        serde_json::json!({"imageLayoutVersion": "1.0.0"})
    );
    let index = read_json(&dir.join("index.json"));
    assert_eq!(index["schemaVersion"], 2, "{index}");
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    let manifests = index["manifests"].as_array().expect("manifests");
    let desc = manifests
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no manifest tagged {tag} in {index}"))
        .clone();
    let manifest: serde_json::Value =
        serde_json::from_slice(&check_blob(dir, &desc)).expect("manifest json");
    check_blob(dir, &manifest["config"]);
    let layers = manifest["layers"].as_array().expect("layers");
    for layer in layers {
        check_blob(dir, layer);
    }
    for entry in std::fs::read_dir(dir.join("blobs/sha256")).expect("blobs dir") {
        let entry = entry.expect("blob entry");
        let data = std::fs::read(entry.path()).expect("read blob");
        assert_eq!(
            sha256(&data).hex(),
            entry.file_name().to_string_lossy(),
            "{} holds other content",
            entry.path().display()
        );
    }
    if let Ok(ingest) = std::fs::read_dir(dir.join("ingest")) {
        let left: Vec<_> = ingest.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        assert!(left.is_empty(), "unfinished writes left: {left:?}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .expect("cache dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !["blobs", "ingest", "index.json", "oci-layout"].contains(&n.as_str()))
        .collect();
    assert!(leftovers.is_empty(), "stray files: {leftovers:?}");
    desc
}

/// Asserts the plain progress shows the marker step as `CACHED`.
fn assert_step_cached(stderr: &str, marker: &str, explain: &dyn Fn() -> String) {
    let needle = format!("RUN echo {marker}");
    let vertex = stderr
        .lines()
        .find(|l| l.contains(&needle))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no progress for {needle}\n{}", explain()))
        .to_string();
    assert!(
        stderr.lines().any(|l| l == format!("{vertex} CACHED")),
        "{needle} was not reported CACHED\n{}",
        explain()
    );
}

fn buildctl_build(addr: &str, ctx: &Path, cache_flag: &str, spec: &str) -> Run {
    let dir = ctx.display().to_string();
    run(
        "buildctl",
        &[
            "--addr",
            addr,
            "build",
            "--progress",
            "plain",
            "--frontend",
            "dockerfile.v0",
            "--local",
            &format!("context={dir}"),
            "--local",
            &format!("dockerfile={dir}"),
            cache_flag,
            spec,
        ],
        ctx,
        &[],
    )
}

#[test]
fn export_writes_a_complete_oci_layout() {
    let (ctx, _) = marked_context("export");
    let out = tempfile::tempdir().expect("out dir");
    let dest = out.path().join("cache");
    bkd(
        &[
            "build",
            "--progress",
            "plain",
            "--cache-to",
            &cache_to(&dest, ",mode=max,tag=v1"),
            ".",
        ],
        ctx.path(),
    )
    .assert_ok();
    let desc = check_layout(&dest, "v1");
    let manifest: serde_json::Value =
        serde_json::from_slice(&check_blob(&dest, &desc)).expect("manifest");
    // mode=max: the layers of all three steps.
    let layers = manifest["layers"].as_array().map_or(0, Vec::len);
    assert!(layers >= 3, "{manifest}");

    // The usual CI round trip: import from and export to the same
    // directory; the new tag is added beside the old one.
    let run = bkd(
        &[
            "build",
            "--cache-from",
            &cache_from(&dest, ",tag=v1"),
            "--cache-to",
            &cache_to(&dest, ",tag=v2"),
            ".",
        ],
        ctx.path(),
    );
    run.assert_ok();
    assert!(!run.stderr().contains("warning:"), "{}", run.explain());
    check_layout(&dest, "v2");
    check_layout(&dest, "v1");
}

#[test]
fn import_into_an_empty_daemon_reuses_the_step() {
    let (ctx, marker) = marked_context("import");
    let out = tempfile::tempdir().expect("out dir");
    let cache = out.path().join("cache");
    bkd(
        &[
            "build",
            "--cache-to",
            &cache_to(&cache, ",mode=max,tag=main"),
            ".",
        ],
        ctx.path(),
    )
    .assert_ok();
    check_layout(&cache, "main");

    // bkd's own daemon on an empty state dir.
    let state = out.path().join("state").display().to_string();
    let run = bkd_as(
        As::Root,
        &[
            "build",
            "--root",
            &state,
            "--progress",
            "plain",
            "--cache-from",
            &cache_from(&cache, ",tag=main"),
            // The cache is all this build is for (no warning about it).
            "-o",
            "type=cacheonly",
            ".",
        ],
        ctx.path(),
        &[],
    );
    run.assert_ok();
    assert_step_cached(&run.stderr(), &marker, &|| run.explain());
    assert!(!run.stderr().contains("warning:"), "{}", run.explain());
}

#[test]
fn caches_are_interchangeable_with_buildctl() {
    let bed = bed();
    let out = tempfile::tempdir().expect("out dir");

    // bkd exports, buildctl imports on an empty daemon.
    let (ours_ctx, ours_marker) = marked_context("bkd-to-buildctl");
    let ours = out.path().join("ours");
    bkd(
        &["build", "--cache-to", &cache_to(&ours, ",mode=max"), "."],
        ours_ctx.path(),
    )
    .assert_ok();
    // buildctl exports, bkd imports (by digest) on the same empty daemon.
    let (theirs_ctx, theirs_marker) = marked_context("buildctl-to-bkd");
    let theirs = out.path().join("theirs");
    buildctl_build(
        &bed.addr,
        theirs_ctx.path(),
        "--export-cache",
        &cache_to(&theirs, ",mode=max"),
    )
    .assert_ok();

    // Same layout shape from both.
    let our_desc = check_layout(&ours, "latest");
    let their_desc = check_layout(&theirs, "latest");
    assert_eq!(our_desc["mediaType"], their_desc["mediaType"]);
    assert_eq!(our_desc["annotations"], their_desc["annotations"]);
    assert_eq!(
        std::fs::read(ours.join("oci-layout")).expect("ours"),
        std::fs::read(theirs.join("oci-layout")).expect("theirs")
    );

    let fresh = PrivateDaemon::start();
    let run = buildctl_build(
        &fresh.addr,
        ours_ctx.path(),
        "--import-cache",
        &cache_from(&ours, ""),
    );
    run.assert_ok();
    assert_step_cached(&run.stderr(), &ours_marker, &|| run.explain());

    let digest = their_desc["digest"].as_str().expect("digest");
    let run = run_bkd_at(
        &fresh.addr,
        &[
            "build",
            "--progress",
            "plain",
            "--cache-from",
            &cache_from(&theirs, &format!(",digest={digest}")),
            ".",
        ],
        theirs_ctx.path(),
    );
    run.assert_ok();
    assert_step_cached(&run.stderr(), &theirs_marker, &|| run.explain());
}

/// bkd against a daemon other than the test bed's.
fn run_bkd_at(addr: &str, args: &[&str], cwd: &Path) -> Run {
    let mut all = vec![args[0], "--addr", addr];
    all.extend_from_slice(&args[1..]);
    run(env!("CARGO_BIN_EXE_bkd"), &all, cwd, &[])
}

#[test]
fn unusable_imports_are_skipped_with_a_warning() {
    let (ctx, _) = marked_context("skip");
    let out = tempfile::tempdir().expect("out dir");
    let missing = out.path().join("missing");
    let empty = out.path().join("empty");
    std::fs::create_dir_all(&empty).expect("empty dir");
    let run = bkd(
        &[
            "build",
            "--cache-from",
            &cache_from(&missing, ""),
            "--cache-from",
            &cache_from(&empty, ",tag=v9"),
            ".",
        ],
        ctx.path(),
    );
    run.assert_ok();
    let err = run.stderr();
    assert!(
        err.contains(&format!(
            "warning: local cache import at {} skipped",
            missing.display()
        )),
        "{}",
        run.explain()
    );
    assert!(
        err.contains(&format!(
            "warning: local cache import at {} skipped",
            empty.display()
        )),
        "{}",
        run.explain()
    );
    assert!(!missing.exists(), "an import never creates its directory");
}

#[test]
fn an_unwritable_export_dir_fails_before_the_build() {
    let (ctx, _) = marked_context("unwritable");
    let out = tempfile::tempdir().expect("out dir");
    let file = out.path().join("a-file");
    std::fs::write(&file, "not a dir").expect("file");
    let dest = file.join("cache");
    let run = bkd(
        &["build", "--cache-to", &cache_to(&dest, ""), "."],
        ctx.path(),
    );
    assert_eq!(run.code(), Some(3), "{}", run.explain());
    let err = run.stderr();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{}", run.explain());
    assert!(
        lines[0].contains(&format!("cannot write cache to {}", dest.display())),
        "{}",
        run.explain()
    );
}

/// Relative paths of all files under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir)
            .expect("read dir")
            .filter_map(|e| e.ok())
        {
            let path = entry.path();
            if path.is_dir() {
                walk(base, &path, out);
            } else if let Ok(rel) = path.strip_prefix(base) {
                out.push(rel.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The index without its creation time, which each client stamps when it
/// writes the index (two builds may straddle a second); the stamp must
/// still be there, as an RFC 3339 UTC time.
fn without_creation_time(mut index: serde_json::Value) -> serde_json::Value {
    let stamp = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$").expect("regex");
    let manifests = index["manifests"].as_array_mut().expect("manifests");
    for m in manifests {
        let annotations = m["annotations"].as_object_mut().expect("annotations");
        let created = annotations
            .remove("org.opencontainers.image.created")
            .unwrap_or_else(|| panic!("no creation time in {annotations:?}"));
        assert!(
            stamp.is_match(created.as_str().unwrap_or_default()),
            "creation time {created}"
        );
    }
    index
}

#[test]
fn oci_directory_output_matches_buildctl() {
    let bed = bed();
    let (ctx, _) = marked_context("oci-dir");
    let out = tempfile::tempdir().expect("out dir");
    for (label, extra) in [("named", ",name=reg.example/app:v1"), ("unnamed", "")] {
        let ours = out.path().join(format!("{label}-ours"));
        let theirs = out.path().join(format!("{label}-theirs"));
        let output = |dir: &Path| format!("type=oci,dest={},tar=false{extra}", dir.display());
        bkd(&["build", "-o", &output(&ours), "."], ctx.path()).assert_ok();
        buildctl_build(&bed.addr, ctx.path(), "--output", &output(&theirs)).assert_ok();
        assert_eq!(files_under(&ours), files_under(&theirs), "{label}");
        assert_eq!(
            without_creation_time(read_json(&ours.join("index.json"))),
            without_creation_time(read_json(&theirs.join("index.json"))),
            "{label}"
        );
        let index = read_json(&ours.join("index.json"));
        let desc = &index["manifests"][0];
        check_blob(&ours, desc);
        let tag = if label == "named" { "v1" } else { "latest" };
        assert_eq!(
            desc["annotations"]["org.opencontainers.image.ref.name"], tag,
            "{index}"
        );
    }
}
