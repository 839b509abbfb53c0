//! `spike`: see the crate docs and `tools/spike/README.md`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // Ctrl-C or SIGTERM stops the load early; the report of what was measured still prints.
    let cancel = spine_kit::shutdown::token_on_signal();
    ExitCode::from(spine_spike::execute(std::env::args_os(), cancel).await)
}
