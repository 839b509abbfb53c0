//! Layered settings: code defaults, an optional YAML file, then environment variables.
//!
//! The layers, later ones winning:
//! 1. defaults in code (`#[serde(default)]` on every settings struct);
//! 2. `config/base.yaml`, then `config/{SPINE_ENV}.yaml`, both relative to `SPINE_CONFIG_DIR`
//!    (default `config`) and both optional;
//! 3. the file named by `SPINE_CONFIG_FILE`, if set (it must exist);
//! 4. `SPINE__SECTION__KEY` environment variables (`SPINE__KAFKA__CONSUMER__MAX_IN_FLIGHT=64`);
//! 5. the standard variables `KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL` and
//!    `OTEL_EXPORTER_OTLP_ENDPOINT`, which every operator already knows.
//!
//! Errors name the offending key (`kafka.consumer.max_in_flight: invalid type ...`), because a
//! config error that doesn't say where is a config error that costs an afternoon.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// The standard environment variables and the settings key each one fills.
pub const STANDARD_ENV: &[(&str, &str)] = &[
    ("KAFKA_BOOTSTRAP_SERVERS", "kafka.bootstrap_servers"),
    ("DATABASE_URL", "database.url"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
];

/// A settings error, naming the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is missing, unknown or of the wrong type.
    #[error("invalid setting `{key}`: {message}")]
    Invalid {
        /// The dotted path of the setting, e.g. `kafka.consumer.max_in_flight`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A settings source could not be read or parsed.
    #[error("cannot read settings: {0}")]
    Source(#[from] config::ConfigError),
}

/// Where to look for settings; [`Sources::from_env`] reads the process environment.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Directory holding `base.yaml` and `{env}.yaml`.
    pub config_dir: Option<PathBuf>,
    /// The deployment environment, selecting `{env}.yaml`.
    pub environment: Option<String>,
    /// An extra file that must exist.
    pub file: Option<PathBuf>,
    /// Environment variables (name, value) to apply; the process environment by default.
    pub env: Vec<(String, String)>,
}

impl Sources {
    /// Reads the locations and variables from the process environment.
    pub fn from_env() -> Self {
        Self {
            config_dir: Some(
                std::env::var_os("SPINE_CONFIG_DIR").map_or_else(|| "config".into(), PathBuf::from),
            ),
            environment: std::env::var("SPINE_ENV").ok(),
            file: std::env::var_os("SPINE_CONFIG_FILE").map(PathBuf::from),
            env: std::env::vars().collect(),
        }
    }
}

/// Loads settings of type `T` from the process environment's sources.
pub fn load<T: DeserializeOwned>() -> Result<T, ConfigError> {
    load_from(&Sources::from_env())
}

/// Loads settings of type `T` from the given sources.
pub fn load_from<T: DeserializeOwned>(sources: &Sources) -> Result<T, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(dir) = &sources.config_dir {
        builder = builder.add_source(yaml(&dir.join("base.yaml"), false));
        if let Some(env) = &sources.environment {
            builder = builder.add_source(yaml(&dir.join(format!("{env}.yaml")), false));
        }
    }
    if let Some(file) = &sources.file {
        builder = builder.add_source(yaml(file, true));
    }
    let prefixed: config::Map<String, String> = sources
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("SPINE__"))
        .cloned()
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("SPINE")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(prefixed)),
    );
    for (var, key) in STANDARD_ENV {
        if let Some((_, value)) = sources.env.iter().find(|(k, v)| k == var && !v.is_empty()) {
            builder = builder.set_override(*key, value.as_str())?;
        }
    }
    // Deserialise through a JSON value so that serde_path_to_error can name the failing key.
    let tree: serde_json::Value = builder.build()?.try_deserialize()?;
    serde_path_to_error::deserialize(tree).map_err(|err| ConfigError::Invalid {
        key: err.path().to_string(),
        message: err.inner().to_string(),
    })
}

