//! A Confluent-compatible schema registry that a test runs in its own process ([`TestRegistry`]),
//! so that registry framing, the registry client and Confluent's own clients are tested
//! without Docker.
//!
//! It serves the part of Confluent's REST API that Confluent's serializers and spine use, with
//! Confluent's JSON shapes and error codes (answers are `application/vnd.schemaregistry.v1+json`;
//! requests may be that, `application/json` or carry no content type):
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /subjects/{subject}/versions` | `{"id", "version", "guid", "schema"}`; 409 (40901) incompatible, 422 (42201) invalid |
//! | `POST /subjects/{subject}` (lookup) | `{"subject", "id", "version", "guid", "schema"}`; 404 40401 / 40403 |
//! | `GET /subjects`, `GET /subjects/{subject}/versions` | `["s"]`, `[1, 2]`; 404 40401 |
//! | `GET /subjects/{subject}/versions/{version\|latest}[/schema]` | the version (or its bare schema); 404 40401 / 40402 |
//! | `GET /schemas/ids/{id}[/schema\|/versions\|/subjects]`, `GET /schemas/guids/{guid}` | `{"schema", "guid"}` …; 404 40403 |
//! | `POST /compatibility/subjects/{subject}/versions[/{version}]` | `{"is_compatible"}`, plus `"messages"` with `?verbose=true` |
//! | `GET`/`PUT /config[/{subject}]` | `{"compatibilityLevel"}` / `{"compatibility"}`; 404 40408, 422 42203 |
//! | `GET /schemas/types`, `GET /mode`, `GET /` | `["AVRO"]`, `{"mode": "READWRITE"}`, `{}` |
//!
//! Anything else is 404 with `error_code` 404, as Confluent answers an unknown path (Confluent's
//! Python serializers ask `/associations/...` first and fall back on that 404). Query
//! parameters such as `normalize`, `deleted`, `format` and `subject` are accepted and ignored.
//! Only Avro schemas without references are supported. Compatibility follows Confluent's levels
//! (default `BACKWARD`), decided by apache-avro's `SchemaCompatibility::can_read`.

mod error;
mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub use error::RegistryError;
pub use store::{CompatibilityLevel, RegisteredSchema};
use store::{SchemaRequest, Store, Version};

/// The content type Confluent's registry answers with.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// An in-process Confluent-compatible schema registry on `127.0.0.1` and a free port, for
/// tests. Its state lives as long as it does; it stops listening on drop (or
/// [`TestRegistry::shutdown`]).
pub struct TestRegistry {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
}

struct Shared {
    store: Mutex<Store>,
    down: AtomicBool,
    /// `user:password` when basic auth is required.
    credentials: Option<String>,
    requests: Mutex<HashMap<String, u64>>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        // A handler that panicked left no half-made change worth refusing to read.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl TestRegistry {
    /// Starts a registry that needs no credentials.
    ///
    /// # Panics
    /// When no port can be bound on 127.0.0.1.
    pub async fn start() -> Self {
        Self::spawn(None).await
    }

    /// Starts a registry that answers 401 (`{"error_code": 401, ...}`, with a
    /// `WWW-Authenticate: Basic` challenge) to any request without these basic-auth
    /// credentials, as a Confluent registry with basic authentication does.
    ///
    /// # Panics
    /// When no port can be bound on 127.0.0.1.
    pub async fn with_basic_auth(user: &str, password: &str) -> Self {
        Self::spawn(Some(format!("{user}:{password}"))).await
    }

    async fn spawn(credentials: Option<String>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port on 127.0.0.1 for the test registry");
        let addr = listener.local_addr().expect("the registry's address");
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            down: AtomicBool::new(false),
            credentials,
            requests: Mutex::new(HashMap::new()),
        });
        let stop = CancellationToken::new();
        let serve = axum::serve(listener, router(shared.clone()))
            .with_graceful_shutdown(stop.clone().cancelled_owned());
        let server = tokio::spawn(async move {
            if let Err(error) = serve.await {
                tracing::warn!(%error, "the test registry stopped serving");
            }
        });
        Self {
            addr,
            shared,
            stop,
            server: Some(server),
        }
    }

    /// `http://127.0.0.1:PORT`, the URL to give clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// While `true`, every request is answered 503 (`{"error_code": 50003, ...}`), as a registry
    /// behind a load balancer answers when it has no healthy instance: for testing how clients
    /// treat an outage. What it stored stays.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// How many requests reached a route, counted before auth and [`TestRegistry::set_down`]
    /// answer them: `route` is the method and the route's pattern, e.g.
    /// `"GET /schemas/ids/{id}"` or `"POST /subjects/{subject}/versions"` (a path no route
    /// matches is counted under its own path). For asserting that a client caches.
    pub fn requests(&self, route: &str) -> u64 {
        let requests = self
            .shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        requests.get(route).copied().unwrap_or(0)
    }

    /// Registers a schema directly (no HTTP, no counting), by the same rules as
    /// `POST /subjects/{subject}/versions`: for arranging a test.
    ///
    /// # Errors
    /// The error the HTTP API would answer: an invalid schema, or one incompatible with the
    /// subject's versions.
    pub fn register(&self, subject: &str, schema: &str) -> Result<RegisteredSchema, RegistryError> {
        let request: SchemaRequest = serde_json::from_value(json!({ "schema": schema }))
            .expect("a schema request from a string");
        self.shared.store().register(subject, &request)
    }

    /// Every version registered under `subject`, oldest first (empty when it has none).
    pub fn versions(&self, subject: &str) -> Vec<RegisteredSchema> {
        self.shared.store().all_versions(subject)
    }

    /// The schema text registered under a global id.
    pub fn schema(&self, id: u32) -> Option<String> {
        self.shared.store().schema(id).map(|(text, _)| text)
    }

    /// Sets the compatibility level of `subject`, or the global one when `None`.
    pub fn set_compatibility(&self, subject: Option<&str>, level: CompatibilityLevel) {
        self.shared.store().set_level(subject, level);
    }

    /// Stops listening and waits for the requests in flight to be answered (at most 5 s, then
    /// the connections left are dropped), so that a test can then see clients meet a registry
    /// that is gone.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(std::time::Duration::from_secs(5), &mut server)
                .await
                .is_err()
        {
            server.abort();
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(|| async { answer(StatusCode::OK, &json!({})) }))
        .route(
            "/schemas/types",
            get(|| async { answer(StatusCode::OK, &["AVRO"]) }),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(bare_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(usages_of_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_id))
        .route("/schemas/guids/{guid}", get(schema_by_guid))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(bare_version_schema),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatible_with_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatible_with_version),
        )
        .route("/config", get(global_config).put(set_global_config))
        .route(
            "/config/{subject}",
            get(subject_config).put(set_subject_config),
        )
        .route(
            "/mode",
            get(|| async { answer(StatusCode::OK, &json!({ "mode": "READWRITE" })) }),
        )
        .fallback(|| async { RegistryError::new(StatusCode::NOT_FOUND, 404, "HTTP 404 Not Found") })
        .method_not_allowed_fallback(|| async {
            RegistryError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                405,
                "HTTP 405 Method Not Allowed",
            )
        })
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

