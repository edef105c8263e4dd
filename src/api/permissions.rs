//! What an identified RA may do: deny by default. An operation must be listed in the RA's
//! `operations`; a profile in its `profiles`. For calls on an existing certificate (renew,
//! revoke, read) the certificate's own profile is what counts, so an RA can neither act on
//! nor see another office's certificates of profiles it was not granted. A profile a request
//! names that is not configured at all is bad input, not a permission question.

use super::error::Refusal;
use super::identity::{Ra, RaDirectory};
use crate::ca::Violation;
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
        if !self.enabled {
            return Err(Refusal::denied(format!(
                "RA office {} is suspended ([[ra]] enabled = false)",
                self.name
            )));
        }
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

impl RaDirectory {
    /// Check a profile the request itself names (Issue, Personalize, a listing's filter):
    /// one that is not configured is a problem with the `profile` field (returned, for the
    /// caller to report with the request's other problems); a configured profile the RA may
    /// not use is PERMISSION_DENIED.
    pub fn requested_profile(
        &self,
        ra: &Ra,
        op: RaOperation,
        profile: &str,
    ) -> Result<Option<Violation>, Refusal> {
        if self.profiles.contains(profile) {
            return ra.require_profile(op, profile).map(|()| None);
        }
        let allowed: Vec<&str> = ra.profiles.iter().map(String::as_str).collect();
        let problem = if profile.is_empty() {
            "is required".to_owned()
        } else {
            format!("no profile named {profile:?} is configured")
        };
        Ok(Some(Violation::new(
            "profile",
            format!("{problem} (RA {} may use: {})", ra.name, allowed.join(", ")),
        )))
    }
}
