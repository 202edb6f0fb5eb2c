//! Typed calls to buildkitd's Control service.

pub mod call;
pub mod errdetails;
pub mod history;
pub mod local_cache;
pub mod oci_output;
pub mod solve;
pub mod status;

use tonic::transport::Channel;

use crate::error::{Error, Result};
use crate::proto::moby::buildkit::v1::control_client::ControlClient;
use crate::proto::moby::buildkit::v1::frontend::llb_bridge_client::LlbBridgeClient;
use crate::proto::moby::buildkit::v1::{InfoRequest, ListWorkersRequest};
use crate::transport::{connect, Address, TlsOptions};

/// One worker of the daemon.
#[derive(Debug, Clone)]
pub struct Worker {
    pub id: String,
    pub platforms: Vec<String>,
    pub labels: Vec<(String, String)>,
    /// The platforms as (os, architecture, variant).
    pub platform_parts: Vec<(String, String, String)>,
    pub gc_policy: Vec<GcRule>,
    pub version: BuildkitVersion,
}

/// One garbage-collection rule of a worker.
#[derive(Debug, Clone, Default)]
pub struct GcRule {
    pub all: bool,
    pub filters: Vec<String>,
    /// Nanoseconds.
    pub keep_duration: i64,
    pub reserved_space: i64,
    pub max_used_space: i64,
    pub min_free_space: i64,
}

/// The BuildKit a worker runs.
#[derive(Debug, Clone, Default)]
pub struct BuildkitVersion {
    pub package: String,
    pub version: String,
    pub revision: String,
    pub dockerfile_version: String,
}

/// A connected daemon.
#[derive(Debug, Clone)]
pub struct Daemon {
    control: ControlClient<Channel>,
    bridge: LlbBridgeClient<Channel>,
    addr: String,
}

fn daemon_error(addr: &str, what: &str, status: &tonic::Status) -> Error {
    Error::Daemon(format!(
        "buildkitd at {}: {what} failed: {}",
        crate::text::escape_str(addr),
        crate::text::one_line(status.message())
    ))
}

impl Daemon {
    pub async fn connect(addr: &Address, tls: &TlsOptions) -> Result<Daemon> {
        let channel = connect(addr, tls).await?;
        let control = ControlClient::new(channel.clone())
            .max_decoding_message_size(crate::transport::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(crate::transport::MAX_MESSAGE_SIZE);
        let bridge = LlbBridgeClient::new(channel)
            .max_decoding_message_size(crate::transport::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(crate::transport::MAX_MESSAGE_SIZE);
        Ok(Daemon {
            control,
            bridge,
            addr: addr.to_string(),
        })
    }

    pub fn control(&self) -> ControlClient<Channel> {
        self.control.clone()
    }

    /// The gateway API on the same connection, for frontend subrequests.
    pub fn bridge(&self) -> LlbBridgeClient<Channel> {
        self.bridge.clone()
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub async fn workers(&self) -> Result<Vec<Worker>> {
        self.workers_matching(Vec::new()).await
    }

    /// The workers matching containerd-style `filter`s (all when empty).
    pub async fn workers_matching(&self, filter: Vec<String>) -> Result<Vec<Worker>> {
        let resp = self
            .control
            .clone()
            .list_workers(ListWorkersRequest { filter })
            .await
            .map_err(|s| daemon_error(&self.addr, "listing workers", &s))?;
        Ok(resp
            .into_inner()
            .record
            .into_iter()
            .map(|w| {
                let mut labels: Vec<_> = w.labels.into_iter().collect();
                labels.sort();
                Worker {
                    id: w.id,
                    platforms: w
                        .platforms
                        .iter()
                        .map(|p| {
                            let mut s = format!("{}/{}", p.os, p.architecture);
                            if !p.variant.is_empty() {
                                s = format!("{s}/{}", p.variant);
                            }
                            s
                        })
                        .collect(),
                    labels,
                    platform_parts: w
                        .platforms
                        .iter()
                        .map(|p| (p.os.clone(), p.architecture.clone(), p.variant.clone()))
                        .collect(),
                    gc_policy: w
                        .gc_policy
                        .iter()
                        .map(|g| GcRule {
                            all: g.all,
                            filters: g.filters.clone(),
                            keep_duration: g.keep_duration,
                            reserved_space: g.reserved_space,
                            max_used_space: g.max_used_space,
                            min_free_space: g.min_free_space,
                        })
                        .collect(),
                    version: w
                        .buildkit_version
                        .map(|v| BuildkitVersion {
                            package: v.package,
                            version: v.version,
                            revision: v.revision,
                            dockerfile_version: v.dockerfile_version,
                        })
                        .unwrap_or_default(),
                }
            })
            .collect())
    }

    /// The daemon's version, e.g. `v0.32.2`.
    pub async fn version(&self) -> Result<String> {
        let resp = self
            .control
            .clone()
            .info(InfoRequest::default())
            .await
            .map_err(|s| daemon_error(&self.addr, "asking for its version", &s))?;
        Ok(resp
            .into_inner()
            .buildkit_version
            .map(|v| v.version)
            .unwrap_or_default())
    }
}
