//! `spike`: see the crate docs and `tools/spike/README.md`.

use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: with a span, headers and a future per Kafka record,
/// glibc's arenas (their locks, their consolidation) took a third of the kit's CPU per record
/// (README, "Load testing").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Ctrl-C or SIGTERM stops the load early; the report of what was measured still prints.
    let cancel = spine_kit::shutdown::token_on_signal();
    ExitCode::from(spine_spike::execute(std::env::args_os(), cancel).await)
}
