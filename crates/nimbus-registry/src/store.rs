//! The data layer: one API over SQLite and PostgreSQL.
//!
//! Every statement is a `'static` string with `$N` placeholders (both drivers accept
//! them), and every value is bound: no SQL is ever built from input. The statements
//! are the same on both back ends except for the schema's DDL.
//!
//! Registration writes go through one writer task that commits them in groups
//! ("group commit"): it takes every write waiting in its queue, runs them in one
//! transaction, commits, and only then answers each caller. A caller's write is thus
//! acknowledged only once it is committed (and, with SQLite `synchronous=FULL`, synced
//! to disk), while a burst of writes shares one commit and one `fsync`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::config::{RegistryConfig, SqliteSync};
use crate::error::RegistryError;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the concrete pool (the body is compiled once per
/// back end).
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

/// A registered account.
#[derive(Debug, Clone)]
pub(crate) struct UserRow {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) password_hash: String,
}

/// A live registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegistrationRow {
    pub(crate) name: String,
    pub(crate) identity: Option<String>,
    pub(crate) updated_at: i64,
}

/// A write handled by the group-commit writer.
#[derive(Debug, Clone)]
pub(crate) enum WriteOp {
    /// Insert or replace the registration of `name_key` (refreshing its time).
    Upsert {
        name_key: String,
        name: String,
        identity: Option<String>,
        now: i64,
    },
    /// Delete the registration of `name_key`.
    Remove { name_key: String },
    /// Refresh the registration of `name_key` if it still points at `identity`.
    Touch {
        name_key: String,
        identity: String,
        now: i64,
    },
    /// Delete every registration whose identity is `identity`.
    RemoveIdentity { identity: String },
    /// Delete registrations not refreshed since `registrations_before` and tokens that
    /// expired before `tokens_before`.
    Purge {
        registrations_before: i64,
        tokens_before: i64,
    },
}

/// A look-up handled by the read batcher.
pub(crate) struct ReadJob {
    name_key: String,
    cutoff: i64,
    done: oneshot::Sender<Result<Option<RegistrationRow>, RegistryError>>,
}

impl std::fmt::Debug for ReadJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadJob")
            .field("name_key", &self.name_key)
            .finish()
    }
}

struct Job {
    op: WriteOp,
    done: oneshot::Sender<Result<u64, RegistryError>>,
}

const MIGRATIONS_TABLE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS nimbus_registry_migrations (\
     version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)";
const MIGRATIONS_TABLE_PG: &str = "CREATE TABLE IF NOT EXISTS nimbus_registry_migrations (\
     version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";

/// Schema migrations: (version, statements) for each back end, applied in order.
const SQLITE_MIGRATIONS: &[(i64, &[&str])] = &[(
    1,
    &[
        "CREATE TABLE users (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name_key TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            created_at INTEGER NOT NULL
        )",
        "CREATE TABLE tokens (
            token_hash TEXT PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL
        ) WITHOUT ROWID",
        "CREATE INDEX tokens_user_id ON tokens (user_id)",
        "CREATE INDEX tokens_expires_at ON tokens (expires_at)",
        "CREATE TABLE registrations (
            name_key TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            identity TEXT,
            updated_at INTEGER NOT NULL
        ) WITHOUT ROWID",
        "CREATE INDEX registrations_updated_at ON registrations (updated_at)",
        "CREATE INDEX registrations_identity ON registrations (identity)",
    ],
)];

const PG_MIGRATIONS: &[(i64, &[&str])] = &[(
    1,
    &[
        "CREATE TABLE users (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            name_key TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            created_at BIGINT NOT NULL
        )",
        "CREATE TABLE tokens (
            token_hash TEXT PRIMARY KEY,
            user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL
        )",
        "CREATE INDEX tokens_user_id ON tokens (user_id)",
        "CREATE INDEX tokens_expires_at ON tokens (expires_at)",
        "CREATE TABLE registrations (
            name_key TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            identity TEXT,
            updated_at BIGINT NOT NULL
        )",
        "CREATE INDEX registrations_updated_at ON registrations (updated_at)",
        "CREATE INDEX registrations_identity ON registrations (identity)",
    ],
)];

/// The newest schema version this build knows.
pub(crate) const SCHEMA_VERSION: i64 = 1;

