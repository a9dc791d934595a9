//! Accounts, datasets, projects, budgets and the audit log.

use civic_policies::PrivacyStatement;
use civic_policies::audit::{AuditRecord, ChainHead};
use civic_policies::manifest::{BoardSignature, SignedManifest};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Role;

/// `POST /v1/admin/accounts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// A unique name: 1 to 64 letters, digits, `.`, `-`, `_`, `@`.
    #[schema(pattern = r"^[A-Za-z0-9._@-]{1,64}$")]
    pub name: String,
    /// Admin, governance or researcher (partners are created with `POST /v1/admin/partners`).
    #[schema(value_type = AccountRole)]
    pub role: Role,
}

/// The roles `POST /v1/admin/accounts` creates (a partner's account comes with its partner
/// id from `POST /v1/admin/partners`): the schema of [`CreateAccount::role`].
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum AccountRole {
    Admin,
    Governance,
    Researcher,
}

/// `POST /v1/admin/partners`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePartner {
    /// The id datasets' policies use for this partner (`[dataset] partners`): 1 to 64
    /// letters, digits, `.`, `-`, `_`, `@`.
    #[schema(pattern = r"^[A-Za-z0-9._@-]{1,64}$")]
    pub name: String,
}

/// An account just created, with its token: shown once, stored only as a hash.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedAccount {
    /// The name.
    pub name: String,
    /// The role.
    pub role: Role,
    /// For a partner, its numeric id in rounds.
    pub partner_id: Option<u32>,
    /// The bearer token (256-bit, hex). Keep it: it cannot be shown again.
    pub token: String,
}

impl std::fmt::Debug for CreatedAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedAccount")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("partner_id", &self.partner_id)
            .finish_non_exhaustive()
    }
}

/// How a policy is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyFormat {
    /// TOML, as `civic policy check` reads it.
    #[default]
    Toml,
    /// The same structure as JSON.
    Json,
}

/// `PUT /v1/datasets/{id}`: a new policy version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadPolicy {
    /// The policy text.
    pub policy: String,
    /// Its format (TOML by default).
    #[serde(default)]
    pub format: PolicyFormat,
}

/// A dataset's policy version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DatasetView {
    /// The dataset id.
    pub id: String,
    /// The version, from 1.
    pub version: i64,
    /// When it was uploaded (RFC 3339).
    pub created_at: String,
    /// By whom.
    pub created_by: String,
    /// The policy as parsed (the TOML file's structure).
    #[schema(value_type = Object)]
    pub policy: civic_policies::dataset::PolicyFile,
}

/// `POST /v1/projects`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// A short id: 1 to 64 letters, digits, `.`, `-`, `_`, `@`.
    #[schema(pattern = r"^[A-Za-z0-9._@-]{1,64}$")]
    pub id: String,
    /// What the project is for, as the public register shows it (not blank).
    #[schema(pattern = r"\S")]
    pub title: String,
    /// Researcher accounts that may submit for it.
    pub members: Vec<String>,
}

/// A project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProjectView {
    /// Its id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its researchers.
    pub members: Vec<String>,
}

/// `PUT /v1/projects/{id}/allocations/{dataset}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAllocation {
    /// The cap: `{"rho": …}`, `{"epsilon": …}` or `{"epsilon": …, "delta": …}`.
    pub cap: PrivacyStatement,
}

/// `POST /v1/queries/{id}/decision`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Approve, or reject (one rejection ends the query and refunds it).
    pub approve: bool,
    /// Why, for the audit log (not blank).
    #[schema(pattern = r"\S")]
    pub reason: String,
    /// An approval's board signature over the query's fingerprint (`civic-board approve
    /// FINGERPRINT` prints it). Required to approve once the board has published a manifest:
    /// approvals then count distinct board members' keys, and agents check them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<BoardSignature>,
}

/// `GET /v1/manifests`: every manifest the board published, oldest first, as signed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ManifestChain {
    /// The signed manifests.
    pub manifests: Vec<SignedManifest>,
}

/// A project's share of one dataset's budget, in ρ (zCDP).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AllocationView {
    /// The project.
    pub project: String,
    /// Its cap.
    pub cap_rho: f64,
    /// Held by running queries.
    pub reserved_rho: f64,
    /// Spent.
    pub charged_rho: f64,
}

/// `GET /v1/budgets/{dataset}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetView {
    /// The dataset.
    pub dataset: String,
    /// The total, in ρ.
    pub total_rho: f64,
    /// The per-query cap, in ρ.
    pub per_query_rho: f64,
    /// Reserved plus charged.
    pub used_rho: f64,
    /// Charged.
    pub charged_rho: f64,
    /// Neither reserved nor charged.
    pub remaining_rho: f64,
    /// What has been charged, stated as (ε, δ) at the policy's δ (or 10⁻⁶).
    pub charged_approx_dp: (f64, f64),
    /// Per project.
    pub projects: Vec<AllocationView>,
}

/// `GET /v1/audit`: a page of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// Entries in order.
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<AuditRecord>,
    /// The head of the whole log when the page was read.
    #[schema(value_type = Object)]
    pub head: ChainHead,
}

/// `GET /v1/audit/verify`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    /// Whether every entry verified.
    pub verified: bool,
    /// Entries checked.
    pub entries: u64,
    /// The verified head (as far as it verified).
    #[schema(value_type = Object)]
    pub head: ChainHead,
    /// The first failure.
    pub error: Option<String>,
    /// The position of the first entry that does not verify, if one does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<u64>,
}
