//! Helpers for tests of the kit and of services built on it: a fresh database per test, on
//! SQLite or on the PostgreSQL server named by `SPINE_TEST_POSTGRES_URL` (which
//! `scripts/test` starts).

use secrecy::ExposeSecret;

use crate::db::Backend;
use crate::settings::DatabaseSettings;

/// A fresh, empty database. Keep it alive for the test: a SQLite file lives in a temporary
/// directory that is removed on drop (a PostgreSQL database is left for the throwaway server).
pub struct TestDatabase {
    /// Settings pointing at it.
    pub settings: DatabaseSettings,
    /// Its backend.
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

/// Creates a fresh database on `backend`.
///
/// # Panics
/// When PostgreSQL is asked for and `SPINE_TEST_POSTGRES_URL` is unset or unreachable: a test
/// that cannot reach its database must fail loudly, not pass by skipping.
pub async fn fresh_database(backend: Backend) -> TestDatabase {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let url = format!("sqlite://{}/test.db?mode=rwc", dir.path().display());
            TestDatabase {
                settings: DatabaseSettings {
                    url: url.into(),
                    ..DatabaseSettings::default()
                },
                backend,
                _dir: Some(dir),
            }
        }
        Backend::Postgres => {
            let admin_url = std::env::var("SPINE_TEST_POSTGRES_URL").expect(
                "SPINE_TEST_POSTGRES_URL is unset: run the tests with scripts/test, which starts PostgreSQL",
            );
            let admin = DatabaseSettings {
                url: admin_url.clone().into(),
                max_connections: 1,
            };
            let (pool, _) = crate::db::connect(&admin).await.unwrap_or_else(|e| {
                panic!("cannot reach PostgreSQL at SPINE_TEST_POSTGRES_URL: {e}")
            });
            let name = format!("spine_test_{}", uuid::Uuid::new_v4().simple());
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&pool)
                .await
                .expect("CREATE DATABASE");
            pool.close().await;
            let url = match admin_url.rsplit_once('/') {
                Some((server, _db)) => format!("{server}/{name}"),
                None => panic!("SPINE_TEST_POSTGRES_URL has no database path: {admin_url}"),
            };
            TestDatabase {
                settings: DatabaseSettings {
                    url: url.into(),
                    ..DatabaseSettings::default()
                },
                backend,
                _dir: None,
            }
        }
    }
}

impl TestDatabase {
    /// The URL, for tools that need it in the clear.
    pub fn url(&self) -> &str {
        self.settings.url.expose_secret()
    }
}
