//! The dashboard: server-rendered HTML under `/ui`, served by the coordinator itself. Board
//! members, output checkers and residents read it in a browser; researchers preview and
//! submit there too.
//!
//! Why server-rendered: every page shows what the API's services return, under the same
//! roles, with nothing to build or serve besides the coordinator (no Node at build or run
//! time). The pages run no script at all: a board member signs an approval with
//! `civic-board approve` on their own machine, from the query they downloaded, never by
//! handing their key to a page this coordinator serves (its operator is not trusted with
//! the board's keys, which also sign the federation's manifest).
//!
//! Browser security: logging in with an account's API token opens a session whose cookie
//! is HttpOnly, SameSite=Strict, `Secure` off loopback, and expires
//! (`ui_session_secs`); the store keeps only its digest. Every state-changing form carries a
//! CSRF token derived from the session, and a POST from another origin is refused. Every
//! page is sent with a strict Content-Security-Policy (no script; the coordinator's own
//! stylesheet only).

pub mod chart;
pub mod describe;
pub mod diff;

mod board;
mod layout;
mod public;
mod research;

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::DefaultHeaders;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use civic_api::Role;
use maud::Markup;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::AppState;
use crate::error::Error;
use crate::service::dashboard as svc;
use crate::store::Account;

/// No script at all; no style but the coordinator's own stylesheet; no frames; forms post
/// only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
    img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("ui/assets/civic.css");

/// The dashboard's routes, and `/`, which sends a browser to the public register. Where the
/// session cookie is `Secure`, pages also ask browsers to use HTTPS only (HSTS).
pub fn routes(cfg: &mut web::ServiceConfig, config: &crate::Config) {
    let mut headers = DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::REFERRER_POLICY, "same-origin"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::CACHE_CONTROL, "no-store"))
        .add(("Cross-Origin-Opener-Policy", "same-origin"));
    if config.ui_cookie_secure() {
        headers = headers.add((header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"));
    }
    cfg.route("/", web::get().to(root))
        .route("/ui", web::get().to(root))
        .service(
            web::scope("/ui")
                .wrap(headers)
                .app_data(
                    web::FormConfig::default()
                        .limit(64 * 1024)
                        .error_handler(|err, _| {
                            UiError::shown(
                                StatusCode::BAD_REQUEST,
                                "The form could not be read",
                                format!("{err}"),
                            )
                            .into()
                        }),
                )
                .app_data(web::QueryConfig::default().error_handler(|err, _| {
                    UiError::shown(
                        StatusCode::BAD_REQUEST,
                        "The address is not valid",
                        format!("the query string is not valid: {err}"),
                    )
                    .into()
                }))
                .app_data(web::PathConfig::default().error_handler(|err, _| {
                    UiError::shown(
                        StatusCode::NOT_FOUND,
                        "No such page",
                        format!("the address is not valid: {err}"),
                    )
                    .into()
                }))
                .route("/static/civic.css", web::get().to(css))
                .route("/login", web::get().to(public::login_form))
                .route("/login", web::post().to(public::login))
                .route("/logout", web::post().to(public::logout))
                .route("/", web::get().to(public::register))
                .route("/releases/{id:\\d+}", web::get().to(public::release))
                .route("/federation", web::get().to(public::federation))
                .route(
                    "/board",
                    web::get().to(|| async { see_other("/ui/board/") }),
                )
                .route(
                    "/research",
                    web::get().to(|| async { see_other("/ui/research/") }),
                )
                .route("/board/", web::get().to(board::budgets))
                .route("/board/budgets/{dataset}", web::get().to(board::budget))
                .route("/board/approvals", web::get().to(board::approvals))
                .route("/board/queries/{id:\\d+}", web::get().to(board::query))
                .route(
                    "/board/queries/{id:\\d+}/query.json",
                    web::get().to(board::query_json),
                )
                .route(
                    "/board/queries/{id:\\d+}/decision",
                    web::post().to(board::decide),
                )
                .route("/board/partners", web::get().to(board::partners))
                .route("/board/audit", web::get().to(board::audit))
                .route("/datasets/{id}/diff", web::get().to(board::policy_diff))
                .route("/research/", web::get().to(research::queries))
                .route(
                    "/research/queries/{id:\\d+}",
                    web::get().to(research::query),
                )
                .route("/research/new", web::get().to(research::new_form))
                .route("/research/preview", web::post().to(research::preview))
                .route("/research/submit", web::post().to(research::submit))
                .default_service(web::to(|| async {
                    Err::<HttpResponse, _>(UiError::shown(
                        StatusCode::NOT_FOUND,
                        "No such page",
                        "There is no page at this address. The public register is at /ui/.",
                    ))
                })),
        );
}

async fn root() -> HttpResponse {
    see_other("/ui/")
}

async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(CSS)
}

