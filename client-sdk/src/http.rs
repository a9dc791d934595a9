//! The coordinator's partner endpoints over HTTP(S). Outbound only; the token never appears
//! in `Debug` or logs. Calls retry on connection errors and 503 (a coordinator restarting or
//! handing rounds to another driver) for a bounded time.

use std::collections::BTreeMap;
use std::time::Duration;

use civic_api::governance::{DatasetView, ManifestChain};
use civic_api::round::{DeclineRound, Inbox, PartnerRounds, RegisterIdentity, RosterEntry};
use civic_api::{Problem, ProblemCode};
use civic_api::{decode_binary, encode_binary};
use civic_policies::audit::ChainHead;
use civic_secagg::messages::ClientMessage;
use zeroize::Zeroizing;

use crate::error::AgentError;

/// A connection to the coordinator as one partner.
pub struct CoordinatorClient {
    base: String,
    token: Zeroizing<String>,
    http: reqwest::Client,
    retry_for: Duration,
}

impl std::fmt::Debug for CoordinatorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A call's failure: whether retrying later could help.
#[derive(Debug)]
pub enum CallError {
    /// The coordinator refused (4xx): the problem's code and detail.
    Refused {
        /// HTTP status.
        status: u16,
        /// The stable problem code, when the coordinator sent one this agent knows.
        code: Option<ProblemCode>,
        /// Explanation.
        detail: String,
    },
    /// Unreachable, or 5xx, for longer than the retry window.
    Unavailable(String),
}

impl From<CallError> for AgentError {
    fn from(e: CallError) -> Self {
        AgentError::Coordinator(match e {
            CallError::Refused {
                status,
                code,
                detail,
            } => format!(
                "{status} {}: {detail}",
                code.map_or("(no known code)", ProblemCode::as_str)
            ),
            CallError::Unavailable(m) => m,
        })
    }
}

/// The most a JSON answer may hold (a round list, a policy, the manifests).
const MAX_JSON_BYTES: usize = 16 << 20;
/// The most an inbox may hold (key rosters and forwarded shares of many partners).
const MAX_INBOX_BYTES: usize = 256 << 20;

