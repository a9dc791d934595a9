//! The Civic coordinator: the server researchers, governance boards and partner agents
//! talk to. A thin shell over the pure cores (`civic-secagg`, `civic-mechanisms`,
//! `civic-policies`): handlers decode and authorise, services load state, call the cores
//! and write the change with its audit entry in one transaction, and the round driver runs
//! secure aggregation with phase deadlines.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod rounds;
pub mod routes;
pub mod service;
pub mod store;

use std::sync::Arc;

use actix_web::dev::Service;
use actix_web::{App, HttpResponse, HttpServer, web};
use futures_util::FutureExt;

pub use config::Config;
use error::ApiError;
use store::Store;

/// What every handler shares.
pub struct AppState {
    /// The store.
    pub store: Store,
    /// The configuration.
    pub config: Config,
    /// Open rounds.
    pub rounds: rounds::Rounds,
}

impl AppState {
    /// Connects the store without touching rounds (administration from the command line).
    pub async fn connect(config: Config) -> Result<web::Data<AppState>, String> {
        let store = Store::connect(&config.store_url).await?;
        Ok(web::Data::new(AppState {
            store,
            config,
            rounds: rounds::Rounds::default(),
        }))
    }

    /// Connects the store and, on a coordinator that drives rounds, rebuilds the open rounds
    /// from it: the state ready to serve.
    pub async fn open(config: Config) -> Result<web::Data<AppState>, String> {
        let state = Self::connect(config).await?;
        if state.config.drive_rounds {
            if rounds::renew_lease(&state)
                .await
                .map_err(|e| e.to_string())?
            {
                let resumed = rounds::adopt(&state).await.map_err(|e| e.to_string())?;
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
        cfg.app_data(state);
        routes::extractor_configs(cfg, json_limit);
        routes::routes(cfg);
        cfg.default_service(web::to(|req: actix_web::HttpRequest| async move {
            Err::<HttpResponse, _>(ApiError::not_found(format!(
                "no endpoint {} {}; GET /openapi.json lists them",
                req.method(),
                req.path()
            )))
        }));
    }
}

/// Builds the app with request logging and status counting.
macro_rules! app {
    ($state:expr) => {
        App::new()
            .wrap_fn(|req, srv| {
                let (method, path) = (req.method().clone(), req.path().to_string());
                srv.call(req).map(move |res| {
                    if let Ok(res) = &res {
                        let status = res.status().as_u16();
                        metrics::count_status(status);
                        tracing::info!(%method, %path, status, "request");
                    }
                    res
                })
            })
            .configure(configure($state.clone()))
    };
}

/// Serves until SIGINT/SIGTERM, then drains connections (actix's graceful shutdown) and
/// stops the round driver; open rounds stay in the store and resume at the next start.
pub async fn serve(config: Config) -> Result<(), String> {
    let state = AppState::open(config.clone()).await?;
    let driver = config
        .drive_rounds
        .then(|| tokio::spawn(rounds::drive(state.clone())));
    let app_state = state.clone();
    let server = HttpServer::new(move || app!(app_state)).shutdown_timeout(30);
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
    if let Some(driver) = driver {
        driver.abort();
    }
    result
}

/// Runs an app on an already-bound listener (tests and benches), with the round driver.
pub fn serve_listener(
    state: web::Data<AppState>,
    listener: std::net::TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    if state.config.drive_rounds {
        actix_web::rt::spawn(rounds::drive(state.clone()));
    }
    Ok(HttpServer::new(move || app!(state))
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