/// A 303 to `to`.
fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

/// An HTML page.
fn html(status: StatusCode, markup: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(markup.into_string())
}

/// Who is looking at a page: the account of the session, and the session's CSRF token.
#[derive(Clone)]
pub struct Viewer {
    /// The account.
    pub account: Account,
    /// The token every form of this session carries.
    pub csrf: String,
    cookie: Zeroizing<String>,
}

/// The session cookie's name: `__Host-` (the browser then insists on Secure, path `/` and no
/// domain) wherever the cookie is Secure.
fn cookie_name(state: &AppState) -> &'static str {
    if state.config.ui_cookie_secure() {
        "__Host-civic-session"
    } else {
        "civic-session"
    }
}

/// The viewer of a request, if its session cookie names a live session.
async fn viewer(req: &HttpRequest, state: &AppState) -> Result<Option<Viewer>, UiError> {
    let Some(cookie) = req.cookie(cookie_name(state)) else {
        return Ok(None);
    };
    let value = Zeroizing::new(cookie.value().to_string());
    if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    Ok(svc::session(state, &value).await?.map(|account| Viewer {
        csrf: svc::csrf_token(&value),
        account,
        cookie: value,
    }))
}

/// The viewer, who must hold one of `roles`: else a login (none) or a 403 page.
async fn require(req: &HttpRequest, state: &AppState, roles: &[Role]) -> Result<Viewer, UiError> {
    let Some(v) = viewer(req, state).await? else {
        return Err(UiError::Login {
            next: return_to(req),
        });
    };
    if !roles.contains(&v.account.role) {
        let allowed: Vec<&str> = roles.iter().map(|r| role_title(*r)).collect();
        return Err(UiError::Shown {
            status: StatusCode::FORBIDDEN,
            title: "Not for this account".into(),
            detail: format!(
                "This page is for {}. You are logged in as {} ({}).",
                allowed.join(" or "),
                v.account.name,
                role_title(v.account.role)
            ),
            viewer: Some(Box::new(v)),
        });
    }
    Ok(v)
}

/// The page to come back to after logging in: this one (with its query string), or for a
/// form sent after the session expired, the page the form was on.
fn return_to(req: &HttpRequest) -> String {
    let path = req.path();
    if req.method() == actix_web::http::Method::POST {
        return match path.strip_suffix("/decision") {
            Some(query_page) => query_page.to_string(),
            None if path.starts_with("/ui/research/") => "/ui/research/new".into(),
            None => "/ui/".into(),
        };
    }
    match req.query_string() {
        "" => path.to_string(),
        q => format!("{path}?{q}"),
    }
}

/// How a role is named on pages.
fn role_title(role: Role) -> &'static str {
    match role {
        Role::Admin => "administrators",
        Role::Governance => "board members",
        Role::Researcher => "researchers",
        Role::Partner => "partner agents",
    }
}

/// Refuses a POST from another origin and, for a session's forms, one without the
/// session's CSRF token. The browser's `Sec-Fetch-Site` says where a request came from;
/// without it, `Origin` must be this coordinator's (`public_url`, or the `Host` asked for).
fn check_post(
    req: &HttpRequest,
    config: &crate::Config,
    viewer: Option<&Viewer>,
    csrf: &str,
) -> Result<(), UiError> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let foreign = match header("sec-fetch-site") {
        Some(site) => site != "same-origin" && site != "none",
        None => header("origin").is_some_and(|origin| match &config.public_url {
            Some(url) => origin != url.trim_end_matches('/'),
            None => origin
                .split_once("://")
                .is_none_or(|(_, authority)| Some(authority) != header("host")),
        }),
    };
    if foreign {
        return Err(UiError::shown(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form was sent from another site. Open the page on this coordinator and send \
             it from there.",
        ));
    }
    if let Some(v) = viewer
        && !bool::from(v.csrf.as_bytes().ct_eq(csrf.as_bytes()))
    {
        return Err(UiError::Shown {
            status: StatusCode::FORBIDDEN,
            title: "Refused".into(),
            detail: "This form's security token does not match your session (it may be from \
                     an older page, or another site). Reload the page and send it again."
                .into(),
            viewer: None,
        });
    }
    Ok(())
}

