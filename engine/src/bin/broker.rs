//! `broker`: a shardlog broker that speaks the Kafka wire protocol.
//!
//! Settings come from defaults, then an optional TOML file (`--config`), then flags (see
//! `shardlog::broker::cli`). SIGTERM or SIGINT shuts it down cleanly: connections finish,
//! logs are flushed and sealed.

use std::process::ExitCode;

use shardlog_protocol::decode_guard::ReservingAllocator;

/// Hostile array lengths in requests must not abort the process: see `decode_guard`.
#[global_allocator]
static ALLOCATOR: ReservingAllocator = ReservingAllocator;

fn main() -> ExitCode {
    shardlog::broker::cli::main_from(std::env::args_os())
}
