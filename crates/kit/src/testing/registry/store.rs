//! What the test registry knows and the rules it answers by: schema ids, subjects and their
//! versions, compatibility levels, and Confluent's error codes. No HTTP here, so the rules
//! can be read (and changed) in one place.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use apache_avro::Schema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use serde::{Deserialize, Serialize};

use super::error::RegistryError;

/// A subject's compatibility level, named as Confluent names them.
///
/// `BACKWARD`: a new schema must read data written with the latest one; `FORWARD`: the latest
/// must read data written with the new one; `FULL`: both. The `_TRANSITIVE` forms check against
/// every earlier version, not only the latest. `NONE` checks nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityLevel {
    /// No check.
    None,
    /// The new schema reads data written with the latest version (Confluent's default).
    Backward,
    /// The new schema reads data written with every earlier version.
    BackwardTransitive,
    /// The latest version reads data written with the new schema.
    Forward,
    /// Every earlier version reads data written with the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every earlier version.
    FullTransitive,
}

impl CompatibilityLevel {
    /// Parses a level the way Confluent does: case-insensitively.
    pub fn parse(level: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(level.to_ascii_uppercase())).ok()
    }

    /// The level's name, e.g. `BACKWARD_TRANSITIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A schema as registered under a subject, in the shape Confluent answers
/// `GET /subjects/{subject}/versions/{version}` and the lookup with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisteredSchema {
    /// The subject.
    pub subject: String,
    /// Its version under the subject, from 1.
    pub version: u32,
    /// The global schema id, the one the Confluent framing carries.
    pub id: u32,
    /// The schema's GUID, which newer Confluent registries give every schema beside its id.
    pub guid: String,
    /// The schema's text, as it was first registered.
    pub schema: String,
}

/// The body of a register, lookup or compatibility request. Unknown fields (`metadata`,
/// `ruleSet`, `id`, `version`) are accepted and ignored, as Confluent's clients send them.
#[derive(Debug, Default, Deserialize)]
pub(super) struct SchemaRequest {
    schema: Option<String>,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    references: Option<Vec<serde_json::Value>>,
}

/// A version selector: a number, or `latest` (Confluent also takes -1 for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    Latest,
    Number(u32),
}

impl Version {
    pub(super) fn parse(text: &str) -> Result<Self, RegistryError> {
        if text.eq_ignore_ascii_case("latest") || text == "-1" {
            return Ok(Self::Latest);
        }
        match text.parse::<u32>() {
            Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(Self::Number(n)),
            _ => Err(RegistryError::invalid_version(text)),
        }
    }
}

/// A schema given by a client, parsed.
struct Candidate {
    text: String,
    schema: Schema,
    /// What makes two schemas "the same" here: the schema as apache-avro writes it back, so
    /// whitespace, key order and name/namespace spelling don't count but docs, defaults and
    /// logical types do. Confluent compares its own re-serialised form the same way; Avro's
    /// Parsing Canonical Form would not do, because it drops defaults and logical types and
    /// two schemas that resolve differently would then share an id.
    identity: String,
}

impl Candidate {
    fn parse(request: &SchemaRequest) -> Result<Self, RegistryError> {
        if let Some(kind) = &request.schema_type
            && !kind.eq_ignore_ascii_case("AVRO")
        {
            return Err(RegistryError::invalid_schema(format!(
                "schema type {kind} is not supported by the test registry (only AVRO)"
            )));
        }
        if request.references.as_ref().is_some_and(|r| !r.is_empty()) {
            return Err(RegistryError::invalid_schema(
                "schema references are not supported by the test registry",
            ));
        }
        let text = request
            .schema
            .clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| RegistryError::invalid_schema("the request has no schema"))?;
        let schema = Schema::parse_str(&text)
            .map_err(|e| RegistryError::invalid_schema(format!("{text}, details: {e}")))?;
        let identity = serde_json::to_value(&schema)
            .and_then(|value| serde_json::to_string(&value))
            .map_err(|e| RegistryError::invalid_schema(format!("{text}, details: {e}")))?;
        Ok(Self {
            text,
            schema,
            identity,
        })
    }
}

struct Stored {
    guid: String,
    text: String,
    schema: Schema,
    identity: String,
}

