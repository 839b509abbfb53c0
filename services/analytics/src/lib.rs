//! The analytics service: consumes every fact and keeps aggregates idempotently in its own
//! database: counts per event type and order status, confirmed revenue per currency, orders per
//! minute, and the time from OrderPlaced to its outcome (p50, p99). Served at `GET /stats`.
//!
//! # Layout
//! - [`settings`]: the service's settings;
//! - [`store`]: the aggregates and their once-per-fact updates;
//! - [`reactions`]: the consumer of every topic;
//! - [`Application`]: builds everything and runs it under one supervisor.

pub mod reactions;
pub mod settings;
pub mod store;

use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use spine_kit::kafka::Publisher;
use spine_kit::kafka::consumer::{Batched, ConsumerRunner};
use spine_kit::shutdown::Supervisor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::reactions::Aggregator;
use crate::settings::Settings;
use crate::store::AnalyticsStore;

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    store: AnalyticsStore,
    publisher: Publisher,
    minutes_shown: u32,
}

/// The service, built and bound, not yet running.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    runner: ConsumerRunner<Batched<Aggregator>>,
    shutdown_timeout: Duration,
}

impl Application {
    /// Connects and migrates the database, provisions topics, binds the port.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Before anything is encoded: the framing, and the registry's ids when it is used.
        spine_kit::schemas::init(&settings.schemas)
            .await
            .context("making the event schemas known (schemas.*)")?;
        let (pool, backend) = spine_kit::db::connect(&settings.database)
            .await
            .context("connecting the database (database.url)")?;
        let group = settings.analytics.consumer_group.as_str();
        // The consumer writes through a pool of its own, so that /stats and the readiness
        // probe never wait for a connection behind it.
        let spine_pool = spine_kit::db::connect_spine(&settings.database, &pool)
            .await
            .context("connecting the consumers' database pool (database.url)")?;
        let store = AnalyticsStore::new(pool, backend, group)
            .await
            .context("migrating the analytics schema")?;
        let spine_store = AnalyticsStore::new(spine_pool, backend, group)
            .await
            .context("opening the analytics store for the consumer")?;
        let kafka = &settings.kafka;
        let topics: Vec<&str> = topics();
        let runner = ConsumerRunner::new(
            kafka,
            group,
            &topics,
            Batched::new(Aggregator::new(spine_store)),
        )?;
        let mut provisioned = topics.clone();
        provisioned.push(runner.dlq_topic());
        spine_kit::kafka::provision(kafka, &provisioned).await?;
        let listener = spine_kit::http::bind(&settings.http.host, settings.http.port).await?;
        Ok(Self {
            listener,
            state: AppState {
                store,
                publisher: Publisher::new(kafka, "analytics")?,
                minutes_shown: settings.analytics.minutes_shown,
            },
            runner,
            shutdown_timeout: kafka.consumer.shutdown_timeout + Duration::from_secs(5),
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    /// Serves HTTP and consumes until `token` is cancelled or either fails.
    pub async fn run_until_stopped(self, token: CancellationToken) -> anyhow::Result<()> {
        let mut supervisor = Supervisor::new(token);
        let health = spine_kit::http::health_router(
            self.state.store.pool().clone(),
            self.state.publisher.inner().clone(),
        );
        let app = Router::new()
            .route("/stats", get(stats))
            .merge(health)
            .with_state(self.state)
            .merge(spine_kit::telemetry::metrics_router())
            .layer(axum::middleware::from_fn(spine_kit::http::observe));
        supervisor.spawn_http(self.listener, app);
        let stop = supervisor.token();
        let runner = self.runner;
        supervisor.spawn("consumer", async move {
            runner.run(stop).await.map_err(Into::into)
        });
        supervisor
            .run(self.shutdown_timeout)
            .await
            .map_err(Into::into)
    }
}

/// Every topic with facts: the catalog's topics.
fn topics() -> Vec<&'static str> {
    let mut topics: Vec<&'static str> = spine_events::catalog()
        .entries()
        .iter()
        .map(|e| e.topic())
        .collect();
    topics.sort_unstable();
    topics.dedup();
    topics
}

async fn stats(State(state): State<AppState>) -> Response {
    match state.store.stats(state.minutes_shown).await {
        Ok(stats) => Json(stats).into_response(),
        Err(err) => stats_error(&err),
    }
}

/// A failed read of the aggregates: 503 with `Retry-After` while the database is down (clients
/// and load balancers back off and retry), 500 otherwise.
fn stats_error(err: &sqlx::Error) -> Response {
    use axum::http::StatusCode;
    if spine_kit::db::is_outage(err) {
        tracing::warn!(error = %err, "cannot read the aggregates: database unavailable");
        spine_kit::http::unavailable_response("the service is temporarily unavailable")
    } else {
        tracing::error!(error = %err, "cannot read the aggregates");
        spine_kit::http::error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{StatusCode, header};

    use super::*;

    #[test]
    fn a_database_outage_answers_503_with_retry_after_and_other_failures_500() {
        let outage = stats_error(&sqlx::Error::PoolTimedOut);
        assert_eq!(outage.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(outage.headers().contains_key(header::RETRY_AFTER));
        let failure = stats_error(&sqlx::Error::RowNotFound);
        assert_eq!(failure.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
