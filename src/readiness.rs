//! Readiness of the gateway's subsystems, reported by `/readyz`.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The state of one subsystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubsystemStatus {
    /// Whether it can take work.
    pub ready: bool,
    /// A short explanation for operators.
    pub detail: String,
}

/// Shared table of subsystem states; each subsystem updates its own row.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    rows: Arc<Mutex<BTreeMap<&'static str, SubsystemStatus>>>,
}

impl Readiness {
    /// Sets the state of `subsystem`.
    pub fn set(&self, subsystem: &'static str, ready: bool, detail: impl Into<String>) {
        let status = SubsystemStatus {
            ready,
            detail: detail.into(),
        };
        self.rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(subsystem, status);
    }

    /// A copy of every row.
    pub fn snapshot(&self) -> BTreeMap<&'static str, SubsystemStatus> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
