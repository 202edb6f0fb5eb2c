//! Typed calls to buildkitd's Control service.

pub mod local_cache;
pub mod oci_output;
pub mod solve;
pub mod status;

use tonic::transport::Channel;

use crate::error::{Error, Result};
use crate::proto::moby::buildkit::v1::control_client::ControlClient;
use crate::proto::moby::buildkit::v1::{InfoRequest, ListWorkersRequest};
use crate::transport::{connect, Address, TlsOptions};

/// One worker of the daemon.
#[derive(Debug, Clone)]
pub struct Worker {
    pub id: String,
    pub platforms: Vec<String>,
    pub labels: Vec<(String, String)>,
}

/// A connected daemon.
#[derive(Debug, Clone)]
pub struct Daemon {
    control: ControlClient<Channel>,
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
        let control = ControlClient::new(channel)
            .max_decoding_message_size(crate::transport::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(crate::transport::MAX_MESSAGE_SIZE);
        Ok(Daemon {
            control,
            addr: addr.to_string(),
        })
    }

    pub fn control(&self) -> ControlClient<Channel> {
        self.control.clone()
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub async fn workers(&self) -> Result<Vec<Worker>> {
        let resp = self
            .control
            .clone()
            .list_workers(ListWorkersRequest::default())
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
