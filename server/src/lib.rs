//! The Civic coordinator: the server researchers, governance boards and partner agents
//! talk to. A thin shell over the pure cores (`civic-secagg`, `civic-mechanisms`,
//! `civic-policies`) and its own pure [`lifecycle`]: handlers decode and authorise,
//! [`service`]s load state, call the cores and write the change with its audit entry in one
//! named transaction of the [`store`], and the round [`rounds::driver`] runs each round's
//! protocol with step deadlines read from the injected [`clock`].
#![forbid(unsafe_code)]

pub mod auth;
pub mod clock;
pub mod config;
pub mod error;
pub mod lifecycle;
pub mod metrics;
pub mod openapi;
pub mod rounds;
pub mod routes;
pub mod service;
pub mod store;
pub mod ui;

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Service;
use actix_web::{App, HttpResponse, HttpServer, web};
use civic_api::ProblemCode;

pub use config::Config;
use error::{Error, Missing};
use store::Store;

/// What every handler shares.
pub struct AppState {
    /// The store.
    pub store: Store,
    /// The configuration.
    pub config: Config,
    /// Open rounds.
    pub rounds: rounds::Rounds,
    /// The time.
    pub clock: clock::SharedClock,
    /// The protocols rounds can run.
    pub protocols: rounds::Protocols,
    /// Failed authentications per address.
    pub auth_throttle: auth::AuthThrottle,
    /// When each partner last polled for rounds (the board's partner page).
    pub partner_polls: service::dashboard::PollLog,
}

/// What a coordinator is built with besides its configuration: the clock (the system's in
/// `main`, a test clock in tests) and the protocols.
#[derive(Clone, Debug)]
pub struct Parts {
    /// The clock.
    pub clock: clock::SharedClock,
    /// The protocols.
    pub protocols: rounds::Protocols,
}

impl Default for Parts {
    fn default() -> Self {
        Self {
            clock: Arc::new(clock::SystemClock),
            protocols: rounds::Protocols::default(),
        }
    }
}

impl AppState {
    /// Connects the store without touching rounds (administration from the command line).
    pub async fn connect(config: Config) -> Result<web::Data<AppState>, String> {
        Self::connect_with(config, Parts::default()).await
    }

    /// [`AppState::connect`] with the given parts.
    pub async fn connect_with(config: Config, parts: Parts) -> Result<web::Data<AppState>, String> {
        let store = Store::connect(&config.store_url, config.store_wait()).await?;
        Ok(web::Data::new(AppState {
            store,
            config,
            rounds: rounds::Rounds::default(),
            clock: parts.clock,
            protocols: parts.protocols,
            auth_throttle: auth::AuthThrottle::default(),
            partner_polls: service::dashboard::PollLog::default(),
        }))
    }

    /// Connects the store and, on a coordinator that drives rounds, rebuilds the open rounds
    /// from it: the state ready to serve.
    pub async fn open(config: Config) -> Result<web::Data<AppState>, String> {
        Self::open_with(config, Parts::default()).await
    }

    /// [`AppState::open`] with the given parts.
    pub async fn open_with(config: Config, parts: Parts) -> Result<web::Data<AppState>, String> {
        let state = Self::connect_with(config, parts).await?;
        if state.config.drive_rounds {
            if rounds::lease::renew(&state)
                .await
                .map_err(|e| e.to_string())?
            {
                let resumed = rounds::driver::adopt(&state)
                    .await
                    .map_err(|e| e.to_string())?;
                if resumed > 0 {
                    tracing::info!(resumed, "resumed open rounds from the store");
                }
            } else {
                tracing::warn!(
                    "another coordinator holds the round-driver lease; this one takes over only if it lapses"
                );
            }
        }
        Ok(state)
    }
}

