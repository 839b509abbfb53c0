//! Avro framing on the wire, and the Confluent-compatible schema registry it may need.
//!
//! [`init`] runs once at a service's startup: it sets the framing the codec writes
//! (`schemas.framing`, `schemas.topic_framing`) and, when a registry is configured, registers
//! (or only looks up) every schema of the embedded catalog under its subject and learns the
//! ids, so that encoding in the outbox transaction never waits on the network. A registry that
//! is down at startup is a startup error naming `schemas.registry.url`.
//!
//! On the consuming side, [`resolve`] runs before each handler attempt: a Confluent-framed
//! record whose schema id this process has not seen is looked up (`GET /schemas/ids/{id}`).
//! A registry that is down then is an outage (the runner stalls and retries, never
//! dead-letters); an id the registry does not know, or a schema outside this build's catalog,
//! is poison, as an unknown single-object fingerprint already is.
//!
//! The client is ours rather than `schema_registry_converter`'s: encoding must stay synchronous
//! inside the outbox transaction (ids are resolved at startup), errors must split into outage
//! and poison for the runner, and decoding keeps the codec's strict datum checks. It needs four
//! endpoints of the REST API.

use std::sync::OnceLock;

use anyhow::Context as _;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use spine_events::catalog::{CatalogEntry, catalog, fingerprint_of};
use spine_events::codec;

use crate::kafka::consumer::HandlerError;
use crate::settings::{RegistrySettings, SchemaSettings, SubjectNameStrategy};

/// The registry this process resolves unknown schema ids with, set by [`init`].
static REGISTRY: OnceLock<SchemaRegistry> = OnceLock::new();

/// The content type of the registry's REST API.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Why a call to the registry failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached, timed out, or answered 5xx: an outage.
    #[error("schema registry at {url} (schemas.registry.url) is unavailable: {reason}")]
    Unavailable {
        /// The registry's base URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// 401 or 403: the credentials (`schemas.registry.username` / `password`) are wrong.
    /// Treated as an outage: nothing is wrong with the records.
    #[error(
        "schema registry at {url} refused the credentials (HTTP {status}): check schemas.registry.username and schemas.registry.password"
    )]
    Unauthorized {
        /// The registry's base URL.
        url: String,
        /// 401 or 403.
        status: u16,
    },
    /// The registry rejected the request (4xx other than auth): its error code and message.
    #[error("schema registry rejected {what}: HTTP {status}, error {code}: {message}")]
    Rejected {
        /// What was asked.
        what: String,
        /// The HTTP status.
        status: u16,
        /// Confluent's `error_code` (e.g. 409 incompatible, 40401 subject not found).
        code: i64,
        /// Its `message`.
        message: String,
    },
    /// The answer was not the JSON the API documents.
    #[error("schema registry answered {what} with something unreadable: {reason}")]
    BadResponse {
        /// What was asked.
        what: String,
        /// Why it could not be read.
        reason: String,
    },
    /// A setting is unusable.
    #[error("invalid setting `{key}`: {message}")]
    Config {
        /// The dotted key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl RegistryError {
    /// True when the registry is down or refuses us: retry later, the record is fine.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Unauthorized { .. })
    }
}

/// The answer to a compatibility check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compatibility {
    /// Whether the registry accepts the schema under the subject's compatibility level.
    pub is_compatible: bool,
    /// The registry's reasons, when it gives them.
    pub messages: Vec<String>,
}

/// A schema registered under a subject.
#[derive(Debug, Clone, Deserialize)]
pub struct RegisteredSchema {
    /// The registry-wide id.
    pub id: u32,
    /// The version under the subject.
    #[serde(default)]
    pub version: Option<u32>,
}

/// A client of a Confluent-compatible schema registry's REST API.
#[derive(Debug, Clone)]
pub struct SchemaRegistry {
    http: reqwest::Client,
    url: String,
    username: Option<String>,
    password: Option<SecretString>,
    strategy: SubjectNameStrategy,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: i64,
    message: String,
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
}

#[derive(Deserialize)]
struct CompatibilityBody {
    is_compatible: bool,
    #[serde(default)]
    messages: Vec<String>,
}

