//! Every kustomize overlay, as rendered, against the services' configuration.

use std::collections::{BTreeMap, BTreeSet};

use spine_kit::settings::LogFormat;
use yaml_rust2::Yaml;

use crate::services::{Loaded, services};
use crate::{agreed, expected_topics, load, read_yaml, render, scalar, schemas};

const OVERLAYS: &[&str] = &["dev", "prod"];

fn kind_of<'a>(docs: &'a [Yaml], kind: &str) -> Vec<&'a Yaml> {
    docs.iter()
        .filter(|doc| doc["kind"].as_str() == Some(kind))
        .collect()
}

fn name_of(doc: &Yaml) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// The container's environment: its ConfigMaps (`envFrom`) and `env` entries. A variable read
/// from a Secret gets a placeholder of the right shape, since no secret value is committed.
fn environment(
    docs: &[Yaml],
    overlay: &str,
    service: &str,
    container: &Yaml,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_vec().into_iter().flatten() {
        let reference = &source["configMapRef"]["name"];
        if let Some(name) = reference.as_str() {
            let map = kind_of(docs, "ConfigMap")
                .into_iter()
                .find(|doc| name_of(doc) == name)
                .unwrap_or_else(|| panic!("{overlay}: {service} reads a missing ConfigMap {name}"));
            for (key, value) in map["data"].as_hash().into_iter().flatten() {
                env.insert(
                    key.as_str().unwrap_or_default().to_owned(),
                    scalar(value).unwrap_or_default(),
                );
            }
        }
        assert!(
            source["secretRef"].is_badvalue(),
            "{overlay}: {service}: read secrets by key (secretKeyRef), not whole"
        );
    }
    for entry in container["env"].as_vec().into_iter().flatten() {
        let name = entry["name"].as_str().unwrap_or_default().to_owned();
        let value = match scalar(&entry["value"]) {
            Some(value) => value,
            None => {
                assert!(
                    !entry["valueFrom"].is_badvalue(),
                    "{overlay}: {service}: {name} has neither value nor valueFrom"
                );
                if name == "DATABASE_URL" {
                    "postgres://user:secret@postgres:5432/db".to_owned()
                } else {
                    "from-a-secret".to_owned()
                }
            }
        };
        env.insert(name, value);
    }
    env
}

/// The ConfigMap a container reads `var` from with `envFrom`, if one has it.
fn config_map_with<'a>(docs: &'a [Yaml], container: &Yaml, var: &str) -> Option<&'a str> {
    container["envFrom"]
        .as_vec()?
        .iter()
        .filter_map(|source| source["configMapRef"]["name"].as_str())
        .filter_map(|name| {
            kind_of(docs, "ConfigMap")
                .into_iter()
                .find(|doc| name_of(doc) == name)
        })
        .find(|map| !map["data"][var].is_badvalue())
        .map(name_of)
}

/// The `(Secret, key)` a container's `env` entry `var` reads with `secretKeyRef`, if it does.
fn secret_key_ref<'a>(container: &'a Yaml, var: &str) -> Option<(&'a str, &'a str)> {
    let entry = container["env"]
        .as_vec()?
        .iter()
        .find(|entry| entry["name"].as_str() == Some(var))?;
    let reference = &entry["valueFrom"]["secretKeyRef"];
    Some((reference["name"].as_str()?, reference["key"].as_str()?))
}

fn port_number(container: &Yaml, port: &Yaml) -> Option<i64> {
    port.as_i64().or_else(|| {
        let name = port.as_str()?;
        container["ports"]
            .as_vec()?
            .iter()
            .find(|p| p["name"].as_str() == Some(name))?["containerPort"]
            .as_i64()
    })
}

