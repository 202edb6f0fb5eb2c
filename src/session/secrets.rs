//! Secrets: values for `RUN --mount=type=secret,id=ID`, served by id.
//! [`SecretValue`] never prints its content.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::proto::moby::buildkit::secrets::v1::secrets_server::{Secrets, SecretsServer};
use crate::proto::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};

#[derive(Clone, Default)]
pub struct SecretValue(pub Vec<u8>);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

#[derive(Debug, Default)]
pub struct SecretsService {
    values: Arc<HashMap<String, SecretValue>>,
}

pub fn server(values: HashMap<String, SecretValue>) -> SecretsServer<SecretsService> {
    SecretsServer::new(SecretsService {
        values: Arc::new(values),
    })
}

#[tonic::async_trait]
impl Secrets for SecretsService {
    async fn get_secret(
        &self,
        req: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let id = req.into_inner().id;
        match self.values.get(&id) {
            Some(v) => Ok(Response::new(GetSecretResponse {
                data: v.0.clone().into(),
            })),
            None => Err(Status::not_found(format!("secret {id} not found"))),
        }
    }
}
