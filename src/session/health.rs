//! gRPC health service: the daemon checks it every few seconds and drops the
//! session when it does not answer, so it answers at once.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::proto::grpc::health::v1::health_check_response::ServingStatus;
use crate::proto::grpc::health::v1::health_server::{Health, HealthServer};
use crate::proto::grpc::health::v1::{HealthCheckRequest, HealthCheckResponse};

#[derive(Debug, Default)]
pub struct HealthService;

pub fn server() -> HealthServer<HealthService> {
    HealthServer::new(HealthService)
}

fn serving() -> HealthCheckResponse {
    HealthCheckResponse {
        status: ServingStatus::Serving as i32,
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        _req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(serving()))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        _req: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // One answer, then the stream stays open as the protocol expects.
        let first = futures_util::stream::once(async { Ok(serving()) });
        Ok(Response::new(Box::pin(
            first.chain(futures_util::stream::pending()),
        )))
    }
}
