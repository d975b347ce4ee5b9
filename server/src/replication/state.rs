//! The replication state a server persists beside its data (`Data.fs.rsrepl`, JSON, replaced
//! atomically): its epoch, its role, whom it follows, and the out-of-sync marks. Written before a
//! change takes effect, so that a restart never comes back in a role or epoch it had left: a
//! demoted server stays read-only, a rejoined one stays a standby of its new primary.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::storage::{StorageError, write_atomically};

/// A server's replication role: what it does in the pair (persisted, and shown in `/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerRole {
    /// Accepts commits (and standbys, with `--replication-listen`).
    Primary,
    /// Follows a primary; read-only for clients.
    Standby,
    /// Fenced: read-only, follows nobody, until promoted or told to rejoin.
    Demoted,
}

impl ServerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerRole::Primary => "primary",
            ServerRole::Standby => "standby",
            ServerRole::Demoted => "demoted",
        }
    }
}

/// The persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplState {
    pub version: u32,
    /// Fencing token: raised at every promotion, adopted from the primary by a standby.
    pub epoch: u64,
    pub role: ServerRole,
    /// The primary's replication address, for a standby.
    #[serde(default)]
    pub primary: Option<String>,
    /// Standby side: the primary went on without this standby's acknowledgements (sync mode
    /// degraded), so it may lack acknowledged commits: never promote it automatically until it has
    /// caught up again.
    #[serde(default)]
    pub out_of_sync: bool,
    /// Standby side: caught up with its primary while the primary ran sync replication, and not
    /// marked out of sync since. A primary in sync mode acknowledges nothing this standby has not
    /// acknowledged, so such a standby holds every acknowledged commit even after losing its
    /// primary: it is promotable. Cleared when it starts following another primary.
    #[serde(default)]
    pub synced: bool,
    /// Primary side: standbys it went on without (same meaning, seen from the primary).
    #[serde(default)]
    pub standbys_out_of_sync: BTreeSet<String>,
    /// Why this server cannot follow its primary without a full re-seed, when it cannot.
    #[serde(default)]
    pub needs_reseed: Option<String>,
}

impl ReplState {
    pub fn new(role: ServerRole) -> Self {
        ReplState {
            version: 1,
            epoch: 0,
            role,
            primary: None,
            out_of_sync: false,
            synced: false,
            standbys_out_of_sync: BTreeSet::new(),
            needs_reseed: None,
        }
    }
}

/// The state file and its current content.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    state: ReplState,
}

impl StateFile {
    /// `Data.fs.rsrepl` beside the first storage's file.
    pub fn path_for(data_path: &Path) -> PathBuf {
        PathBuf::from(format!("{}.rsrepl", data_path.display()))
    }

    /// Loads the state, or starts from `initial` when there is none yet (written at once).
    pub fn open(path: PathBuf, initial: ReplState) -> Result<Self, StorageError> {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let state: ReplState = serde_json::from_slice(&bytes)
                    .map_err(|e| StorageError::corrupted(&path, 0, format!("bad replication state: {e}")))?;
                Ok(StateFile { path, state })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let f = StateFile { path, state: initial };
                f.write(&f.state)?;
                Ok(f)
            }
            Err(e) => Err(StorageError::io("read", &path, e)),
        }
    }

    pub fn get(&self) -> &ReplState {
        &self.state
    }

    /// Applies `change` durably: the new state is on disk before it is returned or seen.
    pub fn update(&mut self, change: impl FnOnce(&mut ReplState)) -> Result<&ReplState, StorageError> {
        let mut next = self.state.clone();
        change(&mut next);
        if next != self.state {
            self.write(&next)?;
            self.state = next;
        }
        Ok(&self.state)
    }

    fn write(&self, s: &ReplState) -> Result<(), StorageError> {
        let mut bytes = serde_json::to_vec_pretty(s).expect("the state serializes");
        bytes.push(b'\n');
        write_atomically(&self.path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_writes_only_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs.rsrepl");
        let mut f = StateFile::open(path.clone(), ReplState::new(ServerRole::Primary)).unwrap();
        assert!(path.exists(), "the initial state is written at once");
        f.update(|s| {
            s.epoch = 7;
            s.role = ServerRole::Demoted;
            s.standbys_out_of_sync.insert("b".into());
        })
        .unwrap();
        let again = StateFile::open(path.clone(), ReplState::new(ServerRole::Primary)).unwrap();
        assert_eq!(again.get().epoch, 7);
        assert_eq!(again.get().role, ServerRole::Demoted);
        assert!(again.get().standbys_out_of_sync.contains("b"));
        std::fs::write(&path, b"{not json").unwrap();
        assert!(
            StateFile::open(path, ReplState::new(ServerRole::Primary)).is_err(),
            "a damaged state is an error, not a reset"
        );
    }
}
