//! Users and sessions over HTTP: registration (closed by default, open when configured),
//! login with a JWT or a cookie, logout, password changes, CSRF for cookie sessions, the login
//! limiter, and a logout seen by a second replica.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{event_count, problem, test_config, TestApp, PASSWORD};

async fn register(app: &TestApp, key: Option<&str>, body: Value) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .json(&body);
    if let Some(key) = key {
        request = request.header("X-API-Key", key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn registration_is_closed_to_strangers_and_open_to_admins() {
    let app = TestApp::spawn().await;
    let before = event_count(&app.pool).await;
    let body = json!({"email": "ada@example.com", "password": PASSWORD});
    let refused = register(&app, None, body.clone()).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        event_count(&app.pool).await,
        before,
        "a refused request appended"
    );

    let created = register(&app, Some(&app.admin_key), body.clone()).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let user: Value = created.json().await.unwrap();
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["role"], "member");
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());

    let again = register(
        &app,
        Some(&app.admin_key),
        json!({"email": "ADA@example.com ", "password": PASSWORD}),
    )
    .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(problem(again).await["code"], "EMAIL_TAKEN");
    let short = register(
        &app,
        Some(&app.admin_key),
        json!({"email": "bo@example.com", "password": "short"}),
    )
    .await;
    assert_eq!(short.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(short).await["errors"][0]["field"], "password");
    let after_refusals = event_count(&app.pool).await;
    assert_eq!(
        after_refusals,
        before + 1,
        "only the one registration appended"
    );

    // The hash is stored outside the log, and never in an event.
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM user_credentials")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"));
    let leaked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE payload::text LIKE '%argon2%'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(leaked, 0);
}

