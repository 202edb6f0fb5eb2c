//! The client's part of `type=local` caches, as buildctl does it: each cache
//! directory becomes a content store of the session with id `local:<dir>`;
//! an import first resolves its tag to a digest through the directory's
//! `index.json` (or is skipped with a warning), and after a successful build
//! the exported cache manifest is tagged in each export directory's
//! `index.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::solve::CacheSpec;
use crate::error::{io_reason, Error, Result};
use crate::oci_layout::{Descriptor, Digest, Layout};
use crate::session::content::ContentStores;

/// The exporter response key holding the cache manifest's descriptor.
const CACHE_MANIFEST_KEY: &str = "cache.manifest";
const DEFAULT_TAG: &str = "latest";

/// Local cache directories of one build.
#[derive(Debug, Default)]
pub struct LocalCaches {
    pub stores: ContentStores,
    /// Export directories and the tag each gets.
    exports: Vec<(PathBuf, String)>,
}

fn store_id(dir: &str) -> String {
    format!("local:{dir}")
}

/// Prepares the local caches: export directories are created (an unusable
/// one fails the build before it starts), and imports get the `digest`
/// attribute the daemon needs. Imports that cannot be resolved are dropped
/// with a warning, and the build runs without them.
pub fn prepare(exports: &[CacheSpec], imports: &mut Vec<CacheSpec>) -> Result<LocalCaches> {
    let mut caches = LocalCaches::default();
    for export in exports.iter().filter(|c| c.kind == "local") {
        let Some(dir) = export.attrs.get("dest").filter(|d| !d.is_empty()) else {
            return Err(Error::Usage(
                "the local cache needs dest=DIRECTORY in --cache-to".into(),
            ));
        };
        let root = PathBuf::from(dir);
        check_writable(&root)?;
        let tag = export
            .attrs
            .get("tag")
            .cloned()
            .unwrap_or_else(|| DEFAULT_TAG.into());
        caches.stores.insert(store_id(dir), root.clone());
        caches.exports.push((root, tag));
    }
    let mut kept = Vec::with_capacity(imports.len());
    for mut import in imports.drain(..) {
        if import.kind != "local" {
            kept.push(import);
            continue;
        }
        let Some(dir) = import.attrs.get("src").filter(|d| !d.is_empty()).cloned() else {
            return Err(Error::Usage(
                "the local cache needs src=DIRECTORY in --cache-from".into(),
            ));
        };
        match resolve_import(Path::new(&dir), &import.attrs) {
            Ok(digest) => {
                import.attrs.insert("digest".into(), digest.to_string());
                caches.stores.insert(store_id(&dir), PathBuf::from(&dir));
                kept.push(import);
            }
            Err(ImportSkipped::Usage(message)) => return Err(Error::Usage(message)),
            Err(ImportSkipped::Unusable(reason)) => {
                eprintln!(
                    "warning: local cache import at {} skipped: {reason}",
                    crate::text::escape_str(&dir)
                );
            }
        }
    }
    *imports = kept;
    Ok(caches)
}

enum ImportSkipped {
    Usage(String),
    Unusable(String),
}

/// The cache manifest an import names: `digest=` as given, or the `tag=`
/// (default `latest`) looked up in `index.json`; the blob must be there.
fn resolve_import(
    dir: &Path,
    attrs: &HashMap<String, String>,
) -> std::result::Result<Digest, ImportSkipped> {
    let layout = Layout::new(dir);
    let digest = match attrs.get("digest").filter(|d| !d.is_empty()) {
        Some(d) => Digest::parse(d).ok_or_else(|| {
            ImportSkipped::Usage(format!(
                "invalid --cache-from: digest {d:?} is not a sha256 digest"
            ))
        })?,
        None => {
            let tag = attrs.get("tag").map_or(DEFAULT_TAG, String::as_str);
            if tag.is_empty() {
                return Err(ImportSkipped::Usage(
                    "invalid --cache-from: the local cache needs digest=, tag= or the latest tag in index.json".into(),
                ));
            }
            let index = layout
                .read_index()
                .map_err(|e| ImportSkipped::Unusable(e.to_string()))?;
            let desc = index.find(tag).ok_or_else(|| {
                ImportSkipped::Unusable(format!(
                    "no digest found for tag {}",
                    crate::text::escape_str(tag)
                ))
            })?;
            Digest::parse(&desc.digest).ok_or_else(|| {
                ImportSkipped::Unusable(format!(
                    "tag {tag} names {:?}, not a sha256 digest",
                    desc.digest
                ))
            })?
        }
    };
    if !layout.blob_path(&digest).is_file() {
        return Err(ImportSkipped::Unusable(format!(
            "digest {digest} unavailable: no blob {}",
            crate::text::escape_path(&layout.blob_path(&digest))
        )));
    }
    Ok(digest)
}

/// Creates the export directory and checks files can be made in it.
pub fn check_writable(root: &Path) -> Result<()> {
    let fail = |e: std::io::Error| {
        Error::Input(format!(
            "cannot write cache to {}: {}",
            crate::text::escape_path(root),
            io_reason(&e)
        ))
    };
    std::fs::create_dir_all(root).map_err(fail)?;
    tempfile::Builder::new()
        .prefix(".bkd-probe-")
        .tempfile_in(root)
        .map(drop)
        .map_err(fail)
}

