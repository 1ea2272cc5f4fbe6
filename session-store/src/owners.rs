//! The sessions of one owner: listing them and revoking them ("sign out everywhere").
//!
//! A session is bound to an owner with [`Session::set_owner`]; stores that claim
//! [`Capabilities::owners`](crate::Capabilities::owners) index the owner with every write,
//! so finding an owner's sessions never scans the others. Sessions are named by a
//! [handle](Session::handle), a one-way digest of the id: a list of sessions can be shown
//! to the user, or sent to a browser, without handing out the ids, which are credentials.

use time::OffsetDateTime;

use crate::config::SessionManager;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::keys::handle;
use crate::observe::SessionEvent;
use crate::record::Record;
use crate::session::Session;

/// One live session of an owner, as [`SessionManager::sessions_of`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// Names the session for [`SessionManager::revoke`]; not its id, and no way to it.
    pub handle: String,
    /// When the session was first stored (`None` for sessions stored before creation times
    /// were kept).
    pub created: Option<OffsetDateTime>,
    /// When the session was last extended (its expiry minus its lifetime): its last
    /// activity, as precise as `touch_after` lets the store know it.
    pub last_seen: OffsetDateTime,
    /// When the store drops it unless it is used again.
    pub expires: OffsetDateTime,
    /// The session's label ([`Session::set_label`]), e.g. the user agent.
    pub label: Option<String>,
}

impl SessionManager {
    /// The live sessions bound to `owner`, most recently active first. Costs one store call
    /// that reads only this owner's sessions.
    ///
    /// A store without an owner index ([`Capabilities::owners`](crate::Capabilities::owners)
    /// false: the express-session layouts, adapted callback, blocking and tower-sessions
    /// stores) answers [`Error::Unsupported`], never an empty list.
    pub async fn sessions_of(&self, owner: &str) -> Result<Vec<SessionInfo>> {
        let c = &self.config;
        let now = c.now();
        let mut sessions: Vec<SessionInfo> = self
            .owned(owner)
            .await?
            .into_iter()
            .filter(|(_, record)| !record.is_expired(now))
            .map(|(id, record)| {
                let mut last_seen = record.expires - c.lifetime(record.lifetime);
                if let Some(created) = record.created {
                    last_seen = last_seen.max(created);
                }
                SessionInfo {
                    handle: handle(&id),
                    created: record.created,
                    last_seen: last_seen.min(now),
                    expires: record.expires,
                    label: record.label,
                }
            })
            .collect();
        sessions.sort_by_key(|s| std::cmp::Reverse(s.last_seen));
        Ok(sessions)
    }

    /// Ends the session of `owner` named by `handle`; `Ok(false)` if `owner` has no such
    /// live session (a handle of another owner's session revokes nothing). Final like
    /// [`Session::destroy`]: a request of that session still in flight cannot write it back.
    pub async fn revoke(&self, owner: &str, handle: &str) -> Result<bool> {
        let mut revoked = false;
        for (id, _) in self.owned(owner).await? {
            if self::handle(&id) == handle {
                self.end(owner, &id).await?;
                revoked = true;
            }
        }
        Ok(revoked)
    }

    /// Ends every session of `owner` ("sign out everywhere", e.g. after a password change);
    /// returns how many.
    pub async fn revoke_all(&self, owner: &str) -> Result<usize> {
        let owned = self.owned(owner).await?;
        for (id, _) in &owned {
            self.end(owner, id).await?;
        }
        Ok(owned.len())
    }

    /// Ends every session of `current`'s owner except `current` ("sign out my other
    /// devices"); returns how many. `Ok(0)` if `current` has no owner.
    pub async fn revoke_others(&self, current: &Session) -> Result<usize> {
        let Some(owner) = current.owner() else {
            return Ok(0);
        };
        let keep = self.config.key(&current.id()).into_owned();
        let mut ended = 0;
        for (id, _) in self.owned(&owner).await? {
            if id != keep {
                self.end(&owner, &id).await?;
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// The store's list of `owner`'s sessions (by the keys they are stored under), under the
    /// store timeout; re-checked against the owner, so a store's stale index entry never
    /// reaches a caller.
    async fn owned(&self, owner: &str) -> Result<Vec<(SessionId, Record)>> {
        let c = &self.config;
        if !c.caps().owners {
            return Err(Error::Unsupported {
                store: c.store_name(),
                operation: "owned",
            });
        }
        let mut owned = c.timed("owned", c.store().owned(owner)).await?;
        owned.retain(|(_, record)| record.owner.as_deref() == Some(owner));
        Ok(owned)
    }

    /// Destroys `owner`'s session stored under `id` (a key from `owned`) and tells the event
    /// hook.
    async fn end(&self, owner: &str, id: &SessionId) -> Result<()> {
        let c = &self.config;
        c.timed("destroy", c.store().destroy_key(id)).await?;
        c.emit(|| SessionEvent::Revoked {
            handle: handle(id),
            owner: owner.to_owned(),
        });
        Ok(())
    }
}
