//! A private tansu broker on a free port, started and stopped with the project's
//! `scripts/broker`, so that no other test's facts reach the services under test.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::settings::KafkaSettings;

/// A broker of the test's own, stopped on drop.
pub struct Broker {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    state: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker on a free port, with its state in a temporary directory.
    ///
    /// # Panics
    /// When `scripts/broker start` fails: a test without its broker must fail loudly.
    pub fn start() -> Self {
        let port = free_port();
        let state = tempfile::tempdir().expect("a temporary directory");
        let broker = Self { port, state };
        assert!(
            broker.script("start").success(),
            "scripts/broker start on port {port}"
        );
        broker
    }

    fn script(&self, command: &str) -> std::process::ExitStatus {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/broker");
        Command::new(script)
            .arg(command)
            .env("SPINE_BROKER_PORT", self.port.to_string())
            .env("SPINE_BROKER_STATE", self.state.path())
            .status()
            .expect("scripts/broker runs")
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kafka settings for services on this broker: 3 partitions a topic, and short group
    /// timeouts so that tansu's first group join and a test's shutdown stay quick.
    pub fn kafka(&self) -> KafkaSettings {
        let mut kafka = KafkaSettings {
            bootstrap_servers: self.bootstrap(),
            ..KafkaSettings::default()
        };
        kafka.topics.partitions = 3;
        kafka.consumer.max_poll_interval = Duration::from_secs(6);
        kafka.consumer.shutdown_timeout = Duration::from_secs(3);
        kafka
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.script("stop");
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("a bound address")
        .port()
}
