//! The behavioural suite: every behaviour runs on SQLite and on PostgreSQL (the
//! PostgreSQL half prints `SKIPPED: …` when NIMBUS_TEST_POSTGRES_URL is not set).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    config, friend_item, peer, update_item, xml_result, xml_update, Case, TestResponse, PROLOG,
};
use hyper::Method;
use nimbus_registry::{LegacyMode, RateLimit, RegistryConfig, RegistryError};
use serde_json::json;

on_both_backends!(
    adobe_sample_requests,
    legacy_both_in_one_request_and_post,
    legacy_expiry,
    legacy_xml_escaping,
    legacy_bad_requests,
    legacy_open_mode_protects_accounts,
    legacy_authenticated_mode,
    legacy_connected_only_mode,
    json_api_flow,
    json_bad_requests,
    oversized_bodies,
    token_expiry_and_logout,
    no_enumeration,
    rate_limits,
    session_binding,
    authenticate_for_server,
    group_commit_many_concurrent_updates,
    reopen_keeps_data,
    maintenance_purges_and_refreshes,
    openapi_and_health,
    crossdomain_policy,
);

/// The exact requests the Adobe VideoPhone sample sends (HttpIdManager: register after
/// NetConnection.Connect.Success, refresh every 30 minutes with `time`, look-up with
/// `friends` and `time`, unregister with identity 0), checked against the XML
/// reg.cgi writes.
async fn adobe_sample_requests(case: Case) {
    let Some(env) = case.start(LegacyMode::Open).await else {
        return;
    };
    let alice = "5b7c3c8e2a4e4d7f9a1b0c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5";
    let bob = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    // register(userName, nearID)
    let r = env.register("alice", alice, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, xml_update(true));
    assert!(r.header("content-type").unwrap().starts_with("text/xml"));
    let r = env
        .get(&format!("/cgi-bin/reg.cgi?username=bob&identity={bob}"))
        .await;
    assert_eq!(r.body, xml_update(true));

    // lookup(user): ?friends=U&time=<ms>
    let r = env
        .get("/cgi-bin/reg.cgi?friends=bob&time=1290000000000")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, xml_result(&[friend_item("bob", Some(bob), None)]));

    // Case-insensitive, with <registered> when the case differs.
    let r = env.get("/reg.cgi?friends=BOB&time=1290000000001").await;
    assert_eq!(
        r.body,
        xml_result(&[friend_item("BOB", Some(bob), Some("bob"))])
    );

    // Miss: only <user>.
    let r = env.get("/reg.cgi?friends=carol&time=1290000000002").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, xml_result(&[friend_item("carol", None, None)]));

    // Refresh every 30 minutes: username, identity and time.
    env.clock.advance_millis(30 * 60 * 1000);
    let r = env.register("alice", alice, "&time=1290001800000").await;
    assert_eq!(r.body, xml_update(true));
    env.clock.advance_millis(40 * 60 * 1000);
    // bob was not refreshed: gone after an hour; alice was: still there.
    let r = env
        .get("/reg.cgi?friends=bob&friends=alice&time=1290004200000")
        .await;
    assert_eq!(
        r.body,
        xml_result(&[
            friend_item("bob", None, None),
            friend_item("alice", Some(alice), None)
        ])
    );

    // unregister(): identity=0 is stored and returned as <identity>0</identity>.
    let r = env.get("/reg.cgi?username=alice&identity=0").await;
    assert_eq!(r.body, xml_update(true));
    let r = env.get("/reg.cgi?friends=alice&time=1290004200001").await;
    assert_eq!(r.body, xml_result(&[friend_item("alice", Some("0"), None)]));
    // The JSON API does not offer such an entry as a peer ID.
    assert_eq!(env.reg.lookup("alice").await.unwrap(), None);
    env.finish().await;
}

