//! The registry: accounts, tokens, registrations and session bindings, and the rules
//! that decide who may publish and who may look up.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock, Weak};

use crate::auth::{self, Hasher};
use crate::clock::{Clock, SystemClock};
use crate::config::{LegacyMode, RegistryConfig};
use crate::error::RegistryError;
use crate::legacy::{FoundIdentity, FriendResult, LegacyReply, LegacyRequest};
use crate::names::{check_name, is_valid_peer_id, normalize_name};
use crate::ratelimit::RateLimiter;
use crate::store::{redact_url, Store, UserRow, WriteOp};

/// The identifier of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An account, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserInfo {
    /// Its identifier.
    pub id: UserId,
    /// Its name, as given at sign-up.
    pub name: String,
}

impl From<&UserRow> for UserInfo {
    fn from(r: &UserRow) -> Self {
        UserInfo {
            id: UserId(r.id),
            name: r.name.clone(),
        }
    }
}

/// A bearer token issued at log-in.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The token (`nbt_` and 64 hex digits). Only its SHA-256 digest is stored.
    pub token: String,
    /// Whose it is.
    pub user: UserInfo,
    /// When it stops being valid (milliseconds since the Unix epoch).
    pub expires_at_millis: i64,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("user", &self.user)
            .field("expires_at_millis", &self.expires_at_millis)
            .finish()
    }
}

/// A live registration: `name` is online as `peer_id`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Presence {
    /// The name as registered.
    pub name: String,
    /// 64 lower-case hex digits.
    pub peer_id: String,
    /// Last refresh (milliseconds since the Unix epoch).
    pub updated_at_millis: i64,
    /// When it expires unless refreshed (milliseconds since the Unix epoch).
    pub expires_at_millis: i64,
}

/// Tells the registry which peer IDs have a session connected to the server now.
/// The rendezvous server implements it over its session table.
pub trait ConnectedPeers: Send + Sync + 'static {
    /// True when a session with this peer ID (64 lower-case hex digits) is connected.
    fn is_connected(&self, peer_id_hex: &str) -> bool;
}

impl<F> ConnectedPeers for F
where
    F: Fn(&str) -> bool + Send + Sync + 'static,
{
    fn is_connected(&self, peer_id_hex: &str) -> bool {
        self(peer_id_hex)
    }
}

/// A boxed future returned by [`SessionBinder`].
pub type BinderFuture<'a> = Pin<Box<dyn Future<Output = Result<(), RegistryError>> + Send + 'a>>;

/// What the rendezvous server calls as sessions come and go (implemented by
/// [`Registry`]; object-safe so that the server can hold an `Arc<dyn SessionBinder>`).
pub trait SessionBinder: Send + Sync {
    /// A session authenticated as `user_name` is connected with `peer_id_hex`:
    /// publish it, and let nobody else claim that peer ID.
    fn bind_session<'a>(&'a self, user_name: &'a str, peer_id_hex: &'a str) -> BinderFuture<'a>;
    /// The session with `peer_id_hex` has ended: remove its registrations.
    fn unbind_session<'a>(&'a self, peer_id_hex: &'a str) -> BinderFuture<'a>;
}

#[derive(Debug, Clone)]
struct Bound {
    user_id: i64,
    name_key: String,
}

struct Inner {
    store: Store,
    config: RegistryConfig,
    clock: Arc<dyn Clock>,
    hasher: Hasher,
    /// Sessions bound by the server: peer ID → account.
    sessions: Mutex<HashMap<String, Bound>>,
    connected: RwLock<Option<Arc<dyn ConnectedPeers>>>,
    limiter: RateLimiter,
    auth_limiter: RateLimiter,
    db_description: String,
}

/// The peer-ID registry. Cheap to clone (all clones share one database and state).
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("db", &self.inner.db_description)
            .field("legacy_mode", &self.inner.config.legacy_mode)
            .finish()
    }
}

