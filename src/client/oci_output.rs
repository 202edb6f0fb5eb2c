//! `--output type=oci|docker,dest=DIR,tar=false`: the image as an OCI
//! layout directory. The daemon writes its blobs through the session's
//! content store named `export`; after a successful build the client names
//! the image's root descriptor in `DIR/index.json`, as buildctl does.

use std::collections::HashMap;
use std::path::PathBuf;

use base64::Engine;

use super::solve::ExportSpec;
use crate::error::{io_reason, Error, Result};
use crate::oci_layout::{Descriptor, IndexName, Layout};
use crate::session::filesend::OutputTarget;

/// The content store id the daemon's oci/docker exporters write to.
pub const STORE_ID: &str = "export";
const DESCRIPTOR_KEY: &str = "containerimage.descriptor";
const IMAGE_NAME_KEY: &str = "image.name";

/// Whether an export writes a layout directory rather than a file.
pub fn is_layout(export: &ExportSpec) -> bool {
    matches!(export.kind.as_str(), "oci" | "docker")
        && matches!(export.target, Some(OutputTarget::Dir(_)))
}

/// The layout directory of this build, if any; created up front.
#[derive(Debug)]
pub struct LayoutOutput {
    pub dir: PathBuf,
}

pub fn prepare(exports: &[ExportSpec]) -> Result<Option<LayoutOutput>> {
    let mut dirs = exports
        .iter()
        .filter(|e| is_layout(e))
        .filter_map(|e| match &e.target {
            Some(OutputTarget::Dir(d)) => Some(d.clone()),
            _ => None,
        });
    let Some(dir) = dirs.next() else {
        return Ok(None);
    };
    if dirs.next().is_some() {
        return Err(Error::Usage(
            "only one --output of type oci or docker can have tar=false".into(),
        ));
    }
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::Input(format!(
            "cannot write output {}: {}",
            crate::text::escape_path(&dir),
            io_reason(&e)
        ))
    })?;
    Ok(Some(LayoutOutput { dir }))
}

impl LayoutOutput {
    /// Names the exported image in `index.json`: by each name the exporter
    /// reports, or as `latest`.
    pub fn record(&self, exporter_response: &HashMap<String, String>) -> Result<()> {
        let fail = |reason: String| {
            Error::OutputWrite(format!(
                "cannot write output {}: {reason}",
                crate::text::escape_path(&self.dir)
            ))
        };
        let encoded = exporter_response
            .get(DESCRIPTOR_KEY)
            .ok_or_else(|| fail("buildkitd returned no image descriptor".into()))?;
        let json = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| fail(format!("unreadable image descriptor: {e}")))?;
        let desc: Descriptor = serde_json::from_slice(&json)
            .map_err(|e| fail(format!("unreadable image descriptor: {e}")))?;
        let names: Vec<IndexName> = match exporter_response.get(IMAGE_NAME_KEY) {
            Some(n) if !n.is_empty() => n
                .split(',')
                .map(|n| IndexName::Image(n.to_string()))
                .collect(),
            _ => vec![IndexName::Tag("latest".into())],
        };
        Layout::new(&self.dir)
            .put(&desc, &names)
            .map_err(|e| fail(e.to_string()))
    }
}
