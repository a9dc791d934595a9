//! The dashboard (`/ui`) in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`), against a real coordinator on loopback with
//! a signed manifest and partners that run real rounds. Each step asserts on the page and
//! saves a screenshot under `target/dashboard/`; axe-core checks every page for serious
//! accessibility violations. The browser-security rules (cookies, CSRF, CSP, sessions
//! ending with their token) are checked over plain HTTP below.

mod common;
mod webdriver;

use civic_policies::manifest::{approval_message, sign};
use common::partner::{StopAt, TestPartner};
use common::{Coordinator, federation, fresh_store_url};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use webdriver::Browser;

/// Query `id` as the board sees it through the API.
async fn query_view(c: &Coordinator, id: i64) -> Value {
    let (s, v) = c
        .call(
            Method::GET,
            &format!("/v1/queries/{id}"),
            Some(&c.board[0]),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

/// Runs the partners through query `id`'s round and waits for its release.
async fn run_round(c: &Coordinator, ps: &[TestPartner], id: i64, values: &[Vec<i64>]) -> Value {
    let round = common::round_of(&query_view(c, id).await);
    let results = futures_util::future::join_all(
        ps.iter()
            .zip(values)
            .map(|(p, v)| p.take_part(round, v, StopAt::Never)),
    )
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    c.wait_done(id).await
}

async fn log_in(b: &Browser, base: &str, token: &str) {
    b.clear_cookies().await;
    b.goto(&format!("{base}/ui/login")).await;
    b.fill(&b.find("#token").await, token).await;
    b.click(&b.find("main form button[type=submit]").await)
        .await;
    b.find("header .who strong").await;
}

async fn log_out(b: &Browser) {
    b.click(&b.find("header .who form button").await).await;
    b.wait_for_text("header .who", "Log in").await;
}

/// Asserts axe-core finds no serious or critical violation on the page.
async fn accessible(b: &Browser, page: &str) {
    let v = b.serious_accessibility_violations().await;
    assert!(v.is_empty(), "{page}: {}", v.join("\n"));
}

#[actix_web::test]
async fn a_resident_two_board_members_and_a_researcher_use_the_dashboard() {
    if !webdriver::available() {
        return;
    }
    let (c, ps) = federation("dashboard").await;
    // A first release for the register: an age histogram, below the approval threshold.
    let (s, q) = c.submit(common::age_histogram(60.0)).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let first = q["id"].as_i64().unwrap();
    let done = run_round(
        &c,
        &ps,
        first,
        &[vec![5, 3, 2], vec![4, 4, 4], vec![1, 2, 3]],
    )
    .await;
    assert_eq!(done["state"], "released", "{done}");
    let b = Browser::start("walkthrough").await;
    let base = &c.base;

    // A resident, with no account, reads the register from `/`.
    b.goto(&format!("{base}/")).await;
    b.wait_for_text("h1", "Public register of releases").await;
    let entry = b
        .wait_for_text("ol.releases", "How many people by “age”?")
        .await;
    assert!(entry.contains("Falls prevention (falls)"), "{entry}");
    assert!(entry.contains("ρ = 1800"), "{entry}");
    b.wait_for_text("#chain + p + dl", "Entries in the audit log")
        .await;
    b.screenshot("01-register").await;
    // From the keyboard: the first Tab reaches "Skip to the content", and following it puts
    // the focus on the page's content.
    b.press_tab().await;
    let focused = b
        .execute("return document.activeElement.textContent", json!([]))
        .await;
    assert_eq!(focused, "Skip to the content");
    b.press_enter().await;
    let focused = b
        .execute("return document.activeElement.id", json!([]))
        .await;
    assert_eq!(focused, "main");
    accessible(&b, "the register").await;
    b.click(&b.find("ol.releases h2 a").await).await;
    let table = b.wait_for_text("table", "count: interval").await;
    assert!(
        table.contains("[0, 65)") && table.contains("[80, 119]"),
        "{table}"
    );
    assert!(
        table.contains("10 to 10"),
        "ε = 60 leaves the counts exact: {table}"
    );
    b.wait_for_text("dl.receipt", "Partner organisations whose data is in it")
        .await;
    b.screenshot("02-release").await;
    accessible(&b, "a release").await;
    b.goto(&format!("{base}/ui/federation")).await;
    let m = b.wait_for_text("main", "Version 1: test city").await;
    assert!(m.contains("member-201: signature verifies"), "{m}");
    assert!(m.contains("trust-a"), "{m}");
    b.screenshot("03-federation").await;
    accessible(&b, "the federation").await;

    b.goto(&format!("{base}/ui/login")).await;
    accessible(&b, "the login page").await;
    // The researcher previews a query above the approval threshold, then submits it.
    log_in(&b, base, &c.researcher).await;
    assert!(
        b.url().await.ends_with("/ui/research/"),
        "{}",
        b.url().await
    );
    // The session cookie: HttpOnly (no script sees it) and SameSite=Strict.
    let cookies = b.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "civic-session")
        .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"));
    assert_eq!(
        (&session["httpOnly"], &session["sameSite"]),
        (&json!(true), &json!("Strict")),
        "{session}"
    );
    assert_eq!(b.execute("return document.cookie", json!([])).await, "");
    b.goto(&format!("{base}/ui/research/new")).await;
    accessible(&b, "the query form").await;
    b.fill(&b.find("#amount").await, "80").await;
    b.click(&b.find("form.query button[type=submit]").await)
        .await;
    let preview = b.wait_for_text("#preview", "Board approvals needed").await;
    assert!(preview.contains("ρ = 3200"), "{preview}");
    assert!(
        preview.contains("Affordable now\nyes") || preview.contains("yes"),
        "{preview}"
    );
    b.wait_for_text("main table", "count").await;
    b.screenshot("04-preview").await;
    accessible(&b, "the preview").await;
    b.click(&b.find("#submit-query").await).await;
    b.wait_for_text("#query-state", "awaiting the board's approval")
        .await;
    let id: i64 = b.url().await.rsplit('/').next().unwrap().parse().unwrap();
    b.screenshot("05-submitted").await;
    log_out(&b).await;

    // Board member 201 logs in, sees the pending query, downloads it, and approves with what
    // `civic-board approve --query` prints: a signature over the fingerprint recomputed from
    // the downloaded query (the key never reaches the page).
    log_in(&b, base, &c.board[0]).await;
    b.wait_for_text(".notice", "1 query awaits").await;
    let budgets = b.wait_for_text("main", "The whole dataset").await;
    assert!(budgets.contains("project falls"), "{budgets}");
    b.screenshot("06-budgets").await;
    accessible(&b, "the budgets").await;
    b.goto(&format!("{base}/ui/board/budgets/city")).await;
    b.find("svg.chart").await;
    b.wait_for_text("main", "Ledger entries that moved").await;
    b.screenshot("07-budget-over-time").await;
    accessible(&b, "a budget over time").await;
    b.goto(&format!("{base}/ui/board/approvals")).await;
    b.wait_for_text("main table", &format!("Query {id}")).await;
    b.click(&b.find(&format!("a[href='/ui/board/queries/{id}']")).await)
        .await;
    let review = b
        .wait_for_text("main", "Accuracy of what it would release")
        .await;
    assert!(review.contains("needs 2 approvals"), "{review}");
    assert!(review.contains("no suppression or rounding"), "{review}");
    b.wait_for_text(
        "#approve-command",
        &format!("civic-board approve --key YOUR.key --query query-{id}.json"),
    )
    .await;
    accessible(&b, "a query to decide on").await;
    let shown = b.text(&b.find("#fingerprint").await).await;
    let cookie = b
        .cookies()
        .await
        .into_iter()
        .find(|c| c["name"] == "civic-session")
        .map(|c| format!("civic-session={}", c["value"].as_str().unwrap()))
        .unwrap();
    let download: Value = reqwest::Client::new()
        .get(format!("{base}/ui/board/queries/{id}/query.json"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let request = &download["request"];
    let fingerprint = civic_api::query::fingerprint(
        download["dataset"].as_str().unwrap(),
        download["dataset_version"].as_i64().unwrap(),
        &serde_json::from_value(request["query"].clone()).unwrap(),
        &serde_json::from_value(request["privacy"].clone()).unwrap(),
        request["confidence"].as_f64().unwrap_or(0.95),
    );
    assert_eq!(fingerprint, shown, "the page's fingerprint is the query's");
    let signature = sign(&common::board_key(201), &approval_message(&fingerprint));
    b.fill(&b.find("#reason").await, "proportionate for falls planning")
        .await;
    b.fill(
        &b.find("#signature").await,
        &serde_json::to_string(&signature).unwrap(),
    )
    .await;
    b.screenshot("08-signature-pasted").await;
    b.click(&b.find("#approve").await).await;
    let decided = b.wait_for_text("main", "board:member-201").await;
    assert!(decided.contains("approved"), "{decided}");
    b.screenshot("09-first-approval").await;
    // The same member cannot approve twice (one member, one approval).
    b.fill(&b.find("#reason").await, "again").await;
    b.fill(
        &b.find("#signature").await,
        &serde_json::to_string(&signature).unwrap(),
    )
    .await;
    b.click(&b.find("#approve").await).await;
    b.wait_for_text(".problem", "query.already_decided").await;
    log_out(&b).await;

    // Board member 203 approves the same way.
    log_in(&b, base, &c.board[1]).await;
    b.goto(&format!("{base}/ui/board/queries/{id}")).await;
    let pasted = sign(&common::board_key(203), &approval_message(&fingerprint));
    b.fill(&b.find("#reason").await, "agreed").await;
    b.fill(
        &b.find("#signature").await,
        &serde_json::to_string(&pasted).unwrap(),
    )
    .await;
    b.click(&b.find("#approve").await).await;
    b.wait_for_text("main", "board:member-203").await;
    b.wait_for_text("main dl.facts", "running").await;
    b.screenshot("10-second-approval").await;
    log_out(&b).await;
    let done = run_round(&c, &ps, id, &[vec![10], vec![20], vec![12]]).await;
    assert_eq!(done["state"], "released", "{done}");

    // The researcher sees the release with its interval and receipt.
    log_in(&b, base, &c.researcher).await;
    b.goto(&format!("{base}/ui/research/queries/{id}")).await;
    b.wait_for_text("#query-state", "released").await;
    let result = b.wait_for_text("main table", "count: interval").await;
    assert!(result.contains("42"), "{result}");
    b.wait_for_text("main", "Privacy receipt").await;
    b.screenshot("11-researcher-sees-release").await;
    accessible(&b, "a released query").await;
    b.goto(&format!("{base}/ui/research/")).await;
    b.wait_for_text("main table", &format!("Query {id}")).await;
    accessible(&b, "the researcher's queries").await;

    // A researcher is not a board member: the board's pages refuse them.
    b.goto(&format!("{base}/ui/board/approvals")).await;
    let refused = b
        .wait_for_text("main", "This page is for board members")
        .await;
    assert!(
        refused.contains("rita (board members)") || refused.contains("rita"),
        "{refused}"
    );
    log_out(&b).await;
    // Another researcher, in no project, cannot see the query either.
    log_in(&b, base, &c.outsider).await;
    b.goto(&format!("{base}/ui/research/queries/{id}")).await;
    b.wait_for_text("main", &format!("no query {id}")).await;
    // An error page keeps the navigation of whoever is logged in.
    b.wait_for_text("header .who", "oscar").await;
    b.goto(&format!("{base}/ui/board/queries/{id}")).await;
    b.wait_for_text("main", "This page is for board members")
        .await;
    b.screenshot("12-refused").await;
    log_out(&b).await;

    // The board's partners page and audit log; then one stored entry is altered, and the
    // audit page names it.
    log_in(&b, base, &c.board[0]).await;
    b.goto(&format!("{base}/ui/board/partners")).await;
    let partners = b.wait_for_text("main table", "trust-a").await;
    assert!(partners.contains("s ago"), "polls are shown: {partners}");
    b.screenshot("13-partners").await;
    accessible(&b, "the partners").await;
    b.goto(&format!("{base}/ui/board/audit")).await;
    b.wait_for_text("#audit-status", "Verified").await;
    b.screenshot("14-audit-verified").await;
    accessible(&b, "the audit log").await;
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&c.state.config.store_url)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3")
        .execute(&mut conn)
        .await
        .unwrap();
    b.goto(&format!("{base}/ui/board/audit")).await;
    let status = b
        .wait_for_text("#audit-status", "does not verify at entry 3")
        .await;
    assert!(status.contains("altered"), "{status}");
    assert!(status.contains("2 entries verify before it"), "{status}");
    b.click(&b.find("#audit-status a").await).await;
    b.wait_for_text("#entry-3", "does not verify").await;
    b.screenshot("15-audit-broken").await;
    b.quit().await;
    c.stop().await;
}

/// A session cookie's `name=value` from a login response.
fn session_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("civic-session="))
        .map(|v| v.split(';').next().unwrap().to_string())
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Logs in over HTTP; returns the session cookie.
async fn http_login(c: &Coordinator, token: &str) -> String {
    let res = no_redirects()
        .post(format!("{}/ui/login", c.base))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    session_cookie(&res).expect("a session cookie")
}

/// The CSRF token on a page.
async fn csrf_of(c: &Coordinator, cookie: &str, path: &str) -> String {
    let page = no_redirects()
        .get(format!("{}{path}", c.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[at..at + 64].to_string()
}

#[actix_web::test]
async fn sessions_are_http_only_strict_and_end_with_their_token() {
    let c = Coordinator::start(&fresh_store_url("dashboard-session")).await;
    let http = no_redirects();
    // Pages carry a strict CSP and no script at all.
    let res = http.get(format!("{}/ui/", c.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.starts_with("default-src 'none'") && !csp.contains("script-src"),
        "no script may run: {csp}"
    );
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    let page = res.text().await.unwrap();
    assert!(
        !page.contains("<script") && !page.contains("style="),
        "{page}"
    );
    // A wrong token: 401 and no cookie; a partner's: 403.
    let res = http
        .post(format!("{}/ui/login", c.base))
        .form(&[("token", "not-a-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(session_cookie(&res).is_none());
    assert!(res.text().await.unwrap().contains("not valid"));
    let res = http
        .post(format!("{}/ui/login", c.base))
        .form(&[("token", c.partners[0].2.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // A good token: HttpOnly, SameSite=Strict, expiring, not Secure on loopback; back to a
    // dashboard page only.
    let res = http
        .post(format!("{}/ui/login", c.base))
        .form(&[
            ("token", c.board[0].as_str()),
            ("next", "//evil.example/ui/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/ui/board/");
    let set = res.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Max-Age=28800", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "loopback without TLS: {set}");
    let cookie = session_cookie(&res).unwrap();
    let page = |path: &str| {
        http.get(format!("{}{path}", c.base))
            .header("cookie", &cookie)
            .send()
    };
    assert_eq!(page("/ui/board/").await.unwrap().status(), StatusCode::OK);
    // Logging in again (as anyone) ends the session the browser held.
    let res = http
        .post(format!("{}/ui/login", c.base))
        .header("cookie", &cookie)
        .form(&[("token", c.researcher.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["location"], "/ui/research/");
    let replaced = page("/ui/board/").await.unwrap();
    assert_eq!(
        replaced.status(),
        StatusCode::SEE_OTHER,
        "the old session ended"
    );
    let cookie = http_login(&c, &c.board[0]).await;
    let page = |path: &str| {
        http.get(format!("{}{path}", c.base))
            .header("cookie", &cookie)
            .send()
    };
    assert_eq!(page("/ui/board/").await.unwrap().status(), StatusCode::OK);
    // The token is rotated: the session it opened ends with it.
    let (s, _) = c
        .call(Method::POST, "/v1/token/rotate", Some(&c.board[0]), None)
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let res = page("/ui/board/").await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/ui/login?next=/ui/board/");
    // A form sent after the session ended comes back to its page after the login.
    let res = http
        .post(format!("{}/ui/board/queries/7/decision", c.base))
        .form(&[("decision", "reject"), ("reason", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["location"],
        "/ui/login?next=/ui/board/queries/7"
    );
    // The bare prefixes lead somewhere.
    for (from, to) in [("/", "/ui/"), ("/ui", "/ui/"), ("/ui/board", "/ui/board/")] {
        let res = http.get(format!("{}{from}", c.base)).send().await.unwrap();
        assert_eq!(res.headers()["location"], to, "{from}");
    }
    // Unknown dashboard pages are HTML 404s.
    let res = http
        .get(format!("{}/ui/nowhere", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(res.text().await.unwrap().contains("No such page"));
    c.stop().await;
}

#[actix_web::test]
async fn a_decision_without_the_sessions_csrf_token_or_from_another_site_changes_nothing() {
    let c = Coordinator::start(&fresh_store_url("dashboard-csrf")).await;
    c.register_partners().await;
    // Above the approval threshold: it waits for the board.
    let (s, q) = c.submit(common::count_query(80.0)).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let id = q["id"].as_i64().unwrap();
    let cookie = http_login(&c, &c.board[0]).await;
    let csrf = csrf_of(&c, &cookie, &format!("/ui/board/queries/{id}")).await;
    let head = |c: &Coordinator| {
        let url = format!("{}/v1/audit/head", c.base);
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let before = head(&c).await;
    let post = |csrf: &str, origin: Option<&str>| {
        let mut req = no_redirects()
            .post(format!("{}/ui/board/queries/{id}/decision", c.base))
            .header("cookie", &cookie)
            .form(&[
                ("csrf", csrf),
                ("decision", "reject"),
                ("reason", "not proportionate"),
            ]);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    for (token, origin) in [
        ("0".repeat(64), None),
        (String::new(), None),
        (csrf.clone(), Some("http://evil.example")),
    ] {
        let res = post(&token, origin).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{token} {origin:?}");
        assert!(res.text().await.unwrap().contains("Refused"));
    }
    assert_eq!(head(&c).await, before, "nothing was recorded");
    let v = query_view(&c, id).await;
    assert_eq!(v["state"], "awaiting_approval", "{v}");
    // With the token, from this site: the rejection is recorded.
    let res = post(&csrf, Some(&c.base)).await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let v = query_view(&c, id).await;
    assert_eq!(v["state"], "rejected", "{v}");
    assert_eq!(v["approvals"][0]["member"], "board-1", "{v}");
    c.stop().await;
}

#[actix_web::test]
async fn a_policy_diff_shows_what_changed_and_refuses_versions_that_do_not_exist() {
    let c = Coordinator::start(&fresh_store_url("dashboard-diff")).await;
    let v2 = common::CITY_TOML.replace(
        "per_query = { rho = 5000.0 }",
        "per_query = { rho = 4000.0 }",
    );
    let (s, v) = c
        .call(
            Method::PUT,
            "/v1/datasets/city",
            Some(&c.board[0]),
            Some(serde_json::json!({ "policy": v2 })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let cookie = http_login(&c, &c.researcher).await;
    let get = |query: &str| {
        no_redirects()
            .get(format!("{}/ui/datasets/city/diff{query}", c.base))
            .header("cookie", &cookie)
            .send()
    };
    let res = get("").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let page = res.text().await.unwrap();
    assert!(page.contains("Version 1 against version 2"), "{page}");
    assert!(page.contains("<del>− rho = 5000.0"), "{page}");
    assert!(page.contains("<ins>+ rho = 4000.0"), "{page}");
    for bad in ["?to=-9223372036854775808", "?from=0", "?to=3", "?to=x"] {
        let res = get(bad).await.unwrap();
        assert!(
            [StatusCode::NOT_FOUND, StatusCode::BAD_REQUEST].contains(&res.status()),
            "{bad}: {}",
            res.status()
        );
    }
    c.stop().await;
}

#[actix_web::test]
async fn behind_a_tls_proxy_the_public_origin_decides_the_cookie_and_where_forms_come_from() {
    let config = civic_server::Config {
        public_url: Some("https://civic.example.org".into()),
        ..common::test_config(&fresh_store_url("dashboard-proxy"))
    };
    let c = Coordinator::start_with(config).await;
    let login = |origin: &str| {
        no_redirects()
            .post(format!("{}/ui/login", c.base))
            .header("origin", origin.to_string())
            .form(&[("token", c.board[0].as_str())])
            .send()
    };
    let res = login("https://civic.example.org").await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let set = res.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with("__Host-civic-session=") && set.contains("; Secure"),
        "{set}"
    );
    assert!(
        res.headers()["strict-transport-security"]
            .to_str()
            .unwrap()
            .starts_with("max-age="),
        "HSTS where the cookie is Secure"
    );
    for other in [c.base.as_str(), "http://civic.example.org", "null"] {
        let res = login(other).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{other}");
    }
    c.stop().await;
}
