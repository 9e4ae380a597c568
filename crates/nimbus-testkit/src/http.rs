//! Helpers shared by the integration tests and the load generator: a minimal
//! keep-alive HTTP/1.1 client and throw-away PostgreSQL schemas. Not a stable API.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

/// An error of the test client.
pub type ClientError = Box<dyn std::error::Error + Send + Sync>;

/// A response, body read in full.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Body, as text (lossy UTF-8).
    pub body: String,
}

impl TestResponse {
    /// The body parsed as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
pub struct HttpConn {
    host: hyper::header::HeaderValue,
    sender: http1::SendRequest<Full<Bytes>>,
}

impl HttpConn {
    /// Connects to `addr` (with `TCP_NODELAY`).
    pub async fn connect(addr: SocketAddr) -> Result<HttpConn, ClientError> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let host = hyper::header::HeaderValue::from_str(&addr.to_string())?;
        Ok(HttpConn { host, sender })
    }

    /// Sends a request and reads the whole response.
    pub async fn request(
        &mut self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<TestResponse, ClientError> {
        let mut b = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(hyper::header::HOST, self.host.clone());
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(TestResponse {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// `GET path_and_query`.
    pub async fn get(&mut self, path_and_query: &str) -> Result<TestResponse, ClientError> {
        self.request(Method::GET, path_and_query, &[], None).await
    }

    /// `GET path_and_query`, returning only the status and the body (no copies of
    /// the headers): the load generator's request.
    pub async fn get_lean(&mut self, path_and_query: &str) -> Result<(u16, Bytes), ClientError> {
        let req = Request::get(path_and_query)
            .header(hyper::header::HOST, self.host.clone())
            .body(Full::new(Bytes::new()))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// Sends one request on a new connection.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<TestResponse, ClientError> {
    let mut c = HttpConn::connect(addr).await?;
    c.request(method, path_and_query, headers, body).await
}

/// A fresh, uniquely named schema in the PostgreSQL database at `url`, and a URL
/// whose connections use it (through `search_path`). Tests and the benchmark run in
/// their own schema so that they neither see nor disturb other data.
pub async fn create_temp_schema(url: &str) -> Result<(String, String), ClientError> {
    use sqlx::Connection as _;
    let mut rnd = [0u8; 6];
    getrandom::fill(&mut rnd).map_err(|e| format!("getrandom: {e}"))?;
    // The schema name is generated here from [a-z0-9_] only, never taken from input,
    // so formatting it into DDL (identifiers cannot be bound parameters) is safe.
    let schema = format!(
        "nimbus_test_{}",
        rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok((format!("{url}{sep}options[search_path]={schema}"), schema))
}

/// Drops a schema made by [`create_temp_schema`].
pub async fn drop_temp_schema(url: &str, schema: &str) -> Result<(), ClientError> {
    use sqlx::Connection as _;
    if !schema.starts_with("nimbus_test_")
        || !schema
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err("not a temporary schema".into());
    }
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}

/// The variable naming the PostgreSQL server tests may use.
pub const PG_ENV: &str = "NIMBUS_TEST_POSTGRES_URL";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A temporary SQLite file.
    Sqlite,
    /// A temporary schema on the PostgreSQL server of [`PG_ENV`].
    Postgres,
}

/// The PostgreSQL URL to test against, or `None` after printing a visible skip line.
pub fn postgres_url_or_skip(test: &str) -> Option<String> {
    match std::env::var(PG_ENV) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            // Written to the real stderr, not through eprintln!, so that the test
            // harness does not capture it: the skip is visible in `cargo test` output.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {test} [postgres]: {PG_ENV} is not set (source .ci/postgres.sh to run the PostgreSQL suite)"
            );
            None
        }
    }
}

/// A database for one test: a temporary SQLite file or PostgreSQL schema.
#[derive(Debug)]
pub struct TestDb {
    /// Its URL.
    pub url: String,
    dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    /// A new database, or `None` (after a `SKIPPED:` line) for PostgreSQL
    /// without a URL.
    ///
    /// # Panics
    /// When PostgreSQL is configured but unusable.
    pub async fn new(db: Db, test: &str) -> Option<TestDb> {
        match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite:{}", dir.path().join("registry.sqlite").display());
                Some(TestDb {
                    url,
                    dir: Some(dir),
                    pg: None,
                })
            }
            Db::Postgres => {
                let base = postgres_url_or_skip(test)?;
                let (url, schema) = create_temp_schema(&base)
                    .await
                    .unwrap_or_else(|e| panic!("{PG_ENV} is set but PostgreSQL is unusable: {e}"));
                Some(TestDb {
                    url,
                    dir: None,
                    pg: Some((base, schema)),
                })
            }
        }
    }

    /// Removes the database.
    pub async fn cleanup(self) {
        if let Some((base, schema)) = &self.pg {
            let _ = drop_temp_schema(base, schema).await;
        }
        drop(self.dir);
    }
}
