//! Generated protocol code, mounted in one module tree. Nothing hand-written.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod pb {
    tonic::include_proto!("pb");
}

pub mod fsutil {
    pub mod types {
        tonic::include_proto!("fsutil.types");
    }
}

pub mod moby {
    pub mod buildkit {
        pub mod v1 {
            tonic::include_proto!("moby.buildkit.v1");
            pub mod types {
                tonic::include_proto!("moby.buildkit.v1.types");
            }
            pub mod frontend {
                tonic::include_proto!("moby.buildkit.v1.frontend");
            }
        }
        pub mod secrets {
            pub mod v1 {
                tonic::include_proto!("moby.buildkit.secrets.v1");
            }
        }
    }
    pub mod filesync {
        pub mod v1 {
            tonic::include_proto!("moby.filesync.v1");
        }
    }
    pub mod sshforward {
        pub mod v1 {
            tonic::include_proto!("moby.sshforward.v1");
        }
    }
}

pub mod containerd {
    pub mod services {
        pub mod content {
            pub mod v1 {
                tonic::include_proto!("containerd.services.content.v1");
            }
        }
    }
}

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

pub mod grpc {
    pub mod health {
        pub mod v1 {
            tonic::include_proto!("grpc.health.v1");
        }
    }
}
