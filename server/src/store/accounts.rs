//! Accounts and their bearer tokens: 256-bit random, shown once, stored as SHA-256.

use civic_api::Role;
use rand::TryRng;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{StoreError, StoreResult};

/// An authenticated account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Row id; for a partner, also its id in rounds.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// A partner's registered Ed25519 identity key.
    pub identity_key: Option<[u8; 32]>,
}

/// A freshly generated token: hex, zeroized on drop, never in `Debug`.
pub struct NewToken(Zeroizing<String>);

impl NewToken {
    /// A new token from the operating system's random source.
    pub fn generate() -> Result<Self, String> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::SysRng
            .try_fill_bytes(bytes.as_mut())
            .map_err(|e| format!("the OS random source failed: {e}"))?;
        Ok(Self(Zeroizing::new(hex::encode(bytes.as_ref()))))
    }

    /// The token, to show once.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewToken(…)")
    }
}

/// What the store keeps of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `name` is a valid account or project name: 1–64 of letters, digits, `.`, `-`,
/// `_`, `@`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
}

pub(super) fn account(row: &sqlx::any::AnyRow) -> StoreResult<Account> {
    let role: String = row.try_get("role")?;
    let key: Option<Vec<u8>> = row.try_get("identity_key")?;
    Ok(Account {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::corrupt("account role", role))?,
        identity_key: key.and_then(|k| k.try_into().ok()),
    })
}

/// Creates an account holding `token`; `None` (nothing written) if the name is taken.
pub async fn create(
    conn: &mut AnyConnection,
    name: &str,
    role: Role,
    token: &NewToken,
    at: &str,
) -> StoreResult<Option<Account>> {
    let row = sqlx::query(
        "INSERT INTO accounts (name, role, token_hash, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO NOTHING
         RETURNING id, name, role, identity_key",
    )
    .bind(name)
    .bind(role.as_str())
    .bind(token_hash(token.reveal()).to_vec())
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(account).transpose()
}

/// Replaces account `name`'s token: the old one stops working at once. `None` if there is
/// no such account.
pub async fn set_token(
    conn: &mut AnyConnection,
    name: &str,
    token: &NewToken,
) -> StoreResult<Option<Account>> {
    let row = sqlx::query(
        "UPDATE accounts SET token_hash = $1 WHERE name = $2
         RETURNING id, name, role, identity_key",
    )
    .bind(token_hash(token.reveal()).to_vec())
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(account).transpose()
}

/// The account holding `token`, if any. The lookup is by hash (an index probe reveals
/// nothing about the token), and the stored hash is then compared in constant time.
pub async fn by_token(conn: &mut AnyConnection, token: &str) -> StoreResult<Option<Account>> {
    let hash = token_hash(token);
    let row = sqlx::query(
        "SELECT id, name, role, identity_key, token_hash FROM accounts WHERE token_hash = $1",
    )
    .bind(hash.to_vec())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let stored: Vec<u8> = row.try_get("token_hash")?;
    if !bool::from(stored.as_slice().ct_eq(&hash)) {
        return Ok(None);
    }
    account(&row).map(Some)
}

/// An account by name.
pub async fn by_name(conn: &mut AnyConnection, name: &str) -> StoreResult<Option<Account>> {
    let row = sqlx::query("SELECT id, name, role, identity_key FROM accounts WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(account).transpose()
}

/// Every partner, by id.
pub async fn partners(conn: &mut AnyConnection) -> StoreResult<Vec<Account>> {
    let rows = sqlx::query(
        "SELECT id, name, role, identity_key FROM accounts WHERE role = 'partner' ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(account).collect()
}

/// Registers a partner's identity key if it has none; false if one was registered
/// meanwhile (the caller compares).
pub async fn set_identity_key(
    conn: &mut AnyConnection,
    partner: i64,
    key: [u8; 32],
) -> StoreResult<bool> {
    let changed =
        sqlx::query("UPDATE accounts SET identity_key = $1 WHERE id = $2 AND identity_key IS NULL")
            .bind(key.to_vec())
            .bind(partner)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    Ok(changed == 1)
}
