//! Test harness shared by the integration tests: starts a registry on SQLite (a
//! temporary file) or PostgreSQL (a temporary schema in $NIMBUS_TEST_POSTGRES_URL)
//! and serves it on loopback.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::Method;
use nimbus_registry::{Clock, ManualClock, Registry, RegistryConfig, ServeHandle, SystemClock};
use nimbus_testkit::http as testkit;
pub use nimbus_testkit::http::TestResponse;

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

    /// A JSON request without a body, with a bearer token if given.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>) -> TestResponse {
        self.json(method, path, token, None).await
    }

    /// `POST /api/v1/users`: signs up (the response is not checked).
    pub async fn post_user(&self, name: &str, password: &str) -> TestResponse {
        let body = serde_json::json!({"name": name, "password": password});
        self.json(Method::POST, "/api/v1/users", None, Some(body))
            .await
    }

    /// `POST /api/v1/sessions`: logs in (the response is not checked).
    pub async fn post_session(&self, name: &str, password: &str) -> TestResponse {
        let body = serde_json::json!({"name": name, "password": password});
        self.json(Method::POST, "/api/v1/sessions", None, Some(body))
            .await
    }

    /// `PUT /api/v1/presence`: publishes `peer_id` for the owner of `token`.
    pub async fn publish(&self, token: &str, peer_id: &str) -> TestResponse {
        let body = serde_json::json!({"peer_id": peer_id});
        self.json(Method::PUT, "/api/v1/presence", Some(token), Some(body))
            .await
    }

    /// `GET /reg.cgi?username=…&identity=…` followed by `extra` (such as
    /// `"&token=…"`, or `""`).
    pub async fn register(&self, name: &str, identity: &str, extra: &str) -> TestResponse {
        self.get(&format!(
            "/reg.cgi?username={name}&identity={identity}{extra}"
        ))
        .await
    }

    /// [`register`](Self::register) with `token`.
    pub async fn register_with(&self, name: &str, identity: &str, token: &str) -> TestResponse {
        self.register(name, identity, &format!("&token={token}"))
            .await
    }

    /// Signs up and logs in through the JSON API; returns the token.
    pub async fn account(&self, name: &str, password: &str) -> String {
        let r = self.post_user(name, password).await;
        assert_eq!(r.status, 201, "sign-up: {}", r.body);
        self.login(name, password).await
    }

    /// Logs in through the JSON API; returns the token.
    pub async fn login(&self, name: &str, password: &str) -> String {
        let r = self.post_session(name, password).await;
        assert_eq!(r.status, 200, "log-in: {}", r.body);
        r.json()["token"].as_str().unwrap().to_owned()
    }
}

/// One behaviour on one backend; the test's name names its database.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub db: Db,
    pub test: &'static str,
}

impl Case {
    /// [`Env::start`] with the test configuration in legacy `mode`.
    pub async fn start(self, mode: nimbus_registry::LegacyMode) -> Option<Env> {
        self.start_with(mode, |_| {}).await
    }

    /// [`Env::start`] with the test configuration in legacy `mode`, changed by `adjust`.
    pub async fn start_with(
        self,
        mode: nimbus_registry::LegacyMode,
        adjust: impl FnOnce(&mut RegistryConfig),
    ) -> Option<Env> {
        let mut config = config(mode);
        adjust(&mut config);
        Env::start(self.db, self.test, config).await
    }
}

/// A peer ID made of one repeated hex digit pair.
pub fn peer(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

/// The XML prolog `reg.cgi` starts every answer with.
pub const PROLOG: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n";

/// The XML `reg.cgi` writes: the prolog, then `items` inside `<result>`.
pub fn xml_result(items: &[String]) -> String {
    format!("{PROLOG}<result>\n{}</result>\n", items.concat())
}

/// The `<update>` item of a registration.
pub fn update_item(ok: bool) -> String {
    format!("\t<update>{ok}</update>\n")
}

/// A `<friend>` item: the user looked up, the identity found (if any) and the name
/// as registered (when its letter case differs).
pub fn friend_item(user: &str, identity: Option<&str>, registered: Option<&str>) -> String {
    let mut item = format!("\t<friend>\n\t\t<user>{user}</user>\n");
    if let Some(identity) = identity {
        item += &format!("\t\t<identity>{identity}</identity>\n");
    }
    if let Some(registered) = registered {
        item += &format!("\t\t<registered>{registered}</registered>\n");
    }
    item + "\t</friend>\n"
}

/// The XML `reg.cgi` writes for a registration.
pub fn xml_update(ok: bool) -> String {
    xml_result(&[update_item(ok)])
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
                    let db = $crate::common::Db::Sqlite;
                    super::$name($crate::common::Case { db, test: stringify!($name) }).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::common::Db::Postgres;
                    super::$name($crate::common::Case { db, test: stringify!($name) }).await
                }
            )*
        }
    };
}