/// Configures the application (routes, extractor errors, metrics) for `state`.
pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let json_limit = state.config.json_limit;
        let state_config = state.config.clone();
        cfg.app_data(state);
        routes::extractor_configs(cfg, json_limit);
        routes::routes(cfg);
        ui::routes(cfg, &state_config);
        cfg.default_service(web::to(|req: actix_web::HttpRequest| async move {
            let (method, path) = (req.method().to_string(), req.path().to_string());
            let allowed = openapi::methods_of(&path);
            Err::<HttpResponse, _>(if !allowed.is_empty() {
                Error::MethodNotAllowed {
                    method,
                    path,
                    allowed,
                }
            } else if let Some(template) = openapi::template_with_integer_of(&path, &method) {
                // `/v1/queries/abc`: the endpoint, with an id that is not one.
                Error::invalid(
                    ProblemCode::RequestPath,
                    format!("{path}: the ids in {template} are whole numbers"),
                )
            } else {
                Error::NotFound(Missing::Endpoint { method, path })
            })
        }));
    }
}

/// Builds the app with the request timeout, request logging and status counting. A request
/// past its timeout is answered 503 (`request.timeout`, with `Retry-After`) and its handler
/// dropped while the server still runs, so a shutdown never has to drop one.
macro_rules! app {
    ($state:expr) => {{
        let timeout = $state.config.request_timeout();
        App::new()
            .wrap_fn(move |req, srv| {
                let (method, path) = (req.method().clone(), req.path().to_string());
                let call = srv.call(req);
                async move {
                    let res = match tokio::time::timeout(timeout, call).await {
                        Ok(res) => res,
                        Err(_) => Err(Error::Timeout(timeout.as_secs()).into()),
                    };
                    let status = match &res {
                        Ok(res) => res.status(),
                        Err(e) => e.as_response_error().status_code(),
                    };
                    metrics::count_status(status.as_u16());
                    tracing::info!(%method, %path, status = status.as_u16(), "request");
                    res
                }
            })
            .configure(configure($state.clone()))
    }};
}

/// How long an idle client connection is kept open. Agents keep theirs for less (30 s, see
/// `civic_client_sdk::http`): a client that reuses a connection the server is closing at
/// that moment sees its request fail, which a thousand polling partners would meet often.
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(75);

/// Serves until SIGINT/SIGTERM, then drains connections (actix's graceful shutdown) and
/// stops the round driver; open rounds stay in the store and resume at the next start.
pub async fn serve(config: Config) -> Result<(), String> {
    let state = AppState::open(config.clone()).await?;
    let driving = config.drive_rounds.then(|| rounds::driver::spawn(&state));
    let app_state = state.clone();
    let grace = config.request_timeout() + Duration::from_secs(5);
    let server = HttpServer::new(move || app!(app_state))
        .keep_alive(KEEP_ALIVE)
        .shutdown_timeout(grace.as_secs());
    let server = match &config.tls {
        Some(tls) => server
            .bind_rustls_0_23(config.bind, tls_config(tls)?)
            .map_err(|e| format!("cannot listen on {} (TLS): {e}", config.bind))?,
        None => server
            .bind(config.bind)
            .map_err(|e| format!("cannot listen on {}: {e}", config.bind))?,
    };
    tracing::info!(bind = %config.bind, tls = config.tls.is_some(), "civic-coordinator listening");
    let result = server.run().await.map_err(|e| e.to_string());
    // Everything that may hold a store connection stops while the runtime still runs: a
    // connection dropped after it has gone panics inside sqlx.
    state.rounds.halt();
    if let Some(driving) = driving {
        driving.stop().await;
    }
    state.store.close().await;
    result
}

/// Runs an app on an already-bound listener (tests and benches), with the round driver.
pub fn serve_listener(
    state: web::Data<AppState>,
    listener: std::net::TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    if state.config.drive_rounds {
        // Stopped by `state.rounds.halt()`.
        rounds::driver::spawn(&state);
    }
    Ok(HttpServer::new(move || app!(state))
        .keep_alive(KEEP_ALIVE)
        .workers(2)
        .listen(listener)?
        .run())
}

fn tls_config(tls: &config::TlsConfig) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.certificate)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "cannot read the TLS certificate {}: {e}",
                tls.certificate.display()
            )
        })?;
    let key = PrivateKeyDer::from_pem_file(&tls.private_key).map_err(|e| {
        format!(
            "cannot read the TLS private key {}: {e}",
            tls.private_key.display()
        )
    })?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| format!("the TLS certificate and key do not make a valid configuration: {e}"))
}
