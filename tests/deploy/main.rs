//! The deployment files agree with the services' own configuration, so that renaming a topic,
//! a setting or a port in the code cannot leave docker-compose.yml or `k8s/` behind.
//!
//! It reads docker-compose.yml as `docker-compose config` resolves it, and every overlay as
//! `kubectl kustomize` renders it (`scripts/setup` installs docker-compose; the machine image
//! ships kubectl), then for each service in the workspace (`services.rs` lists them, and a
//! test there fails on a `services/<name>` it does not list):
//! - loads the service's real `Settings` from exactly the environment the file gives it, so an
//!   unknown `SPINE__…` key or a bad value fails here, naming the key;
//! - checks that logs are JSON and that the service writes the Confluent framing with a
//!   registry it can reach (compose: a healthy compose service; k8s: the URL from a ConfigMap,
//!   the credentials from a Secret);
//! - checks the port, probes and healthcheck against the loaded `http.port`;
//! - checks that the topics created outside the services (compose's `kafka-init`, Strimzi's
//!   `KafkaTopic`s) are exactly the catalog's topics plus one DLQ per consumer group, with the
//!   partitions and replication the services are configured with;
//! - checks KEDA's lag triggers name each consumer's real group and topics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use spine_kit::config::{STANDARD_ENV, Sources};
use spine_kit::kafka::consumer::dlq_topic;
use yaml_rust2::{Yaml, YamlLoader};

use crate::services::{Loaded, Service};

mod compose;
mod k8s;
mod services;

/// What a deployment file sets of the `schemas` settings, read from its variables as the
/// settings contract names them (`schemas.framing`, `schemas.registry.*`).
#[derive(Debug)]
struct Schemas {
    /// `schemas.framing`: `single_object` (the default) or `confluent`.
    framing: String,
    /// `schemas.registry.url`; empty when unset.
    url: String,
}

/// The file's `schemas` settings for a service, checked against the contract: a known framing,
/// a registry URL wherever the framing is `confluent`, a boolean `auto_register`.
fn schemas(service: &str, env: &BTreeMap<String, String>, file: &str) -> Schemas {
    let framing = env
        .get("SPINE__SCHEMAS__FRAMING")
        .cloned()
        .unwrap_or_else(|| "single_object".to_owned());
    assert!(
        ["single_object", "confluent"].contains(&framing.as_str()),
        "{file}: {service}: SPINE__SCHEMAS__FRAMING={framing} is neither single_object nor confluent"
    );
    let url = env
        .get("SPINE__SCHEMAS__REGISTRY__URL")
        .cloned()
        .unwrap_or_default();
    assert!(
        framing != "confluent" || url.starts_with("http://") || url.starts_with("https://"),
        "{file}: {service}: the confluent framing needs the registry's URL in SPINE__SCHEMAS__REGISTRY__URL, found {url:?}"
    );
    if let Some(value) = env.get("SPINE__SCHEMAS__REGISTRY__AUTO_REGISTER") {
        assert!(
            ["true", "false"].contains(&value.as_str()),
            "{file}: {service}: SPINE__SCHEMAS__REGISTRY__AUTO_REGISTER={value} is not a boolean"
        );
    }
    Schemas { framing, url }
}

/// Loads a service's settings from the environment a deployment file gives it, after checking
/// that every variable is one the services read; a misspelt key or a bad value (the
/// `SPINE__SCHEMAS__*` ones included) fails here by name.
fn load(service: &Service, env: &BTreeMap<String, String>, file: &str) -> Loaded {
    for name in env.keys() {
        let known = name.starts_with("SPINE__")
            || STANDARD_ENV.iter().any(|(var, _)| var == name)
            || ["RUST_LOG", "RUST_BACKTRACE"].contains(&name.as_str());
        assert!(
            known,
            "{file}: {}: `{name}` is not a variable the services read",
            service.name
        );
    }
    let sources = Sources {
        env: env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ..Sources::default()
    };
    (service.load)(&sources).unwrap_or_else(|err| panic!("{file}: {}: {err}", service.name))
}

/// The topics the services need created: the catalog's topics and one DLQ per group.
fn expected_topics(loaded: &BTreeMap<&str, Loaded>) -> BTreeSet<String> {
    let mut topics: BTreeSet<String> = spine_events::catalog()
        .entries()
        .iter()
        .map(|entry| entry.topic().to_owned())
        .collect();
    for settings in loaded.values() {
        if let Some(group) = &settings.group {
            topics.insert(dlq_topic(&settings.kafka.consumer, group));
        }
    }
    topics
}

/// The one value all services agree on, e.g. their topics' partition count.
fn agreed<T: PartialEq + std::fmt::Debug + Clone>(
    loaded: &BTreeMap<&str, Loaded>,
    what: &str,
    pick: impl Fn(&Loaded) -> T,
) -> T {
    let mut values = loaded.iter().map(|(name, l)| (name, pick(l)));
    let (first_name, first) = values.next().expect("services");
    for (name, value) in values {
        assert_eq!(
            value, first,
            "{what} differs between {first_name} and {name}"
        );
    }
    first
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Runs a tool that renders a deployment file and parses its YAML output.
fn render(program: &str, args: &[&str]) -> Vec<Yaml> {
    let output = Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|err| {
            panic!("running {program}: {err} (scripts/setup installs docker-compose; kubectl ships with the machine image)")
        });
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    YamlLoader::load_from_str(&String::from_utf8_lossy(&output.stdout))
        .unwrap_or_else(|err| panic!("{program} printed invalid YAML: {err}"))
}

fn read_yaml(path: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(repo().join(path))
        .unwrap_or_else(|err| panic!("reading {path}: {err}"));
    YamlLoader::load_from_str(&text).unwrap_or_else(|err| panic!("parsing {path}: {err}"))
}

/// A scalar as a string, whatever YAML typed it as.
fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The host part of `scheme://host:port/...` or `host:port`.
fn host_of(address: &str) -> &str {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    let end = rest.find([':', '/', '?']).unwrap_or(rest.len());
    &rest[..end]
}