/// Counts the request, then answers for an outage or missing credentials before any route.
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    *shared
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(format!("{} {route}", request.method()))
        .or_default() += 1;
    if shared.down.load(Ordering::SeqCst) {
        return RegistryError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            50003,
            "The test registry is down (set_down)",
        )
        .into_response();
    }
    if let Some(expected) = &shared.credentials
        && !authorized(request.headers(), expected)
    {
        let mut response =
            RegistryError::new(StatusCode::UNAUTHORIZED, 401, "Unauthorized").into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"SchemaRegistry\""),
        );
        return response;
    }
    next.run(request).await
}

fn authorized(headers: &HeaderMap, expected: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("basic")
        && base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .is_ok_and(|decoded| decoded == expected.as_bytes())
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        answer(
            status,
            &json!({ "error_code": self.error_code, "message": self.message }),
        )
    }
}

fn answer(status: StatusCode, body: &impl Serialize) -> Response {
    let body = serde_json::to_vec(body).expect("answers serialise to JSON");
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        body,
    )
        .into_response()
}

type Answer = Result<Response, RegistryError>;

/// Query parameters, kept as pairs: Confluent's clients repeat keys and send values such as
/// Python's `False`, and no query parameter may make a request fail.
type Params = Query<Vec<(String, String)>>;

