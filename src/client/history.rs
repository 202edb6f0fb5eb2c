//! The daemon's build history, for the one question a router asks: how
//! many builds is this daemon running now.

use tokio_stream::StreamExt;

use super::Daemon;
use crate::error::{Error, Result};
use crate::proto::moby::buildkit::v1::{BuildHistoryEventType, BuildHistoryRequest};

impl Daemon {
    /// The builds running on the daemon now (history records without a
    /// completion time).
    pub async fn active_builds(&self) -> Result<usize> {
        let fail = |s: tonic::Status| {
            Error::Daemon(format!(
                "buildkitd at {}: listing its active builds failed: {}",
                self.addr(),
                s.message()
            ))
        };
        let mut stream = self
            .control()
            .listen_build_history(BuildHistoryRequest {
                active_only: true,
                early_exit: true,
                ..Default::default()
            })
            .await
            .map_err(fail)?
            .into_inner();
        let mut running = std::collections::HashSet::new();
        while let Some(event) = stream.next().await {
            let event = event.map_err(fail)?;
            let kind = event.r#type();
            let Some(record) = event.record else { continue };
            match kind {
                BuildHistoryEventType::Started if record.completed_at.is_none() => {
                    running.insert(record.r#ref);
                }
                _ => {
                    running.remove(&record.r#ref);
                }
            }
        }
        Ok(running.len())
    }
}
