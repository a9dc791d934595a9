//! The services behind the handlers: each loads what it needs, calls the pure cores, and
//! writes the change and its audit entry in one transaction.

pub mod governance;
pub mod pricing;
pub mod research;

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
