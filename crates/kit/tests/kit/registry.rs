//! The in-process test registry ([`spine_kit::testing::registry::TestRegistry`]) over HTTP:
//! Confluent's routes, JSON shapes and error codes, basic auth, outages, and Confluent's own
//! Python client (tests/interop/registry_client.py) talking to it.

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};
use spine_kit::testing::registry::{CONTENT_TYPE, CompatibilityLevel, TestRegistry};

const SUBJECT: &str = "orders.events-spine.orders.OrderPlaced";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn schema(file: &str) -> String {
    let path = repo().join("schemas").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `schema` with one more field.
fn with_field(schema: &str, field: Value) -> String {
    let mut schema: Value = serde_json::from_str(schema).unwrap();
    schema["fields"].as_array_mut().unwrap().push(field);
    schema.to_string()
}

struct Api {
    url: String,
    http: reqwest::Client,
}

impl Api {
    fn new(registry: &TestRegistry) -> Self {
        Self {
            url: registry.url(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("the registry answers");
        let status = response.status();
        let body = response.text().await.expect("a body");
        let value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): HTTP {status} {body:?}"));
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(format!("{}{path}", self.url)))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let request = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", CONTENT_TYPE)
            .body(body.to_string());
        self.send(request).await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.put(format!("{}{path}", self.url)).json(&body))
            .await
    }

    async fn register(&self, subject: &str, schema: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/subjects/{subject}/versions?normalize=False"),
            json!({ "schema": schema, "schemaType": "AVRO", "references": [] }),
        )
        .await
    }
}

fn error_code(body: &Value) -> u64 {
    body["error_code"]
        .as_u64()
        .unwrap_or_else(|| panic!("no error_code in {body}"))
}

#[tokio::test]
async fn a_schema_gets_one_global_id_and_reregistering_it_makes_no_new_version() {
    let registry = TestRegistry::start().await;
    let api = Api::new(&registry);
    let (v1, v2) = (schema("OrderPlaced.v1.avsc"), schema("OrderPlaced.v2.avsc"));

    let (status, first) = api.register(SUBJECT, &v1).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        (first["id"].as_u64(), first["version"].as_u64()),
        (Some(1), Some(1))
    );
    let (_, again) = api.register(SUBJECT, &v1).await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(
        api.get(&format!("/subjects/{SUBJECT}/versions")).await.1,
        json!([1])
    );

    let (_, second) = api.register(SUBJECT, &v2).await;
    assert_eq!(
        (second["id"].as_u64(), second["version"].as_u64()),
        (Some(2), Some(2))
    );
    let (_, elsewhere) = api.register("other-spine.orders.OrderPlaced", &v1).await;
    assert_eq!(
        elsewhere["id"], first["id"],
        "ids are global across subjects"
    );
    assert_eq!(elsewhere["version"], 1);

    let (status, subjects) = api.get("/subjects").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        subjects,
        json!([
            "orders.events-spine.orders.OrderPlaced",
            "other-spine.orders.OrderPlaced"
        ])
    );
    assert_eq!(
        api.get(&format!("/subjects/{SUBJECT}/versions")).await.1,
        json!([1, 2])
    );
    let (_, usages) = api.get("/schemas/ids/1/versions").await;
    assert_eq!(
        usages,
        json!([
            { "subject": SUBJECT, "version": 1 },
            { "subject": "other-spine.orders.OrderPlaced", "version": 1 }
        ])
    );
    assert_eq!(registry.versions(SUBJECT).len(), 2);
}