/// The registry's whole state. Schema ids are global and start at 1; a subject holds a list of
/// schema ids, its versions in order.
pub(super) struct Store {
    schemas: Vec<Stored>,
    ids: HashMap<String, u32>,
    subjects: BTreeMap<String, Vec<u32>>,
    global: CompatibilityLevel,
    levels: HashMap<String, CompatibilityLevel>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            schemas: Vec::new(),
            ids: HashMap::new(),
            subjects: BTreeMap::new(),
            global: CompatibilityLevel::Backward,
            levels: HashMap::new(),
        }
    }
}

impl Store {
    fn stored(&self, id: u32) -> Option<&Stored> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.schemas.get(index)
    }

    fn registered(&self, subject: &str, version: u32, id: u32) -> RegisteredSchema {
        let stored = self.stored(id).expect("a subject only holds stored ids");
        RegisteredSchema {
            subject: subject.to_owned(),
            version,
            id,
            guid: stored.guid.clone(),
            schema: stored.text.clone(),
        }
    }

    /// The schema text and GUID under a global id.
    pub(super) fn schema(&self, id: u32) -> Option<(String, String)> {
        self.stored(id).map(|s| (s.text.clone(), s.guid.clone()))
    }

    /// The id and text of the schema with this GUID.
    pub(super) fn schema_by_guid(&self, guid: &str) -> Option<(u32, String)> {
        self.schemas
            .iter()
            .zip(1..)
            .find(|(s, _)| s.guid == guid)
            .map(|(s, id)| (id, s.text.clone()))
    }

    /// Every (subject, version) that holds the schema with this id.
    pub(super) fn usages(&self, id: u32) -> Vec<(String, u32)> {
        self.subjects
            .iter()
            .flat_map(|(subject, ids)| {
                ids.iter()
                    .zip(1..)
                    .filter(move |(held, _)| **held == id)
                    .map(move |(_, version)| (subject.clone(), version))
            })
            .collect()
    }

    pub(super) fn subjects(&self) -> Vec<String> {
        self.subjects.keys().cloned().collect()
    }

    pub(super) fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        let ids = self
            .subjects
            .get(subject)
            .ok_or_else(|| RegistryError::subject_not_found(subject))?;
        Ok((1..).take(ids.len()).collect())
    }

    pub(super) fn all_versions(&self, subject: &str) -> Vec<RegisteredSchema> {
        self.subjects
            .get(subject)
            .map(|ids| {
                ids.iter()
                    .zip(1..)
                    .map(|(&id, version)| self.registered(subject, version, id))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn version(
        &self,
        subject: &str,
        version: Version,
    ) -> Result<RegisteredSchema, RegistryError> {
        let ids = self
            .subjects
            .get(subject)
            .ok_or_else(|| RegistryError::subject_not_found(subject))?;
        let number = match version {
            Version::Latest => u32::try_from(ids.len()).expect("fewer than 2^32 versions"),
            Version::Number(n) => n,
        };
        let id = usize::try_from(number)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|index| ids.get(index))
            .ok_or_else(|| RegistryError::version_not_found(number))?;
        Ok(self.registered(subject, number, *id))
    }

    /// The subject's own level, if one was set.
    pub(super) fn subject_level(&self, subject: &str) -> Result<CompatibilityLevel, RegistryError> {
        self.levels
            .get(subject)
            .copied()
            .ok_or_else(|| RegistryError::subject_level_not_configured(subject))
    }

    /// The level that applies to a subject: its own, else the global one.
    pub(super) fn level(&self, subject: Option<&str>) -> CompatibilityLevel {
        subject
            .and_then(|s| self.levels.get(s).copied())
            .unwrap_or(self.global)
    }

    pub(super) fn set_level(&mut self, subject: Option<&str>, level: CompatibilityLevel) {
        match subject {
            Some(subject) => {
                self.levels.insert(subject.to_owned(), level);
            }
            None => self.global = level,
        }
    }

    /// Registers a schema under a subject, as Confluent does: a schema the subject already
    /// holds gets its existing id and version back; otherwise the subject's compatibility level
    /// is checked against its versions first (409 when it fails), then the schema gets the id it
    /// already has under any subject, or the next one.
    pub(super) fn register(
        &mut self,
        subject: &str,
        request: &SchemaRequest,
    ) -> Result<RegisteredSchema, RegistryError> {
        let candidate = Candidate::parse(request)?;
        if let Some(found) = self.find(subject, &candidate) {
            return Ok(found);
        }
        let previous = self.previous(subject, None)?;
        let problems = incompatibilities(self.level(Some(subject)), &candidate.schema, &previous);
        if !problems.is_empty() {
            return Err(RegistryError::incompatible(subject, &problems));
        }
        let id = match self.ids.get(&candidate.identity) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.schemas.len() + 1).expect("fewer than 2^32 schemas");
                self.ids.insert(candidate.identity.clone(), id);
                self.schemas.push(Stored {
                    guid: uuid::Uuid::new_v4().to_string(),
                    text: candidate.text,
                    schema: candidate.schema,
                    identity: candidate.identity,
                });
                id
            }
        };
        let versions = self.subjects.entry(subject.to_owned()).or_default();
        versions.push(id);
        let version = u32::try_from(versions.len()).expect("fewer than 2^32 versions");
        Ok(self.registered(subject, version, id))
    }

    /// Is this schema registered under the subject? 40401 when the subject has no versions,
    /// 40403 when it has but not this schema.
    pub(super) fn lookup(
        &self,
        subject: &str,
        request: &SchemaRequest,
    ) -> Result<RegisteredSchema, RegistryError> {
        let candidate = Candidate::parse(request)?;
        if !self.subjects.contains_key(subject) {
            return Err(RegistryError::subject_not_found(subject));
        }
        self.find(subject, &candidate)
            .ok_or_else(|| RegistryError::schema_not_found(None))
    }

    /// What makes the schema incompatible under the subject's level: against the given version
    /// only, or (`None`) against the versions the level names, as a register would. An empty
    /// list means compatible; a missing numbered version is 40402, a missing `latest` is
    /// compatible (there is nothing to break), as Confluent answers.
    pub(super) fn check(
        &self,
        subject: &str,
        version: Option<Version>,
        request: &SchemaRequest,
        verbose: bool,
    ) -> Result<Vec<String>, RegistryError> {
        let previous = self.previous(subject, version)?;
        let candidate = match Candidate::parse(request) {
            Ok(candidate) => candidate,
            Err(error) if verbose => return Ok(vec![error.message]),
            Err(error) => return Err(error),
        };
        Ok(incompatibilities(
            self.level(Some(subject)),
            &candidate.schema,
            &previous,
        ))
    }

    fn find(&self, subject: &str, candidate: &Candidate) -> Option<RegisteredSchema> {
        let ids = self.subjects.get(subject)?;
        ids.iter().zip(1..).find_map(|(&id, version)| {
            let stored = self.stored(id)?;
            (stored.identity == candidate.identity).then(|| self.registered(subject, version, id))
        })
    }

    /// The versions to check a new schema against, oldest first, with their numbers.
    fn previous(
        &self,
        subject: &str,
        version: Option<Version>,
    ) -> Result<Vec<(u32, &Schema)>, RegistryError> {
        let all: Vec<(u32, &Schema)> = self
            .subjects
            .get(subject)
            .map(|ids| {
                ids.iter()
                    .zip(1..)
                    .filter_map(|(&id, version)| Some((version, &self.stored(id)?.schema)))
                    .collect()
            })
            .unwrap_or_default();
        match version {
            None => Ok(all),
            Some(Version::Latest) => Ok(all.last().copied().into_iter().collect()),
            Some(Version::Number(n)) => all
                .iter()
                .find(|(v, _)| *v == n)
                .map(|found| vec![*found])
                .ok_or_else(|| RegistryError::version_not_found(n)),
        }
    }
}

