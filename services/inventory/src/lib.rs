//! The inventory service: holds stock per SKU and answers every placed order with a fact.
//! OrderPlaced reserves every line or none, in one transaction with the event's inbox row and
//! the outbox row of StockReserved or StockReservationFailed; the relay publishes afterwards.
//! A small HTTP API reads and sets stock.
//!
//! # Layout
//! - [`settings`]: the service's settings, the seed included;
//! - [`domain`]: SKUs and quantities, validated once;
//! - [`store`]: stock and reservations, written with their inbox and outbox rows;
//! - [`routes`]: the HTTP API and its errors;
//! - [`reactions`]: the consumer of orders' facts;
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
use spine_kit::kafka::Publisher;
use spine_kit::kafka::consumer::{Batched, ConsumerRunner};
use spine_kit::outbox::{Outbox, Relay};
use spine_kit::shutdown::Supervisor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::domain::{Quantity, Sku};
use crate::reactions::OrderReactions;
use crate::settings::{SeedEntry, Settings};
use crate::store::InventoryStore;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Stock, reservations and their outbox.
    pub store: InventoryStore,
    /// The producer, for the readiness probe.
    pub publisher: Publisher,
    /// Largest accepted body.
    pub body_limit: usize,
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
    /// Validates the seed, connects the database (migrating and seeding it), provisions
    /// topics, binds the port.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Before anything is encoded: the framing, and the registry's ids when it is used.
        spine_kit::schemas::init(&settings.schemas)
            .await
            .context("making the event schemas known (schemas.*)")?;
        let seed = parse_seed(&settings.inventory.seed)?;
        let (pool, backend) = spine_kit::db::connect(&settings.database)
            .await
            .context("connecting the database (database.url)")?;
        let outbox = Outbox::new(pool, backend)
            .await
            .context("opening the outbox")?;
        let store = InventoryStore::new(outbox.clone(), &settings.inventory.consumer_group)
            .await
            .context("migrating the inventory schema")?;
        let seeded = store.seed(&seed).await.context("seeding stock")?;
        if seeded > 0 {
            tracing::info!(skus = seeded, "stock seeded");
        }
        // The consumer writes through a pool of its own, so that the API never waits for a
        // connection behind it; its commits still wake the relay.
        let spine_pool = spine_kit::db::connect_spine(&settings.database, outbox.pool())
            .await
            .context("connecting the consumers' database pool (database.url)")?;
        let spine_store = InventoryStore::new(
            outbox.with_pool(spine_pool),
            &settings.inventory.consumer_group,
        )
        .await
        .context("opening the inventory store for the consumer")?;
        let kafka = &settings.kafka;
        let group = settings.inventory.consumer_group.as_str();
        let orders_topic = settings.inventory.orders_topic.as_str();
        let runner = ConsumerRunner::new(
            kafka,
            group,
            &[orders_topic],
            Batched::new(OrderReactions::new(spine_store)),
        )?;
        spine_kit::kafka::provision(
            kafka,
            &[orders_topic, StockReserved::TOPIC, runner.dlq_topic()],
        )
        .await?;
        let publisher = Publisher::new(kafka, "inventory")?;
        let relay = Relay::new(outbox, publisher.clone(), settings.outbox.clone());
        let listener = spine_kit::http::bind(&settings.http.host, settings.http.port).await?;
        Ok(Self {
            listener,
            state: AppState {
                store,
                publisher,
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

    /// Serves HTTP, relays the outbox and consumes orders' facts until `token` is cancelled or
    /// one of them fails (which stops the others).
    pub async fn run_until_stopped(self, token: CancellationToken) -> anyhow::Result<()> {
        let mut supervisor = Supervisor::new(token);
        let app = routes::router(self.state.clone());
        supervisor.spawn_http(self.listener, app);
        let stop = supervisor.token();
        let relay = self.relay;
        supervisor.spawn("outbox-relay", relay.run(stop));
        let stop = supervisor.token();
        let runner = self.runner;
        supervisor.spawn("orders-consumer", async move {
            runner.run(stop).await.map_err(Into::into)
        });
        let store = self.state.store.clone();
        supervisor.spawn_every("stock-gauges", Duration::from_secs(5), move || {
            let store = store.clone();
            async move {
                match store.all().await {
                    Ok(stock) => {
                        for view in stock {
                            metrics::gauge!("inventory_stock_available", "sku" => view.sku)
                                .set(view.available as f64);
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "cannot read stock"),
                }
            }
        });
        supervisor
            .run(self.shutdown_timeout)
            .await
            .map_err(Into::into)
    }
}

/// The seed, validated; a bad entry names its index, like any other setting.
fn parse_seed(seed: &[SeedEntry]) -> anyhow::Result<Vec<(Sku, Quantity)>> {
    seed.iter()
        .enumerate()
        .map(|(i, entry)| {
            let sku = Sku::parse(&entry.sku);
            let quantity = Quantity::parse(entry.quantity);
            match (sku, quantity) {
                (Ok(sku), Ok(quantity)) => Ok((sku, quantity)),
                (Err(e), _) | (_, Err(e)) => Err(anyhow::anyhow!(
                    "invalid setting `inventory.seed[{i}].{}`: {}",
                    e.field,
                    e.message
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_seed_is_valid_and_has_a_sku_out_of_stock() {
        let seed = parse_seed(&Settings::default().inventory.seed).unwrap();
        assert!(seed.iter().any(|(_, q)| q.get() == 0));
    }

    #[test]
    fn a_bad_seed_entry_is_named() {
        let seed = [SeedEntry {
            sku: "SKU-1".into(),
            quantity: -3,
        }];
        let err = parse_seed(&seed).unwrap_err().to_string();
        assert!(err.contains("inventory.seed[0].quantity"), "{err}");
    }
}