#[tokio::test]
async fn open_registration_lets_anyone_become_a_member_but_not_an_admin() {
    let app = TestApp::spawn_with(|c| c.auth.open_registration = true).await;
    let member = register(
        &app,
        None,
        json!({"email": "m@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(member.status(), StatusCode::CREATED);
    let admin = register(
        &app,
        None,
        json!({"email": "a@example.com", "password": PASSWORD, "role": "admin"}),
    )
    .await;
    assert_eq!(admin.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn anonymous_registrations_spend_the_client_ips_budget() {
    let app = TestApp::spawn_with(|c| {
        c.auth.open_registration = true;
        c.rate_limits.unauthenticated_per_minute = 2;
    })
    .await;
    let mut statuses = Vec::new();
    for n in 0..3 {
        let email = format!("bot{n}@example.com");
        let body = json!({"email": email, "password": PASSWORD});
        statuses.push(register(&app, None, body).await.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let users: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'user.created'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(users, 2, "the refused registration appended nothing");
}

#[tokio::test]
async fn login_answers_a_token_that_works_until_logout() {
    let app = TestApp::spawn().await;
    let id = app.create_user("ada@example.com", PASSWORD, false).await;
    let login = app.login("Ada@Example.com", PASSWORD).await;
    assert_eq!(login["token_type"], "Bearer");
    assert_eq!(login["user"]["id"], id.to_string());
    let expires_in = login["expires_in"].as_i64().unwrap();
    assert!((43_000..=43_200).contains(&expires_in), "{expires_in}");
    let token = login["access_token"].as_str().unwrap();

    let me = app
        .as_user(Method::GET, "/api/v1/auth/me", token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["email"], "ada@example.com");
    assert_eq!(me["projects"], json!([]));

    let logout = app
        .as_user(Method::POST, "/api/v1/auth/logout", token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let after = app
        .as_user(Method::GET, "/api/v1/auth/me", token)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    assert!(after.headers().contains_key("www-authenticate"));

    // Login and logout are events of the user, attributed to the user.
    let actors: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, metadata->>'actor_id' FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id.to_string())
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let types: Vec<&str> = actors.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["user.created", "user.logged_in", "user.logged_out"]);
    assert_eq!(actors[1].1, id.to_string());
    assert_eq!(actors[2].1, id.to_string());
    // The request log names the user as the login's actor too, so `user_id=` finds it.
    let login: (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT actor_type, actor_id FROM request_log \
          WHERE route = '/api/v1/auth/login' AND status = 200",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(login, (Some("user".into()), Some(id.to_string())));
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let app = TestApp::spawn().await;
    app.create_user("ada@example.com", PASSWORD, false).await;
    let mut bodies = Vec::new();
    let mut times = Vec::new();
    for email in ["nobody@example.com", "ada@example.com"] {
        let started = Instant::now();
        let response = app
            .client
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": "not the password"}))
            .send()
            .await
            .unwrap();
        times.push(started.elapsed());
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let mut body = problem(response).await;
        body.as_object_mut().unwrap().remove("request_id");
        bodies.push(body);
    }
    assert_eq!(bodies[0], bodies[1]);
    // Both paths run one argon2id verification; recorded for the report, not asserted on time.
    eprintln!(
        "unknown email: {:?}, wrong password: {:?}",
        times[0], times[1]
    );
}

#[tokio::test]
async fn login_is_limited_per_email_and_per_ip() {
    let app = TestApp::spawn_with(|c| c.auth.login_attempts = 3).await;
    app.create_user("ada@example.com", PASSWORD, false).await;
    let attempt = |email: &'static str, password: &'static str| {
        let request = app
            .client
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password}));
        async move { request.send().await.unwrap() }
    };
    for _ in 0..3 {
        assert_eq!(
            attempt("ada@example.com", "wrong password!").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // The right password is refused too once the limit is reached: nothing is tried.
    let limited = attempt("ada@example.com", PASSWORD).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((890..=900).contains(&retry_after), "{retry_after}");
    // The headers every 429 carries, naming the login policy.
    let header = |name: &str| limited.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(
        (header("x-ratelimit-limit"), header("x-ratelimit-remaining")),
        ("3".to_owned(), "0".to_owned())
    );
    let reset: u64 = header("x-ratelimit-reset").parse().unwrap();
    let now = chrono::Utc::now().timestamp() as u64;
    assert!(
        reset.abs_diff(now + retry_after) <= 1,
        "{reset} vs now + {retry_after}"
    );
    assert_eq!(header("ratelimit-policy"), "\"login\";q=3;w=900");
    assert!(header("ratelimit").starts_with("\"login\";r=0;t="));
    assert_eq!(problem(limited).await["code"], "RATE_LIMIT_EXCEEDED");
    // Same IP, other email: the IP's budget is spent as well.
    assert_eq!(
        attempt("other@example.com", PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn changing_the_password_ends_every_other_session() {
    let app = TestApp::spawn().await;
    app.create_user("ada@example.com", PASSWORD, false).await;
    let laptop = app.login("ada@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let phone = app.login("ada@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong = app
        .as_user(Method::POST, "/api/v1/auth/change-password", &laptop)
        .json(&json!({"current_password": "not it at all", "new_password": "a brand new password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    let changed = app
        .as_user(Method::POST, "/api/v1/auth/change-password", &laptop)
        .json(&json!({"current_password": PASSWORD, "new_password": "a brand new password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    let me = |token: String| {
        let request = app.as_user(Method::GET, "/api/v1/auth/me", &token);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(me(laptop).await, StatusCode::OK);
    assert_eq!(me(phone).await, StatusCode::UNAUTHORIZED);
    let old = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    app.login("ada@example.com", "a brand new password").await;
}

#[tokio::test]
async fn cookie_sessions_need_the_csrf_token_and_header_sessions_do_not() {
    let app = TestApp::spawn().await;
    let ada = app.create_user("ada@example.com", PASSWORD, true).await;
    let response = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD, "cookie": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(
            set_cookie.contains(attribute),
            "{set_cookie} lacks {attribute}"
        );
    }
    let token: Value = response.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let with_cookie = |method: Method, path: &str| {
        app.client
            .request(method, app.url(path))
            .header("Cookie", cookie.clone())
    };

    let me = with_cookie(Method::GET, "/api/v1/auth/me")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK, "reads need no CSRF token");
    let project = json!({"name": "made from a browser"});
    let before = event_count(&app.pool).await;
    let refused = with_cookie(Method::POST, "/api/v1/projects")
        .json(&project)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem(refused).await["code"], "CSRF_TOKEN_REQUIRED");
    let forged = with_cookie(Method::POST, "/api/v1/projects")
        .header("X-CSRF-Token", "forged")
        .json(&project)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        event_count(&app.pool).await,
        before,
        "refused writes appended"
    );
    // Both refusals are recorded under the session's user: a forged request from a victim's
    // browser is found under the victim.
    let recorded: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT actor_type, actor_id FROM request_log \
          WHERE route = '/api/v1/projects' AND status = 403 ORDER BY seq",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let user = (Some("user".to_owned()), Some(ada.to_string()));
    assert_eq!(recorded, [user.clone(), user]);

    let csrf: Value = with_cookie(Method::GET, "/api/v1/csrf-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let csrf = csrf["csrf_token"].as_str().unwrap().to_owned();
    let accepted = with_cookie(Method::POST, "/api/v1/projects")
        .header("X-CSRF-Token", &csrf)
        .json(&project)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::CREATED);
    // The same session as a bearer token needs no CSRF token.
    let bearer = app
        .as_user(Method::POST, "/api/v1/projects", &token)
        .json(&project)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::CREATED);

    let logout = with_cookie(Method::POST, "/api/v1/auth/logout")
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert!(logout.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let after = with_cookie(Method::GET, "/api/v1/auth/me")
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_logout_is_seen_by_another_replica_through_notify() {
    let first = TestApp::spawn().await;
    let second = TestApp::start(test_config(&first.database_url)).await;
    first.create_user("ada@example.com", PASSWORD, false).await;
    let token = first.login("ada@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = |app: &TestApp| app.as_user(Method::GET, "/api/v1/auth/me", &token).send();
    assert_eq!(
        me(&second).await.unwrap().status(),
        StatusCode::OK,
        "the second replica caches the user"
    );
    let logout = first
        .as_user(Method::POST, "/api/v1/auth/logout", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    // Heard through NOTIFY, usually within milliseconds; 10 s for a loaded machine (the cache
    // has no expiry, so only the notice can end the session there).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if me(&second).await.unwrap().status() == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second replica still accepts the token after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second.stop().await;
}

#[tokio::test]
async fn keys_and_unknown_tokens_cannot_use_user_endpoints() {
    let app = TestApp::spawn().await;
    let me = app.get("/api/v1/auth/me", &app.admin_key).await;
    assert_eq!(me.status(), StatusCode::FORBIDDEN);
    let forged = app
        .as_user(Method::GET, "/api/v1/auth/me", "eyJhbGciOiJub25lIn0.e30.")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_cli_creates_users_with_a_one_time_or_a_given_password() {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn().await;
    let generated = crate::projections::herald(
        &app.database_url,
        &["users", "create", "--email", "root@example.com", "--admin"],
    )
    .await;
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let stdout = String::from_utf8(generated.stdout).unwrap();
    let password = stdout.trim_end();
    assert_eq!(
        stdout.lines().count(),
        1,
        "only the password on stdout: {stdout}"
    );
    assert!(password.len() >= 20);
    let login = app.login("root@example.com", password).await;
    assert_eq!(login["user"]["role"], "admin");

    let mut child = tokio::process::Command::new(crate::projections::herald_binary())
        .args([
            "users",
            "create",
            "--email",
            "bo@example.com",
            "--password-stdin",
        ])
        .env("DATABASE_URL", &app.database_url)
        .env("HERALD_API_KEY_PEPPER", crate::support::PEPPER)
        .env("HERALD_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success());
    let id = String::from_utf8(output.stdout).unwrap();
    let login = app.login("bo@example.com", PASSWORD).await;
    assert_eq!(login["user"]["id"], id.trim());
    assert_eq!(login["user"]["role"], "member");

    let duplicate = crate::projections::herald(
        &app.database_url,
        &["users", "create", "--email", "bo@example.com"],
    )
    .await;
    assert!(!duplicate.status.success());
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("already exists"));
}

#[tokio::test]
async fn password_changes_count_against_the_login_limit() {
    let app = TestApp::spawn_with(|c| c.auth.login_attempts = 3).await;
    app.create_user("ada@example.com", PASSWORD, false).await;
    let token = app.login("ada@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let change = |current: &'static str| {
        let request = app
            .as_user(Method::POST, "/api/v1/auth/change-password", &token)
            .json(&json!({"current_password": current, "new_password": "a brand new password"}));
        async move { request.send().await.unwrap() }
    };
    // The login spent one of the three; a stolen session guesses twice more...
    for _ in 0..2 {
        assert_eq!(
            change("a guess at it").await.status(),
            StatusCode::BAD_REQUEST
        );
    }
    // ...and is then refused without a check, even with the right password.
    let limited = change(PASSWORD).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(problem(limited).await["code"], "RATE_LIMIT_EXCEEDED");
    // The password did not change, and logging in with it is limited as well.
    let login = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::TOO_MANY_REQUESTS);
}