fn yaml(path: &Path, required: bool) -> config::File<config::FileSourceFile, config::FileFormat> {
    config::File::from(path.to_path_buf())
        .format(config::FileFormat::Yaml)
        .required(required)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::KitSettings;

    fn env(vars: &[(&str, &str)]) -> Sources {
        Sources {
            env: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Sources::default()
        }
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let settings: KitSettings = load_from(&env(&[])).unwrap();
        assert_eq!(settings.kafka.bootstrap_servers, "127.0.0.1:9092");
        assert!(settings.telemetry.otlp_endpoint.is_none());
    }

    #[test]
    fn standard_variables_override_the_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("base.yaml"),
            "kafka:\n  bootstrap_servers: from-file:9092\n",
        )
        .unwrap();
        let mut sources = env(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "from-env:9092"),
            ("SPINE__KAFKA__CONSUMER__MAX_IN_FLIGHT", "7"),
        ]);
        sources.config_dir = Some(dir.path().into());
        let settings: KitSettings = load_from(&sources).unwrap();
        assert_eq!(settings.kafka.bootstrap_servers, "from-env:9092");
        assert_eq!(settings.kafka.consumer.max_in_flight, 7);
    }

    #[test]
    fn a_bad_value_is_reported_with_its_key() {
        let err =
            load_from::<KitSettings>(&env(&[("SPINE__KAFKA__CONSUMER__MAX_IN_FLIGHT", "lots")]))
                .unwrap_err();
        assert!(
            err.to_string().contains("kafka.consumer.max_in_flight"),
            "{err}"
        );
    }

    #[test]
    fn the_drain_rate_is_off_by_default_and_set_from_the_environment() {
        let settings: KitSettings = load_from(&env(&[])).unwrap();
        assert_eq!(settings.kafka.consumer.max_rate, 0.0);
        for (value, rate) in [("500", 500.0), ("2.5", 2.5), ("0", 0.0)] {
            let settings: KitSettings =
                load_from(&env(&[("SPINE__KAFKA__CONSUMER__MAX_RATE", value)])).unwrap();
            assert_eq!(settings.kafka.consumer.max_rate, rate, "{value}");
        }
    }

    #[test]
    fn a_negative_drain_rate_is_rejected_with_its_key() {
        let err = load_from::<KitSettings>(&env(&[("SPINE__KAFKA__CONSUMER__MAX_RATE", "-1")]))
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("kafka.consumer.max_rate"), "{text}");
        assert!(text.contains("not a rate"), "{text}");
    }

    #[test]
    fn consumers_run_ten_nice_levels_down_unless_told_otherwise() {
        let settings: KitSettings = load_from(&env(&[])).unwrap();
        assert_eq!(settings.kafka.consumer.nice, 10);
        let settings: KitSettings =
            load_from(&env(&[("SPINE__KAFKA__CONSUMER__NICE", "0")])).unwrap();
        assert_eq!(settings.kafka.consumer.nice, 0);
        for bad in ["-5", "20"] {
            let err = load_from::<KitSettings>(&env(&[("SPINE__KAFKA__CONSUMER__NICE", bad)]))
                .unwrap_err();
            let text = err.to_string();
            assert!(text.contains("kafka.consumer.nice"), "{text}");
            assert!(text.contains("not a nice increment"), "{text}");
        }
    }

    #[test]
    fn an_unknown_key_is_rejected_by_name() {
        let err = load_from::<KitSettings>(&env(&[("SPINE__KAFKA__BOOTSTRAP_SERVER", "x:1")]))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("kafka") && text.contains("bootstrap_server"),
            "{text}"
        );
        assert!(text.contains("unknown field"), "{text}");
    }

    #[test]
    fn a_bad_duration_is_reported_with_its_key() {
        let err = load_from::<KitSettings>(&env(&[(
            "SPINE__KAFKA__CONSUMER__RETRY__INITIAL_BACKOFF",
            "soon",
        )]))
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("kafka.consumer.retry.initial_backoff"),
            "{err}"
        );
    }

    /// Every key the README's configuration reference names is a real setting: loading it
    /// from the environment never fails with "unknown field" (a wrong *type* is fine here).
    #[test]
    fn every_key_in_the_readme_configuration_reference_exists() {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("## Configuration")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("the README has a Configuration section");
        let mut keys = Vec::new();
        for row in section.lines().filter(|l| l.starts_with("| `")) {
            let cell = row.split('|').nth(1).unwrap_or_default();
            let names: Vec<&str> = cell
                .split('/')
                .map(|n| n.trim().trim_matches('`'))
                .collect();
            let first = names[0];
            let parent = first.rsplit_once('.').map_or("", |(p, _)| p);
            keys.push(first.replace("<property>", "some_property"));
            keys.extend(names[1..].iter().map(|n| format!("{parent}.{n}")));
        }
        assert!(keys.len() > 20, "found only {keys:?}");
        for key in keys {
            let var = format!("SPINE__{}", key.replace('.', "__").to_uppercase());
            if let Err(err) = load_from::<KitSettings>(&env(&[(var.as_str(), "x")])) {
                assert!(!err.to_string().contains("unknown field"), "{key}: {err}");
            }
        }
    }
}
