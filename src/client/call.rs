//! A frontend subrequest (`--call check|outline|targets`): the build is
//! opened with no frontend, and bkd drives it through the gateway API
//! (LLBBridge) on the same connection, as buildx does. The frontend
//! answers in the result's metadata (`result.json`, `result.txt`,
//! `result.statuscode`), which a plain Solve would drop.

use std::collections::HashMap;

use tonic::transport::Channel;

use crate::proto::moby::buildkit::v1::frontend::llb_bridge_client::LlbBridgeClient;
use crate::proto::moby::buildkit::v1::frontend::{
    Result as GatewayResult, ReturnRequest, SolveRequest,
};

/// The metadata header that ties a gateway call to its build.
const BUILD_ID_HEADER: &str = "buildkit-controlapi-buildid";

/// The frontend capability that lets a subrequest pass through.
const SUBREQUEST_CAP: &str = "moby.buildkit.frontend.subrequests+forward";

/// The frontend options for subrequest `name` (e.g. `lint`).
pub fn subrequest_opts(attrs: &HashMap<String, String>, name: &str) -> HashMap<String, String> {
    let mut opts = attrs.clone();
    opts.insert("requestid".into(), format!("frontend.{name}"));
    let caps = match opts.get("frontend.caps") {
        Some(c) if !c.is_empty() => format!("{c},{SUBREQUEST_CAP}"),
        _ => SUBREQUEST_CAP.to_string(),
    };
    opts.insert("frontend.caps".into(), caps);
    opts
}

fn with_build_id<T>(message: T, build_ref: &str) -> Result<tonic::Request<T>, tonic::Status> {
    let mut request = tonic::Request::new(message);
    let value = build_ref
        .parse()
        .map_err(|_| tonic::Status::invalid_argument("build id is not a valid header value"))?;
    request.metadata_mut().insert(BUILD_ID_HEADER, value);
    Ok(request)
}

/// Runs the subrequest on the build `build_ref` (whose Control.Solve must
/// be under way) and ends that build; returns the result's metadata.
pub async fn run(
    mut bridge: LlbBridgeClient<Channel>,
    build_ref: &str,
    frontend: &str,
    opts: HashMap<String, String>,
) -> Result<HashMap<String, Vec<u8>>, tonic::Status> {
    let solve = SolveRequest {
        frontend: frontend.to_string(),
        frontend_opt: opts,
        allow_result_return: true,
        allow_result_array_ref: true,
    };
    let answer = match with_build_id(solve, build_ref) {
        Ok(request) => bridge.solve(request).await,
        Err(status) => Err(status),
    };
    // The build ends only when told; end it whatever the answer was.
    let returned = with_build_id(
        ReturnRequest {
            result: Some(GatewayResult::default()),
        },
        build_ref,
    );
    let returned = match returned {
        Ok(request) => bridge.r#return(request).await.map(drop),
        Err(status) => Err(status),
    };
    let metadata = answer?
        .into_inner()
        .result
        .map(|r| {
            r.metadata
                .into_iter()
                .map(|(k, v)| (k, v.to_vec()))
                .collect()
        })
        .unwrap_or_default();
    returned?;
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subrequest_options_add_the_request_and_capability() {
        let mut attrs = HashMap::new();
        attrs.insert("filename".to_string(), "Dockerfile".to_string());
        let opts = subrequest_opts(&attrs, "lint");
        assert_eq!(opts["requestid"], "frontend.lint");
        assert_eq!(opts["frontend.caps"], SUBREQUEST_CAP);
        attrs.insert("frontend.caps".into(), "x".into());
        assert_eq!(
            subrequest_opts(&attrs, "outline")["frontend.caps"],
            format!("x,{SUBREQUEST_CAP}")
        );
    }
}
