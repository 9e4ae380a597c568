//! HTTP layer: the legacy `reg.cgi` endpoint, the JSON API and the OpenAPI document.
//!
//! Every error gets a status and a body: JSON `{"error": CODE, "message": TEXT}` on the
//! JSON API, XML `<result><error>TEXT</error></result>` on the legacy endpoint.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::error::RegistryError;
use crate::legacy::{parse_legacy_query, LegacyError, LegacyReply};
use crate::registry::{public_message, Registry, UserInfo};

/// An error response of the JSON API.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let (status, code) = match &e {
            RegistryError::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            RegistryError::InvalidPeerId => (StatusCode::BAD_REQUEST, "invalid_peer_id"),
            RegistryError::InvalidPassword(_) => (StatusCode::BAD_REQUEST, "invalid_password"),
            RegistryError::NameTaken => (StatusCode::CONFLICT, "name_taken"),
            RegistryError::BadCredentials => (StatusCode::UNAUTHORIZED, "bad_credentials"),
            RegistryError::BadToken => (StatusCode::UNAUTHORIZED, "bad_token"),
            RegistryError::UnknownUser => (StatusCode::NOT_FOUND, "unknown_user"),
            RegistryError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            RegistryError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            RegistryError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            RegistryError::Config(_) | RegistryError::Database(_) | RegistryError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        ApiError::new(status, code, public_message(&e))
    }
}

fn no_store(resp: &mut Response) {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(json!({ "error": self.code, "message": self.message })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(s) = self.retry_after_secs {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        no_store(&mut resp);
        resp
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Builds the router (see [`Registry::router`]).
pub(crate) fn router(reg: Registry) -> Router {
    let max_body = reg.config().max_body_bytes;
    let limited = !reg.config().rate_limit.is_off() || !reg.config().auth_rate_limit.is_off();
    let router = Router::new()
        .route("/reg.cgi", get(legacy_get).post(legacy_post))
        .route("/cgi-bin/reg.cgi", get(legacy_get).post(legacy_post))
        .route("/api/v1/users", post(sign_up))
        .route("/api/v1/users/me", get(whoami).delete(delete_me))
        .route("/api/v1/sessions", post(log_in))
        .route("/api/v1/sessions/current", delete(log_out))
        .route("/api/v1/presence", put(publish).delete(unpublish))
        .route("/api/v1/presence/{name}", get(lookup))
        .route("/openapi.json", get(openapi))
        .route("/crossdomain.xml", get(crossdomain))
        .route("/healthz", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body));
    let router = if limited {
        router.layer(middleware::from_fn_with_state(reg.clone(), rate_limit))
    } else {
        router
    };
    router.with_state(reg)
}

fn client_ip(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn is_legacy_path(path: &str) -> bool {
    path == "/reg.cgi" || path == "/cgi-bin/reg.cgi"
}

fn too_many(retry: std::time::Duration, legacy: bool) -> Response {
    let secs = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
    let mut resp = if legacy {
        legacy_response(
            StatusCode::TOO_MANY_REQUESTS,
            &LegacyReply::error("too many requests: slow down"),
        )
    } else {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests: slow down",
        );
        e.retry_after_secs = Some(secs);
        return e.into_response();
    };
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

async fn rate_limit(State(reg): State<Registry>, req: Request, next: Next) -> Response {
    if let Some(ip) = client_ip(&req) {
        if let Err(retry) = reg.rate_check(ip) {
            return too_many(retry, is_legacy_path(req.uri().path()));
        }
        let path = req.uri().path();
        if req.method() == Method::POST && (path == "/api/v1/users" || path == "/api/v1/sessions") {
            if let Err(retry) = reg.auth_rate_check(ip) {
                return too_many(retry, false);
            }
        }
    }
    next.run(req).await
}

// ----- helpers ------------------------------------------------------------------

/// Parses a JSON body, with clear errors for a missing or wrong content type, an
/// oversized body and malformed JSON. Error messages never echo values (a field
/// could hold a password).
fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<T> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON, with Content-Type: application/json",
        ));
    }
    let body = body.map_err(body_rejection)?;
    serde_json::from_slice::<T>(&body).map_err(|e| {
        let message = match e.classify() {
            serde_json::error::Category::Data => {
                let text = e.to_string();
                if text.starts_with("missing field") || text.starts_with("unknown field") {
                    text
                } else {
                    format!(
                        "a field has the wrong type (line {}, column {})",
                        e.line(),
                        e.column()
                    )
                }
            }
            serde_json::error::Category::Eof => "the JSON body is incomplete".to_owned(),
            _ => format!("malformed JSON at line {}, column {}", e.line(), e.column()),
        };
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", message)
    })
}