/// Reads a response's body, refusing one larger than `limit` before holding it all: a
/// coordinator cannot make the agent allocate without bound.
async fn read_limited(
    mut res: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, CallError> {
    let too_large = || CallError::Refused {
        status: 200,
        code: None,
        detail: format!("{what}: the answer is larger than {limit} bytes"),
    };
    if res.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .map_err(|e| CallError::Unavailable(format!("{what}: {e}")))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads a JSON answer of at most [`MAX_JSON_BYTES`].
async fn read_json<T: serde::de::DeserializeOwned>(
    res: reqwest::Response,
    what: &str,
) -> Result<T, CallError> {
    let body = read_limited(res, MAX_JSON_BYTES, what).await?;
    serde_json::from_slice(&body)
        .map_err(|e| CallError::Unavailable(format!("unreadable {what}: {e}")))
}

/// The `Retry-After` delay of a response, in seconds, if it states one.
fn retry_after(res: &reqwest::Response) -> Option<Duration> {
    let secs = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_secs(secs))
}

impl CoordinatorClient {
    /// A client for `base` with `token`; `ca_pem` adds a CA to trust.
    pub fn new(
        base: &str,
        token: Zeroizing<String>,
        ca_pem: Option<&[u8]>,
        retry_for: Duration,
    ) -> Result<Self, AgentError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            // Below the coordinator's keep-alive (75 s), so that the agent never reuses a
            // connection the coordinator is closing.
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("civic-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_pem {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|e| {
                AgentError::Coordinator(format!("the CA certificate is not usable PEM: {e}"))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| AgentError::Coordinator(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
            retry_for,
        })
    }

    /// The coordinator's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CallError> {
        let started = std::time::Instant::now();
        let mut wait = Duration::from_millis(20);
        loop {
            let outcome = build(&self.http)
                .bearer_auth(self.token.as_str())
                .send()
                .await;
            let last = match outcome {
                Ok(res) if res.status().is_success() => return Ok(res),
                Ok(res) if res.status().is_client_error() => {
                    let status = res.status().as_u16();
                    let text = read_limited(res, 64 << 10, "an error answer")
                        .await
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    let (code, detail) = match serde_json::from_str::<Problem>(&text) {
                        Ok(p) => (p.problem_code(), p.detail),
                        Err(_) => (None, text.chars().take(300).collect()),
                    };
                    return Err(CallError::Refused {
                        status,
                        code,
                        detail,
                    });
                }
                Ok(res) => {
                    // A busy coordinator says when to come back (503, 429: Retry-After).
                    if let Some(after) = retry_after(&res) {
                        wait = wait.max(after.min(Duration::from_secs(30)));
                    }
                    format!("{} answered {}", self.base, res.status())
                }
                Err(e) => format!("{} unreachable: {e}", self.base),
            };
            if started.elapsed() >= self.retry_for {
                return Err(CallError::Unavailable(last));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    /// Registers this partner's identity public key (hex).
    pub async fn register_identity(&self, public_key_hex: &str) -> Result<(), CallError> {
        let body = RegisterIdentity {
            public_key: public_key_hex.to_string(),
        };
        let url = format!("{}/v1/partner/identity", self.base);
        self.call(|h| h.put(&url).json(&body)).await.map(|_| ())
    }

    /// Open rounds this partner is invited to.
    pub async fn rounds(&self) -> Result<PartnerRounds, CallError> {
        let url = format!("{}/v1/partner/rounds", self.base);
        read_json(self.call(|h| h.get(&url)).await?, "round list").await
    }

    /// The audit log's published head.
    pub async fn audit_head(&self) -> Result<ChainHead, CallError> {
        let url = format!("{}/v1/audit/head", self.base);
        read_json(self.call(|h| h.get(&url)).await?, "audit head").await
    }

    /// Every manifest the coordinator holds, oldest first (verified by the caller).
    pub async fn manifests(&self) -> Result<ManifestChain, CallError> {
        let url = format!("{}/v1/manifests", self.base);
        read_json(self.call(|h| h.get(&url)).await?, "manifest list").await
    }

    /// One version of a dataset's policy.
    pub async fn dataset_version(&self, id: &str, version: i64) -> Result<DatasetView, CallError> {
        let url = format!("{}/v1/datasets/{id}/versions/{version}", self.base);
        self.dataset(&url).await
    }

    /// The latest version of a dataset's policy.
    pub async fn latest_dataset(&self, id: &str) -> Result<DatasetView, CallError> {
        let url = format!("{}/v1/datasets/{id}", self.base);
        self.dataset(&url).await
    }

    async fn dataset(&self, url: &str) -> Result<DatasetView, CallError> {
        read_json(self.call(|h| h.get(url)).await?, "dataset").await
    }

    /// Every registered partner's identity key (hex), by partner id.
    pub async fn roster(&self) -> Result<BTreeMap<u32, String>, CallError> {
        let url = format!("{}/v1/partners/roster", self.base);
        let entries: Vec<RosterEntry> =
            read_json(self.call(|h| h.get(&url)).await?, "roster").await?;
        Ok(entries
            .into_iter()
            .filter_map(|e| Some((e.partner_id, e.identity_key?)))
            .collect())
    }

    /// What the last closed phase of `round` sent this partner.
    pub async fn inbox(&self, round: i64) -> Result<Inbox, CallError> {
        self.inbox_as(round).await
    }

    /// What the last closed step of `round` sent this partner, decoded as `T` (a linked
    /// round's join steps answer with [`civic_api::round::JoinInbox`]).
    pub async fn inbox_as<T: serde::de::DeserializeOwned>(
        &self,
        round: i64,
    ) -> Result<T, CallError> {
        let url = format!("{}/v1/partner/rounds/{round}/inbox", self.base);
        let what = format!("inbox of round {round}");
        let bytes = read_limited(self.call(|h| h.get(&url)).await?, MAX_INBOX_BYTES, &what).await?;
        decode_binary(&bytes).map_err(|e| CallError::Refused {
            status: 200,
            code: Some(ProblemCode::ProtocolMalformed),
            detail: format!("the inbox of round {round} does not decode: {e}"),
        })
    }

    /// Posts one protocol message.
    pub async fn post(&self, round: i64, message: &ClientMessage) -> Result<(), CallError> {
        self.post_as(round, message).await
    }

    /// Posts one protocol message of any protocol (a linked round's
    /// [`civic_api::round::LinkedMessage`]).
    pub async fn post_as<T: serde::Serialize>(
        &self,
        round: i64,
        message: &T,
    ) -> Result<(), CallError> {
        let url = format!("{}/v1/partner/rounds/{round}/messages", self.base);
        let body = encode_binary(message);
        self.call(|h| {
            h.post(&url)
                .header("content-type", civic_api::round::BINARY_CONTENT_TYPE)
                .body(body.clone())
        })
        .await
        .map(|_| ())
    }

    /// Declines `round`, telling the coordinator why.
    pub async fn decline(&self, round: i64, reason: &str) -> Result<(), CallError> {
        let url = format!("{}/v1/partner/rounds/{round}/decline", self.base);
        let body = DeclineRound {
            reason: reason.chars().take(1000).collect(),
        };
        self.call(|h| h.post(&url).json(&body)).await.map(|_| ())
    }
}