/// The result of a legacy request: an HTTP status and the XML reply.
#[derive(Debug, Clone)]
pub(crate) struct LegacyOutcome {
    pub(crate) status: u16,
    pub(crate) reply: LegacyReply,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Registry {
    /// Opens (creating if needed) the registry database at `url` — `sqlite:PATH` or
    /// `postgres://USER:PASSWORD@HOST[:PORT]/DB` — applies migrations and starts the
    /// background writer and maintenance tasks. Must be called inside a Tokio runtime.
    pub async fn open(url: &str, config: RegistryConfig) -> Result<Registry, RegistryError> {
        Self::open_with_clock(url, config, Arc::new(SystemClock)).await
    }

    /// Like [`Registry::open`], with the clock used for expiry (tests use a
    /// [`crate::ManualClock`]).
    pub async fn open_with_clock(
        url: &str,
        config: RegistryConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Registry, RegistryError> {
        let store = Store::open(url, &config).await?;
        let hasher = Hasher::new(&config)?;
        let inner = Arc::new(Inner {
            limiter: RateLimiter::new(config.rate_limit),
            auth_limiter: RateLimiter::new(config.auth_rate_limit),
            store,
            hasher,
            clock,
            sessions: Mutex::new(HashMap::new()),
            connected: RwLock::new(None),
            db_description: redact_url(url),
            config,
        });
        tokio::spawn(maintenance_loop(Arc::downgrade(&inner)));
        tracing::info!(db = %inner.db_description, backend = inner.store.backend().as_str(),
            legacy_mode = inner.config.legacy_mode.as_str(), "registry opened");
        Ok(Registry { inner })
    }

    /// The axum router serving the legacy endpoint, the JSON API and
    /// `/openapi.json`. Mount it, and serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()` so that rate limits
    /// apply per client address (without connect info they are not applied).
    pub fn router(&self) -> axum::Router {
        crate::api::router(self.clone())
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), RegistryError> {
        self.inner.store.ping().await
    }

    /// The settings in force.
    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        self.inner.store.backend().as_str()
    }

    /// Closes the database pools. Call after the HTTP server has stopped.
    pub async fn close(&self) {
        self.inner.store.close().await;
    }

    /// Installs the server's view of which peer IDs are connected. In
    /// `connected-only` legacy mode the legacy endpoint consults it; once installed,
    /// the JSON API also accepts only connected peer IDs and returns only connected
    /// ones. Without it, a peer counts as connected while it is bound with
    /// [`Registry::bind_session`].
    pub fn set_connected_peers(&self, peers: Arc<dyn ConnectedPeers>) {
        let mut g = match self.inner.connected.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = Some(peers);
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_millis()
    }

    fn cutoff(&self, now: i64) -> i64 {
        now.saturating_sub(millis(self.inner.config.expiry))
    }

    pub(crate) fn rate_check(&self, ip: std::net::IpAddr) -> Result<(), std::time::Duration> {
        self.inner.limiter.check(ip)
    }

    pub(crate) fn auth_rate_check(&self, ip: std::net::IpAddr) -> Result<(), std::time::Duration> {
        self.inner.auth_limiter.check(ip)
    }

    fn checker(&self) -> Option<Arc<dyn ConnectedPeers>> {
        match self.inner.connected.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Is this peer connected now (per the installed [`ConnectedPeers`], else per
    /// the bound sessions)?
    fn is_connected(&self, peer: &str) -> bool {
        match self.checker() {
            Some(c) => c.is_connected(peer),
            None => lock(&self.inner.sessions).contains_key(peer),
        }
    }

    fn bound(&self, peer: &str) -> Option<Bound> {
        lock(&self.inner.sessions).get(peer).cloned()
    }

    // ----- accounts and tokens -------------------------------------------------

    /// Creates an account. The password is hashed with Argon2id.
    pub async fn sign_up(&self, name: &str, password: &str) -> Result<UserInfo, RegistryError> {
        check_name(name).map_err(|p| RegistryError::InvalidName(p.describe()))?;
        auth::check_password(password)?;
        let key = normalize_name(name);
        // Cheap early answer for the common duplicate case (the UNIQUE constraint is
        // the real guard).
        if self.inner.store.user_by_key(&key).await?.is_some() {
            return Err(RegistryError::NameTaken);
        }
        let hash = self.inner.hasher.hash(password).await?;
        let id = self
            .inner
            .store
            .create_user(&key, name, &hash, self.now())
            .await?;
        tracing::info!(user_id = id, "account created");
        Ok(UserInfo {
            id: UserId(id),
            name: name.to_owned(),
        })
    }

    async fn check_password_of(
        &self,
        name: &str,
        password: &str,
    ) -> Result<UserRow, RegistryError> {
        let row = if check_name(name).is_ok() {
            self.inner.store.user_by_key(&normalize_name(name)).await?
        } else {
            None
        };
        let ok = self
            .inner
            .hasher
            .verify(password, row.as_ref().map(|r| r.password_hash.as_str()))
            .await?;
        match row {
            Some(r) if ok => Ok(r),
            _ => Err(RegistryError::BadCredentials),
        }
    }

    /// Checks a name and password and issues a bearer token valid for
    /// `token_ttl`. Unknown names and wrong passwords both give
    /// [`RegistryError::BadCredentials`], after the same amount of work.
    pub async fn log_in(&self, name: &str, password: &str) -> Result<IssuedToken, RegistryError> {
        let row = self.check_password_of(name, password).await?;
        let token = auth::new_token()?;
        let now = self.now();
        let expires = now.saturating_add(millis(self.inner.config.token_ttl));
        self.inner
            .store
            .insert_token(&auth::token_digest(&token), row.id, now, expires)
            .await?;
        Ok(IssuedToken {
            token,
            user: UserInfo::from(&row),
            expires_at_millis: expires,
        })
    }

    /// The account a bearer token belongs to, if the token is valid and unexpired.
    pub async fn user_for_token(&self, token: &str) -> Result<UserInfo, RegistryError> {
        if !auth::looks_like_token(token) {
            return Err(RegistryError::BadToken);
        }
        match self
            .inner
            .store
            .user_by_token(&auth::token_digest(token), self.now())
            .await?
        {
            Some(r) => Ok(UserInfo::from(&r)),
            None => Err(RegistryError::BadToken),
        }
    }

    /// Revokes a token.
    pub async fn log_out(&self, token: &str) -> Result<(), RegistryError> {
        if auth::looks_like_token(token) {
            self.inner
                .store
                .delete_token(&auth::token_digest(token))
                .await?;
        }
        Ok(())
    }

    /// Authenticates `name` with either its password or one of its unexpired tokens,
    /// for the RTMFP server at connect time. Any failure is
    /// [`RegistryError::BadCredentials`].
    pub async fn authenticate(
        &self,
        name: &str,
        password_or_token: &str,
    ) -> Result<UserId, RegistryError> {
        if auth::looks_like_token(password_or_token) {
            if let Ok(user) = self.user_for_token(password_or_token).await {
                if normalize_name(&user.name) == normalize_name(name) {
                    return Ok(user.id);
                }
                return Err(RegistryError::BadCredentials);
            }
        }
        self.check_password_of(name, password_or_token)
            .await
            .map(|r| UserId(r.id))
    }

    /// Deletes an account, its tokens and its registration.
    pub async fn delete_user(&self, user: &UserInfo) -> Result<(), RegistryError> {
        let key = normalize_name(&user.name);
        self.inner.store.delete_user(user.id.0).await?;
        self.inner
            .store
            .write(WriteOp::Remove { name_key: key })
            .await?;
        lock(&self.inner.sessions).retain(|_, b| b.user_id != user.id.0);
        Ok(())
    }

    // ----- presence -------------------------------------------------------------

    /// Refuses a claim of `peer` for `name_key` by someone else's session, or of a
    /// peer that is not connected when connectedness is checked.
    fn check_peer_claim(
        &self,
        name_key: &str,
        peer: &str,
        require_connected: bool,
    ) -> Result<(), RegistryError> {
        if let Some(b) = self.bound(peer) {
            if b.name_key != name_key {
                return Err(RegistryError::Forbidden(
                    "that peer ID belongs to another user's session",
                ));
            }
        }
        if require_connected && !self.is_connected(peer) {
            return Err(RegistryError::Forbidden(
                "that peer ID has no session connected to this server",
            ));
        }
        Ok(())
    }

    /// Publishes `user` as online at `peer_id` (refreshing the expiry).
    pub async fn publish(&self, user: &UserInfo, peer_id: &str) -> Result<Presence, RegistryError> {
        if !is_valid_peer_id(peer_id) {
            return Err(RegistryError::InvalidPeerId);
        }
        let peer = peer_id.to_ascii_lowercase();
        let key = normalize_name(&user.name);
        self.check_peer_claim(&key, &peer, self.checker().is_some())?;
        let now = self.now();
        self.inner
            .store
            .write(WriteOp::Upsert {
                name_key: key,
                name: user.name.clone(),
                identity: Some(peer.clone()),
                now,
            })
            .await?;
        Ok(Presence {
            name: user.name.clone(),
            peer_id: peer,
            updated_at_millis: now,
            expires_at_millis: now.saturating_add(millis(self.inner.config.expiry)),
        })
    }

    /// Removes `user`'s registration. True if there was one.
    pub async fn unpublish(&self, user: &UserInfo) -> Result<bool, RegistryError> {
        let n = self
            .inner
            .store
            .write(WriteOp::Remove {
                name_key: normalize_name(&user.name),
            })
            .await?;
        Ok(n > 0)
    }

    /// Looks `name` up (case-insensitively): its live peer ID, if it has one.
    /// Registrations without a usable peer ID (unregistered with `identity=0`) and,
    /// once [`Registry::set_connected_peers`] was called, peers not connected now are
    /// not returned.
    pub async fn lookup(&self, name: &str) -> Result<Option<Presence>, RegistryError> {
        check_name(name).map_err(|p| RegistryError::InvalidName(p.describe()))?;
        let now = self.now();
        let Some(row) = self
            .inner
            .store
            .lookup(&normalize_name(name), self.cutoff(now))
            .await?
        else {
            return Ok(None);
        };
        let Some(peer) = row.identity.filter(|i| is_valid_peer_id(i)) else {
            return Ok(None);
        };
        if let Some(c) = self.checker() {
            if !c.is_connected(&peer) {
                return Ok(None);
            }
        }
        Ok(Some(Presence {
            name: row.name,
            peer_id: peer,
            updated_at_millis: row.updated_at,
            expires_at_millis: row
                .updated_at
                .saturating_add(millis(self.inner.config.expiry)),
        }))
    }

    // ----- session binding (for the rendezvous server) --------------------------

    /// Binds a session that the server authenticated as `user_name` to its peer ID:
    /// publishes the name at that peer ID and from now on refuses any claim of that
    /// peer ID under another name. The registration is kept fresh while bound.
    pub async fn bind_session(
        &self,
        user_name: &str,
        peer_id_hex: &str,
    ) -> Result<(), RegistryError> {
        if !is_valid_peer_id(peer_id_hex) {
            return Err(RegistryError::InvalidPeerId);
        }
        check_name(user_name).map_err(|p| RegistryError::InvalidName(p.describe()))?;
        let key = normalize_name(user_name);
        let Some(user) = self.inner.store.user_by_key(&key).await? else {
            return Err(RegistryError::UnknownUser);
        };
        let peer = peer_id_hex.to_ascii_lowercase();
        lock(&self.inner.sessions).insert(
            peer.clone(),
            Bound {
                user_id: user.id,
                name_key: key.clone(),
            },
        );
        self.inner
            .store
            .write(WriteOp::Upsert {
                name_key: key,
                name: user.name,
                identity: Some(peer),
                now: self.now(),
            })
            .await?;
        Ok(())
    }

    /// The session with this peer ID has ended: forgets the binding and removes every
    /// registration that points at this peer ID.
    pub async fn unbind_session(&self, peer_id_hex: &str) -> Result<(), RegistryError> {
        if !is_valid_peer_id(peer_id_hex) {
            return Err(RegistryError::InvalidPeerId);
        }
        let peer = peer_id_hex.to_ascii_lowercase();
        lock(&self.inner.sessions).remove(&peer);
        self.inner
            .store
            .write(WriteOp::RemoveIdentity { identity: peer })
            .await?;
        Ok(())
    }

    /// Number of sessions bound now.
    pub fn bound_sessions(&self) -> usize {
        lock(&self.inner.sessions).len()
    }

    // ----- legacy reg.cgi -------------------------------------------------------

    /// Carries out a parsed `reg.cgi` request for `caller` (the authenticated
    /// account, if the request carried valid credentials).
    pub(crate) async fn legacy(
        &self,
        req: &LegacyRequest,
        caller: Option<&UserInfo>,
    ) -> LegacyOutcome {
        let mode = self.inner.config.legacy_mode;
        let mut reply = LegacyReply::default();
        if mode == LegacyMode::Authenticated && caller.is_none() {
            reply.error = Some(
                "authentication required: give a token (token parameter or Authorization: Bearer)"
                    .into(),
            );
            return LegacyOutcome { status: 401, reply };
        }
        let now = self.now();
        if let Some(username) = &req.username {
            match self.legacy_update(username, req, caller, now).await {
                Ok(()) => reply.update = Some(true),
                Err(e) => {
                    reply.update = Some(false);
                    let status = match &e {
                        RegistryError::Forbidden(_) => 403,
                        RegistryError::ShuttingDown => 503,
                        _ => 500,
                    };
                    reply.error = Some(public_message(&e));
                    return LegacyOutcome { status, reply };
                }
            }
        }
        let cutoff = self.cutoff(now);
        let keys: Vec<String> = req.friends.iter().map(|f| normalize_name(f)).collect();
        let rows = match self.inner.store.lookup_many(&keys, cutoff).await {
            Ok(rows) => rows,
            Err(e) => {
                reply.error = Some(public_message(&e));
                let status = if matches!(e, RegistryError::ShuttingDown) {
                    503
                } else {
                    500
                };
                return LegacyOutcome { status, reply };
            }
        };
        for (f, found) in req.friends.iter().zip(rows) {
            let found = found.filter(|row| {
                mode != LegacyMode::ConnectedOnly
                    || row
                        .identity
                        .as_deref()
                        .is_some_and(|i| is_valid_peer_id(i) && self.is_connected(i))
            });
            reply.friends.push(FriendResult {
                user: f.clone(),
                found: found.map(|row| FoundIdentity {
                    identity: row.identity,
                    registered: row.name,
                }),
            });
        }
        LegacyOutcome { status: 200, reply }
    }

    async fn legacy_update(
        &self,
        username: &str,
        req: &LegacyRequest,
        caller: Option<&UserInfo>,
        now: i64,
    ) -> Result<(), RegistryError> {
        let mode = self.inner.config.legacy_mode;
        let key = normalize_name(username);
        let peer = req.identity.as_deref().filter(|i| is_valid_peer_id(i));
        match caller {
            Some(user) => {
                if normalize_name(&user.name) != key {
                    return Err(RegistryError::Forbidden(
                        "you can register only your own user name",
                    ));
                }
            }
            None => {
                // Anonymous (open or connected-only mode): account names are reserved
                // to their owners, except for a session the server bound to that
                // account.
                if let Some(owner) = self.inner.store.user_by_key(&key).await? {
                    let bound_to_owner = peer
                        .and_then(|p| self.bound(p))
                        .is_some_and(|b| b.user_id == owner.id);
                    if !(mode == LegacyMode::ConnectedOnly && bound_to_owner) {
                        return Err(RegistryError::Forbidden(
                            "that user name belongs to an account: authenticate to register it",
                        ));
                    }
                }
            }
        }
        let connected_only = mode == LegacyMode::ConnectedOnly;
        match peer {
            Some(p) => self.check_peer_claim(&key, p, connected_only)?,
            None => {
                // Unregistering: in connected-only mode an anonymous caller cannot
                // knock out a registration whose session is still connected.
                if connected_only && caller.is_none() {
                    if let Some(row) = self.inner.store.lookup(&key, self.cutoff(now)).await? {
                        if row
                            .identity
                            .as_deref()
                            .is_some_and(|i| is_valid_peer_id(i) && self.is_connected(i))
                        {
                            return Err(RegistryError::Forbidden(
                                "the registered identity is still connected",
                            ));
                        }
                    }
                }
            }
        }
        self.inner
            .store
            .write(WriteOp::Upsert {
                name_key: key,
                name: username.to_owned(),
                identity: req.identity.clone(),
                now,
            })
            .await?;
        Ok(())
    }

    /// Purges expired registrations and tokens and refreshes the registrations of
    /// bound sessions. Runs every `maintenance_interval` by itself; callable at will.
    pub async fn maintain(&self) -> Result<(), RegistryError> {
        let now = self.now();
        self.inner
            .store
            .write(WriteOp::Purge {
                registrations_before: self.cutoff(now),
                tokens_before: now,
            })
            .await?;
        let bound: Vec<(String, Bound)> = lock(&self.inner.sessions)
            .iter()
            .map(|(p, b)| (p.clone(), b.clone()))
            .collect();
        for (peer, b) in bound {
            self.inner
                .store
                .write(WriteOp::Touch {
                    name_key: b.name_key,
                    identity: peer,
                    now,
                })
                .await?;
        }
        Ok(())
    }
}

impl SessionBinder for Registry {
    fn bind_session<'a>(&'a self, user_name: &'a str, peer_id_hex: &'a str) -> BinderFuture<'a> {
        Box::pin(Registry::bind_session(self, user_name, peer_id_hex))
    }

    fn unbind_session<'a>(&'a self, peer_id_hex: &'a str) -> BinderFuture<'a> {
        Box::pin(Registry::unbind_session(self, peer_id_hex))
    }
}

/// The message shown to clients for an error: internal details (database errors) are
/// logged, not shown.
pub(crate) fn public_message(e: &RegistryError) -> String {
    match e {
        RegistryError::Database(inner) => {
            tracing::error!(error = %inner, "database error");
            "internal error (database)".to_owned()
        }
        RegistryError::Internal(inner) => {
            tracing::error!(error = %inner, "internal error");
            "internal error".to_owned()
        }
        RegistryError::Config(inner) => {
            tracing::error!(error = %inner, "configuration error");
            "internal error".to_owned()
        }
        other => other.to_string(),
    }
}

async fn maintenance_loop(inner: Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(i) => i.config.maintenance_interval,
        None => return,
    };
    let period = period.max(std::time::Duration::from_millis(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let reg = Registry { inner };
        if let Err(e) = reg.maintain().await {
            if matches!(e, RegistryError::ShuttingDown) {
                return;
            }
            tracing::warn!(error = %public_message(&e), "registry maintenance failed");
        }
    }
}