async fn legacy_both_in_one_request_and_post(case: Case) {
    let Some(env) = case.start(LegacyMode::Open).await else {
        return;
    };
    let p1 = peer(0x11);
    let r = env
        .register(
            "Dave",
            &p1.to_uppercase(),
            "&friends=dave&friends=erin&time=5",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        xml_result(&[
            update_item(true),
            friend_item("dave", Some(&p1), Some("Dave")),
            friend_item("erin", None, None)
        ])
    );
    // Without identity: NULL stored, an empty <identity> returned (as reg.cgi).
    let r = env.get("/reg.cgi?username=frank").await;
    assert_eq!(r.body, xml_update(true));
    let r = env.get("/reg.cgi?friends=frank").await;
    assert!(r.body.contains("<identity></identity>"), "{}", r.body);

    // 100 look-ups in one request (answered in batches), with repeats and case
    // variants, come back in request order.
    for i in 0..10u8 {
        env.register(&format!("m{i}"), &peer(0x20 + i), "").await;
    }
    let names: Vec<String> = (0..100u32)
        .map(|i| match i % 4 {
            0 => format!("m{}", i % 10),
            1 => format!("M{}", i % 10),
            2 => format!("none{i}"),
            _ => "m3".to_owned(),
        })
        .collect();
    let q: Vec<String> = names.iter().map(|n| format!("friends={n}")).collect();
    let r = env.get(&format!("/reg.cgi?{}&time=3", q.join("&"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let friends: Vec<&str> = r.body.split("<friend>").skip(1).collect();
    assert_eq!(friends.len(), 100);
    for (n, f) in names.iter().zip(&friends) {
        assert!(f.contains(&format!("<user>{n}</user>")), "{n}: {f}");
        if let Some(d) = n.strip_prefix(['m', 'M']) {
            let i: u8 = d.parse().unwrap();
            assert!(
                f.contains(&format!("<identity>{}</identity>", peer(0x20 + i))),
                "{n}: {f}"
            );
            assert_eq!(f.contains("<registered>"), n.starts_with('M'), "{n}: {f}");
        } else {
            assert!(!f.contains("<identity>"), "{n}: {f}");
        }
    }

    // A form-encoded POST works like a GET.
    let r = env
        .send(
            Method::POST,
            "/reg.cgi?time=1",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(b"friends=Dave".to_vec()),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains(&format!("<identity>{p1}</identity>")));
    env.finish().await;
}

async fn legacy_expiry(case: Case) {
    let ten_minutes = |c: &mut RegistryConfig| c.expiry = Duration::from_secs(600);
    let Some(env) = case.start_with(LegacyMode::Open, ten_minutes).await else {
        return;
    };
    let p = peer(0x22);
    env.register("gina", &p, "").await;
    env.clock.advance_millis(599_000);
    assert!(env.get("/reg.cgi?friends=gina").await.body.contains(&p));
    env.clock.advance_millis(1_000);
    // Exactly `expiry` after the last refresh it is gone (updated_at > now - expiry).
    assert!(!env
        .get("/reg.cgi?friends=gina")
        .await
        .body
        .contains("<identity>"));
    // A refresh brings it back.
    env.register("gina", &p, "&time=9").await;
    assert!(env.get("/reg.cgi?friends=gina").await.body.contains(&p));
    env.finish().await;
}

async fn legacy_xml_escaping(case: Case) {
    let Some(env) = case.start(LegacyMode::Open).await else {
        return;
    };
    let p = peer(0x33);
    // username "<Tom & Jerry>" registered, looked up as "<tom & jerry>".
    let r = env.register("%3CTom+%26+Jerry%3E", &p, "").await;
    assert_eq!(r.body, xml_update(true));
    let r = env.get("/reg.cgi?friends=%3Ctom%20%26%20jerry%3E").await;
    assert_eq!(
        r.body,
        xml_result(&[friend_item(
            "&lt;tom &amp; jerry&gt;",
            Some(&p),
            Some("&lt;Tom &amp; Jerry&gt;")
        )])
    );
    // Unicode names, case-insensitive too.
    env.register("%C3%89MILE", &p, "").await;
    let r = env.get("/reg.cgi?friends=%C3%A9mile").await;
    assert!(
        r.body.contains("<registered>ÉMILE</registered>"),
        "{}",
        r.body
    );
    env.finish().await;
}

/// Asserts that `reg.cgi` refused a request with `status`, saying `reason`.
fn assert_refused(r: &TestResponse, status: u16, reason: &str) {
    assert_eq!(r.status, status, "wanted {reason:?}: {}", r.body);
    assert!(r.body.contains(reason), "wanted {reason:?}: {}", r.body);
}

async fn legacy_bad_requests(case: Case) {
    let Some(env) = case.start(LegacyMode::Open).await else {
        return;
    };
    let long_name = format!("/reg.cgi?friends={}", "x".repeat(65));
    let many: Vec<String> = (0..101).map(|i| format!("friends=u{i}")).collect();
    let too_many = format!("/reg.cgi?{}", many.join("&"));
    let long_query = format!("/reg.cgi?friends=a&pad={}", "p".repeat(9000));
    let check = |what: &str, r: &TestResponse, status: u16, needle: &str| {
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert!(r.body.starts_with(PROLOG), "{what}: {}", r.body);
        assert!(r.body.contains("<error>"), "{what}: {}", r.body);
        assert!(
            r.body.contains(needle),
            "{what}: wanted {needle:?} in {}",
            r.body
        );
    };
    // GET requests: (path, status, what the error says).
    for (path, status, needle) in [
        ("/reg.cgi", 400, "missing parameters"),
        ("/reg.cgi?time=123", 400, "missing parameters"),
        (
            "/reg.cgi?username=x&identity=nothex",
            400,
            "64 hexadecimal digits",
        ),
        ("/reg.cgi?friends=%FF%FE", 400, "UTF-8"),
        ("/reg.cgi?friends=a%00b", 400, "control character"),
        (long_name.as_str(), 400, "longer than 64"),
        (too_many.as_str(), 400, "at most 100"),
        (long_query.as_str(), 414, "query string"),
        // A bad token is refused even in open mode.
        ("/reg.cgi?friends=a&token=nbt_bogus", 401, "token"),
    ] {
        check(
            &path[..path.len().min(60)],
            &env.get(path).await,
            status,
            needle,
        );
    }
    let r = env.send(Method::PUT, "/reg.cgi?friends=a", &[], None).await;
    check("PUT", &r, 405, "method not allowed");
    let json = [("content-type", "application/json")];
    let r = env
        .send(Method::POST, "/reg.cgi", &json, Some(b"{}".to_vec()))
        .await;
    check("JSON POST", &r, 415, "x-www-form-urlencoded");
    env.finish().await;
}

async fn legacy_open_mode_protects_accounts(case: Case) {
    let Some(env) = case.start(LegacyMode::Open).await else {
        return;
    };
    let token = env.account("Owner", "owner-password").await;
    // Anonymous callers cannot take an account's name, in any letter case.
    let r = env.register("owner", &peer(1), "").await;
    assert_refused(&r, 403, "belongs to an account");
    assert!(r.body.contains("<update>false</update>"), "{}", r.body);
    // The owner can, with its token.
    let r = env.register_with("Owner", &peer(2), &token).await;
    assert_eq!(r.body, xml_update(true));
    // With a token, only one's own name.
    let r = env.register_with("someone", &peer(3), &token).await;
    assert_eq!(r.status, 403);
    // Free names are open to anyone.
    let r = env.register("guest", &peer(4), "").await;
    assert_eq!(r.body, xml_update(true));
    env.finish().await;
}

async fn legacy_authenticated_mode(case: Case) {
    let Some(env) = case.start(LegacyMode::Authenticated).await else {
        return;
    };
    let token = env.account("hana", "hana-password").await;
    let r = env.register("hana", &peer(5), "").await;
    assert_refused(&r, 401, "authentication required");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = env.get("/reg.cgi?friends=hana").await;
    assert_eq!(r.status, 401);

    let r = env.register_with("HANA", &peer(5), &token).await;
    assert_eq!(r.body, xml_update(true));
    let auth = format!("Bearer {token}");
    let r = env
        .get_with("/reg.cgi?friends=hana&time=7", &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200);
    assert!(r
        .body
        .contains(&format!("<identity>{}</identity>", peer(5))));
    assert!(
        r.body.contains("<registered>HANA</registered>"),
        "{}",
        r.body
    );
    let r = env.register_with("ivan", &peer(6), &token).await;
    assert_refused(&r, 403, "only your own user name");
    env.finish().await;
}

async fn legacy_connected_only_mode(case: Case) {
    let Some(env) = case.start(LegacyMode::ConnectedOnly).await else {
        return;
    };
    let connected: Arc<std::sync::Mutex<Vec<String>>> = Arc::new(std::sync::Mutex::new(vec![
        peer(0x41),
        peer(0x42),
        peer(0x43),
    ]));
    let c2 = connected.clone();
    env.reg.set_connected_peers(Arc::new(move |p: &str| {
        c2.lock().unwrap().iter().any(|c| c == p)
    }));
    env.reg.sign_up("jane", "jane-password").await.unwrap();
    env.reg.bind_session("jane", &peer(0x41)).await.unwrap();

    // The bound session is published under the account's name.
    let r = env.get("/reg.cgi?friends=Jane").await;
    assert!(
        r.body
            .contains(&format!("<identity>{}</identity>", peer(0x41))),
        "{}",
        r.body
    );
    // The Adobe client, connected and bound as jane, refreshes: accepted.
    let r = env.register("jane", &peer(0x41), "&time=1").await;
    assert_eq!(r.body, xml_update(true));
    // Nobody can claim jane's peer ID under another name...
    let r = env.register("mallory", &peer(0x41), "").await;
    assert_refused(&r, 403, "another user's session");
    // ...nor jane's name with another connected peer ID...
    let r = env.register("jane", &peer(0x42), "").await;
    assert_eq!(r.status, 403);
    // ...nor register an identity that is not connected.
    let r = env.register("kim", &peer(0x99), "").await;
    assert_refused(&r, 403, "no session connected");
    // An anonymous connected session can register a free name.
    let r = env.register("kim", &peer(0x42), "").await;
    assert_eq!(r.body, xml_update(true));
    // ...and cannot be unregistered by a stranger while it is connected.
    let r = env.get("/reg.cgi?username=kim&identity=0").await;
    assert_eq!(r.status, 403);
    // Once kim's session is gone, look-ups no longer return it, and unregistering works.
    connected.lock().unwrap().retain(|p| *p != peer(0x42));
    let r = env.get("/reg.cgi?friends=kim").await;
    assert!(!r.body.contains("<identity>"), "{}", r.body);
    let r = env.get("/reg.cgi?username=kim&identity=0").await;
    assert_eq!(r.body, xml_update(true));

    // The session ends: the server unbinds it and the registration disappears.
    env.reg.unbind_session(&peer(0x41)).await.unwrap();
    let r = env.get("/reg.cgi?friends=jane").await;
    assert!(!r.body.contains("<identity>"), "{}", r.body);
    env.finish().await;
}

async fn json_api_flow(case: Case) {
    let Some(env) = case.start(LegacyMode::Authenticated).await else {
        return;
    };
    let r = env.post_user("Lena", "lena-password").await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["name"], "Lena");
    assert!(r.json()["id"].as_i64().is_some());

    let r = env.post_session("lena", "lena-password").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let lena = v["token"].as_str().unwrap().to_owned();
    assert!(lena.starts_with("nbt_"));
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 86400);
    assert_eq!(r.header("cache-control"), Some("no-store"));

    let r = env.call(Method::GET, "/api/v1/users/me", Some(&lena)).await;
    assert_eq!(r.json()["name"], "Lena");

    let p = peer(0x51);
    let r = env.publish(&lena, &p.to_uppercase()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["peer_id"], p);
    assert_eq!(
        r.json()["expires_at"].as_i64().unwrap() - r.json()["updated_at"].as_i64().unwrap(),
        3600
    );

    let max = env.account("max", "max-password").await;
    let r = env
        .call(Method::GET, "/api/v1/presence/LENA", Some(&max))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["name"], "Lena");
    assert_eq!(r.json()["peer_id"], p);
    // Names with spaces and non-ASCII letters travel percent-encoded in the path.
    env.account("Zoë Ann", "zoe-password").await;
    let r = env
        .call(Method::GET, "/api/v1/presence/zo%C3%AB%20ann", Some(&max))
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.json()["error"], "not_found");

    // The legacy endpoint sees JSON-published presence too.
    let r = env.get(&format!("/reg.cgi?friends=lena&token={max}")).await;
    assert!(r.body.contains(&format!("<identity>{p}</identity>")));

    let r = env
        .call(Method::DELETE, "/api/v1/presence", Some(&lena))
        .await;
    assert_eq!(r.status, 204);
    let r = env
        .call(Method::GET, "/api/v1/presence/lena", Some(&max))
        .await;
    assert_eq!(r.status, 404);

    let r = env
        .call(Method::DELETE, "/api/v1/users/me", Some(&lena))
        .await;
    assert_eq!(r.status, 204);
    let r = env.call(Method::GET, "/api/v1/users/me", Some(&lena)).await;
    assert_eq!(r.status, 401);
    // The name is free again.
    env.account("LENA", "new-password").await;
    env.finish().await;
}

