//! Running engine code on a glommio executor.
//!
//! Every engine type is single-core (`!Send`) and must run inside a glommio `LocalExecutor`.
//! glommio registers `io_memory_bytes` of locked memory per executor for its DMA buffer pool,
//! so a process needs RLIMIT_MEMLOCK above that (root, or `ulimit -l`), see the README.

use glommio::LocalExecutorBuilder;

/// glommio's default of 10 MiB is above the common 8 MiB memlock limit; 4 MiB keeps a
/// non-root test run working, and larger chunks fall back to ordinary aligned allocations.
pub const IO_MEMORY_BYTES_DEFAULT: usize = 4 << 20;

/// Runs `future` to completion on a fresh single-threaded executor on this thread.
///
/// # Panics
/// If the executor cannot be created (no io_uring, or memlock too low for `io_memory_bytes`):
/// the message says which.
pub fn run_local<T>(io_memory_bytes: usize, future: impl std::future::Future<Output = T>) -> T {
    let executor = LocalExecutorBuilder::default()
        .io_memory(io_memory_bytes)
        .make()
        .unwrap_or_else(|error| {
            panic!(
                "cannot start a glommio executor ({error}); io_uring must be enabled and \
                 RLIMIT_MEMLOCK must exceed {io_memory_bytes} bytes (see README: memlock)"
            )
        });
    executor.run(future)
}