fn flag(params: &[(String, String)], name: &str) -> bool {
    params
        .iter()
        .any(|(key, value)| key == name && value.eq_ignore_ascii_case("true"))
}

/// Parses a JSON body whatever its content type says, as Confluent accepts its own type,
/// `application/json` and `application/octet-stream` alike.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| {
        RegistryError::new(
            StatusCode::BAD_REQUEST,
            400,
            format!("The request body is not valid JSON for this request: {e}"),
        )
    })
}

fn id(text: &str) -> Result<u32, RegistryError> {
    text.parse()
        .map_err(|_| RegistryError::schema_not_found(Some(text)))
}

async fn schema_by_id(State(shared): State<Arc<Shared>>, Path(raw): Path<String>) -> Answer {
    let (schema, guid) = shared
        .store()
        .schema(id(&raw)?)
        .ok_or_else(|| RegistryError::schema_not_found(Some(&raw)))?;
    Ok(answer(
        StatusCode::OK,
        &json!({ "schema": schema, "guid": guid }),
    ))
}

async fn bare_schema_by_id(State(shared): State<Arc<Shared>>, Path(raw): Path<String>) -> Answer {
    let (schema, _) = shared
        .store()
        .schema(id(&raw)?)
        .ok_or_else(|| RegistryError::schema_not_found(Some(&raw)))?;
    bare(&schema)
}

/// A schema's own JSON as the whole body, as `.../schema` routes answer.
fn bare(schema: &str) -> Answer {
    let value: serde_json::Value =
        serde_json::from_str(schema).map_err(RegistryError::invalid_schema)?;
    Ok(answer(StatusCode::OK, &value))
}

async fn usages_of_id(State(shared): State<Arc<Shared>>, Path(raw): Path<String>) -> Answer {
    let id = id(&raw)?;
    let store = shared.store();
    if store.schema(id).is_none() {
        return Err(RegistryError::schema_not_found(Some(&raw)));
    }
    let usages: Vec<_> = store
        .usages(id)
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    Ok(answer(StatusCode::OK, &usages))
}

async fn subjects_of_id(State(shared): State<Arc<Shared>>, Path(raw): Path<String>) -> Answer {
    let id = id(&raw)?;
    let store = shared.store();
    if store.schema(id).is_none() {
        return Err(RegistryError::schema_not_found(Some(&raw)));
    }
    let mut subjects: Vec<String> = store.usages(id).into_iter().map(|(s, _)| s).collect();
    subjects.dedup();
    Ok(answer(StatusCode::OK, &subjects))
}

async fn schema_by_guid(State(shared): State<Arc<Shared>>, Path(guid): Path<String>) -> Answer {
    let (id, schema) = shared
        .store()
        .schema_by_guid(&guid)
        .ok_or_else(|| RegistryError::schema_not_found(Some(&guid)))?;
    Ok(answer(
        StatusCode::OK,
        &json!({ "schema": schema, "id": id, "guid": guid }),
    ))
}

async fn subjects(State(shared): State<Arc<Shared>>, Query(params): Params) -> Response {
    let prefix = params
        .iter()
        .find(|(key, _)| key == "subjectPrefix")
        .map_or("", |(_, value)| value.as_str());
    let subjects: Vec<String> = shared
        .store()
        .subjects()
        .into_iter()
        .filter(|s| s.starts_with(prefix))
        .collect();
    answer(StatusCode::OK, &subjects)
}

