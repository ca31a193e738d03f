//! The `sfu-gateway` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    // Several crates link rustls with different backends (RTMPS, the Calls API client, SIP over TLS): name
    // the process-wide one so none of them has to guess (rustls panics on the first handshake otherwise).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    sfu_gateway::cli::main()
}
