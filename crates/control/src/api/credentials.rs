//! What a caller's credentials do beyond letting a call in: a counted (`--uses N`)
//! bootstrap token's spending, and proving the connection for the API's connection
//! limits ([`crate::admission`]).

use crate::admission::Ticket;
use crate::auth::{Need, Principal, Refused};
use weft_api::Role;

use super::Server;

impl Server {
    /// `who`, unless it is a counted (`--uses N`) bootstrap token that has had all its
    /// certificates: a spent token authenticates nothing more (the certificate call itself
    /// answers a replay with its own 403). With it, whether the call proves its connection:
    /// not a spent token's (only its certificate call gets this far, to be refused: spent,
    /// it must not hold places); an unspent one's does, so that its certificate call is not
    /// cut for room between the spend and the answer. (One look at the count per call.)
    pub(super) async fn not_spent(&self, who: Principal, path: &str) -> Result<(Principal, bool), Refused> {
        if let Principal::Workload { id, uses: Some(uses), .. } = &who {
            if self.plane.lock().await.token_spent(id, *uses) {
                if path != "/v1/certificate" {
                    return Err(Refused::BadToken("spent: a --uses token authenticates nothing once it has had its certificates (the workload calls with its certificate)"));
                }
                return Ok((who, false));
            }
        }
        Ok((who, true))
    }

    /// A console request's part in its connection's proof: a browser logged in to the
    /// console (its session's token valid) holds its connection like an API client — only a
    /// session that may see the pages: the login page, and a workload's token, spent or
    /// not, prove nothing — and refused credentials unprove it, as on the API.
    pub(super) fn console_session(&self, ticket: &Ticket, headers: &http::HeaderMap) {
        match crate::console::caller(self, headers) {
            Ok(who) if crate::auth::allow(&who, Need::Role(Role::Read), None).is_ok() => prove(ticket, &who),
            Err(Refused::NoToken | Refused::BadToken(_) | Refused::Expired) => ticket.unprove(),
            _ => {}
        }
    }
}

/// Marks the connection of a call let in as `who`'s: per address for a workload
/// (replicas share its name) and under `--insecure` (where the client names itself).
pub(super) fn prove(ticket: &Ticket, who: &Principal) {
    match who {
        Principal::Anonymous(_) => ticket.prove("anonymous", true),
        Principal::Workload { .. } => ticket.prove(&who.name(), true),
        Principal::User { .. } => ticket.prove(&who.name(), false),
    }
}
