//! The email service: mails the customer once per order outcome. It consumes `orders.events`,
//! sends a confirmation for OrderConfirmed and a rejection (with the reason) for OrderRejected,
//! records each mail by event id and publishes EmailSent through its own outbox.
//!
//! # Layout
//! - [`settings`]: the service's settings (transport, sender, SMTP);
//! - [`templates`]: the mails, rendered in code (plain text and escaped HTML);
//! - [`mailer`]: the mailer port, its file and SMTP transports, and error classification;
//! - [`store`]: `sent_emails` (the idempotency record), written with EmailSent's outbox row;
//! - [`reactions`]: the consumer of orders' facts;
//! - [`routes`]: health, readiness and metrics;
//! - [`Application`]: builds everything and runs it under one supervisor.

pub mod mailer;
pub mod reactions;
pub mod routes;
pub mod settings;
pub mod store;
pub mod templates;

use std::time::Duration;

use anyhow::Context;
use lettre::message::Mailbox;
use spine_events::Event;
use spine_events::email::EmailSent;
use spine_events::orders::OrderConfirmed;
use spine_kit::kafka::Publisher;
use spine_kit::kafka::consumer::ConsumerRunner;
use spine_kit::outbox::{Outbox, Relay};
use spine_kit::shutdown::Supervisor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::reactions::OrderMails;
use crate::settings::Settings;
use crate::store::EmailStore;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Sent mails and the outbox.
    pub store: EmailStore,
    /// The producer, for the readiness probe.
    pub publisher: Publisher,
}

/// The service, built and bound, not yet running.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    relay: Relay,
    runner: ConsumerRunner<OrderMails>,
    shutdown_timeout: Duration,
}

impl Application {
    /// Checks the sender, opens the mailer, connects the database (migrating it), provisions
    /// topics, binds the port.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Before anything is encoded: the framing, and the registry's ids when it is used.
        spine_kit::schemas::init(&settings.schemas)
            .await
            .context("making the event schemas known (schemas.*)")?;
        let email = &settings.email;
        let from: Mailbox = email
            .from
            .parse()
            .with_context(|| format!("invalid setting email.from: {:?}", email.from))?;
        let mailer = mailer::from_settings(email, settings.kafka.consumer.max_in_flight)?;
        let (pool, backend) = spine_kit::db::connect(&settings.database)
            .await
            .context("connecting the database (database.url)")?;
        let outbox = Outbox::new(pool, backend)
            .await
            .context("opening the outbox")?;
        let store = EmailStore::new(outbox.clone())
            .await
            .context("migrating the email schema")?;
        // The consumer writes through a pool of its own, so that the API and the readiness
        // probe never wait for a connection behind it; its commits still wake the relay.
        let spine_pool = spine_kit::db::connect_spine(&settings.database, outbox.pool())
            .await
            .context("connecting the consumers' database pool (database.url)")?;
        let spine_store = EmailStore::new(outbox.with_pool(spine_pool))
            .await
            .context("opening the email store for the consumer")?;
        let kafka = &settings.kafka;
        let runner = ConsumerRunner::new(
            kafka,
            &email.consumer_group,
            &[OrderConfirmed::TOPIC],
            OrderMails::new(spine_store, mailer, from),
        )?;
        spine_kit::kafka::provision(
            kafka,
            &[OrderConfirmed::TOPIC, EmailSent::TOPIC, runner.dlq_topic()],
        )
        .await?;
        let publisher = Publisher::new(kafka, "email")?;
        let relay = Relay::new(outbox, publisher.clone(), settings.outbox.clone());
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
    /// one of them fails (which stops the others).
    pub async fn run_until_stopped(self, token: CancellationToken) -> anyhow::Result<()> {
        let mut supervisor = Supervisor::new(token);
        let app = routes::router(self.state.clone());
        supervisor.spawn_http(self.listener, app);
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
