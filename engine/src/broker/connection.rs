//! One client connection: framed requests in, responses out in the same order.
//!
//! Kafka clients pipeline (librdkafka keeps up to 5 produce requests in flight per
//! connection). The reader reads frames and starts each request as its own task; the writer
//! sends the responses in request order. At most `max_in_flight_per_connection` requests run
//! at once, and before reading a large frame the reader waits for its size to fit in the
//! core's request budget (`request_memory_bytes`, shared by all its connections): together
//! they bound the memory requests take. Large frames are read into reused buffers
//! (`shardlog_protocol::buffers`).

use std::os::fd::AsRawFd;
use std::rc::Rc;

use futures_lite::FutureExt;
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use shardlog_protocol::buffers::POOLED_MIN_BYTES;
use shardlog_protocol::frame::{read_frame_size, FrameError};

use super::api::{self, Reply};
use super::shard::Shard;
use super::zero_copy;

/// Serves one connection until the client closes it, it misbehaves, or the broker stops.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "unknown".to_string(), |address| address.to_string());
    let _ = stream.set_nodelay(true);
    let socket_fd = stream.as_raw_fd();
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let config = &shard.shared.config;
    let (in_flight, replies) = local_channel::new_bounded(config.max_in_flight_per_connection);

    let writer_task = {
        let peer = peer.clone();
        glommio::spawn_local(async move {
            while let Some(task) = replies.recv().await {
                let reply: Reply = task.await;
                match reply {
                    Reply::Send(chunks) => {
                        let sent =
                            zero_copy::write_chunks_to_socket(&mut writer, socket_fd, &chunks)
                                .await;
                        if let Err(error) = sent {
                            tracing::debug!(%peer, %error, "write failed; closing");
                            break;
                        }
                    }
                    Reply::Nothing => {}
                    Reply::Close(why) => {
                        tracing::info!(%peer, why, "closing connection");
                        break;
                    }
                }
            }
            let _ = futures_lite::AsyncWriteExt::close(&mut writer).await;
        })
    };

    loop {
        let read = async {
            let size = match read_frame_size(&mut reader, config.max_request_bytes).await {
                Ok(Some(size)) => size,
                Ok(None) => return Some(Ok(None)),
                Err(error) => return Some(Err(error)),
            };
            // Small frames (fetches, heartbeats, metadata) skip the budget: they are bounded
            // by the in-flight limit, and a follower's fetch must never wait behind the
            // produce requests that wait for it to replicate them.
            let share = match size >= POOLED_MIN_BYTES {
                true => Some(shard.request_budget.reserve(size).await?),
                false => None,
            };
            let body = shard.request_buffers.read_exact(&mut reader, size).await;
            Some(
                body.map(|frame| Some((frame, share)))
                    .map_err(FrameError::from),
            )
        }
        .or(async {
            shard.shared.shutdown_requested().await;
            None
        })
        .await;
        let (frame, share) = match read {
            None => break,
            Some(Ok(Some(read))) => read,
            Some(Ok(None)) => break,
            // The size prefix arrived but the stream ended inside the frame.
            Some(Err(FrameError::Io(error)))
                if error.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                tracing::info!(%peer, "truncated frame; closing connection");
                break;
            }
            Some(Err(FrameError::Io(error))) => {
                tracing::debug!(%peer, %error, "read failed; closing");
                break;
            }
            Some(Err(error)) => {
                tracing::warn!(%peer, %error, "bad frame; closing connection");
                break;
            }
        };
        let handled = api::handle(Rc::clone(&shard), frame);
        let task = glommio::spawn_local(async move {
            let reply = handled.await;
            // The request is answered: its bytes leave the budget.
            drop(share);
            reply
        });
        if in_flight.send(task).await.is_err() {
            break; // the writer stopped (write error or Close)
        }
    }
    drop(in_flight);
    writer_task.await;
}
