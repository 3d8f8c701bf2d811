//! Generated gRPC code for modelgate's protocols. Nothing hand-written lives
//! here but the module tree and the codec the services use ([`bounded`]).

pub mod bounded;

/// `modelgate.v1`: the Predict service and its messages.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("modelgate.v1");

    /// Encoded `FileDescriptorSet` of every modelgate proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("modelgate_descriptor");
}

/// `inference`: the KServe v2 / Open Inference Protocol gRPC service.
pub mod inference {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("inference");

    /// Encoded `FileDescriptorSet` of the KServe v2 proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("inference_descriptor");
}