/// Why `new` breaks `level` against `previous` (oldest first); empty when it doesn't.
/// A partial answer from apache-avro (some enum symbols or union branches would not resolve)
/// counts as incompatible, as in Avro's own Java checker and in spine's schema gate.
fn incompatibilities(
    level: CompatibilityLevel,
    new: &Schema,
    previous: &[(u32, &Schema)],
) -> Vec<String> {
    let against = if level.transitive() {
        previous
    } else {
        &previous[previous.len().saturating_sub(1)..]
    };
    let mut problems = Vec::new();
    for &(version, old) in against {
        if level.backward()
            && let Some(reason) = cannot_read(old, new)
        {
            problems.push(format!(
                "{{compatibility: '{level}', the new schema cannot read data written with \
                 version {version}: {reason}}}"
            ));
        }
        if level.forward()
            && let Some(reason) = cannot_read(new, old)
        {
            problems.push(format!(
                "{{compatibility: '{level}', version {version} cannot read data written with \
                 the new schema: {reason}}}"
            ));
        }
    }
    problems
}

fn cannot_read(writer: &Schema, reader: &Schema) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        Ok(Compatibility::Partial) => {
            Some("only partially: some enum symbols or union branches would not resolve".to_owned())
        }
        Err(error) => Some(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(schema: &str) -> SchemaRequest {
        SchemaRequest {
            schema: Some(schema.to_owned()),
            ..SchemaRequest::default()
        }
    }

    const V1: &str =
        r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"a","type":"string"}]}"#;
    const V2_OPTIONAL: &str = r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"a","type":"string"},{"name":"b","type":["null","string"],"default":null}]}"#;
    const V2_REQUIRED: &str = r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"a","type":"string"},{"name":"b","type":"string"}]}"#;

    #[test]
    fn layout_and_namespace_spelling_do_not_make_a_new_schema_but_defaults_do() {
        let mut store = Store::default();
        let first = store.register("s", &request(V1)).unwrap();
        let spaced = "{ \"namespace\": \"t\", \"type\": \"record\", \"name\": \"R\",\n \
                      \"fields\": [ {\"name\": \"a\", \"type\": \"string\"} ] }";
        assert_eq!(store.register("s", &request(spaced)).unwrap(), first);
        let full_name = r#"{"type":"record","name":"t.R","fields":[{"name":"a","type":"string"}]}"#;
        assert_eq!(store.register("s", &request(full_name)).unwrap(), first);

        store.set_level(None, CompatibilityLevel::None);
        let with_default = r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"a","type":"string","default":"x"}]}"#;
        let second = store.register("s", &request(with_default)).unwrap();
        assert_eq!((second.id, second.version), (2, 2));
    }

    #[test]
    fn forward_rejects_a_new_schema_the_latest_cannot_read_and_backward_accepts_it() {
        let mut store = Store::default();
        store.register("s", &request(V1)).unwrap();
        store.set_level(Some("s"), CompatibilityLevel::Forward);
        // v1 can read data with an extra field (it is skipped): forward holds.
        assert!(
            store
                .check("s", None, &request(V2_REQUIRED), false)
                .unwrap()
                .is_empty()
        );
        store.set_level(Some("s"), CompatibilityLevel::Backward);
        // The new field has no default, so the new schema cannot read v1 data.
        let problems = store
            .check("s", None, &request(V2_REQUIRED), false)
            .unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("BACKWARD"), "{problems:?}");
    }

    #[test]
    fn transitive_levels_check_every_version_and_plain_ones_only_the_latest() {
        let mut store = Store::default();
        store.set_level(None, CompatibilityLevel::None);
        store.register("s", &request(V1)).unwrap();
        store.register("s", &request(V2_REQUIRED)).unwrap();
        // Dropping `b` again: readable against v2 (extra field skipped) and v1 alike under
        // BACKWARD; under FORWARD_TRANSITIVE v2 cannot read it (b has no default).
        store.set_level(None, CompatibilityLevel::Backward);
        assert!(
            store
                .check("s", None, &request(V1), false)
                .unwrap()
                .is_empty()
        );
        store.set_level(None, CompatibilityLevel::ForwardTransitive);
        let problems = store.check("s", None, &request(V1), false).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("version 2"), "{problems:?}");
        // An optional `b` reads both, but v2 (b required) cannot read data whose b is null.
        store.set_level(None, CompatibilityLevel::FullTransitive);
        let problems = store
            .check("s", None, &request(V2_OPTIONAL), false)
            .unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("version 2 cannot read"),
            "{problems:?}"
        );
    }

    #[test]
    fn levels_parse_case_insensitively_and_print_as_confluent_names_them() {
        assert_eq!(
            CompatibilityLevel::parse("full_transitive"),
            Some(CompatibilityLevel::FullTransitive)
        );
        assert_eq!(CompatibilityLevel::parse("sideways"), None);
        assert_eq!(
            CompatibilityLevel::BackwardTransitive.to_string(),
            "BACKWARD_TRANSITIVE"
        );
    }
}
