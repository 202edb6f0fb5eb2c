//! A local OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/…`): digests, blob paths, and reading and tagging
//! `index.json`. Used by the session's content store and by the client for
//! the local cache.
//!
//! `index.json` is replaced atomically (written beside it, then renamed),
//! under an advisory lock on `index.json.lock` as buildctl takes one.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const INDEX_FILE: &str = "index.json";
pub const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_CONTENT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The OCI annotation holding a descriptor's tag.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation holding a full image name.
pub const IMAGE_NAME: &str = "io.containerd.image.name";

/// A `sha256:<64 hex>` digest, the only algorithm the layout stores.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Option<Digest> {
        let hex = s.strip_prefix("sha256:")?;
        let valid = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| Digest {
            hex: hex.to_string(),
        })
    }

    pub fn from_sha256(bytes: &[u8]) -> Digest {
        let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Digest { hex }
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// The SHA-256 digest of some bytes.
pub fn sha256(data: &[u8]) -> Digest {
    Digest::from_sha256(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// Paths inside one layout directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Where blobs are written before they are verified and renamed in.
    pub fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    pub fn index_path(&self) -> PathBuf {
        self.root.join(INDEX_FILE)
    }

    /// Reads `index.json`.
    pub fn read_index(&self) -> Result<Index, LayoutError> {
        let path = self.index_path();
        let data = std::fs::read(&path).map_err(|source| LayoutError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&data).map_err(|e| LayoutError::Parse {
            path,
            reason: e.to_string(),
        })
    }

    /// Names `desc` with `tag` in `index.json` (replacing what had that tag)
    /// and writes `oci-layout`. The blob `desc` names must already be in the
    /// layout, with its size: an index never points at a missing blob.
    pub fn put_tag(&self, desc: &Descriptor, tag: &str) -> Result<(), LayoutError> {
        self.put(desc, &[IndexName::Tag(tag.to_string())])
    }

    /// Like [`Layout::put_tag`], with one entry per name.
    pub fn put(&self, desc: &Descriptor, names: &[IndexName]) -> Result<(), LayoutError> {
        let digest = Digest::parse(&desc.digest).ok_or_else(|| LayoutError::BadDescriptor {
            reason: format!("digest {:?} is not a sha256 digest", desc.digest),
        })?;
        let blob = self.blob_path(&digest);
        match std::fs::metadata(&blob) {
            Ok(m) if m.len() as i64 == desc.size => {}
            Ok(m) => {
                return Err(LayoutError::BadDescriptor {
                    reason: format!(
                        "blob {} has {} bytes, the descriptor says {}",
                        crate::text::escape_path(&blob),
                        m.len(),
                        desc.size
                    ),
                })
            }
            Err(source) => return Err(LayoutError::Read { path: blob, source }),
        }

        let _lock = IndexLock::acquire(&self.root)?;
        write_atomic(&self.root.join(LAYOUT_FILE), LAYOUT_CONTENT.as_bytes())?;
        let mut index = match self.read_index() {
            Ok(i) => i,
            Err(LayoutError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Index::default()
            }
            Err(e) => return Err(e),
        };
        for name in names {
            index.set_name(desc, name);
        }
        let data = serde_json::to_vec(&index).map_err(|e| LayoutError::Parse {
            path: self.index_path(),
            reason: e.to_string(),
        })?;
        write_atomic(&self.index_path(), &data)
    }
}

/// `index.json`. Fields bkd does not use are kept as they were.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: i64,
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            schema_version: 2,
            media_type: INDEX_MEDIA_TYPE.into(),
            manifests: Vec::new(),
            other: serde_json::Map::new(),
        }
    }
}

impl Index {
    /// The descriptor a tag names: a full image name first, then the OCI
    /// tag annotation, as buildctl looks them up.
    pub fn find(&self, tag: &str) -> Option<&Descriptor> {
        let with = |key: &str| {
            self.manifests
                .iter()
                .find(|m| m.annotations.get(key).is_some_and(|v| v == tag))
        };
        with(IMAGE_NAME).or_else(|| with(REF_NAME))
    }

