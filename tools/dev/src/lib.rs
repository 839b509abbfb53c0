//! The four services in one process: what `spine-dev` runs, and what the end-to-end tests and
//! the spike generator's smoke test start on a broker of their own.

use std::time::Duration;

use anyhow::Context;
use spine_kit::shutdown::Supervisor;
use tokio_util::sync::CancellationToken;

/// Each service's settings.
#[derive(Debug, Clone, Default)]
pub struct StackSettings {
    /// orders.
    pub orders: spine_orders::settings::Settings,
    /// inventory.
    pub inventory: spine_inventory::settings::Settings,
    /// email.
    pub email: spine_email::settings::Settings,
    /// analytics.
    pub analytics: spine_analytics::settings::Settings,
}

/// The four services, built (databases migrated, topics provisioned, ports bound), not yet
/// running.
pub struct Stack {
    orders: spine_orders::Application,
    inventory: spine_inventory::Application,
    email: spine_email::Application,
    analytics: spine_analytics::Application,
}

/// The ports the services listen on.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// orders' API.
    pub orders: u16,
    /// inventory's API.
    pub inventory: u16,
    /// email's probes and metrics.
    pub email: u16,
    /// analytics' `/stats`.
    pub analytics: u16,
}

impl Stack {
    /// Builds every service; the error names the one that failed.
    pub async fn build(settings: StackSettings) -> anyhow::Result<Self> {
        Ok(Self {
            orders: spine_orders::Application::build(settings.orders)
                .await
                .context("starting orders")?,
            inventory: spine_inventory::Application::build(settings.inventory)
                .await
                .context("starting inventory")?,
            email: spine_email::Application::build(settings.email)
                .await
                .context("starting email")?,
            analytics: spine_analytics::Application::build(settings.analytics)
                .await
                .context("starting analytics")?,
        })
    }

    /// The bound ports.
    pub fn ports(&self) -> Ports {
        Ports {
            orders: self.orders.port(),
            inventory: self.inventory.port(),
            email: self.email.port(),
            analytics: self.analytics.port(),
        }
    }

    /// Runs the four under one supervisor until `token` is cancelled or one of them fails
    /// (which stops the others); `deadline` bounds the shutdown.
    pub async fn run_until_stopped(
        self,
        token: CancellationToken,
        deadline: Duration,
    ) -> anyhow::Result<()> {
        let mut supervisor = Supervisor::new(token);
        supervisor.spawn("orders", self.orders.run_until_stopped(supervisor.token()));
        supervisor.spawn(
            "inventory",
            self.inventory.run_until_stopped(supervisor.token()),
        );
        supervisor.spawn("email", self.email.run_until_stopped(supervisor.token()));
        supervisor.spawn(
            "analytics",
            self.analytics.run_until_stopped(supervisor.token()),
        );
        supervisor.run(deadline).await?;
        Ok(())
    }
}
