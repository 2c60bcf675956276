//! raft-rs logs through `slog`; the broker logs through `tracing`. This drain forwards one to
//! the other under the target `raft`, with raft's `info` (elections, term changes, every
//! role change) lowered to `debug`: the quorum logs the changes that matter itself.

use std::fmt::Write as _;

use tracing::Level;

/// A `slog` drain that writes to `tracing`.
pub struct TracingDrain;

/// Collects a record's key-value pairs as ` key=value` text.
struct KeyValues(String);

impl slog::Serializer for KeyValues {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

fn tracing_level(level: slog::Level) -> Level {
    match level {
        slog::Level::Critical | slog::Level::Error => Level::ERROR,
        slog::Level::Warning => Level::WARN,
        slog::Level::Info => Level::DEBUG,
        slog::Level::Debug | slog::Level::Trace => Level::TRACE,
    }
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let level = tracing_level(record.level());
        let enabled = match level {
            Level::ERROR => tracing::enabled!(target: "raft", Level::ERROR),
            Level::WARN => tracing::enabled!(target: "raft", Level::WARN),
            Level::DEBUG => tracing::enabled!(target: "raft", Level::DEBUG),
            _ => tracing::enabled!(target: "raft", Level::TRACE),
        };
        if !enabled {
            return Ok(());
        }
        let mut pairs = KeyValues(String::new());
        let _ = slog::KV::serialize(&record.kv(), record, &mut pairs);
        let _ = slog::KV::serialize(values, record, &mut pairs);
        let message = record.msg();
        let pairs = pairs.0;
        match level {
            Level::ERROR => tracing::error!(target: "raft", "{message}{pairs}"),
            Level::WARN => tracing::warn!(target: "raft", "{message}{pairs}"),
            Level::DEBUG => tracing::debug!(target: "raft", "{message}{pairs}"),
            _ => tracing::trace!(target: "raft", "{message}{pairs}"),
        }
        Ok(())
    }
}

/// The logger handed to raft for one node.
pub fn raft_logger(raft_id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("raft_id" => raft_id))
}
