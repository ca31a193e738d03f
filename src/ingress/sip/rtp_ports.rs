//! RTP ports of the phone legs: even ports from the configured range, handed out round-robin.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::net::UdpSocket;

/// Allocates RTP sockets.
#[derive(Clone, Debug)]
pub struct RtpPorts {
    bind_ip: IpAddr,
    public_ip: IpAddr,
    min: u16,
    max: u16,
    cursor: Arc<AtomicU32>,
}

impl RtpPorts {
    /// Ports `min..=max` on `bind_ip`, advertised as `public_ip`.
    pub fn new(bind_ip: IpAddr, public_ip: IpAddr, min: u16, max: u16) -> Self {
        Self {
            bind_ip,
            public_ip,
            min,
            max: max.max(min),
            cursor: Arc::new(AtomicU32::new(rand::random::<u32>())),
        }
    }

    /// Binds the next free even port for RTP and the odd one above it for RTCP; returns both sockets and the
    /// RTP address to write in SDP (RTCP on the next port, RFC 3550's default).
    pub async fn bind(&self) -> std::io::Result<(UdpSocket, UdpSocket, SocketAddr)> {
        let count = u32::from(self.max - self.min) / 2 + 1;
        for _ in 0..count.min(512) {
            let slot = self.cursor.fetch_add(1, Ordering::Relaxed) % count;
            let port = self.min + (slot * 2) as u16;
            let Ok(rtp) = UdpSocket::bind((self.bind_ip, port)).await else {
                continue;
            };
            let Some(rtcp_port) = port.checked_add(1) else { continue };
            if let Ok(rtcp) = UdpSocket::bind((self.bind_ip, rtcp_port)).await {
                return Ok((rtp, rtcp, SocketAddr::new(self.public_ip, port)));
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("no free RTP port in {}-{}", self.min, self.max),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hands_out_distinct_even_ports_in_range() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let ports = RtpPorts::new(ip, ip, 41_000, 41_009);
        let mut held = Vec::new();
        for _ in 0..5 {
            let (socket, _rtcp, public) = ports.bind().await.unwrap();
            assert_eq!(public.port() % 2, 0);
            assert!((41_000..=41_009).contains(&public.port()));
            held.push(socket);
        }
        assert!(ports.bind().await.is_err(), "the range is exhausted");
        held.pop();
        assert!(ports.bind().await.is_ok(), "a freed port is reused");
    }
}