#[test]
fn every_overlay_agrees_with_the_services_configuration() {
    for overlay in OVERLAYS {
        let path = format!("k8s/overlays/{overlay}");
        let docs = render("kubectl", &["kustomize", &path]);
        let deployments = kind_of(&docs, "Deployment");
        let mut loaded: BTreeMap<&str, Loaded> = BTreeMap::new();

        for service in services() {
            let deployment = deployments
                .iter()
                .find(|d| name_of(d) == service.name)
                .unwrap_or_else(|| panic!("{overlay}: no Deployment {}", service.name));
            let spec = &deployment["spec"]["template"]["spec"];
            let container = &spec["containers"][0];
            let env = environment(&docs, overlay, service.name, container);
            let settings = load(&service, &env, &path);
            let schemas = schemas(service.name, &env, &path);

            assert_eq!(
                settings.log_format,
                LogFormat::Json,
                "{overlay}: {}: logs must be JSON (SPINE__TELEMETRY__LOG_FORMAT=json)",
                service.name
            );
            assert!(
                *overlay != "prod" || schemas.framing == "confluent",
                "{overlay}: {}: production writes the Confluent framing (SPINE__SCHEMAS__FRAMING=confluent), found {}",
                service.name,
                schemas.framing
            );
            if schemas.framing == "confluent" {
                assert!(
                    config_map_with(&docs, container, "SPINE__SCHEMAS__REGISTRY__URL").is_some(),
                    "{overlay}: {}: SPINE__SCHEMAS__REGISTRY__URL must come from a ConfigMap",
                    service.name
                );
                for var in [
                    "SPINE__SCHEMAS__REGISTRY__USERNAME",
                    "SPINE__SCHEMAS__REGISTRY__PASSWORD",
                ] {
                    assert!(
                        secret_key_ref(container, var).is_some(),
                        "{overlay}: {}: {var} must come from a Secret (secretKeyRef)",
                        service.name
                    );
                }
            }

            assert_eq!(
                settings.host, "0.0.0.0",
                "{overlay}: {} must listen on all interfaces",
                service.name
            );
            let port = i64::from(settings.port);
            let declared: Vec<i64> = container["ports"]
                .as_vec()
                .into_iter()
                .flatten()
                .filter_map(|p| p["containerPort"].as_i64())
                .collect();
            assert_eq!(
                declared,
                vec![port],
                "{overlay}: {} containerPort",
                service.name
            );
            for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
                let get = &container[probe]["httpGet"];
                assert_eq!(
                    get["path"].as_str(),
                    Some(path),
                    "{overlay}: {} {probe}",
                    service.name
                );
                assert_eq!(
                    port_number(container, &get["port"]),
                    Some(port),
                    "{overlay}: {} {probe} port",
                    service.name
                );
            }
            assert!(
                !settings.kafka.topics.create_missing,
                "{overlay}: {}: Strimzi owns the topics, so SPINE__KAFKA__TOPICS__CREATE_MISSING must be false",
                service.name
            );
            // The hard shutdown deadline is the handlers' drain time plus 5 s; Kubernetes must
            // wait longer than that (and any preStop pause) before it kills the pod.
            let deadline = settings.kafka.consumer.shutdown_timeout.as_secs() + 5;
            let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
                .as_i64()
                .unwrap_or(0);
            let grace = spec["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
            assert!(
                u64::try_from(grace - pause).unwrap_or(0) > deadline,
                "{overlay}: {}: terminationGracePeriodSeconds {grace} - preStop {pause} must exceed the {deadline} s shutdown deadline",
                service.name
            );
            loaded.insert(service.name, settings);
        }

        let partitions = agreed(&loaded, "kafka.topics.partitions", |l| {
            l.kafka.topics.partitions
        });
        let replicas = agreed(&loaded, "kafka.topics.replication_factor", |l| {
            l.kafka.topics.replication_factor
        });
        let mut topics = BTreeSet::new();
        for topic in kind_of(&docs, "KafkaTopic") {
            let name = topic["spec"]["topicName"]
                .as_str()
                .unwrap_or_else(|| name_of(topic))
                .to_owned();
            assert_eq!(
                topic["spec"]["partitions"].as_i64(),
                Some(i64::from(partitions)),
                "{overlay}: KafkaTopic {name} partitions vs kafka.topics.partitions"
            );
            assert_eq!(
                topic["spec"]["replicas"].as_i64(),
                Some(i64::from(replicas)),
                "{overlay}: KafkaTopic {name} replicas vs kafka.topics.replication_factor"
            );
            topics.insert(name);
        }
        assert_eq!(
            topics,
            expected_topics(&loaded),
            "{overlay}: KafkaTopics vs the services' topics"
        );

        // KEDA scales every consumer-only service on its real group's lag on its real topics.
        let scaled = kind_of(&docs, "ScaledObject");
        for service in services().iter().filter(|s| s.scales_on_lag) {
            let object = scaled
                .iter()
                .find(|o| o["spec"]["scaleTargetRef"]["name"].as_str() == Some(service.name))
                .unwrap_or_else(|| panic!("{overlay}: no ScaledObject targets {}", service.name));
            let group = loaded[service.name]
                .group
                .clone()
                .expect("a consumer group");
            let mut triggered = BTreeSet::new();
            for trigger in object["spec"]["triggers"].as_vec().into_iter().flatten() {
                assert_eq!(
                    trigger["type"].as_str(),
                    Some("kafka"),
                    "{overlay}: {}",
                    service.name
                );
                let meta = &trigger["metadata"];
                assert_eq!(
                    meta["consumerGroup"].as_str(),
                    Some(group.as_str()),
                    "{overlay}: {} trigger group",
                    service.name
                );
                triggered.insert(meta["topic"].as_str().unwrap_or_default().to_owned());
            }
            let consumed: BTreeSet<String> =
                service.consumes.iter().map(|t| (*t).to_owned()).collect();
            assert_eq!(
                triggered, consumed,
                "{overlay}: {} lag triggers",
                service.name
            );
            let max = object["spec"]["maxReplicaCount"].as_i64().unwrap_or(100);
            assert!(
                max <= i64::from(partitions),
                "{overlay}: {} may scale to {max} replicas, more than the {partitions} partitions",
                service.name
            );
        }
        let hpa = kind_of(&docs, "HorizontalPodAutoscaler");
        for service in services().iter().filter(|s| !s.scales_on_lag) {
            assert!(
                hpa.iter()
                    .any(|h| h["spec"]["scaleTargetRef"]["name"].as_str() == Some(service.name)),
                "{overlay}: {} scales on CPU with an HPA",
                service.name
            );
        }
    }
}

#[test]
fn the_prometheus_rule_carries_the_same_alerts_as_compose() {
    let alerts = read_yaml("deploy/prometheus/alerts.yml");
    let rule = read_yaml("k8s/base/monitoring/prometheusrule.yaml");
    let rule = rule
        .iter()
        .find(|doc| doc["kind"].as_str() == Some("PrometheusRule"))
        .expect("a PrometheusRule");
    assert_eq!(
        rule["spec"]["groups"], alerts[0]["groups"],
        "k8s/base/monitoring/prometheusrule.yaml and deploy/prometheus/alerts.yml differ"
    );
}