const UPSERT_REGISTRATION: &str =
    "INSERT INTO registrations (name_key, name, identity, updated_at) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (name_key) DO UPDATE SET name = excluded.name, identity = excluded.identity, \
     updated_at = excluded.updated_at";
const TOUCH_REGISTRATION: &str =
    "UPDATE registrations SET updated_at = $1 WHERE name_key = $2 AND identity = $3";
const DELETE_REGISTRATION: &str = "DELETE FROM registrations WHERE name_key = $1";
const DELETE_IDENTITY: &str = "DELETE FROM registrations WHERE identity = $1";
const PURGE_REGISTRATIONS: &str = "DELETE FROM registrations WHERE updated_at <= $1";
const PURGE_TOKENS: &str = "DELETE FROM tokens WHERE expires_at <= $1";
const SELECT_REGISTRATION: &str =
    "SELECT name, identity, updated_at FROM registrations WHERE name_key = $1 AND updated_at > $2";
/// Batched look-ups: the keys travel as one bound parameter (a JSON array for
/// SQLite, a text array for PostgreSQL).
const SELECT_REGISTRATIONS_SQLITE: &str =
    "SELECT name_key, name, identity, updated_at FROM registrations \
     WHERE name_key IN (SELECT value FROM json_each($1)) AND updated_at > $2";
const SELECT_REGISTRATIONS_PG: &str =
    "SELECT name_key, name, identity, updated_at FROM registrations \
     WHERE name_key = ANY($1) AND updated_at > $2";
const INSERT_USER: &str = "INSERT INTO users (name_key, name, password_hash, created_at) \
     VALUES ($1, $2, $3, $4) RETURNING id";
const SELECT_USER_BY_KEY: &str = "SELECT id, name, password_hash FROM users WHERE name_key = $1";
const DELETE_USER: &str = "DELETE FROM users WHERE id = $1";
const INSERT_TOKEN: &str =
    "INSERT INTO tokens (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
const SELECT_USER_BY_TOKEN: &str = "SELECT u.id, u.name, u.password_hash FROM tokens t \
     JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1 AND t.expires_at > $2";
const DELETE_TOKEN: &str = "DELETE FROM tokens WHERE token_hash = $1";
const DELETE_USER_TOKENS: &str = "DELETE FROM tokens WHERE user_id = $1";

/// Executes one [`WriteOp`] on an executor; expands once per back end.
macro_rules! exec_op {
    ($exec:expr, $op:expr) => {{
        match $op {
            WriteOp::Upsert {
                name_key,
                name,
                identity,
                now,
            } => sqlx::query(UPSERT_REGISTRATION)
                .bind(name_key.as_str())
                .bind(name.as_str())
                .bind(identity.as_deref())
                .bind(*now)
                .execute($exec)
                .await
                .map(|r| r.rows_affected()),
            WriteOp::Touch {
                name_key,
                identity,
                now,
            } => sqlx::query(TOUCH_REGISTRATION)
                .bind(*now)
                .bind(name_key.as_str())
                .bind(identity.as_str())
                .execute($exec)
                .await
                .map(|r| r.rows_affected()),
            WriteOp::Remove { name_key } => sqlx::query(DELETE_REGISTRATION)
                .bind(name_key.as_str())
                .execute($exec)
                .await
                .map(|r| r.rows_affected()),
            WriteOp::RemoveIdentity { identity } => sqlx::query(DELETE_IDENTITY)
                .bind(identity.as_str())
                .execute($exec)
                .await
                .map(|r| r.rows_affected()),
            WriteOp::Purge {
                registrations_before,
                tokens_before,
            } => {
                match sqlx::query(PURGE_REGISTRATIONS)
                    .bind(*registrations_before)
                    .execute(&mut *$exec)
                    .await
                {
                    Ok(a) => sqlx::query(PURGE_TOKENS)
                        .bind(*tokens_before)
                        .execute($exec)
                        .await
                        .map(|b| a.rows_affected() + b.rows_affected()),
                    Err(e) => Err(e),
                }
            }
        }
    }};
}