async fn lookup(
    State(shared): State<Arc<Shared>>,
    Path(subject): Path<String>,
    bytes: Bytes,
) -> Answer {
    let request = body(&bytes)?;
    let found = shared.store().lookup(&subject, &request)?;
    Ok(answer(StatusCode::OK, &found))
}

async fn register(
    State(shared): State<Arc<Shared>>,
    Path(subject): Path<String>,
    bytes: Bytes,
) -> Answer {
    let request = body(&bytes)?;
    let registered = shared.store().register(&subject, &request)?;
    Ok(answer(
        StatusCode::OK,
        &json!({
            "id": registered.id,
            "version": registered.version,
            "guid": registered.guid,
            "schema": registered.schema,
        }),
    ))
}

async fn versions(State(shared): State<Arc<Shared>>, Path(subject): Path<String>) -> Answer {
    let versions = shared.store().versions(&subject)?;
    Ok(answer(StatusCode::OK, &versions))
}

async fn version(
    State(shared): State<Arc<Shared>>,
    Path((subject, version)): Path<(String, String)>,
) -> Answer {
    let found = shared
        .store()
        .version(&subject, Version::parse(&version)?)?;
    Ok(answer(StatusCode::OK, &found))
}

async fn bare_version_schema(
    State(shared): State<Arc<Shared>>,
    Path((subject, version)): Path<(String, String)>,
) -> Answer {
    let found = shared
        .store()
        .version(&subject, Version::parse(&version)?)?;
    bare(&found.schema)
}

async fn compatible_with_all(
    State(shared): State<Arc<Shared>>,
    Path(subject): Path<String>,
    Query(params): Params,
    bytes: Bytes,
) -> Answer {
    compatibility(&shared, &subject, None, &params, &bytes)
}

async fn compatible_with_version(
    State(shared): State<Arc<Shared>>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
    bytes: Bytes,
) -> Answer {
    let version = Version::parse(&version)?;
    compatibility(&shared, &subject, Some(version), &params, &bytes)
}

fn compatibility(
    shared: &Shared,
    subject: &str,
    version: Option<Version>,
    params: &[(String, String)],
    bytes: &Bytes,
) -> Answer {
    let request = body(bytes)?;
    let verbose = flag(params, "verbose");
    let problems = shared.store().check(subject, version, &request, verbose)?;
    let mut result = json!({ "is_compatible": problems.is_empty() });
    if verbose {
        result["messages"] = json!(problems);
    }
    Ok(answer(StatusCode::OK, &result))
}

async fn global_config(State(shared): State<Arc<Shared>>) -> Response {
    let level = shared.store().level(None);
    answer(StatusCode::OK, &json!({ "compatibilityLevel": level }))
}

async fn subject_config(
    State(shared): State<Arc<Shared>>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Answer {
    let store = shared.store();
    let level = if flag(&params, "defaultToGlobal") {
        store.level(Some(&subject))
    } else {
        store.subject_level(&subject)?
    };
    Ok(answer(
        StatusCode::OK,
        &json!({ "compatibilityLevel": level }),
    ))
}

async fn set_global_config(State(shared): State<Arc<Shared>>, bytes: Bytes) -> Answer {
    set_config(&shared, None, &bytes)
}

async fn set_subject_config(
    State(shared): State<Arc<Shared>>,
    Path(subject): Path<String>,
    bytes: Bytes,
) -> Answer {
    set_config(&shared, Some(&subject), &bytes)
}

/// `PUT /config[/{subject}]` with `{"compatibility": "FULL"}`, answered with the level set.
fn set_config(shared: &Shared, subject: Option<&str>, bytes: &Bytes) -> Answer {
    let request: serde_json::Value = body(bytes)?;
    let level = request
        .get("compatibility")
        .and_then(serde_json::Value::as_str)
        .and_then(CompatibilityLevel::parse)
        .ok_or_else(RegistryError::invalid_compatibility_level)?;
    shared.store().set_level(subject, level);
    Ok(answer(StatusCode::OK, &json!({ "compatibility": level })))
}