impl LocalCaches {
    /// Tags the exported cache manifest in every export directory. Runs
    /// only after the build succeeded; `index.json` is only ever replaced
    /// whole, and never names a blob the directory lacks.
    pub fn record(&self, exporter_response: &HashMap<String, String>) -> Result<()> {
        if self.exports.is_empty() {
            return Ok(());
        }
        let Some(json) = exporter_response.get(CACHE_MANIFEST_KEY) else {
            return Ok(());
        };
        let desc: Descriptor = serde_json::from_str(json).map_err(|e| {
            Error::OutputWrite(format!(
                "buildkitd returned an unreadable cache manifest descriptor: {e}"
            ))
        })?;
        for (root, tag) in &self.exports {
            Layout::new(root).put_tag(&desc, tag).map_err(|e| {
                Error::OutputWrite(format!(
                    "cannot record cache in {}: {e}",
                    crate::text::escape_path(root)
                ))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str, attrs: &[(&str, &str)]) -> CacheSpec {
        CacheSpec {
            kind: kind.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// A cache dir whose `latest` tag names a one-blob manifest.
    fn cache_dir() -> (tempfile::TempDir, Digest) {
        let dir = tempfile::tempdir().expect("dir");
        let layout = Layout::new(dir.path());
        let data = b"{}";
        let digest = crate::oci_layout::sha256(data);
        std::fs::create_dir_all(layout.blobs_dir()).expect("blobs");
        std::fs::write(layout.blob_path(&digest), data).expect("blob");
        let desc = Descriptor {
            media_type: String::new(),
            digest: digest.to_string(),
            size: 2,
            annotations: Default::default(),
            other: Default::default(),
        };
        layout.put_tag(&desc, "latest").expect("tag");
        (dir, digest)
    }

    #[test]
    fn imports_resolve_their_tag_or_are_dropped() {
        let (dir, digest) = cache_dir();
        let src = dir.path().display().to_string();
        let mut imports = vec![
            spec("local", &[("src", &src)]),
            spec("local", &[("src", &src), ("tag", "missing")]),
            spec("local", &[("src", "/nonexistent/bkd-cache")]),
            spec("registry", &[("ref", "r/app:cache")]),
        ];
        let caches = prepare(&[], &mut imports).expect("prepare");
        assert_eq!(imports.len(), 2, "{imports:?}");
        assert_eq!(imports[0].attrs["digest"], digest.to_string());
        assert_eq!(imports[1].kind, "registry");
        assert_eq!(
            caches.stores.get(&format!("local:{src}")),
            Some(&dir.path().to_path_buf())
        );
        assert!(caches.stores.get("local:/nonexistent/bkd-cache").is_none());
    }

    #[test]
    fn an_explicit_digest_must_be_in_the_dir() {
        let (dir, digest) = cache_dir();
        let src = dir.path().display().to_string();
        let mut imports = vec![spec(
            "local",
            &[("src", &src), ("digest", &digest.to_string())],
        )];
        prepare(&[], &mut imports).expect("prepare");
        assert_eq!(imports.len(), 1);
        let other = crate::oci_layout::sha256(b"other").to_string();
        let mut imports = vec![spec("local", &[("src", &src), ("digest", &other)])];
        prepare(&[], &mut imports).expect("prepare");
        assert!(imports.is_empty());
        let mut imports = vec![spec("local", &[("src", &src), ("digest", "md5:x")])];
        assert!(matches!(prepare(&[], &mut imports), Err(Error::Usage(_))));
    }

    #[test]
    fn exports_are_created_and_recorded_after_the_build() {
        let (src, digest) = cache_dir();
        let parent = tempfile::tempdir().expect("dir");
        let dest = parent.path().join("a/b");
        let exports = [spec(
            "local",
            &[("dest", &dest.display().to_string()), ("tag", "main")],
        )];
        let caches = prepare(&exports, &mut Vec::new()).expect("prepare");
        assert!(dest.is_dir());
        // The blob arrives through the content store during the build.
        let from = Layout::new(src.path()).blob_path(&digest);
        let to = Layout::new(&dest).blob_path(&digest);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("blobs");
        std::fs::copy(from, to).expect("copy blob");
        let response = HashMap::from([(
            CACHE_MANIFEST_KEY.to_string(),
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{digest}","size":2}}"#
            ),
        )]);
        caches.record(&response).expect("record");
        let index = Layout::new(&dest).read_index().expect("index");
        assert_eq!(
            index.find("main").map(|d| d.digest.clone()),
            Some(digest.to_string())
        );
    }

    #[test]
    fn a_missing_blob_leaves_the_index_alone() {
        let parent = tempfile::tempdir().expect("dir");
        let dest = parent.path().join("cache");
        let exports = [spec("local", &[("dest", &dest.display().to_string())])];
        let caches = prepare(&exports, &mut Vec::new()).expect("prepare");
        let digest = crate::oci_layout::sha256(b"never written");
        let response = HashMap::from([(
            CACHE_MANIFEST_KEY.to_string(),
            format!(r#"{{"digest":"{digest}","size":13}}"#),
        )]);
        let err = caches.record(&response).unwrap_err();
        assert!(matches!(err, Error::OutputWrite(_)), "{err}");
        assert!(!dest.join("index.json").exists());
    }

    #[test]
    fn an_unwritable_export_dir_fails_before_the_build() {
        let parent = tempfile::tempdir().expect("dir");
        let file = parent.path().join("file");
        std::fs::write(&file, "x").expect("file");
        let dest = file.join("cache").display().to_string();
        let err = prepare(&[spec("local", &[("dest", &dest)])], &mut Vec::new()).unwrap_err();
        assert!(matches!(err, Error::Input(_)), "{err}");
        assert!(
            err.to_string().starts_with("cannot write cache to "),
            "{err}"
        );
    }
}