    /// Appends `desc` under `name`, dropping the entry that had the same
    /// name before.
    pub fn set_name(&mut self, desc: &Descriptor, name: &IndexName) {
        if self.schema_version == 0 {
            self.schema_version = 2;
        }
        if self.media_type.is_empty() {
            self.media_type = INDEX_MEDIA_TYPE.into();
        }
        let (image, reference) = match name {
            IndexName::Tag(tag) => (String::new(), tag.clone()),
            IndexName::Image(image) => (image.clone(), reference_name(image)),
        };
        self.manifests.retain(|m| {
            m.annotations.get(REF_NAME).map_or("", String::as_str) != reference
                || m.annotations.get(IMAGE_NAME).map_or("", String::as_str) != image
        });
        let mut desc = desc.clone();
        if !image.is_empty() {
            desc.annotations.insert(IMAGE_NAME.into(), image);
        }
        desc.annotations.insert(REF_NAME.into(), reference);
        self.manifests.push(desc);
    }
}

/// How an `index.json` entry is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexName {
    /// A bare tag (`latest`), in the OCI ref-name annotation only.
    Tag(String),
    /// A full image name (`registry/repo:tag`): kept whole in containerd's
    /// annotation, its tag in the OCI one.
    Image(String),
}

/// The OCI ref name for a full image name: what follows the repository
/// (`v1` for `registry:5000/app:v1`, `@sha256:…` for a digest reference).
/// A name without a registry host is used whole, as containerd does.
fn reference_name(image: &str) -> String {
    let Some((host, path)) = image.split_once('/') else {
        return image.to_string();
    };
    let host_ok = match host.split_once(':') {
        Some((h, port)) => {
            !h.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
        }
        None => !host.is_empty(),
    };
    if !host_ok {
        return image.to_string();
    }
    match path.find([':', '@']) {
        Some(i) if path[i..].starts_with(':') => path[i + 1..].to_string(),
        Some(i) => path[i..].to_string(),
        None => String::new(),
    }
}

/// An OCI content descriptor. Fields bkd does not use are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "cannot read {}: {}",
        crate::text::escape_path(path),
        crate::error::io_reason(source)
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse {}: {reason}", crate::text::escape_path(path))]
    Parse { path: PathBuf, reason: String },
    #[error(
        "cannot write {}: {}",
        crate::text::escape_path(path),
        crate::error::io_reason(source)
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid descriptor: {reason}")]
    BadDescriptor { reason: String },
}