fn body_rejection(r: BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        )
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            "the request body could not be read",
        )
    }
}

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn require_user(reg: &Registry, headers: &HeaderMap) -> ApiResult<(UserInfo, String)> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "authentication required: send Authorization: Bearer <token> (POST /api/v1/sessions to get one)",
        ));
    };
    let user = reg.user_for_token(token).await?;
    Ok((user, token.to_owned()))
}

fn secs(millis: i64) -> i64 {
    millis.div_euclid(1000)
}

// ----- JSON API ---------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    name: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    peer_id: String,
}

async fn sign_up(
    State(reg): State<Registry>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let c: Credentials = json_body(&headers, body)?;
    let user = reg.sign_up(&c.name, &c.password).await?;
    let mut resp = (StatusCode::CREATED, Json(user)).into_response();
    no_store(&mut resp);
    Ok(resp)
}

async fn log_in(
    State(reg): State<Registry>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let c: Credentials = json_body(&headers, body)?;
    let t = reg.log_in(&c.name, &c.password).await?;
    let mut resp = Json(json!({
        "token": t.token,
        "token_type": "Bearer",
        "expires_at": secs(t.expires_at_millis),
        "expires_in": reg.config().token_ttl.as_secs(),
        "user": t.user,
    }))
    .into_response();
    no_store(&mut resp);
    Ok(resp)
}

async fn log_out(State(reg): State<Registry>, headers: HeaderMap) -> ApiResult<StatusCode> {
    let (_, token) = require_user(&reg, &headers).await?;
    reg.log_out(&token).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn whoami(State(reg): State<Registry>, headers: HeaderMap) -> ApiResult<Response> {
    let (user, _) = require_user(&reg, &headers).await?;
    let mut resp = Json(user).into_response();
    no_store(&mut resp);
    Ok(resp)
}

async fn delete_me(State(reg): State<Registry>, headers: HeaderMap) -> ApiResult<StatusCode> {
    let (user, _) = require_user(&reg, &headers).await?;
    reg.delete_user(&user).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn presence_json(p: &crate::registry::Presence) -> serde_json::Value {
    json!({
        "name": p.name,
        "peer_id": p.peer_id,
        "updated_at": secs(p.updated_at_millis),
        "expires_at": secs(p.expires_at_millis),
    })
}

async fn publish(
    State(reg): State<Registry>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let (user, _) = require_user(&reg, &headers).await?;
    let b: PublishBody = json_body(&headers, body)?;
    let p = reg.publish(&user, &b.peer_id).await?;
    let mut resp = Json(presence_json(&p)).into_response();
    no_store(&mut resp);
    Ok(resp)
}

async fn unpublish(State(reg): State<Registry>, headers: HeaderMap) -> ApiResult<StatusCode> {
    let (user, _) = require_user(&reg, &headers).await?;
    reg.unpublish(&user).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn lookup(
    State(reg): State<Registry>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    // Authenticate first: anonymous callers learn nothing, whatever the name.
    let _ = require_user(&reg, &headers).await?;
    let Path(name) = name.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            "the user name in the path is not valid UTF-8",
        )
    })?;
    match reg.lookup(&name).await? {
        Some(p) => {
            let mut resp = Json(presence_json(&p)).into_response();
            no_store(&mut resp);
            Ok(resp)
        }
        None => Err(RegistryError::NotFound.into()),
    }
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::OPENAPI_JSON,
    )
        .into_response()
}