async fn json_bad_requests(case: Case) {
    let Some(env) = case.start(LegacyMode::Authenticated).await else {
        return;
    };
    let expect = |what: &str, r: &TestResponse, status: u16, code: &str| {
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert_eq!(r.json()["error"], code, "{what}: {}", r.body);
        let message = r.json()["message"].as_str().map(str::to_owned);
        assert!(message.is_some_and(|m| !m.is_empty()), "{what}: {}", r.body);
    };

    // Sign-up bodies, then raw sign-up requests: (body, status, error code).
    for (body, status, code) in [
        (json!({"name": "nopass"}), 400, "malformed_body"),
        (
            json!({"name": "x", "password": 12345678}),
            400,
            "malformed_body",
        ),
        (
            json!({"name": "x", "password": "long-enough", "admin": true}),
            400,
            "malformed_body",
        ),
        (
            json!({"name": "", "password": "long-enough"}),
            400,
            "invalid_name",
        ),
        (
            json!({"name": "a\u{7}b", "password": "long-enough"}),
            400,
            "invalid_name",
        ),
        (
            json!({"name": "shorty", "password": "short"}),
            400,
            "invalid_password",
        ),
    ] {
        let what = body.to_string();
        let r = env
            .json(Method::POST, "/api/v1/users", None, Some(body))
            .await;
        expect(&what, &r, status, code);
        assert!(
            !r.body.contains("12345678"),
            "echoed a password: {}",
            r.body
        );
    }
    for (content_type, body, status, code) in [
        (
            "application/json",
            &b"{\"name\": "[..],
            400,
            "malformed_body",
        ),
        ("text/plain", &b"name=a"[..], 415, "unsupported_media_type"),
    ] {
        let headers = [("content-type", content_type)];
        let r = env
            .send(Method::POST, "/api/v1/users", &headers, Some(body.to_vec()))
            .await;
        expect(content_type, &r, status, code);
    }

    let r = env.post_user("Olga", "olga-password").await;
    assert_eq!(r.status, 201);
    // Duplicate names, whatever the case.
    let r = env.post_user("OLGA", "other-password").await;
    expect("duplicate name", &r, 409, "name_taken");

    let token = env.login("olga", "olga-password").await;
    for (body, code) in [
        (json!({"peer_id": "abc"}), "invalid_peer_id"),
        (json!({"peer_id": "g".repeat(64)}), "invalid_peer_id"),
        (json!({}), "malformed_body"),
    ] {
        let what = body.to_string();
        let r = env
            .json(Method::PUT, "/api/v1/presence", Some(&token), Some(body))
            .await;
        expect(&what, &r, 400, code);
    }

    // Bad tokens.
    let r = env
        .call(Method::GET, "/api/v1/users/me", Some("nbt_nonsense"))
        .await;
    expect("nonsense token", &r, 401, "bad_token");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let fake = format!("nbt_{}", "0".repeat(64));
    let r = env.call(Method::GET, "/api/v1/users/me", Some(&fake)).await;
    expect("unknown token", &r, 401, "bad_token");
    let r = env.call(Method::GET, "/api/v1/users/me", None).await;
    expect("no token", &r, 401, "unauthenticated");
    let basic = [("authorization", "Basic b2xnYTpwdw==")];
    let r = env
        .send(Method::GET, "/api/v1/users/me", &basic, None)
        .await;
    expect("basic auth", &r, 401, "unauthenticated");

    // Unknown user / wrong password at log-in.
    for name in ["olga", "nobody"] {
        let r = env.post_session(name, "wrong-password").await;
        expect(name, &r, 401, "bad_credentials");
    }

    // Invalid name in a look-up (authenticated), unknown endpoint, wrong method.
    let long = format!("/api/v1/presence/{}", "n".repeat(65));
    for (method, path, token, status, code) in [
        (
            Method::GET,
            long.as_str(),
            Some(token.as_str()),
            400,
            "invalid_name",
        ),
        (Method::GET, "/api/v2/nothing", None, 404, "not_found"),
        (
            Method::PATCH,
            "/api/v1/presence",
            Some(token.as_str()),
            405,
            "method_not_allowed",
        ),
    ] {
        let r = env.call(method, path, token).await;
        expect(path, &r, status, code);
    }
    env.finish().await;
}

