//! What an identified RA may do: deny by default. An operation must be listed in the RA's
//! `operations`; a profile in its `profiles`. For calls on an existing certificate (renew,
//! revoke, read) the certificate's own profile is what counts, so an RA can neither act on
//! nor see another office's certificates of profiles it was not granted.

use super::error::Refusal;
use super::identity::Ra;
use crate::config::RaOperation;

fn op_name(op: RaOperation) -> &'static str {
    match op {
        RaOperation::Issue => "issue",
        RaOperation::Renew => "renew",
        RaOperation::Revoke => "revoke",
        RaOperation::Read => "read",
        RaOperation::Token => "use the token service",
    }
}

impl Ra {
    /// The RA may call `op` at all.
    pub fn require(&self, op: RaOperation) -> Result<(), Refusal> {
        if self.operations.contains(&op) {
            Ok(())
        } else {
            Err(Refusal::denied(format!(
                "RA {} may not {}",
                self.name,
                op_name(op)
            )))
        }
    }

    /// The RA may call `op` on a certificate of `profile`.
    pub fn require_profile(&self, op: RaOperation, profile: &str) -> Result<(), Refusal> {
        self.require(op)?;
        if self.profiles.contains(profile) {
            Ok(())
        } else {
            Err(Refusal::denied(format!(
                "RA {} may not {} certificates of profile {profile:?}",
                self.name,
                op_name(op)
            )))
        }
    }

    /// True when the RA may see certificates of `profile`.
    pub fn may_see(&self, profile: &str) -> bool {
        self.profiles.contains(profile)
    }
}
