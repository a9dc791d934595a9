//! Bearer-token authentication and role checks.
//!
//! A missing or unknown token is 401; a known token whose role the endpoint does not admit
//! is 403. Every handler names its roles with [`Caller::require`]. An address that sends
//! [`FAILURES_ALLOWED`] unknown tokens within [`FAILURE_WINDOW_MS`] is answered 429 with
//! `Retry-After` until the window ends, before any token is looked up: guessing tokens is
//! slowed to a crawl, and failures are counted in `/metrics`.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Mutex;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use civic_api::{ProblemCode, Role};

use crate::AppState;
use crate::error::Error;
use crate::store::{Account, accounts};

/// The authenticated account behind a request.
#[derive(Clone, Debug)]
pub struct Caller(pub Account);

impl Caller {
    /// Refuses (403) unless the caller holds one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<&Account, Error> {
        if roles.contains(&self.0.role) {
            Ok(&self.0)
        } else {
            let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(Error::Forbidden(format!(
                "this endpoint is for {}; the token belongs to {} ({})",
                allowed.join(" or "),
                self.0.name,
                self.0.role.as_str()
            )))
        }
    }

    /// A partner's id in rounds (403 for anyone else).
    pub fn partner_id(&self) -> Result<u32, Error> {
        let account = self.require(&[Role::Partner])?;
        u32::try_from(account.id).map_err(|_| Error::internal("reading a partner id", account.id))
    }
}

/// Unknown tokens one address may send per window before it is refused.
pub const FAILURES_ALLOWED: u32 = 60;
/// The window, in milliseconds.
pub const FAILURE_WINDOW_MS: i64 = 60_000;
/// Addresses remembered at most (older windows are dropped first when full).
const ADDRESSES_KEPT: usize = 100_000;

/// Failed authentications per address, in fixed windows.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    windows: Mutex<HashMap<IpAddr, Window>>,
}

/// One address's window: when it started and how many unknown tokens it sent.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Window {
    started_ms: i64,
    failures: u32,
}

impl Window {
    /// Milliseconds until the address may try again, if it is refused now.
    fn refused_for(self, now_ms: i64) -> Option<i64> {
        let ends = self.started_ms + FAILURE_WINDOW_MS;
        (self.failures >= FAILURES_ALLOWED && now_ms < ends).then_some(ends - now_ms)
    }

    /// The window after one more failure at `now_ms`.
    fn after_failure(self, now_ms: i64) -> Window {
        if now_ms >= self.started_ms + FAILURE_WINDOW_MS {
            Window {
                started_ms: now_ms,
                failures: 1,
            }
        } else {
            Window {
                failures: self.failures.saturating_add(1),
                ..self
            }
        }
    }
}

impl AuthThrottle {
    /// Refuses (429) an address that has used up its failures in this window.
    pub fn check(&self, ip: IpAddr, now_ms: i64) -> Result<(), Error> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        match windows.get(&ip).and_then(|w| w.refused_for(now_ms)) {
            Some(ms) => {
                crate::metrics::AUTH_THROTTLED.inc();
                Err(Error::TooManyAuthFailures {
                    retry_after_secs: (ms as u64).div_ceil(1000).max(1),
                })
            }
            None => Ok(()),
        }
    }

    /// Records an unknown token from `ip`.
    pub fn failed(&self, ip: IpAddr, now_ms: i64) {
        crate::metrics::AUTH_FAILURES.inc();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= ADDRESSES_KEPT && !windows.contains_key(&ip) {
            windows.retain(|_, w| now_ms < w.started_ms + FAILURE_WINDOW_MS);
            if windows.len() >= ADDRESSES_KEPT {
                return;
            }
        }
        let window = windows.entry(ip).or_insert(Window {
            started_ms: now_ms,
            failures: 0,
        });
        *window = window.after_failure(now_ms);
        if window.failures == FAILURES_ALLOWED {
            tracing::warn!(%ip, failures = FAILURES_ALLOWED, "unknown tokens: refusing this address until its window ends");
        }
    }
}

fn unauthorized(code: ProblemCode, detail: &'static str) -> Error {
    Error::Unauthorized { code, detail }
}

/// The token in `Authorization: Bearer <token>`.
fn bearer(req: &HttpRequest) -> Result<String, Error> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            unauthorized(
                ProblemCode::AuthMissingToken,
                "send the account's token as 'Authorization: Bearer <token>'",
            )
        })?;
    let value = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            unauthorized(
                ProblemCode::AuthMalformedHeader,
                "the Authorization header must read 'Bearer <token>'",
            )
        })?;
    Ok(value.to_string())
}

impl FromRequest for Caller {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer(req);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let ip = req.peer_addr().map(|a| a.ip());
        Box::pin(async move {
            let state = state.ok_or_else(|| Error::internal("authenticating", "no state"))?;
            let now = state.clock.now_ms();
            if let Some(ip) = ip {
                state.auth_throttle.check(ip, now)?;
            }
            let token = zeroize::Zeroizing::new(token?);
            let account = accounts::by_token(&mut *state.store.read().await?, &token).await?;
            let Some(account) = account else {
                if let Some(ip) = ip {
                    state.auth_throttle.failed(ip, now);
                }
                return Err(unauthorized(
                    ProblemCode::AuthBadToken,
                    "the token is not valid for this coordinator",
                ));
            };
            Ok(Caller(account))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_failures_until_the_window_ends() {
        let throttle = AuthThrottle::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for i in 0..FAILURES_ALLOWED {
            assert!(throttle.check(a, 1000 + i64::from(i)).is_ok());
            throttle.failed(a, 1000 + i64::from(i));
        }
        let e = throttle.check(a, 2000).unwrap_err();
        assert!(
            matches!(
                e,
                Error::TooManyAuthFailures {
                    retry_after_secs: 59
                }
            ),
            "{e:?}"
        );
        // Another address is not affected; the window's end frees the first.
        assert!(throttle.check(b, 2000).is_ok());
        assert!(throttle.check(a, 1000 + FAILURE_WINDOW_MS).is_ok());
        throttle.failed(a, 1000 + FAILURE_WINDOW_MS);
        assert!(throttle.check(a, 1001 + FAILURE_WINDOW_MS).is_ok());
    }
}