impl SchemaRegistry {
    /// A client for the registry in `settings`; `None` when `url` is unset or empty.
    pub fn from_settings(settings: &RegistrySettings) -> Result<Option<Self>, RegistryError> {
        let Some(url) = settings
            .url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(RegistryError::Config {
                key: "schemas.registry.url",
                message: format!("{url:?} is not an http:// or https:// URL"),
            });
        }
        let mut http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout);
        if let Some(path) = &settings.ca_file {
            let config = |message: String| RegistryError::Config {
                key: "schemas.registry.ca_file",
                message,
            };
            let pem = std::fs::read(path)
                .map_err(|e| config(format!("cannot read {}: {e}", path.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| config(format!("{} is not PEM certificates: {e}", path.display())))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build().map_err(|e| RegistryError::Config {
            key: "schemas.registry.url",
            message: format!("cannot build an HTTP client: {e}"),
        })?;
        // Empty values count as unset: a Secret with empty keys means "no auth".
        let username = settings.username.clone().filter(|u| !u.is_empty());
        let password = settings
            .password
            .clone()
            .filter(|p| !p.expose_secret().is_empty());
        if username.is_some() != password.is_some() {
            return Err(RegistryError::Config {
                key: "schemas.registry.password",
                message:
                    "set both schemas.registry.username and schemas.registry.password, or neither"
                        .into(),
            });
        }
        Ok(Some(Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            username,
            password,
            strategy: settings.subject_name_strategy,
        }))
    }

    /// The registry's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The subject `entry`'s schema is registered under.
    pub fn subject(&self, entry: &CatalogEntry) -> String {
        self.strategy.subject(entry.topic(), entry.full_name())
    }

    /// Registers `schema` (Avro JSON) under `subject`: its id, the existing one when the
    /// registry already has it. An incompatible schema is [`RegistryError::Rejected`] with
    /// code 409.
    pub async fn register(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<RegisteredSchema, RegistryError> {
        let what = format!("registering a schema under {subject}");
        let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" });
        let path = format!("/subjects/{}/versions", encode_segment(subject));
        self.send(&what, self.http.post(self.endpoint(&path)).json(&body))
            .await
    }

    /// The id of `schema` under `subject`, or `None` when it is not registered there.
    pub async fn lookup(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<Option<RegisteredSchema>, RegistryError> {
        let what = format!("looking up a schema under {subject}");
        let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" });
        let path = format!("/subjects/{}", encode_segment(subject));
        not_found_is_none(
            self.send(&what, self.http.post(self.endpoint(&path)).json(&body))
                .await,
        )
    }

    /// The schema (Avro JSON) with registry id `id`, or `None` when the registry has no such id.
    pub async fn schema_by_id(&self, id: u32) -> Result<Option<String>, RegistryError> {
        let what = format!("schema id {id}");
        let found: Option<SchemaBody> = not_found_is_none(
            self.send(
                &what,
                self.http.get(self.endpoint(&format!("/schemas/ids/{id}"))),
            )
            .await,
        )?;
        Ok(found.map(|b| b.schema))
    }

    /// Whether `schema` may be registered under `subject` (against its latest version, under
    /// the subject's compatibility level). A subject that does not exist yet accepts anything.
    pub async fn check_compatibility(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<Compatibility, RegistryError> {
        let what = format!("checking compatibility under {subject}");
        let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" });
        let path = format!(
            "/compatibility/subjects/{}/versions/latest?verbose=true",
            encode_segment(subject)
        );
        let answer: Option<CompatibilityBody> = not_found_is_none(
            self.send(&what, self.http.post(self.endpoint(&path)).json(&body))
                .await,
        )?;
        Ok(answer.map_or(
            Compatibility {
                is_compatible: true,
                messages: vec![format!("{subject} is a new subject")],
            },
            |a| Compatibility {
                is_compatible: a.is_compatible,
                messages: a.messages,
            },
        ))
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, RegistryError> {
        let mut request = request.header(reqwest::header::ACCEPT, CONTENT_TYPE);
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            request = request.basic_auth(user, Some(password.expose_secret()));
        }
        let unavailable = |reason: String| RegistryError::Unavailable {
            url: self.url.clone(),
            reason,
        };
        let response = request
            .send()
            .await
            .map_err(|e| unavailable(format!("{what}: {}", error_chain(&e))))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unavailable(format!("{what}: {}", error_chain(&e))))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadResponse {
                what: what.to_owned(),
                reason: e.to_string(),
            });
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(unavailable(format!(
                "{what}: HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized {
                url: self.url.clone(),
                status: status.as_u16(),
            });
        }
        let body: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
        Err(RegistryError::Rejected {
            what: what.to_owned(),
            status: status.as_u16(),
            code: body
                .as_ref()
                .map_or(i64::from(status.as_u16()), |b| b.error_code),
            message: body.map_or_else(
                || String::from_utf8_lossy(&bytes).into_owned(),
                |b| b.message,
            ),
        })
    }
}

/// Confluent answers 404 (error codes 404xx) for an unknown subject, version or schema.
fn not_found_is_none<T>(result: Result<T, RegistryError>) -> Result<Option<T>, RegistryError> {
    match result {
        Ok(found) => Ok(Some(found)),
        Err(RegistryError::Rejected { status: 404, .. }) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Percent-encodes a subject for a URL path segment (subjects hold dots and dashes, and may
/// hold anything a strategy produces).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sets the codec's framing from `settings` and, with a registry, makes every catalog schema
/// known to it (registering or looking up each, oldest version first) so that encoding needs
/// no network. Call once at startup, before the outbox or a producer encodes anything.
///
/// Errors name the setting: Confluent framing without `schemas.registry.url`, a registry that
/// is down, a schema it finds incompatible, or (with `auto_register: false`) the latest
/// version of an event that is not registered.
pub async fn init(settings: &SchemaSettings) -> anyhow::Result<()> {
    codec::set_framing(
        settings.framing,
        settings
            .topic_framing
            .iter()
            .map(|(topic, framing)| (topic.clone(), *framing)),
    );
    let registry = SchemaRegistry::from_settings(&settings.registry)?;
    let Some(registry) = registry else {
        anyhow::ensure!(
            !settings.uses_confluent(),
            "invalid setting `schemas.registry.url`: schemas.framing (or schemas.topic_framing) is `confluent`, which needs a schema registry URL"
        );
        return Ok(());
    };
    let mut entries: Vec<&'static CatalogEntry> = catalog().entries().iter().collect();
    entries.sort_by(|a, b| (a.name(), a.version()).cmp(&(b.name(), b.version())));
    for entry in entries {
        let subject = registry.subject(entry);
        let found = if settings.registry.auto_register {
            Some(registry.register(&subject, entry.json()).await)
        } else {
            registry.lookup(&subject, entry.json()).await.transpose()
        };
        match found {
            Some(Ok(registered)) => codec::learn_schema_id(registered.id, entry),
            Some(Err(err)) => {
                return Err(err).with_context(|| {
                    format!(
                        "making {} known to the schema registry as {subject}",
                        entry.file()
                    )
                });
            }
            None if catalog()
                .latest(entry.name())
                .is_some_and(|l| std::ptr::eq(l, entry)) =>
            {
                anyhow::bail!(
                    "{} is not registered under {subject} in the schema registry at {} (schemas.registry.auto_register is false: register it with `schema-check --registry`)",
                    entry.file(),
                    registry.url()
                );
            }
            None => {
                tracing::debug!(schema = entry.file(), %subject, "older schema version not registered")
            }
        }
    }
    tracing::info!(url = registry.url(), framing = ?settings.framing, "schemas known to the registry");
    // A second init (tests build several services in one process) keeps the first client.
    let _ = REGISTRY.set(registry);
    Ok(())
}

/// Uses the registry in `settings` to resolve unknown ids ([`resolve`]) without registering or
/// looking up anything: for tools that only read (e.g. `spine-dlq --registry`). A no-op without
/// a URL, or when [`init`] already chose a registry.
pub fn connect(settings: &RegistrySettings) -> Result<(), RegistryError> {
    if let Some(registry) = SchemaRegistry::from_settings(settings)? {
        let _ = REGISTRY.set(registry);
    }
    Ok(())
}

/// Learns the registry ids of every catalog schema the registry has (looked up under their
/// subjects, nothing registered), and keeps the registry for [`resolve`]: for tools that read
/// spine's topics without writing, e.g. the spike generator's outcome reader. Returns how many
/// schemas the registry has.
pub async fn learn_catalog(settings: &RegistrySettings) -> Result<usize, RegistryError> {
    let Some(registry) = SchemaRegistry::from_settings(settings)? else {
        return Ok(0);
    };
    let mut learned = 0;
    for entry in catalog().entries() {
        if let Some(found) = registry
            .lookup(&registry.subject(entry), entry.json())
            .await?
        {
            codec::learn_schema_id(found.id, entry);
            learned += 1;
        }
    }
    let _ = REGISTRY.set(registry);
    Ok(learned)
}

/// Makes the writer schema of `payload` known before a handler decodes it: for a
/// Confluent-framed record with an id this process has not seen, asks the registry.
///
/// An outage of the registry is [`HandlerError::Unavailable`]; an id the registry does not
/// have, or a schema outside the catalog, is left unknown, so the handler's decode fails as
/// poison with the reason.
pub async fn resolve(payload: Option<&[u8]>) -> Result<(), HandlerError> {
    let Some(id) = payload.and_then(codec::unknown_schema_id) else {
        return Ok(());
    };
    let Some(registry) = REGISTRY.get() else {
        return Ok(());
    };
    match registry.schema_by_id(id).await {
        Ok(Some(json)) => {
            learn(id, &json);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(err) if err.is_outage() => Err(HandlerError::unavailable(err)),
        // A 4xx other than 404 on a GET by id: nothing a retry fixes; the decode says poison.
        Err(err) => {
            tracing::warn!(id, error = %err, "schema id lookup rejected");
            Ok(())
        }
    }
}

/// Learns `id` when `json` is a schema of the catalog (by its canonical form's fingerprint).
fn learn(id: u32, json: &str) {
    let entry = apache_avro::Schema::parse_str(json)
        .ok()
        .and_then(|schema| catalog().by_fingerprint(fingerprint_of(&schema)));
    match entry {
        Some(entry) => codec::learn_schema_id(id, entry),
        None => tracing::warn!(id, "schema id names a schema outside this build's catalog"),
    }
}