async fn oversized_bodies(case: Case) {
    let Some(env) = case
        .start_with(LegacyMode::Open, |c| c.max_body_bytes = 1024)
        .await
    else {
        return;
    };
    let big = json!({"name": "big", "password": "p".repeat(4000)});
    let r = env
        .json(Method::POST, "/api/v1/users", None, Some(big))
        .await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["error"], "payload_too_large");
    let r = env
        .send(
            Method::POST,
            "/reg.cgi",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(format!("friends=a&pad={}", "x".repeat(5000)).into_bytes()),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r
        .body
        .contains("<error>the request body is too large</error>"));
    // Just under the limit is fine.
    let r = env.post_user("fits", &"p".repeat(900)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    env.finish().await;
}

async fn token_expiry_and_logout(case: Case) {
    let two_minutes = |c: &mut RegistryConfig| c.token_ttl = Duration::from_secs(120);
    let Some(env) = case
        .start_with(LegacyMode::Authenticated, two_minutes)
        .await
    else {
        return;
    };
    let t1 = env.account("pia", "pia-password").await;
    let t2 = env.login("pia", "pia-password").await;
    assert_ne!(t1, t2);
    env.clock.advance_millis(119_000);
    assert_eq!(
        env.call(Method::GET, "/api/v1/users/me", Some(&t1))
            .await
            .status,
        200
    );
    env.clock.advance_millis(1_000);
    let r = env.call(Method::GET, "/api/v1/users/me", Some(&t1)).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "bad_token");
    // Legacy endpoint too.
    assert_eq!(
        env.get(&format!("/reg.cgi?friends=pia&token={t1}"))
            .await
            .status,
        401
    );

    let t3 = env.login("pia", "pia-password").await;
    let r = env
        .call(Method::DELETE, "/api/v1/sessions/current", Some(&t3))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        env.call(Method::GET, "/api/v1/users/me", Some(&t3))
            .await
            .status,
        401
    );
    env.finish().await;
}