#[tokio::test]
async fn schemas_are_found_by_id_version_and_lookup_with_confluents_codes_when_not() {
    let registry = TestRegistry::start().await;
    let api = Api::new(&registry);
    let (v1, v2) = (schema("OrderPlaced.v1.avsc"), schema("OrderPlaced.v2.avsc"));
    let id1 = registry.register(SUBJECT, &v1).unwrap().id;
    let id2 = registry.register(SUBJECT, &v2).unwrap().id;

    let response = reqwest::get(format!(
        "{}/schemas/ids/{id1}?subject={SUBJECT}&format=serialized",
        registry.url()
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], CONTENT_TYPE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["schema"], v1.as_str());
    assert!(
        body.get("schemaType").is_none(),
        "Confluent leaves schemaType out for Avro: {body}"
    );

    let (status, missing) = api.get("/schemas/ids/99").await;
    assert_eq!(
        (status, error_code(&missing)),
        (StatusCode::NOT_FOUND, 40403)
    );

    let (_, latest) = api
        .get(&format!("/subjects/{SUBJECT}/versions/latest"))
        .await;
    assert_eq!(latest["subject"], SUBJECT);
    assert_eq!(
        (latest["id"].as_u64(), latest["version"].as_u64()),
        (Some(u64::from(id2)), Some(2))
    );
    assert_eq!(latest["schema"], v2.as_str());
    let (_, first) = api.get(&format!("/subjects/{SUBJECT}/versions/1")).await;
    assert_eq!(first["id"], id1);
    let (status, bare) = api
        .get(&format!("/subjects/{SUBJECT}/versions/1/schema"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bare, serde_json::from_str::<Value>(&v1).unwrap());
    let (status, body) = api.get(&format!("/subjects/{SUBJECT}/versions/3")).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40402));
    let (status, body) = api
        .get(&format!("/subjects/{SUBJECT}/versions/first"))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42202)
    );
    let (status, body) = api.get("/subjects/nobody/versions/latest").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40401));
    let (status, body) = api.get("/subjects/nobody/versions").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40401));

    // Lookup: found, then the two different 404s.
    let (status, found) = api
        .post(
            &format!("/subjects/{SUBJECT}?normalize=False&deleted=False"),
            json!({ "schema": v2 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(
        (found["id"].as_u64(), found["version"].as_u64()),
        (Some(u64::from(id2)), Some(2))
    );
    assert_eq!(found["subject"], SUBJECT);
    let unknown = with_field(&v2, json!({ "name": "x", "type": "int", "default": 0 }));
    let (status, body) = api
        .post(
            &format!("/subjects/{SUBJECT}"),
            json!({ "schema": unknown }),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40403));
    let (status, body) = api.post("/subjects/nobody", json!({ "schema": v1 })).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40401));

    let (status, body) = api.get("/associations/resources/-/orders.events").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 404));
}

#[tokio::test]
async fn an_incompatible_schema_is_refused_with_409_and_compatibility_answers_say_why() {
    let registry = TestRegistry::start().await;
    let api = Api::new(&registry);
    let v2 = schema("OrderPlaced.v2.avsc");
    registry
        .register(SUBJECT, &schema("OrderPlaced.v1.avsc"))
        .unwrap();
    registry.register(SUBJECT, &v2).unwrap();
    let required = with_field(&v2, json!({ "name": "coupon", "type": "string" }));
    let optional = with_field(
        &v2,
        json!({ "name": "coupon", "type": ["null", "string"], "default": null }),
    );

    let (status, body) = api.register(SUBJECT, &required).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, 40901),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("coupon"),
        "{body}"
    );
    assert_eq!(
        registry.versions(SUBJECT).len(),
        2,
        "nothing was registered"
    );

    let path =
        format!("/compatibility/subjects/{SUBJECT}/versions/latest?normalize=False&verbose=True");
    let (status, body) = api.post(&path, json!({ "schema": required })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["is_compatible"], false);
    assert!(
        body["messages"][0].as_str().unwrap().contains("coupon"),
        "{body}"
    );
    let path = format!("/compatibility/subjects/{SUBJECT}/versions/latest");
    let (_, body) = api.post(&path, json!({ "schema": optional })).await;
    assert_eq!(
        body,
        json!({ "is_compatible": true }),
        "messages only when verbose"
    );
    let path = format!("/compatibility/subjects/{SUBJECT}/versions?verbose=false");
    let (_, body) = api.post(&path, json!({ "schema": required })).await;
    assert_eq!(body["is_compatible"], false);
    let (status, body) = api
        .post(
            &format!("/compatibility/subjects/{SUBJECT}/versions/7"),
            json!({ "schema": optional }),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40402));
    // A subject with no versions: nothing to break against `latest`, as Confluent answers.
    let (status, body) = api
        .post(
            "/compatibility/subjects/new-subject/versions/latest",
            json!({ "schema": required }),
        )
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "is_compatible": true }))
    );

    // With the subject at NONE, the same schema is taken.
    registry.set_compatibility(Some(SUBJECT), CompatibilityLevel::None);
    let (status, body) = api.register(SUBJECT, &required).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 3);
}

