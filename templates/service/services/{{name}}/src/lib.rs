//! The {{name}} service: records every placed order and answers it with a fact. Each
//! OrderPlaced on `orders.events` is written to `{{name}}_orders` in one transaction with the
//! event's inbox row and the outbox row of {{Fact}}; the relay publishes it on `{{name}}.events`
//! afterwards. `GET /{{name}}/orders/{id}` reads a recorded order back.
//!
//! Generated from `templates/service` by `scripts/new-service`: the plumbing (settings,
//! consumer, outbox relay, HTTP, supervision) is the same in every service; the places to put
//! your own domain are marked `TODO(your domain)`.
//!
//! # Layout
//! - [`settings`]: the service's settings;
//! - [`events`]: the facts it publishes, typed against `schemas/{{Fact}}.v1.avsc`;
//! - [`store`]: recorded orders, written with their inbox and outbox rows;
//! - [`reactions`]: the consumer of orders' facts (a batch handler) and its error
//!   classification;
//! - [`routes`]: the HTTP API and its errors;
//! - [`Application`]: builds everything and runs it under one supervisor.

pub mod events;
pub mod reactions;
pub mod routes;
pub mod settings;
pub mod store;

use std::time::Duration;

use anyhow::Context;
use spine_events::Event;
use spine_kit::kafka::Publisher;
use spine_kit::kafka::consumer::{Batched, ConsumerRunner};
use spine_kit::outbox::{Outbox, Relay};
use spine_kit::shutdown::Supervisor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::events::{{Fact}};
use crate::reactions::OrderReactions;
use crate::settings::Settings;
use crate::store::{{Name}}Store;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Recorded orders and their outbox.
    pub store: {{Name}}Store,
    /// The producer, for the readiness probe.
    pub publisher: Publisher,
}

/// The service, built and bound, not yet running.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    relay: Relay,
    runner: ConsumerRunner<Batched<OrderReactions>>,
    shutdown_timeout: Duration,
}

impl Application {
    /// Connects the database (migrating it), provisions topics, binds the port.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Before anything is encoded: the framing, and the registry's ids when it is used.
        spine_kit::schemas::init(&settings.schemas)
            .await
            .context("making the event schemas known (schemas.*)")?;
        let (pool, backend) = spine_kit::db::connect(&settings.database)
            .await
            .context("connecting the database (database.url)")?;
        let outbox = Outbox::new(pool, backend)
            .await
            .context("opening the outbox")?;
        let group = settings.{{name}}.consumer_group.as_str();
        let store = {{Name}}Store::new(outbox.clone(), group)
            .await
            .context("migrating the {{name}} schema")?;
        // The consumer writes through a pool of its own (`database.spine_max_connections`),
        // so that the API never waits for a connection behind it; its commits still wake the
        // relay.
        let spine_pool = spine_kit::db::connect_spine(&settings.database, outbox.pool())
            .await
            .context("connecting the consumers' database pool (database.url)")?;
        let spine_store = {{Name}}Store::new(outbox.with_pool(spine_pool), group)
            .await
            .context("opening the {{name}} store for the consumer")?;
        let kafka = &settings.kafka;
        let orders_topic = settings.{{name}}.orders_topic.as_str();
        // The batch path: each batch of a partition's records is one transaction.
        let runner = ConsumerRunner::new(
            kafka,
            group,
            &[orders_topic],
            Batched::new(OrderReactions::new(spine_store)),
        )?;
        // What it reads, what it writes and its DLQ, created if missing
        // (`kafka.topics.create_missing`).
        spine_kit::kafka::provision(
            kafka,
            &[orders_topic, {{Fact}}::TOPIC, runner.dlq_topic()],
        )
        .await?;
        let publisher = Publisher::new(kafka, "{{name}}")?;
        let relay = Relay::new(
            outbox,
            publisher.clone(),
            settings.outbox.clone(),
        );
        let listener = spine_kit::http::bind(&settings.http.host, settings.http.port).await?;
        Ok(Self {
            listener,
            state: AppState { store, publisher },
            relay,
            runner,
            shutdown_timeout: kafka.consumer.shutdown_timeout + Duration::from_secs(5),
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    /// Serves HTTP, relays the outbox and consumes orders' facts until `token` is cancelled or
    /// one of them fails (which stops the others; the error is returned, so `main` exits
    /// non-zero and the process is restarted).
    pub async fn run_until_stopped(self, token: CancellationToken) -> anyhow::Result<()> {
        let mut supervisor = Supervisor::new(token);
        supervisor.spawn_http(self.listener, routes::router(self.state));
        let stop = supervisor.token();
        supervisor.spawn("outbox-relay", self.relay.run(stop));
        let stop = supervisor.token();
        let runner = self.runner;
        supervisor.spawn("orders-consumer", async move {
            runner.run(stop).await.map_err(Into::into)
        });
        supervisor
            .run(self.shutdown_timeout)
            .await
            .map_err(Into::into)
    }
}