/// Anonymous callers cannot tell known names from unknown ones.
async fn no_enumeration(case: Case) {
    let Some(env) = case.start(LegacyMode::Authenticated).await else {
        return;
    };
    let token = env.account("quinn", "quinn-password").await;
    let r = env.publish(&token, &peer(0x61)).await;
    assert_eq!(r.status, 200);

    let known = env.call(Method::GET, "/api/v1/presence/quinn", None).await;
    let unknown = env
        .call(Method::GET, "/api/v1/presence/nobody-here", None)
        .await;
    assert_eq!(known.status, 401);
    assert_eq!((known.status, &known.body), (unknown.status, &unknown.body));

    let bad = format!("nbt_{}", "1".repeat(64));
    let known = env
        .call(Method::GET, "/api/v1/presence/quinn", Some(&bad))
        .await;
    let unknown = env
        .call(Method::GET, "/api/v1/presence/nobody-here", Some(&bad))
        .await;
    assert_eq!((known.status, &known.body), (unknown.status, &unknown.body));

    let a = env.post_session("quinn", "not-the-password").await;
    let b = env.post_session("nobody-here", "not-the-password").await;
    assert_eq!((a.status, &a.body), (b.status, &b.body));

    let a = env.get("/reg.cgi?friends=quinn").await;
    let b = env.get("/reg.cgi?friends=nobody-here").await;
    assert_eq!(a.status, 401);
    assert_eq!((a.status, &a.body), (b.status, &b.body));
    env.finish().await;
}