/// One write in its own transaction.
macro_rules! single_write {
    ($pool:expr, $op:expr) => {{
        match $pool.begin().await {
            Ok(mut tx) => match exec_op!(&mut *tx, $op) {
                Ok(n) => tx.commit().await.map(|()| n),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }};
}

/// Several writes in one transaction, committed together.
macro_rules! batch_write {
    ($pool:expr, $begin:expr, $ops:expr) => {{
        async {
            let mut tx = $begin.await?;
            let mut out = Vec::with_capacity($ops.len());
            for op in $ops.iter() {
                let op: &WriteOp = op;
                out.push(exec_op!(&mut *tx, op)?);
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(out)
        }
        .await
    }};
}

/// The database behind a registry.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    backend: Backend,
    read: Pool,
    write: Pool,
    writer: mpsc::Sender<JobHandle>,
    reader: mpsc::Sender<ReadJob>,
}

/// Wrapper so that `Store` can derive Debug.
pub(crate) struct JobHandle(Job);

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("op", &self.0.op).finish()
    }
}

/// Removes the password from a database URL, for logs and error messages.
/// `url` with its password replaced by `***` (for logs and reports).
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.split_once('@') {
            let user = userinfo.split(':').next().unwrap_or("");
            return format!("{scheme}://{user}:***@{host}");
        }
    }
    url.to_owned()
}

