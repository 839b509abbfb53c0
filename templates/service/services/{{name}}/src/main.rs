//! `{{name}}`: loads settings, starts telemetry, runs until Ctrl-C or SIGTERM.

use anyhow::Context;
use spine_{{name}}::Application;
use spine_{{name}}::settings::Settings;

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