async fn rate_limits(case: Case) {
    let limits = |c: &mut RegistryConfig| {
        // Slow refill (one request per 5 s) so that the test does not depend on
        // how fast the machine is.
        c.rate_limit = RateLimit {
            per_second: 0.2,
            burst: 5,
        };
        c.auth_rate_limit = RateLimit {
            per_second: 0.01,
            burst: 2,
        };
    };
    let Some(env) = case.start_with(LegacyMode::Open, limits).await else {
        return;
    };
    // Sign-ups and log-ins have their own, stricter bucket.
    for i in 0..2 {
        let r = env.post_user(&format!("r{i}"), "r-password").await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = env.post_session("r0", "r-password").await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"], "rate_limited");
    assert!(r.header("retry-after").is_some());
    // The general bucket: 5 in a burst (2 used above, +1 refused log-in), then 429.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(env.get("/reg.cgi?friends=a").await.status);
    }
    assert!(statuses.starts_with(&[200, 200]), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let r = env.get("/reg.cgi?friends=a").await;
    assert_eq!(r.status, 429);
    assert!(r.body.contains("<error>too many requests"), "{}", r.body);
    assert!(r.header("retry-after").is_some());
    env.finish().await;
}

async fn session_binding(case: Case) {
    let Some(env) = case.start(LegacyMode::Open).await else {
        return;
    };
    env.reg.sign_up("rita", "rita-password").await.unwrap();
    env.reg.sign_up("sam", "sam-password").await.unwrap();
    assert!(matches!(
        env.reg.bind_session("nobody", &peer(0x71)).await,
        Err(RegistryError::UnknownUser)
    ));
    assert!(matches!(
        env.reg.bind_session("rita", "not-a-peer-id").await,
        Err(RegistryError::InvalidPeerId)
    ));
    env.reg
        .bind_session("RITA", &peer(0x71).to_uppercase())
        .await
        .unwrap();
    assert_eq!(env.reg.bound_sessions(), 1);
    let p = env.reg.lookup("rita").await.unwrap().unwrap();
    assert_eq!(p.peer_id, peer(0x71));
    assert_eq!(p.name, "rita");

    // Sam cannot publish Rita's peer ID through the JSON API...
    let sam = env.login("sam", "sam-password").await;
    let r = env.publish(&sam, &peer(0x71)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"], "forbidden");
    // ...nor anyone through the legacy endpoint.
    let r = env.register("eve", &peer(0x71), "").await;
    assert_eq!(r.status, 403);

    env.reg.unbind_session(&peer(0x71)).await.unwrap();
    assert_eq!(env.reg.bound_sessions(), 0);
    assert_eq!(env.reg.lookup("rita").await.unwrap(), None);
    // Free again.
    let r = env.publish(&sam, &peer(0x71)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    env.finish().await;
}

async fn authenticate_for_server(case: Case) {
    let Some(env) = case.start(LegacyMode::Open).await else {
        return;
    };
    let user = env.reg.sign_up("Tess", "tess-password").await.unwrap();
    assert_eq!(
        env.reg.authenticate("tess", "tess-password").await.unwrap(),
        user.id
    );
    let token = env.reg.log_in("tess", "tess-password").await.unwrap();
    assert!(
        !format!("{token:?}").contains(&token.token),
        "token leaked into Debug"
    );
    assert_eq!(
        env.reg.authenticate("TESS", &token.token).await.unwrap(),
        user.id
    );
    env.reg.sign_up("uma", "uma-password").await.unwrap();
    assert!(matches!(
        env.reg.authenticate("uma", &token.token).await,
        Err(RegistryError::BadCredentials)
    ));
    assert!(matches!(
        env.reg.authenticate("tess", "wrong-password").await,
        Err(RegistryError::BadCredentials)
    ));
    assert!(matches!(
        env.reg.authenticate("ghost", "whatever-pw").await,
        Err(RegistryError::BadCredentials)
    ));
    env.finish().await;
}

async fn group_commit_many_concurrent_updates(case: Case) {
    let Some(env) = case.start(LegacyMode::Open).await else {
        return;
    };
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let addr = env.addr;
        tasks.push(tokio::spawn(async move {
            let id = format!("{i:064x}");
            let r = nimbus_testkit::http::request(
                addr,
                Method::GET,
                &format!("/reg.cgi?username=user{i}&identity={id}"),
                &[],
                None,
            )
            .await
            .unwrap();
            assert_eq!(r.body, xml_update(true));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for i in 0..200u32 {
        let p = env.reg.lookup(&format!("USER{i}")).await.unwrap().unwrap();
        assert_eq!(p.peer_id, format!("{i:064x}"));
    }
    env.finish().await;
}

async fn reopen_keeps_data(case: Case) {
    let Some(env) = case.start(LegacyMode::Open).await else {
        return;
    };
    env.reg.sign_up("vera", "vera-password").await.unwrap();
    env.register("walt", &peer(0x81), "").await;
    let url = env.test_db.url.clone();
    let handle = {
        let mut env = env;
        let h = env.handle.take().unwrap();
        h.shutdown().await.unwrap();
        env.reg.close().await;
        env.test_db
    };
    // Reopening runs the migrations again (a no-op) and sees everything.
    let reg = nimbus_registry::Registry::open(&url, config(LegacyMode::Open))
        .await
        .unwrap();
    assert_eq!(
        reg.lookup("walt").await.unwrap().unwrap().peer_id,
        peer(0x81)
    );
    assert!(reg.authenticate("vera", "vera-password").await.is_ok());
    reg.close().await;
    handle.cleanup().await;
}

async fn maintenance_purges_and_refreshes(case: Case) {
    let Some(env) = case.start(LegacyMode::Open).await else {
        return;
    };
    env.reg.sign_up("xena", "xena-password").await.unwrap();
    env.reg.bind_session("xena", &peer(0x91)).await.unwrap();
    env.register("yuri", &peer(0x92), "").await;
    env.clock.advance_millis(50 * 60 * 1000);
    env.reg.maintain().await.unwrap();
    env.clock.advance_millis(50 * 60 * 1000);
    // 100 minutes later: the bound session was refreshed at 50, yuri was not.
    assert_eq!(
        env.reg.lookup("xena").await.unwrap().unwrap().peer_id,
        peer(0x91)
    );
    assert_eq!(env.reg.lookup("yuri").await.unwrap(), None);
    env.reg.maintain().await.unwrap();
    assert_eq!(
        env.reg.lookup("xena").await.unwrap().unwrap().peer_id,
        peer(0x91)
    );
    env.finish().await;
}

async fn openapi_and_health(case: Case) {
    let Some(env) = case.start(LegacyMode::Open).await else {
        return;
    };
    let r = env.get("/openapi.json").await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/api/v1/users",
        "/api/v1/users/me",
        "/api/v1/sessions",
        "/api/v1/sessions/current",
        "/api/v1/presence",
        "/api/v1/presence/{name}",
        "/reg.cgi",
    ] {
        assert!(paths.contains_key(p), "openapi.json lacks {p}");
    }
    let r = env.get("/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    env.finish().await;
}

async fn crossdomain_policy(case: Case) {
    let Some(env) = case.start(LegacyMode::Open).await else {
        return;
    };
    assert_eq!(env.get("/crossdomain.xml").await.status, 404);
    env.finish().await;
    let allow = vec!["*.example.com".into(), "bad\"><x".into()];
    let Some(env) = case
        .start_with(LegacyMode::Open, |c| c.crossdomain_allow = allow)
        .await
    else {
        return;
    };
    let r = env.get("/crossdomain.xml").await;
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .contains("<allow-access-from domain=\"*.example.com\"/>"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("bad"), "{}", r.body);
    env.finish().await;
}
