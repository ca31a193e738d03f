//! Webhooks: events (`ingress.started`/`ended`, `egress.started`/`ended`, `session.state_changed` for every
//! state change of every session) POSTed as JSON to the configured URLs,
//! signed with HMAC-SHA256, retried with backoff. Sending never blocks media: events go through a bounded
//! queue (full: dropped and counted) to one delivery task per URL, which delivers in order.
//!
//! Signature: header `X-Gateway-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`;
//! receivers recompute it and reject old timestamps. `X-Gateway-Event` names the event, and
//! `X-Gateway-Delivery` identifies it (stable across retries).

use crate::config::WebhooksConfig;
use crate::redact::Secret;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookEvent {
    /// Unique id (also the delivery id).
    pub id: String,
    /// `ingress.started`, `ingress.ended`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds when it happened.
    pub timestamp: u64,
    /// Event details.
    pub data: serde_json::Value,
}

/// Handle for sending events; cheap to clone. Without URLs it drops everything.
#[derive(Clone, Default)]
pub struct Webhooks {
    queues: Arc<Vec<mpsc::Sender<Arc<WebhookEvent>>>>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `t=<timestamp>,v1=<hex>` for `body` signed at `timestamp`.
pub fn signature(secret: &Secret, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

impl Webhooks {
    /// Starts one delivery task per configured URL; they stop with `cancel`.
    pub fn start(config: &WebhooksConfig, cancel: CancellationToken) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .unwrap_or_default();
        let queues = config
            .urls
            .iter()
            .map(|url| {
                let (tx, rx) = mpsc::channel(config.queue);
                let worker = Delivery {
                    http: http.clone(),
                    url: url.clone(),
                    secret: config.secret.clone(),
                    max_attempts: config.max_attempts,
                };
                tokio::spawn(worker.run(rx, cancel.clone()));
                tx
            })
            .collect();
        Self {
            queues: Arc::new(queues),
        }
    }

    /// Queues an event for every URL; never waits.
    pub fn send(&self, kind: &str, data: serde_json::Value) {
        if self.queues.is_empty() {
            return;
        }
        let event = Arc::new(WebhookEvent {
            id: format!("evt_{:016x}", rand::random::<u64>()),
            kind: kind.to_string(),
            timestamp: now_unix(),
            data,
        });
        for queue in self.queues.iter() {
            if queue.try_send(event.clone()).is_err() {
                metrics::counter!("webhook_events_dropped_total").increment(1);
                tracing::warn!(event = kind, "webhook queue full: event dropped");
            }
        }
    }
}

struct Delivery {
    http: reqwest::Client,
    url: String,
    secret: Secret,
    max_attempts: u32,
}

impl Delivery {
    async fn run(self, mut rx: mpsc::Receiver<Arc<WebhookEvent>>, cancel: CancellationToken) {
        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => return,
                event = rx.recv() => match event {
                    Some(event) => event,
                    None => return,
                },
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.deliver(&event) => {}
            }
        }
    }

    async fn deliver(&self, event: &WebhookEvent) {
        let body = serde_json::to_vec(event).unwrap_or_default();
        for attempt in 1..=self.max_attempts {
            let timestamp = now_unix();
            let result = self
                .http
                .post(&self.url)
                .header("content-type", "application/json")
                .header("x-gateway-event", &event.kind)
                .header("x-gateway-delivery", &event.id)
                .header("x-gateway-signature", signature(&self.secret, timestamp, &body))
                .body(body.clone())
                .send()
                .await;
            match result {
                Ok(response) if response.status().is_success() => {
                    metrics::counter!("webhook_deliveries_total", "result" => "ok").increment(1);
                    return;
                }
                Ok(response) => {
                    tracing::info!(event = %event.kind, status = %response.status(), attempt, "webhook refused")
                }
                Err(e) => tracing::info!(event = %event.kind, error = %e.without_url(), attempt, "webhook failed"),
            }
            let backoff =
                Duration::from_millis(200u64.saturating_mul(1 << attempt.min(8))).min(Duration::from_secs(30));
            tokio::time::sleep(backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0)).await;
        }
        metrics::counter!("webhook_deliveries_total", "result" => "gave_up").increment(1);
        tracing::warn!(event = %event.kind, "webhook given up after {} attempts", self.max_attempts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Reference value computed with: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac key
        let sig = signature(&Secret::new("key".into()), 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            sig,
            "t=1700000000,v1=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
        let other = signature(&Secret::new("kez".into()), 1_700_000_000, br#"{"a":1}"#);
        assert_ne!(sig, other);
    }
}
