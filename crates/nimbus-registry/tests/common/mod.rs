//! Test harness shared by the integration tests: starts a registry on SQLite (a
//! temporary file) or PostgreSQL (a temporary schema in $NIMBUS_TEST_POSTGRES_URL)
//! and serves it on loopback.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::Method;
use nimbus_registry::{Clock, ManualClock, Registry, RegistryConfig, ServeHandle, SystemClock};
use nimbus_testkit::http::{self as testkit, TestResponse};

#[allow(unused_imports)]
pub use nimbus_testkit::http::{postgres_url_or_skip, Db, TestDb, PG_ENV};

pub struct Env {
    pub reg: Registry,
    pub handle: Option<ServeHandle>,
    pub addr: SocketAddr,
    pub clock: Arc<ManualClock>,
    pub db: Db,
    pub test_db: TestDb,
}

pub fn now_millis() -> i64 {
    SystemClock.now_millis()
}

impl Env {
    /// Starts a registry with `config` on a fresh database, or returns `None` (after
    /// printing `SKIPPED: …`) for PostgreSQL without a URL.
    pub async fn start(db: Db, test: &str, config: RegistryConfig) -> Option<Env> {
        let test_db = TestDb::new(db, test).await?;
        let clock = Arc::new(ManualClock::new(now_millis()));
        let reg = Registry::open_with_clock(&test_db.url, config, clock.clone())
            .await
            .expect("open registry");
        let handle = nimbus_registry::serve(&reg, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("serve");
        let addr = handle.local_addr();
        Some(Env {
            reg,
            handle: Some(handle),
            addr,
            clock,
            db,
            test_db,
        })
    }

    pub async fn finish(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await.expect("shutdown");
        }
        self.reg.close().await;
        self.test_db.cleanup().await;
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        testkit::request(self.addr, Method::GET, path, &[], None)
            .await
            .expect("request")
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> TestResponse {
        testkit::request(self.addr, Method::GET, path, headers, None)
            .await
            .expect("request")
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> TestResponse {
        testkit::request(self.addr, method, path, headers, body)
            .await
            .expect("request")
    }

    /// A JSON request, with a bearer token if given.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> TestResponse {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        self.send(method, path, &headers, body).await
    }

    /// Signs up and logs in through the JSON API; returns the token.
    pub async fn account(&self, name: &str, password: &str) -> String {
        let r = self
            .json(
                Method::POST,
                "/api/v1/users",
                None,
                Some(serde_json::json!({"name": name, "password": password})),
            )
            .await;
        assert_eq!(r.status, 201, "sign-up: {}", r.body);
        self.login(name, password).await
    }

    pub async fn login(&self, name: &str, password: &str) -> String {
        let r = self
            .json(
                Method::POST,
                "/api/v1/sessions",
                None,
                Some(serde_json::json!({"name": name, "password": password})),
            )
            .await;
        assert_eq!(r.status, 200, "log-in: {}", r.body);
        r.json()["token"].as_str().unwrap().to_owned()
    }
}

/// A peer ID made of one repeated hex digit pair.
pub fn peer(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

/// The XML `reg.cgi` writes for a registration.
pub fn xml_update(ok: bool) -> String {
    format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<result>\n\t<update>{ok}</update>\n</result>\n")
}

/// Test configuration: no rate limits, cheap hashes, the given legacy mode.
pub fn config(mode: nimbus_registry::LegacyMode) -> RegistryConfig {
    RegistryConfig {
        legacy_mode: mode,
        ..RegistryConfig::for_tests()
    }
}

/// Generates `#[tokio::test]`s running each behaviour on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Db::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Db::Postgres).await
                }
            )*
        }
    };
}