/// Writes `path` through a temporary sibling renamed over it.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), LayoutError> {
    let fail = |source| LayoutError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".bkd-")
        .tempfile_in(dir)
        .map_err(fail)?;
    temp.write_all(data).map_err(fail)?;
    temp.as_file().sync_all().map_err(fail)?;
    std::fs::set_permissions(
        temp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .map_err(fail)?;
    temp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// An exclusive advisory lock on `index.json.lock`, removed on drop.
struct IndexLock {
    file: std::fs::File,
    path: PathBuf,
}

impl IndexLock {
    fn acquire(root: &Path) -> Result<IndexLock, LayoutError> {
        let path = root.join(format!("{INDEX_FILE}.lock"));
        let fail = |source| LayoutError::Write {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(fail)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(fail(std::io::Error::last_os_error()));
        }
        Ok(IndexLock { file, path })
    }
}

impl Drop for IndexLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        // SAFETY: unlocking the descriptor locked in `acquire`.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(data: &[u8]) -> Descriptor {
        Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: sha256(data).to_string(),
            size: data.len() as i64,
            annotations: BTreeMap::new(),
            other: serde_json::Map::new(),
        }
    }

    fn put_blob(layout: &Layout, data: &[u8]) {
        std::fs::create_dir_all(layout.blobs_dir()).expect("blobs dir");
        std::fs::write(layout.blob_path(&sha256(data)), data).expect("blob");
    }

    #[test]
    fn digests_are_checked() {
        let d = sha256(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()), Some(d));
        assert!(Digest::parse("sha256:abc").is_none());
        assert!(Digest::parse("sha512:00").is_none());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_none());
        assert!(Digest::parse(&format!("sha256:../{}", "a".repeat(61))).is_none());
    }

    #[test]
    fn tags_replace_their_previous_descriptor() {
        let dir = tempfile::tempdir().expect("dir");
        let layout = Layout::new(dir.path());
        let (a, b) = (desc(b"first"), desc(b"second"));
        put_blob(&layout, b"first");
        put_blob(&layout, b"second");
        layout.put_tag(&a, "latest").expect("put a");
        layout.put_tag(&b, "v2").expect("put b");
        layout.put_tag(&b, "latest").expect("retag");
        let index = layout.read_index().expect("read");
        assert_eq!(index.schema_version, 2);
        assert_eq!(index.media_type, INDEX_MEDIA_TYPE);
        assert_eq!(index.manifests.len(), 2);
        assert_eq!(index.find("latest").map(|d| &d.digest), Some(&b.digest));
        assert_eq!(index.find("v2").map(|d| &d.digest), Some(&b.digest));
        assert!(index.find("v1").is_none());
        let layout_file = std::fs::read_to_string(dir.path().join(LAYOUT_FILE)).expect("layout");
        assert_eq!(layout_file, LAYOUT_CONTENT);
        assert!(!dir.path().join("index.json.lock").exists());
    }

    #[test]
    fn an_index_never_names_a_missing_or_short_blob() {
        let dir = tempfile::tempdir().expect("dir");
        let layout = Layout::new(dir.path());
        let err = layout.put_tag(&desc(b"absent"), "latest").unwrap_err();
        assert!(err.to_string().contains("no such file"), "{err}");
        put_blob(&layout, b"short");
        let mut d = desc(b"short");
        d.size += 1;
        let err = layout.put_tag(&d, "latest").unwrap_err();
        assert!(err.to_string().contains("descriptor says"), "{err}");
        assert!(!layout.index_path().exists());
    }

    #[test]
    fn image_names_keep_the_full_name_and_tag_the_reference() {
        assert_eq!(reference_name("docker.io/library/app:v1"), "v1");
        assert_eq!(reference_name("localhost:5000/team/app:main"), "main");
        assert_eq!(reference_name("reg/app@sha256:ab"), "@sha256:ab");
        assert_eq!(reference_name("app:v1"), "app:v1");
        assert_eq!(reference_name("reg/app"), "");
        let mut index = Index::default();
        let (a, b) = (desc(b"a"), desc(b"b"));
        index.set_name(&a, &IndexName::Image("docker.io/library/app:v1".into()));
        index.set_name(&a, &IndexName::Tag("v1".into()));
        index.set_name(&b, &IndexName::Image("docker.io/library/app:v1".into()));
        assert_eq!(index.manifests.len(), 2, "{index:?}");
        assert_eq!(
            index.find("docker.io/library/app:v1"),
            Some(&index.manifests[1])
        );
        assert_eq!(index.manifests[1].digest, b.digest);
        assert_eq!(index.manifests[1].annotations[REF_NAME], "v1");
    }

    #[test]
    fn unknown_fields_survive_a_rewrite() {
        let dir = tempfile::tempdir().expect("dir");
        let layout = Layout::new(dir.path());
        let d = desc(b"x");
        put_blob(&layout, b"x");
        std::fs::write(
            layout.index_path(),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"digest":"{}","size":1,"platform":{{"os":"linux"}},"annotations":{{"io.containerd.image.name":"reg/app:latest","org.opencontainers.image.ref.name":"latest"}}}}],"annotations":{{"k":"v"}}}}"#,
                d.digest
            ),
        )
        .expect("index");
        layout.put_tag(&d, "latest").expect("put");
        let index = layout.read_index().expect("read");
        assert_eq!(index.manifests.len(), 2, "named images keep their entry");
        assert_eq!(index.manifests[0].other["platform"]["os"], "linux");
        assert_eq!(index.other["annotations"]["k"], "v");
        assert_eq!(
            index.find("reg/app:latest").map(|m| m.size),
            Some(1),
            "image names are found first"
        );
    }
}