#[tokio::test]
async fn an_invalid_schema_is_422_42201_and_a_malformed_body_is_400() {
    let registry = TestRegistry::start().await;
    let api = Api::new(&registry);
    let (status, body) = api
        .register(SUBJECT, r#"{"type":"record","name":"R"}"#)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42201),
        "{body}"
    );
    let (status, body) = api
        .post(
            &format!("/subjects/{SUBJECT}/versions"),
            json!({ "schema": "{}", "schemaType": "PROTOBUF" }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42201),
        "{body}"
    );
    let response = reqwest::Client::new()
        .post(format!("{}/subjects/{SUBJECT}/versions", registry.url()))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(registry.versions(SUBJECT).is_empty());
}

#[tokio::test]
async fn compatibility_levels_are_set_and_read_globally_and_per_subject() {
    let registry = TestRegistry::start().await;
    let api = Api::new(&registry);
    assert_eq!(
        api.get("/config").await.1,
        json!({ "compatibilityLevel": "BACKWARD" })
    );
    let (status, body) = api.get(&format!("/config/{SUBJECT}")).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, 40408),
        "no subject level yet"
    );
    let (_, body) = api
        .get(&format!("/config/{SUBJECT}?defaultToGlobal=true"))
        .await;
    assert_eq!(body, json!({ "compatibilityLevel": "BACKWARD" }));

    let (status, body) = api
        .put(
            &format!("/config/{SUBJECT}"),
            json!({ "compatibility": "full" }),
        )
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "compatibility": "FULL" }))
    );
    assert_eq!(
        api.get(&format!("/config/{SUBJECT}")).await.1,
        json!({ "compatibilityLevel": "FULL" })
    );
    let (_, body) = api
        .put("/config", json!({ "compatibility": "FORWARD_TRANSITIVE" }))
        .await;
    assert_eq!(body, json!({ "compatibility": "FORWARD_TRANSITIVE" }));
    assert_eq!(
        api.get("/config").await.1,
        json!({ "compatibilityLevel": "FORWARD_TRANSITIVE" })
    );
    assert_eq!(
        api.get(&format!("/config/{SUBJECT}")).await.1,
        json!({ "compatibilityLevel": "FULL" })
    );

    let (status, body) = api
        .put("/config", json!({ "compatibility": "SIDEWAYS" }))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42203)
    );
}

