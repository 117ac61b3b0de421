//! Calling the roles: one shared tonic channel per role and a codec over
//! prost-reflect messages, so any RPC is callable without generated stubs.

use std::{collections::HashMap, time::Duration};

use blaze_kit::Config;
use blaze_proto::catalog::MethodSpec;
use bytes::{Buf, BufMut};
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataMap,
    transport::{Channel, Endpoint},
};

pub const ROLES: [&str; 5] = ["identity", "control-plane", "orchestrator", "execution", "artifacts"];

#[derive(Clone)]
pub struct Upstreams {
    channels: HashMap<&'static str, Channel>,
    authorities: HashMap<&'static str, String>,
}

impl Upstreams {
    /// Channels are lazy: nothing connects until the first call.
    pub fn new(cfg: &Config) -> anyhow::Result<Upstreams> {
        let mut channels = HashMap::new();
        let mut authorities = HashMap::new();
        for role in ROLES {
            let url = cfg.upstream_url(role);
            let endpoint = Endpoint::from_shared(url.clone())?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_while_idle(true)
                .initial_connection_window_size(Some(4 << 20))
                .initial_stream_window_size(Some(1 << 20));
            channels.insert(role, endpoint.connect_lazy());
            let uri: http::Uri = url.parse()?;
            authorities.insert(role, uri.authority().map(|a| a.to_string()).unwrap_or_default());
        }
        Ok(Upstreams { channels, authorities })
    }

    pub fn channel(&self, role: &str) -> Channel {
        self.channels[role].clone()
    }

    /// `host:port` of a role (for proxying native gRPC).
    pub fn authority(&self, role: &str) -> &str {
        &self.authorities[role]
    }

    /// The role serving a gRPC path (`/pkg.Service/Method`); health and
    /// reflection go to the control-plane (every role serves all descriptors).
    pub fn role_for_path(path: &str) -> &'static str {
        let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
        blaze_proto::role_for_service(service).unwrap_or("control-plane")
    }
}

#[derive(Clone)]
pub struct DynamicCodec {
    response: MessageDescriptor,
}

pub struct DynEncoder;
pub struct DynDecoder(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynEncoder;
    type Decoder = DynDecoder;
    fn encoder(&mut self) -> DynEncoder {
        DynEncoder
    }
    fn decoder(&mut self) -> DynDecoder {
        DynDecoder(self.response.clone())
    }
}

impl Encoder for DynEncoder {
    type Item = DynamicMessage;
    type Error = Status;
    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst).map_err(|e| Status::internal(e.to_string()))?;
        let _ = dst.remaining_mut();
        Ok(())
    }
}

impl Decoder for DynDecoder {
    type Item = DynamicMessage;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        let mut msg = DynamicMessage::new(self.0.clone());
        msg.merge(src.copy_to_bytes(src.remaining())).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Some(msg))
    }
}

fn path(spec: &MethodSpec) -> Result<http::uri::PathAndQuery, Status> {
    http::uri::PathAndQuery::try_from(spec.path.as_str()).map_err(|e| Status::internal(e.to_string()))
}

pub async fn unary(
    channel: Channel,
    spec: &MethodSpec,
    msg: DynamicMessage,
    metadata: MetadataMap,
    timeout: Duration,
) -> Result<DynamicMessage, Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(blaze_kit::grpc::MAX_MESSAGE_BYTES);
    grpc.ready().await.map_err(|e| Status::unavailable(format!("upstream unavailable: {e}")))?;
    let mut request = tonic::Request::new(msg);
    *request.metadata_mut() = metadata;
    request.set_timeout(timeout);
    let codec = DynamicCodec { response: spec.descriptor.output() };
    Ok(grpc.unary(request, path(spec)?, codec).await?.into_inner())
}

pub async fn server_streaming(
    channel: Channel,
    spec: &MethodSpec,
    msg: DynamicMessage,
    metadata: MetadataMap,
) -> Result<tonic::Streaming<DynamicMessage>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(blaze_kit::grpc::MAX_MESSAGE_BYTES);
    grpc.ready().await.map_err(|e| Status::unavailable(format!("upstream unavailable: {e}")))?;
    let mut request = tonic::Request::new(msg);
    *request.metadata_mut() = metadata;
    let codec = DynamicCodec { response: spec.descriptor.output() };
    Ok(grpc.server_streaming(request, path(spec)?, codec).await?.into_inner())
}
