//! An egress's overall state follows its outputs: `active` once every output sends, `degraded` while one is
//! down and being retried (an output still connecting for the first time changes nothing). Each change is
//! announced with the webhook `egress.active` or `egress.degraded`, carrying every output's URL (stream key
//! redacted) and state.

use super::store::{Egress, EgressState, EgressStore};
use crate::webhooks::Webhooks;

/// Where an egress's state lives and where its changes are announced.
#[derive(Clone)]
pub struct StateReport {
    /// The egress registry.
    pub store: EgressStore,
    /// Where the changes go.
    pub webhooks: Webhooks,
    /// The egress.
    pub egress: String,
}

impl StateReport {
    /// Applies `change` to the egress, then re-derives its state from its outputs' and announces a change.
    pub fn update(&self, change: impl FnOnce(&mut Egress)) {
        let mut announce = None;
        self.store.update(&self.egress, |e| {
            change(e);
            let before = e.state;
            if let Some(after) = derived(e) {
                e.state = after;
            }
            if e.state != before {
                announce = Some((
                    e.state,
                    serde_json::json!({"egressId": e.id, "state": e.state, "outputs": e.outputs}),
                ));
            }
        });
        match announce {
            Some((EgressState::Active, data)) => self.webhooks.send("egress.active", data),
            Some((_, data)) => self.webhooks.send("egress.degraded", data),
            None => {}
        }
    }
}

/// The state an egress's outputs make, if they decide one: only while it is starting, active or degraded.
fn derived(e: &Egress) -> Option<EgressState> {
    if !matches!(
        e.state,
        EgressState::Starting | EgressState::Active | EgressState::Degraded
    ) {
        return None;
    }
    if e.outputs.iter().any(|o| o.state == "reconnecting") {
        Some(EgressState::Degraded)
    } else if e.outputs.iter().all(|o| o.state == "active") {
        Some(EgressState::Active)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::store::EgressSpec;

    #[test]
    fn the_state_follows_the_outputs() {
        let store = EgressStore::default();
        let urls = ["rtmp://a/live/one".to_string(), "rtmp://b/live/two".to_string()];
        let id = store.create(EgressSpec::default(), &urls).id;
        let report = StateReport {
            store: store.clone(),
            webhooks: Webhooks::default(),
            egress: id.clone(),
        };
        let set = |index: usize, state: &str| {
            report.update(|e| e.outputs[index].state = state.into());
            store.get(&id).unwrap().state
        };
        // One output sends, the other is still connecting: nothing is decided yet.
        assert_eq!(set(0, "active"), EgressState::Starting);
        assert_eq!(set(1, "reconnecting"), EgressState::Degraded);
        assert_eq!(set(1, "active"), EgressState::Active);
        assert_eq!(set(0, "reconnecting"), EgressState::Degraded);
        // Stopped is final: the outputs no longer move it.
        store.update(&id, |e| e.state = EgressState::Ended);
        assert_eq!(set(0, "active"), EgressState::Ended);
    }
}