#[tokio::test]
async fn with_basic_auth_a_request_without_the_right_credentials_is_401() {
    let registry = TestRegistry::with_basic_auth("spine", "s3cret").await;
    let http = reqwest::Client::new();
    let url = format!("{}/subjects", registry.url());

    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "error_code": 401, "message": "Unauthorized" })
    );

    let wrong = http
        .get(&url)
        .basic_auth("spine", Some("guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let right = http
        .get(&url)
        .basic_auth("spine", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    assert_eq!(right.json::<Value>().await.unwrap(), json!([]));
}

#[tokio::test]
async fn a_registry_set_down_answers_503_and_keeps_what_it_stored() {
    let registry = TestRegistry::start().await;
    let api = Api::new(&registry);
    let id = registry
        .register(SUBJECT, &schema("OrderPlaced.v1.avsc"))
        .unwrap()
        .id;

    registry.set_down(true);
    let (status, body) = api.get(&format!("/schemas/ids/{id}")).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, 50003)
    );
    let (status, _) = api.register(SUBJECT, &schema("OrderPlaced.v2.avsc")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    registry.set_down(false);
    let (status, body) = api.get(&format!("/schemas/ids/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        registry.versions(SUBJECT).len(),
        1,
        "the register during the outage did nothing"
    );
}

#[tokio::test]
async fn requests_are_counted_per_route_pattern() {
    let registry = TestRegistry::start().await;
    let api = Api::new(&registry);
    let id = registry
        .register(SUBJECT, &schema("OrderPlaced.v1.avsc"))
        .unwrap()
        .id;
    assert_eq!(
        registry.requests("GET /schemas/ids/{id}"),
        0,
        "in-process calls are not requests"
    );

    api.get(&format!("/schemas/ids/{id}")).await;
    api.get("/schemas/ids/42").await;
    api.register(SUBJECT, &schema("OrderPlaced.v1.avsc")).await;
    registry.set_down(true);
    api.get(&format!("/schemas/ids/{id}")).await;

    assert_eq!(registry.requests("GET /schemas/ids/{id}"), 3);
    assert_eq!(registry.requests("POST /subjects/{subject}/versions"), 1);
    assert_eq!(registry.requests("GET /subjects"), 0);
}

#[tokio::test]
async fn a_registry_shut_down_refuses_connections() {
    let registry = TestRegistry::start().await;
    let url = registry.url();
    registry.shutdown().await;
    let error = reqwest::get(format!("{url}/subjects")).await.unwrap_err();
    assert!(error.is_connect(), "{error}");
}

/// Runs tests/interop/registry_client.py (Confluent's own Python client) against `registry`.
/// Python and `confluent-kafka[avro,schemaregistry]` come from scripts/setup; a missing one
/// fails the test.
async fn run_confluent_client(registry: &TestRegistry, credentials: Option<(&str, &str)>) {
    let script = repo().join("tests/interop/registry_client.py");
    let mut command = Command::new("python3");
    command.arg(&script).arg(registry.url());
    if let Some((user, password)) = credentials {
        command.args(["--user", user, "--password", password]);
    }
    // Blocking, off the runtime's threads, so that the registry keeps serving meanwhile.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): run scripts/setup"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} failed ({}):\n{stdout}\n{stderr}",
        script.display(),
        output.status
    );
    assert!(stdout.contains("every check passed"), "{stdout}");
    // Captured by the test runner; shown with --no-capture.
    println!("{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluents_python_client_registers_reads_and_round_trips_records_through_the_registry() {
    let registry = TestRegistry::start().await;
    run_confluent_client(&registry, None).await;

    // What the client did is what the registry holds.
    let versions = registry.versions(SUBJECT);
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1].id, 2);
    assert!(registry.requests("GET /schemas/ids/{id}") >= 1);
    assert!(
        registry.requests("POST /subjects/{subject}") >= 2,
        "lookups"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluents_python_client_authenticates_with_basic_auth() {
    let registry = TestRegistry::with_basic_auth("spine", "s3cret").await;
    run_confluent_client(&registry, Some(("spine", "s3cret"))).await;
    assert_eq!(registry.versions(SUBJECT).len(), 2);
}

/// spine's own registry client against the test registry: the two sides of issue 15 agree on
/// shapes, codes and what counts as an outage.
#[tokio::test]
async fn spines_registry_client_registers_looks_up_reads_and_sees_outages() {
    use spine_kit::schemas::{RegistryError, SchemaRegistry};
    use spine_kit::settings::RegistrySettings;

    let registry = TestRegistry::with_basic_auth("spine", "s3cret").await;
    let settings = RegistrySettings {
        url: Some(registry.url()),
        username: Some("spine".into()),
        password: Some("s3cret".to_owned().into()),
        ..RegistrySettings::default()
    };
    let client = SchemaRegistry::from_settings(&settings).unwrap().unwrap();
    let (v1, v2) = (schema("OrderPlaced.v1.avsc"), schema("OrderPlaced.v2.avsc"));

    let first = client.register(SUBJECT, &v1).await.unwrap();
    assert_eq!((first.id, first.version), (1, Some(1)));
    assert_eq!(client.register(SUBJECT, &v1).await.unwrap().id, 1);
    assert!(client.lookup(SUBJECT, &v2).await.unwrap().is_none());
    let compatibility = client.check_compatibility(SUBJECT, &v2).await.unwrap();
    assert!(compatibility.is_compatible, "{compatibility:?}");
    assert_eq!(client.register(SUBJECT, &v2).await.unwrap().id, 2);
    assert_eq!(client.lookup(SUBJECT, &v2).await.unwrap().unwrap().id, 2);
    assert_eq!(client.schema_by_id(1).await.unwrap(), Some(v1.clone()));
    assert_eq!(client.schema_by_id(9).await.unwrap(), None);

    let required = with_field(&v2, json!({ "name": "coupon", "type": "string" }));
    let compatibility = client
        .check_compatibility(SUBJECT, &required)
        .await
        .unwrap();
    assert!(!compatibility.is_compatible);
    assert!(!compatibility.messages.is_empty());
    match client.register(SUBJECT, &required).await {
        Err(RegistryError::Rejected { status: 409, .. }) => {}
        other => panic!("expected a 409 rejection, got {other:?}"),
    }

    registry.set_down(true);
    let error = client.schema_by_id(1).await.unwrap_err();
    assert!(error.is_outage(), "{error}");
    registry.set_down(false);

    let wrong = RegistrySettings {
        password: Some("guess".to_owned().into()),
        ..settings
    };
    let error = SchemaRegistry::from_settings(&wrong)
        .unwrap()
        .unwrap()
        .schema_by_id(1)
        .await
        .unwrap_err();
    assert!(
        matches!(error, RegistryError::Unauthorized { status: 401, .. }),
        "{error}"
    );
}