/// The Flash cross-domain policy, if domains are configured. Only characters that can
/// appear in a domain pattern are kept, so the XML cannot be broken.
async fn crossdomain(State(reg): State<Registry>) -> Response {
    let domains: Vec<&String> = reg
        .config()
        .crossdomain_allow
        .iter()
        .filter(|d| {
            !d.is_empty()
                && d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'*' | b':'))
        })
        .collect();
    if domains.is_empty() {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no cross-domain policy")
            .into_response();
    }
    let mut xml = String::from(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE cross-domain-policy SYSTEM \"http://www.adobe.com/xml/dtds/cross-domain-policy.dtd\">\n<cross-domain-policy>\n",
    );
    for d in domains {
        xml.push_str(&format!("\t<allow-access-from domain=\"{d}\"/>\n"));
    }
    xml.push_str("</cross-domain-policy>\n");
    ([(header::CONTENT_TYPE, "text/x-cross-domain-policy")], xml).into_response()
}

async fn health(State(reg): State<Registry>) -> ApiResult<Response> {
    reg_ping(&reg).await?;
    Ok(Json(json!({ "status": "ok", "backend": reg.backend_name() })).into_response())
}

async fn reg_ping(reg: &Registry) -> Result<(), RegistryError> {
    reg.ping().await
}

async fn not_found(uri: Uri) -> Response {
    if is_legacy_path(uri.path()) {
        return legacy_response(StatusCode::NOT_FOUND, &LegacyReply::error("not found"));
    }
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").into_response()
}

async fn method_not_allowed(uri: Uri) -> Response {
    if is_legacy_path(uri.path()) {
        return legacy_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &LegacyReply::error("method not allowed: use GET"),
        );
    }
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
    .into_response()
}

// ----- legacy reg.cgi ---------------------------------------------------------

fn legacy_response(status: StatusCode, reply: &LegacyReply) -> Response {
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        reply.to_xml(),
    )
        .into_response();
    no_store(&mut resp);
    resp
}

fn legacy_parse_error(e: &LegacyError) -> Response {
    let status = match e {
        LegacyError::QueryTooLong { .. } => StatusCode::URI_TOO_LONG,
        _ => StatusCode::BAD_REQUEST,
    };
    legacy_response(status, &LegacyReply::error(e.to_string()))
}

async fn legacy_get(State(reg): State<Registry>, req: Request) -> Response {
    // The whole request, rather than cloned `Uri` and `HeaderMap` extractors: this is
    // the hot path.
    legacy_common(&reg, req.headers(), req.uri().query().unwrap_or("")).await
}

async fn legacy_post(
    State(reg): State<Registry>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-www-form-urlencoded");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return legacy_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &LegacyReply::error("a POST body must be application/x-www-form-urlencoded"),
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(r) => {
            let too_large = r.status() == StatusCode::PAYLOAD_TOO_LARGE;
            return legacy_response(
                if too_large {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                },
                &LegacyReply::error(if too_large {
                    "the request body is too large"
                } else {
                    "the request body could not be read"
                }),
            );
        }
    };
    let Ok(body) = std::str::from_utf8(&body) else {
        return legacy_parse_error(&LegacyError::InvalidUtf8 { param: "body" });
    };
    // As Python's cgi module: the body's parameters, then the query string's.
    let query = uri.query().unwrap_or("");
    let combined = match (body.is_empty(), query.is_empty()) {
        (_, true) => body.to_owned(),
        (true, false) => query.to_owned(),
        (false, false) => format!("{body}&{query}"),
    };
    legacy_common(&reg, &headers, &combined).await
}

async fn legacy_common(reg: &Registry, headers: &HeaderMap, query: &str) -> Response {
    let req = match parse_legacy_query(query) {
        Ok(r) => r,
        Err(e) => return legacy_parse_error(&e),
    };
    let token = req.token.as_deref().or_else(|| bearer(headers));
    let caller = match token {
        Some(t) => match reg.user_for_token(t).await {
            Ok(u) => Some(u),
            Err(e) => {
                let status = match e {
                    RegistryError::BadToken => StatusCode::UNAUTHORIZED,
                    RegistryError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                return legacy_response(status, &LegacyReply::error(public_message(&e)));
            }
        },
        None => None,
    };
    let out = reg.legacy(&req, caller.as_ref()).await;
    let status = StatusCode::from_u16(out.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = legacy_response(status, &out.reply);
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}
