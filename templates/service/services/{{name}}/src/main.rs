//! `{{name}}`: loads settings, starts telemetry, runs until Ctrl-C or SIGTERM.

use anyhow::Context;
use spine_{{name}}::Application;
use spine_{{name}}::settings::Settings;

/// mimalloc rather than glibc's malloc: with a span, headers and a future per Kafka record,
/// glibc's arenas (their locks, their consolidation) took a third of the kit's CPU per record
/// (README, "Load testing").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = spine_kit::config::load().context("loading settings")?;
    // `<binary> healthcheck`: the container healthcheck (no curl in the image).
    spine_kit::http::healthcheck_subcommand(settings.http.port);
    let _telemetry = spine_kit::telemetry::init_telemetry(
        "{{name}}",
        env!("CARGO_PKG_VERSION"),
        &settings.telemetry,
    )?;
    let app = Application::build(settings).await?;
    tracing::info!(port = app.port(), "{{name}} listening");
    app.run_until_stopped(spine_kit::shutdown::token_on_signal())
        .await
}
