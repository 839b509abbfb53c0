//! The orders service: the synchronous edge. `POST /orders` validates, saves the order and its
//! OrderPlaced in one transaction (the outbox) and answers 202 at once; the relay publishes
//! afterwards. It also reacts to inventory's facts by confirming or rejecting orders.
//!
//! # Layout
//! - [`settings`]: the service's settings;
//! - [`domain`]: the request, its validation and the order status;
//! - [`store`]: orders, lines and history, written with their outbox rows;
//! - [`routes`]: the HTTP API, its errors and the health probes (readiness follows the
//!   database, not the broker: the outbox exists to accept orders through a broker outage);
//! - [`reactions`]: the consumer of inventory's facts, a batch handler (one transaction per
//!   batch of a partition's records);
//! - [`Application`]: builds everything and runs it under one supervisor.

pub mod domain;
pub mod reactions;
pub mod routes;
pub mod settings;
pub mod store;

use std::time::Duration;

use anyhow::Context;
use spine_events::Event;
use spine_events::inventory::StockReserved;
use spine_events::orders::OrderPlaced;
use spine_kit::kafka::Publisher;
use spine_kit::kafka::consumer::{Batched, ConsumerRunner};
use spine_kit::outbox::{Outbox, Relay};
use spine_kit::shutdown::Supervisor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::reactions::InventoryReactions;
use crate::settings::Settings;
use crate::store::OrderStore;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Orders and their outbox.
    pub store: OrderStore,
    /// Backlog above which POST answers 503.
    pub max_backlog: i64,
    /// `Retry-After` of that 503.
    pub retry_after_secs: u64,
    /// Largest accepted body.
    pub body_limit: usize,
}

/// The service, built and bound, not yet running.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    relay: Relay,
    runner: ConsumerRunner<Batched<InventoryReactions>>,
    shutdown_timeout: Duration,
}

impl Application {
    /// Connects the database (migrating it), provisions topics, binds the port.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Before anything is encoded: the framing, and the registry's ids when it is used.
        spine_kit::schemas::init(&settings.schemas)
            .await
            .context("making the event schemas known (schemas.*)")?;
        // The API and the relay write: their writers queue at the write gate (the relay first,
        // then the API, then the consumer) rather than sleeping in SQLite's busy handler. In
        // the benchmark it cut the spike's POST p99 and the relay's commit -> ack p99 with the
        // backlog queued (README, "The benchmark"). The operator's setting wins.
        let database = settings.database.clone().write_gate_or(true);
        let (pool, backend) = spine_kit::db::connect(&database)
            .await
            .context("connecting the database (database.url)")?;
        let outbox = Outbox::new(pool, backend)
            .await
            .context("opening the outbox")?;
        let store = OrderStore::new(outbox.clone(), &settings.orders.consumer_group)
            .await
            .context("migrating the orders schema")?;
        // The consumer writes through a pool of its own, so that a POST never waits for a
        // connection behind it; its commits still wake the relay and count in the backlog.
        let spine_pool = spine_kit::db::connect_spine(&database, outbox.pool())
            .await
            .context("connecting the consumers' database pool (database.url)")?;
        let spine_store = OrderStore::new(
            outbox.with_pool(spine_pool),
            &settings.orders.consumer_group,
        )
        .await
        .context("opening the orders store for the consumer")?;
        let kafka = &settings.kafka;
        let group = settings.orders.consumer_group.as_str();
        let runner = ConsumerRunner::new(
            kafka,
            group,
            &[StockReserved::TOPIC],
            Batched::new(InventoryReactions::new(spine_store)),
        )?;
        spine_kit::kafka::provision(
            kafka,
            &[OrderPlaced::TOPIC, StockReserved::TOPIC, runner.dlq_topic()],
        )
        .await?;
        let publisher = Publisher::new(kafka, "orders")?;
        let relay = Relay::new(outbox, publisher, settings.outbox.clone());
        let listener = spine_kit::http::bind(&settings.http.host, settings.http.port).await?;
        // Born at 0, so that an alert on `increase()` sees the first shed request.
        metrics::counter!("orders_shed_total").increment(0);
        Ok(Self {
            listener,
            state: AppState {
                store,
                max_backlog: settings.outbox.max_backlog,
                retry_after_secs: settings.http.retry_after_secs,
                body_limit: settings.http.body_limit,
            },
            relay,
            runner,
            shutdown_timeout: kafka.consumer.shutdown_timeout + Duration::from_secs(5),
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    /// Serves HTTP, relays the outbox and consumes inventory's facts until `token` is
    /// cancelled or one of them fails (which stops the others).
    pub async fn run_until_stopped(self, token: CancellationToken) -> anyhow::Result<()> {
        let mut supervisor = Supervisor::new(token);
        let app = routes::router(self.state.clone());
        supervisor.spawn_http(self.listener, app);
        let stop = supervisor.token();
        let relay = self.relay;
        supervisor.spawn("outbox-relay", relay.run(stop));
        let stop = supervisor.token();
        let runner = self.runner;
        supervisor.spawn("inventory-consumer", async move {
            runner.run(stop).await.map_err(Into::into)
        });
        let store = self.state.store.clone();
        supervisor.spawn_every("order-gauges", Duration::from_secs(5), move || {
            let store = store.clone();
            async move {
                match store.count_by_status().await {
                    Ok(counts) => {
                        for (status, count) in counts {
                            metrics::gauge!("orders_by_status", "status" => status)
                                .set(count as f64);
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "cannot count orders"),
                }
            }
        });
        supervisor
            .run(self.shutdown_timeout)
            .await
            .map_err(Into::into)
    }
}
