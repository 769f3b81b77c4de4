//! What every gated actor's error type can express.

use energy::Joules;

/// The refusals the gate produces, mapped onto an actor's own error type.
///
/// Error types that have no `InvalidCapabilities` or `InvalidScope` variant report those
/// refusals as `PermissionDenied`, which is what they are. [`gate_error`](crate::gate_error)
/// adds the variants and implements this trait.
pub trait GateError: std::error::Error + Sized + 'static {
    /// The requester or the actor lacks a required capability.
    fn permission_denied(reason: String) -> Self;
    /// The budget cannot cover the estimated cost.
    fn insufficient_energy(needed: Joules, available: Joules) -> Self;
    /// The request is malformed.
    fn invalid_request(reason: String) -> Self;
    /// The audit log cannot take entries now, so the request is not run: the log fails closed.
    fn audit_unavailable(reason: String) -> Self;
    /// The context presents capabilities its principal does not hold.
    fn invalid_capabilities(reason: String) -> Self {
        Self::permission_denied(reason)
    }
    /// The context's scope does not cover the operation.
    fn invalid_scope(reason: String) -> Self {
        Self::permission_denied(reason)
    }
    /// The variant's name, for the audit log (`PermissionDenied`).
    fn code(&self) -> &'static str;
}