impl Store {
    /// Connects, applies migrations and starts the writer task.
    pub(crate) async fn open(url: &str, config: &RegistryConfig) -> Result<Store, RegistryError> {
        let (backend, read, write) = if url.starts_with("sqlite:") {
            let (read, write) = open_sqlite(url, config).await?;
            (Backend::Sqlite, read, write)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (read, write) = open_postgres(url, config).await?;
            (Backend::Postgres, read, write)
        } else {
            return Err(RegistryError::Config(format!(
                "unsupported database URL {:?}: use sqlite:PATH or postgres://USER:PASSWORD@HOST/DB",
                redact_url(url)
            )));
        };
        migrate(&write).await?;
        let (tx, rx) = mpsc::channel::<JobHandle>(4 * config.max_write_batch.max(1));
        tokio::spawn(writer_loop(
            write.clone(),
            backend,
            rx,
            config.max_write_batch.max(1),
        ));
        let parallel = on_pool!(&read, p => p.options().get_max_connections()) as usize;
        let (rtx, rrx) = mpsc::channel::<ReadJob>(4096);
        tokio::spawn(reader_loop(
            read.clone(),
            rrx,
            parallel.max(1),
            MAX_READ_BATCH,
        ));
        Ok(Store {
            backend,
            read,
            write,
            writer: tx,
            reader: rtx,
        })
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pools (waits for connections in use to come back).
    pub(crate) async fn close(&self) {
        on_pool!(&self.read, p => p.close().await);
        on_pool!(&self.write, p => p.close().await);
    }

    /// Queues a write for the group-commit writer and waits until it is committed.
    pub(crate) async fn write(&self, op: WriteOp) -> Result<u64, RegistryError> {
        let (done, rx) = oneshot::channel();
        self.writer
            .send(JobHandle(Job { op, done }))
            .await
            .map_err(|_| RegistryError::ShuttingDown)?;
        rx.await.map_err(|_| RegistryError::ShuttingDown)?
    }

    /// The live registration of `name_key`, if refreshed after `cutoff`. Concurrent
    /// look-ups are coalesced into one query per free connection.
    pub(crate) async fn lookup(
        &self,
        name_key: &str,
        cutoff: i64,
    ) -> Result<Option<RegistrationRow>, RegistryError> {
        let rx = self.queue_lookup(name_key.to_owned(), cutoff).await?;
        rx.await.map_err(|_| RegistryError::ShuttingDown)?
    }

    /// Queues the look-up of `name_key` for the read batcher; where its
    /// answer will come.
    async fn queue_lookup(
        &self,
        name_key: String,
        cutoff: i64,
    ) -> Result<oneshot::Receiver<Result<Option<RegistrationRow>, RegistryError>>, RegistryError>
    {
        let (done, rx) = oneshot::channel();
        self.reader
            .send(ReadJob {
                name_key,
                cutoff,
                done,
            })
            .await
            .map_err(|_| RegistryError::ShuttingDown)?;
        Ok(rx)
    }

    /// Several look-ups at once (they join the same batch); results in order.
    pub(crate) async fn lookup_many(
        &self,
        name_keys: &[String],
        cutoff: i64,
    ) -> Result<Vec<Option<RegistrationRow>>, RegistryError> {
        let mut waiting = Vec::with_capacity(name_keys.len());
        for key in name_keys {
            waiting.push(self.queue_lookup(key.clone(), cutoff).await?);
        }
        let mut out = Vec::with_capacity(waiting.len());
        for rx in waiting {
            out.push(rx.await.map_err(|_| RegistryError::ShuttingDown)??);
        }
        Ok(out)
    }

    /// Creates an account; fails with [`RegistryError::NameTaken`] on a duplicate.
    pub(crate) async fn create_user(
        &self,
        name_key: &str,
        name: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<i64, RegistryError> {
        let res: Result<i64, sqlx::Error> = on_pool!(&self.write, p => {
            sqlx::query(INSERT_USER)
                .bind(name_key)
                .bind(name)
                .bind(password_hash)
                .bind(now)
                .fetch_one(p)
                .await
                .and_then(|r| r.try_get::<i64, _>(0))
        });
        match res {
            Ok(id) => Ok(id),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(RegistryError::NameTaken)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn user_by_key(
        &self,
        name_key: &str,
    ) -> Result<Option<UserRow>, RegistryError> {
        let row = on_pool!(&self.read, p => {
            sqlx::query(SELECT_USER_BY_KEY)
                .bind(name_key)
                .fetch_optional(p)
                .await?
                .map(|r| user_row(&r))
        });
        Ok(row.transpose()?)
    }

    pub(crate) async fn delete_user(&self, id: i64) -> Result<bool, RegistryError> {
        let n = on_pool!(&self.write, p => {
            let mut tx = p.begin().await?;
            sqlx::query(DELETE_USER_TOKENS).bind(id).execute(&mut *tx).await?;
            let n = sqlx::query(DELETE_USER).bind(id).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            n
        });
        Ok(n > 0)
    }

    pub(crate) async fn insert_token(
        &self,
        token_hash: &str,
        user_id: i64,
        now: i64,
        expires_at: i64,
    ) -> Result<(), RegistryError> {
        on_pool!(&self.write, p => {
            sqlx::query(INSERT_TOKEN)
                .bind(token_hash)
                .bind(user_id)
                .bind(now)
                .bind(expires_at)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    pub(crate) async fn user_by_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<UserRow>, RegistryError> {
        let row = on_pool!(&self.read, p => {
            sqlx::query(SELECT_USER_BY_TOKEN)
                .bind(token_hash)
                .bind(now)
                .fetch_optional(p)
                .await?
                .map(|r| user_row(&r))
        });
        Ok(row.transpose()?)
    }

    pub(crate) async fn delete_token(&self, token_hash: &str) -> Result<bool, RegistryError> {
        let n = on_pool!(&self.write, p => {
            sqlx::query(DELETE_TOKEN).bind(token_hash).execute(p).await?.rows_affected()
        });
        Ok(n > 0)
    }

    /// A trivial query, for health checks.
    pub(crate) async fn ping(&self) -> Result<(), RegistryError> {
        on_pool!(&self.read, p => {
            sqlx::query("SELECT 1").execute(p).await?;
        });
        Ok(())
    }
}

fn user_row<R>(r: &R) -> Result<UserRow, sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(UserRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        password_hash: r.try_get(2)?,
    })
}

async fn open_sqlite(url: &str, config: &RegistryConfig) -> Result<(Pool, Pool), RegistryError> {
    let base = SqliteConnectOptions::from_str(url)
        .map_err(|e| RegistryError::Config(format!("bad SQLite URL: {e}")))?;
    let file = base.get_filename().to_string_lossy().into_owned();
    if file.is_empty() || file == ":memory:" || file.starts_with("file:sqlx-in-memory") {
        return Err(RegistryError::Config(
            "an in-memory SQLite database cannot be shared by the registry's pools; give a file, e.g. sqlite:nimbus-registry.sqlite".into(),
        ));
    }
    let sync = match config.sqlite_sync {
        SqliteSync::Full => SqliteSynchronous::Full,
        SqliteSync::Normal => SqliteSynchronous::Normal,
    };
    let common = base
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        .synchronous(sync)
        .disable_statement_logging();
    // The single writer connection creates the file and switches it to WAL (a
    // persistent setting of the file).
    let write_opts = common
        .clone()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let write = SqlitePoolOptions::new()
        .min_connections(1)
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .test_before_acquire(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(write_opts)
        .await?;
    let readers = config.max_connections.unwrap_or(4).max(1);
    let read = SqlitePoolOptions::new()
        .min_connections(1)
        .max_connections(readers)
        .acquire_timeout(Duration::from_secs(30))
        .test_before_acquire(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(common.read_only(true))
        .await?;
    Ok((Pool::Sqlite(read), Pool::Sqlite(write)))
}

async fn open_postgres(url: &str, config: &RegistryConfig) -> Result<(Pool, Pool), RegistryError> {
    let opts = PgConnectOptions::from_str(url)
        .map_err(|e| {
            RegistryError::Config(format!(
                "bad PostgreSQL URL {:?}: {}",
                redact_url(url),
                e.to_string().replace(url, &redact_url(url))
            ))
        })?
        .disable_statement_logging();
    // One direct connection first: it fails fast with the real reason (refused,
    // authentication failed, no such database) where a pool would only time out.
    {
        use sqlx::Connection as _;
        let conn = opts.connect().await?;
        conn.close().await?;
    }
    let max = config.max_connections.unwrap_or(8).max(1);
    let read = PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .connect_with(opts.clone())
        .await?;
    let write = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(30))
        .test_before_acquire(false)
        .connect_with(opts)
        .await?;
    Ok((Pool::Postgres(read), Pool::Postgres(write)))
}

/// Within the open transaction `$tx`: reads the schema version, refuses a
/// newer one, applies every migration of `$migrations` above it and
/// records each (`$backend` names the database in the log). One body for
/// both databases, whose transactions are different types.
macro_rules! apply_migrations {
    ($tx:ident, $migrations:expr, $backend:literal) => {{
        let current: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM nimbus_registry_migrations")
                .fetch_one(&mut *$tx)
                .await?;
        let current = current.unwrap_or(0);
        check_version(current)?;
        for (version, statements) in $migrations.iter().filter(|m| m.0 > current) {
            for s in *statements {
                sqlx::query(*s).execute(&mut *$tx).await?;
            }
            sqlx::query(
                "INSERT INTO nimbus_registry_migrations (version, applied_at) VALUES ($1, $2)",
            )
            .bind(*version)
            .bind(crate::clock::Clock::now_millis(&crate::clock::SystemClock))
            .execute(&mut *$tx)
            .await?;
            tracing::info!(
                version,
                concat!("applied registry schema migration (", $backend, ")")
            );
        }
        $tx.commit().await?;
    }};
}

async fn migrate(pool: &Pool) -> Result<(), RegistryError> {
    match pool {
        Pool::Sqlite(p) => {
            sqlx::query(MIGRATIONS_TABLE_SQLITE).execute(p).await?;
            let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
            apply_migrations!(tx, SQLITE_MIGRATIONS, "sqlite");
        }
        Pool::Postgres(p) => {
            let mut tx = p.begin().await?;
            // Serialise concurrent starts of several registry processes.
            sqlx::query("SELECT pg_advisory_xact_lock(7362846221)")
                .execute(&mut *tx)
                .await?;
            sqlx::query(MIGRATIONS_TABLE_PG).execute(&mut *tx).await?;
            apply_migrations!(tx, PG_MIGRATIONS, "postgres");
        }
    }
    Ok(())
}

fn check_version(current: i64) -> Result<(), RegistryError> {
    if current > SCHEMA_VERSION {
        return Err(RegistryError::Config(format!(
            "the database has schema version {current}, newer than this build's {SCHEMA_VERSION}; upgrade nimbus"
        )));
    }
    Ok(())
}

/// Most look-ups coalesced into one query.
const MAX_READ_BATCH: usize = 256;

/// The read batcher: waits for a free connection, then takes every look-up queued
/// meanwhile (up to `max_batch`) and answers them with one query. At low load a batch
/// is a single look-up; under load, batches grow instead of queues.
async fn reader_loop(
    pool: Pool,
    mut rx: mpsc::Receiver<ReadJob>,
    parallel: usize,
    max_batch: usize,
) {
    let slots = Arc::new(Semaphore::new(parallel));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(16);
        if rx.recv_many(&mut batch, max_batch).await == 0 {
            return;
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            read_batch(&pool, batch).await;
            drop(permit);
        });
    }
}

fn registration_row<R>(r: &R, offset: usize) -> Result<RegistrationRow, sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(RegistrationRow {
        name: r.try_get(offset)?,
        identity: r.try_get(offset + 1)?,
        updated_at: r.try_get(offset + 2)?,
    })
}

async fn read_batch(pool: &Pool, batch: Vec<ReadJob>) {
    if let [_] = batch.as_slice() {
        let Some(job) = batch.into_iter().next() else {
            return;
        };
        let res: Result<Option<RegistrationRow>, sqlx::Error> = on_pool!(pool, p => {
            match sqlx::query(SELECT_REGISTRATION)
                .bind(job.name_key.as_str())
                .bind(job.cutoff)
                .fetch_optional(p)
                .await
            {
                Ok(Some(r)) => registration_row(&r, 0).map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            }
        });
        let _ = job.done.send(res.map_err(RegistryError::from));
        return;
    }
    let mut keys: Vec<&str> = batch.iter().map(|j| j.name_key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let min_cutoff = batch.iter().map(|j| j.cutoff).min().unwrap_or(0);
    let rows: Result<HashMap<String, RegistrationRow>, sqlx::Error> = async {
        let mut map = HashMap::with_capacity(keys.len());
        match pool {
            Pool::Sqlite(p) => {
                let json = serde_json::to_string(&keys)
                    .map_err(|e| sqlx::Error::Protocol(format!("encoding keys: {e}")))?;
                for r in sqlx::query(SELECT_REGISTRATIONS_SQLITE)
                    .bind(json)
                    .bind(min_cutoff)
                    .fetch_all(p)
                    .await?
                {
                    map.insert(r.try_get::<String, _>(0)?, registration_row(&r, 1)?);
                }
            }
            Pool::Postgres(p) => {
                for r in sqlx::query(SELECT_REGISTRATIONS_PG)
                    .bind(&keys)
                    .bind(min_cutoff)
                    .fetch_all(p)
                    .await?
                {
                    map.insert(r.try_get::<String, _>(0)?, registration_row(&r, 1)?);
                }
            }
        }
        Ok(map)
    }
    .await;
    match rows {
        Ok(map) => {
            for job in batch {
                let row = map
                    .get(&job.name_key)
                    .filter(|r| r.updated_at > job.cutoff)
                    .cloned();
                let _ = job.done.send(Ok(row));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "batched look-up failed");
            let msg = e.to_string();
            for job in batch {
                let _ = job
                    .done
                    .send(Err(RegistryError::Database(sqlx::Error::Protocol(
                        msg.clone(),
                    ))));
            }
        }
    }
}

/// The group-commit writer: takes all queued writes (up to `max_batch`), commits them
/// in one transaction and answers each caller after the commit.
async fn writer_loop(
    pool: Pool,
    backend: Backend,
    mut rx: mpsc::Receiver<JobHandle>,
    max_batch: usize,
) {
    let mut batch: Vec<JobHandle> = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        if batch.len() == 1 {
            let Some(JobHandle(job)) = batch.pop() else {
                continue;
            };
            let res = on_pool!(&pool, p => single_write!(p, &job.op));
            let _ = job.done.send(res.map_err(RegistryError::from));
            continue;
        }
        let ops: Vec<&WriteOp> = batch.iter().map(|h| &h.0.op).collect();
        let res: Result<Vec<u64>, sqlx::Error> = match &pool {
            Pool::Sqlite(p) => batch_write!(p, p.begin_with("BEGIN IMMEDIATE"), ops),
            Pool::Postgres(p) => batch_write!(p, p.begin(), ops),
        };
        drop(ops);
        match res {
            Ok(counts) => {
                for (JobHandle(job), n) in batch.drain(..).zip(counts) {
                    let _ = job.done.send(Ok(n));
                }
            }
            Err(e) => {
                // One bad write must not fail the others: retry each on its own.
                tracing::warn!(backend = backend.as_str(), error = %e, size = batch.len(),
                    "group commit failed; retrying writes one by one");
                for JobHandle(job) in batch.drain(..) {
                    let res = on_pool!(&pool, p => single_write!(p, &job.op));
                    let _ = job.done.send(res.map_err(RegistryError::from));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://nimbus:s3cret@127.0.0.1:5432/db"),
            "postgres://nimbus:***@127.0.0.1:5432/db"
        );
        assert_eq!(redact_url("sqlite:x.sqlite"), "sqlite:x.sqlite");
    }
}
