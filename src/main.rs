//! The `sfu-gateway` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    sfu_gateway::cli::main()
}
