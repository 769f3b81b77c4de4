//! What every gated actor's error type can express.

use energy::Joules;

/// The refusals the gate produces, mapped onto an actor's own error type.
///
/// Error types that have no `InvalidCapabilities` or `InvalidScope` variant (the tutorial gives
/// some actors neither) report those refusals as `PermissionDenied`, which is what they are.
/// Implement it with [`gate_error!`](crate::gate_error).
pub trait GateError: std::error::Error + Sized + 'static {
    /// The requester or the actor lacks a required capability.
    fn permission_denied(reason: String) -> Self;
    /// The budget cannot cover the estimated cost.
    fn insufficient_energy(needed: Joules, available: Joules) -> Self;
    /// The request is malformed.
    fn invalid_request(reason: String) -> Self;
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

/// Implements [`GateError`] for an error enum with the tutorial's variant names:
/// `PermissionDenied(String)`, `InsufficientEnergy { needed, available }`,
/// `InvalidRequest(String)`, and optionally `InvalidCapabilities(String)` and
/// `InvalidScope(String)`. The enum must derive `strum::IntoStaticStr`.
#[macro_export]
macro_rules! gate_error {
    ($error:ident $(, $optional:ident)*) => {
        impl $crate::gate::GateError for $error {
            fn permission_denied(reason: String) -> Self {
                $error::PermissionDenied(reason)
            }
            fn insufficient_energy(needed: $crate::energy::Joules, available: ::energy::Joules) -> Self {
                $error::InsufficientEnergy { needed, available }
            }
            fn invalid_request(reason: String) -> Self {
                $error::InvalidRequest(reason)
            }
            $($crate::gate_error!(@optional $error $optional);)*
            fn code(&self) -> &'static str {
                self.into()
            }
        }
    };
    (@optional $error:ident InvalidCapabilities) => {
        fn invalid_capabilities(reason: String) -> Self {
            $error::InvalidCapabilities(reason)
        }
    };
    (@optional $error:ident InvalidScope) => {
        fn invalid_scope(reason: String) -> Self {
            $error::InvalidScope(reason)
        }
    };
}
