//! Both connections against a stand-in broker on a local socket: the same answers, the same
//! refusals.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::metadata_response::MetadataResponse;
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::*;
use crate::buffers::BufferPool;
use crate::frame::FrameError;

/// What the stand-in broker does with a request.
enum Answer {
    /// A response frame with this header's correlation id plus `shift`, and this body.
    Frame { shift: i32, body: Bytes },
    /// A size prefix announcing this many bytes, and nothing after it.
    SizeOnly(i32),
}

/// Serves one connection: reads each request frame, decodes its header and answers as
/// `answer` says, until the client closes.
fn stand_in_broker(
    answer: impl Fn(&RequestHeader) -> Answer + Send + 'static,
) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let serving = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        loop {
            let mut prefix = [0u8; 4];
            if stream.read_exact(&mut prefix).is_err() {
                return;
            }
            let mut frame = vec![0u8; u32::from_be_bytes(prefix) as usize];
            stream.read_exact(&mut frame).expect("request body");
            let mut frame = Bytes::from(frame);
            let api = ApiKey::try_from(i16::from_be_bytes([frame[0], frame[1]])).expect("api");
            let version = i16::from_be_bytes([frame[2], frame[3]]);
            let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
                .expect("request header");
            let bytes = match answer(&header) {
                Answer::SizeOnly(size) => size.to_be_bytes().to_vec(),
                Answer::Frame { shift, body } => {
                    let mut out = BytesMut::new();
                    out.extend_from_slice(&[0; 4]);
                    ResponseHeader::default()
                        .with_correlation_id(header.correlation_id + shift)
                        .encode(&mut out, api.response_header_version(version))
                        .expect("response header");
                    out.extend_from_slice(&body);
                    let size = (out.len() - 4) as u32;
                    out[..4].copy_from_slice(&size.to_be_bytes());
                    out.to_vec()
                }
            };
            if stream.write_all(&bytes).is_err() {
                return;
            }
        }
    });
    (address, serving)
}

fn encoded<R: Encodable>(message: &R, version: i16) -> Bytes {
    let mut out = BytesMut::new();
    message.encode(&mut out, version).expect("encodes");
    out.freeze()
}

/// Serves Metadata v0..=12 and ApiVersions; answers Metadata with one broker, or as `other`
/// says for a request whose client id is "odd".
fn metadata_broker(other: impl Fn() -> Answer + Send + 'static) -> (String, JoinHandle<()>) {
    stand_in_broker(move |header| {
        if header.client_id.as_deref() == Some("odd") && header.request_api_key != 18 {
            return other();
        }
        match ApiKey::try_from(header.request_api_key).expect("api") {
            ApiKey::ApiVersions => Answer::Frame {
                shift: 0,
                body: encoded(
                    &ApiVersionsResponse::default().with_api_keys(vec![
                        ApiVersion::default()
                            .with_api_key(ApiKey::Metadata as i16)
                            .with_max_version(12),
                        ApiVersion::default()
                            .with_api_key(ApiKey::ApiVersions as i16)
                            .with_max_version(3),
                    ]),
                    header.request_api_version,
                ),
            },
            _ => Answer::Frame {
                shift: 0,
                body: encoded(&one_broker(), header.request_api_version),
            },
        }
    })
}

fn one_broker() -> MetadataResponse {
    MetadataResponse::default().with_brokers(vec![
        kafka_protocol::messages::metadata_response::MetadataResponseBroker::default()
            .with_node_id(BrokerId(7))
            .with_port(9092),
    ])
}

#[test]
fn a_blocking_connection_negotiates_then_calls_at_the_version_picked() {
    let (address, serving) = metadata_broker(|| unreachable!());
    let mut connection = Connection::open(&address, "test", "shardlog-test").expect("opens");
    let version = connection
        .pick_version::<MetadataRequest>(0, 20)
        .expect("a common version");
    assert_eq!(version, 12);
    let answer = connection
        .call(&MetadataRequest::default().with_topics(None), version)
        .expect("answers");
    assert_eq!(answer, one_broker());
    // Pipelined: two frames out before reading either answer.
    let (mut writer, mut reader, next) = connection.split();
    let frame = codec::encode_frame(
        &MetadataRequest::default().with_topics(None),
        version,
        0,
        &kafka_protocol::protocol::StrBytes::from_static_str("test"),
    )
    .expect("encodes");
    for correlation_id in [next, next + 1] {
        let prefix = codec::frame_prefix(&frame, correlation_id);
        writer
            .write_frame(&prefix, &frame[codec::FRAME_PREFIX_BYTES..])
            .expect("sends");
    }
    for correlation_id in [next, next + 1] {
        let answer: MetadataResponse = reader
            .read_response(ApiKey::Metadata, version, correlation_id)
            .expect("answers in order");
        assert_eq!(answer, one_broker());
    }
    writer.shutdown();
    serving.join().expect("stand-in broker");
}

#[test]
fn a_blocking_connection_refuses_an_oversize_frame_and_a_stray_answer() {
    let (address, serving) = metadata_broker(|| Answer::SizeOnly(i32::MAX));
    let mut odd = Connection::connect(&address, "odd", Duration::from_secs(5)).expect("connects");
    let refused = odd.call(&MetadataRequest::default().with_topics(None), 12);
    assert!(
        matches!(
            refused,
            Err(ClientError::FrameSize {
                source: FrameError::TooLarge { .. },
                ..
            })
        ),
        "{refused:?}"
    );
    drop(odd);
    serving.join().expect("stand-in broker");

    let (address, serving) = metadata_broker(|| Answer::Frame {
        shift: 1,
        body: encoded(&one_broker(), 12),
    });
    let mut odd = Connection::connect(&address, "odd", Duration::from_secs(5)).expect("connects");
    let refused = odd.call(&MetadataRequest::default().with_topics(None), 12);
    assert!(
        matches!(refused, Err(ClientError::CorrelationMismatch { .. })),
        "{refused:?}"
    );
    drop(odd);
    serving.join().expect("stand-in broker");
}

/// Runs the future `make` builds on a fresh glommio executor.
fn on_executor<F: std::future::Future<Output = ()> + 'static>(
    make: impl FnOnce() -> F + Send + 'static,
) {
    glommio::LocalExecutorBuilder::default()
        .spawn(make)
        .expect("executor starts")
        .join()
        .expect("executor ends");
}

#[test]
fn the_glommio_connection_speaks_the_same_codec_and_bounds_each_answer() {
    let (address, serving) = metadata_broker(|| unreachable!());
    on_executor(move || async move {
        let buffers = BufferPool::new(1 << 20);
        let mut connection =
            AsyncConnection::connect(&address, "test", Duration::from_secs(5), buffers)
                .await
                .expect("connects");
        connection
            .negotiate("shardlog-test", Duration::from_secs(5))
            .await
            .expect("negotiates");
        let version = connection
            .pick_version::<MetadataRequest>(0, 20)
            .expect("a common version");
        let request = MetadataRequest::default().with_topics(None);
        let answer = connection
            .call(&request, version, 1 << 20, Duration::from_secs(5))
            .await
            .expect("answers");
        assert_eq!(answer, one_broker());
        // The same answer is refused by a call that accepts fewer bytes than it has.
        let refused = connection
            .call(&request, version, 8, Duration::from_secs(5))
            .await;
        assert!(
            matches!(
                refused,
                Err(ClientError::FrameSize {
                    source: FrameError::TooLarge { .. },
                    ..
                })
            ),
            "{refused:?}"
        );
    });
    serving.join().expect("stand-in broker");
}
