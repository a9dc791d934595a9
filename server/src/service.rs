//! The services behind the handlers: each loads what it needs (holding a store connection
//! only for the queries themselves), calls the pure cores, and writes the change and its
//! audit entry in one named transaction.
//!
//! - [`research`]: preview, submit and read queries; the public register.
//! - [`governance`]: accounts, datasets, projects, allocations, board decisions, the audit log.
//! - [`rounds`]: what a round's end means for its query: release and charge, or abort and
//!   refund; opening a query's round.
//! - [`dashboard`]: what the dashboard's pages read, and its browser sessions.
//! - [`partner`]: what partners' agents do: announcements, inboxes, messages, declines.

pub mod dashboard;
pub mod governance;
pub mod partner;
pub mod research;
pub mod rounds;

use civic_policies::audit::AuditEvent;

/// An audit event by `actor`.
pub(crate) fn event(
    actor: &str,
    action: &str,
    subject: String,
    details: serde_json::Value,
) -> AuditEvent {
    AuditEvent {
        actor: actor.to_string(),
        action: action.to_string(),
        subject,
        details,
    }
}
