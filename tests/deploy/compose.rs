//! docker-compose.yml, as `docker-compose config` resolves it, against the services'
//! configuration.

use std::collections::{BTreeMap, BTreeSet};

use spine_kit::settings::LogFormat;
use yaml_rust2::Yaml;

use crate::services::{Loaded, services};
use crate::{agreed, expected_topics, host_of, load, render, scalar, schemas};

const FILE: &str = "docker-compose.yml";

fn environment(service: &Yaml) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    match &service["environment"] {
        Yaml::Hash(map) => {
            for (key, value) in map {
                env.insert(
                    key.as_str().unwrap_or_default().to_owned(),
                    scalar(value).unwrap_or_default(),
                );
            }
        }
        Yaml::Array(list) => {
            for entry in list {
                let (key, value) = entry
                    .as_str()
                    .unwrap_or_default()
                    .split_once('=')
                    .unwrap_or_default();
                env.insert(key.to_owned(), value.to_owned());
            }
        }
        _ => {}
    }
    env
}

/// Every string in a service's `command`, `entrypoint` and `environment`.
fn strings(value: &Yaml, out: &mut Vec<String>) {
    match value {
        Yaml::Array(items) => items.iter().for_each(|item| strings(item, out)),
        Yaml::Hash(map) => map.values().for_each(|item| strings(item, out)),
        other => out.extend(scalar(other)),
    }
}

/// The topics `kafka-init` creates: lines of `name:partitions:retention_ms` in its command.
fn created_topics(init: &Yaml) -> BTreeMap<String, i32> {
    let mut texts = Vec::new();
    for field in ["command", "entrypoint", "environment"] {
        strings(&init[field], &mut texts);
    }
    let mut topics = BTreeMap::new();
    for line in texts.iter().flat_map(|text| text.lines()) {
        let fields: Vec<&str> = line.trim().split(':').collect();
        if let [name, partitions, retention] = fields[..]
            && retention.parse::<u64>().is_ok()
            && let Ok(partitions) = partitions.parse::<i32>()
            && !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            topics.insert(name.to_owned(), partitions);
        }
    }
    topics
}

fn depends_on<'a>(service: &'a Yaml, name: &str) -> Option<&'a str> {
    service["depends_on"][name]["condition"].as_str()
}

#[test]
fn docker_compose_agrees_with_the_services_configuration() {
    let docs = render("docker-compose", &["-f", FILE, "config"]);
    let all = &docs[0]["services"];
    let defined: BTreeSet<&str> = all
        .as_hash()
        .expect("services")
        .keys()
        .filter_map(Yaml::as_str)
        .collect();
    let mut loaded: BTreeMap<&str, Loaded> = BTreeMap::new();

    for service in services() {
        let spec = &all[service.name];
        assert!(!spec.is_badvalue(), "{FILE}: no service {}", service.name);
        let env = environment(spec);
        let settings = load(&service, &env, FILE);
        let schemas = schemas(service.name, &env, FILE);
        assert_eq!(
            settings.host, "0.0.0.0",
            "{FILE}: {} must listen on all interfaces",
            service.name
        );
        assert!(
            !settings.kafka.topics.create_missing,
            "{FILE}: {}: kafka-init creates the topics, so SPINE__KAFKA__TOPICS__CREATE_MISSING must be false",
            service.name
        );
        assert_eq!(
            depends_on(spec, "kafka-init"),
            Some("service_completed_successfully"),
            "{FILE}: {} must start after the topics exist",
            service.name
        );
        assert_eq!(
            settings.log_format,
            LogFormat::Json,
            "{FILE}: {}: logs must be JSON (SPINE__TELEMETRY__LOG_FORMAT: json)",
            service.name
        );
        assert_eq!(
            schemas.framing, "confluent",
            "{FILE}: {}: the compose stack writes the Confluent framing (SPINE__SCHEMAS__FRAMING: confluent)",
            service.name
        );
        for address in [
            settings.kafka.bootstrap_servers.clone(),
            settings.database_url.clone(),
            schemas.url.clone(),
        ] {
            let host = host_of(&address);
            assert!(
                defined.contains(host),
                "{FILE}: {} points at {host}, which is not a compose service",
                service.name
            );
            assert_eq!(
                depends_on(spec, host),
                Some("service_healthy"),
                "{FILE}: {} must wait for {host} to be healthy",
                service.name
            );
            assert!(
                all[host]["healthcheck"]["test"].as_vec().is_some(),
                "{FILE}: {host} has no healthcheck, so nothing waits for it to be healthy"
            );
        }
        let check: Vec<String> = spec["healthcheck"]["test"]
            .as_vec()
            .map(|v| v.iter().filter_map(scalar).collect())
            .unwrap_or_default();
        assert!(
            check.iter().any(|arg| arg == "healthcheck"),
            "{FILE}: {} healthcheck runs `<binary> healthcheck`, found {check:?}",
            service.name
        );
        let targets: Vec<i64> = spec["ports"]
            .as_vec()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                p["target"].as_i64().or_else(|| {
                    // short syntax: "published:target[/proto]"
                    let text = p.as_str()?;
                    text.rsplit(':').next()?.split('/').next()?.parse().ok()
                })
            })
            .collect();
        assert!(
            targets.iter().all(|t| *t == i64::from(settings.port)),
            "{FILE}: {} publishes {targets:?} but listens on {}",
            service.name,
            settings.port
        );
        loaded.insert(service.name, settings);
    }

    let partitions = agreed(&loaded, "kafka.topics.partitions", |l| {
        l.kafka.topics.partitions
    });
    let created = created_topics(&all["kafka-init"]);
    let names: BTreeSet<String> = created.keys().cloned().collect();
    assert_eq!(
        names,
        expected_topics(&loaded),
        "{FILE}: kafka-init's topics vs the services' topics"
    );
    for (topic, count) in &created {
        assert_eq!(
            *count, partitions,
            "{FILE}: {topic} partitions vs kafka.topics.partitions"
        );
    }
}

#[test]
fn the_topic_list_parser_reads_only_topic_lines() {
    let init = yaml_rust2::YamlLoader::load_from_str(
        "command: ['bash', '-c', \"create\\n orders.events:6:604800000\\n x.dlq:3:1209600000\\n echo a:b:c\\n\"]",
    )
    .unwrap();
    let topics = created_topics(&init[0]);
    assert_eq!(
        topics,
        BTreeMap::from([("orders.events".to_owned(), 6), ("x.dlq".to_owned(), 3)])
    );
}