/// The session cookie for a new session.
fn session_cookie(state: &AppState, session: &svc::NewSession) -> Cookie<'static> {
    Cookie::build(cookie_name(state), session.cookie.to_string())
        .path("/")
        .http_only(true)
        .secure(state.config.ui_cookie_secure())
        .same_site(SameSite::Strict)
        .max_age(CookieDuration::seconds(state.config.ui_session_secs as i64))
        .finish()
}

/// A cookie that removes the session cookie.
fn cleared_cookie(state: &AppState) -> Cookie<'static> {
    let mut c = Cookie::build(cookie_name(state), "")
        .path("/")
        .http_only(true)
        .secure(state.config.ui_cookie_secure())
        .same_site(SameSite::Strict)
        .finish();
    c.make_removal();
    c
}

/// Where a page failed: a login is needed, or a message for the person.
#[derive(thiserror::Error)]
pub enum UiError {
    /// Not logged in: log in, then come back to `next`.
    #[error("login needed")]
    Login {
        /// The page to return to.
        next: String,
    },
    /// A page that says what went wrong.
    #[error("{title}: {detail}")]
    Shown {
        /// The status.
        status: StatusCode,
        /// The heading.
        title: String,
        /// What went wrong and what to do.
        detail: String,
        /// Who is looking, for the navigation.
        viewer: Option<Box<Viewer>>,
    },
}

impl std::fmt::Debug for UiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// Failures of a page someone is logged in to: its error page keeps their navigation.
trait SeenBy<T> {
    /// The failure, shown to `viewer`.
    fn seen_by(self, viewer: &Viewer) -> Result<T, UiError>;
}

impl<T, E: Into<UiError>> SeenBy<T> for Result<T, E> {
    fn seen_by(self, viewer: &Viewer) -> Result<T, UiError> {
        self.map_err(|e| match e.into() {
            UiError::Shown {
                status,
                title,
                detail,
                viewer: None,
            } => UiError::Shown {
                status,
                title,
                detail,
                viewer: Some(Box::new(viewer.clone())),
            },
            other => other,
        })
    }
}

impl UiError {
    fn shown(status: StatusCode, title: &str, detail: impl Into<String>) -> Self {
        UiError::Shown {
            status,
            title: title.into(),
            detail: detail.into(),
            viewer: None,
        }
    }
}

impl From<Error> for UiError {
    fn from(e: Error) -> Self {
        let problem = e.body();
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
        if status.is_server_error() {
            tracing::error!(error = %e, "a dashboard page failed");
        }
        UiError::Shown {
            status,
            title: problem.title,
            detail: format!("{} ({})", problem.detail, problem.code),
            viewer: None,
        }
    }
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            UiError::Login { .. } => StatusCode::SEE_OTHER,
            UiError::Shown { status, .. } => *status,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            UiError::Login { next } => see_other(&format!("/ui/login?next={}", query_escape(next))),
            UiError::Shown {
                status,
                title,
                detail,
                viewer,
            } => html(
                *status,
                layout::page(title, viewer.as_deref(), "", layout::problem(detail)),
            ),
        }
    }
}

/// Percent-encodes a value for a query string.
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A page to return to after logging in: only a path of this dashboard (never another
/// site: `//host` and `/\host` are refused).
fn safe_next(next: &str) -> Option<&str> {
    (next.starts_with("/ui/")
        && !next.contains("//")
        && !next.contains('\\')
        && next.bytes().all(|b| b.is_ascii_graphic()))
    .then_some(next)
}

/// Where an account lands after logging in.
fn home(role: Role) -> &'static str {
    match role {
        Role::Governance => "/ui/board/",
        Role::Researcher => "/ui/research/",
        Role::Admin => "/ui/board/audit",
        Role::Partner => "/ui/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dashboard_paths_are_returned_to() {
        assert_eq!(safe_next("/ui/board/"), Some("/ui/board/"));
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil",
            "/ui/\\evil",
            "/v1/queries",
            "/ui/a b",
            "",
        ] {
            assert_eq!(safe_next(bad), None, "{bad}");
        }
        assert_eq!(query_escape("/ui/a?b=c d"), "/ui/a%3Fb%3Dc%20d");
    }
}
