//! Bearer-token authentication and role checks.
//!
//! A missing or unknown token is 401; a known token whose role the endpoint does not admit
//! is 403. Every handler names its roles with [`Caller::require`].

use std::future::Future;
use std::pin::Pin;

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
        Box::pin(async move {
            let token = zeroize::Zeroizing::new(token?);
            let state = state.ok_or_else(|| Error::internal("authenticating", "no state"))?;
            let account = accounts::by_token(&mut *state.store.read().await?, &token)
                .await?
                .ok_or_else(|| {
                    unauthorized(
                        ProblemCode::AuthBadToken,
                        "the token is not valid for this coordinator",
                    )
                })?;
            Ok(Caller(account))
        })
    }
}
