//! `sfu-gateway check-config`: effective configuration printed redacted; every invalid case exits 2 naming
//! the key, without a panic.

mod common;

use std::process::{Command, Output};

/// A config file (if any), environment variables, and the key the error must name.
type Case<'a> = (Option<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

fn check_config(file: Option<&str>, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(common::binary());
    command.arg("check-config").env_clear();
    if let Some(text) = file {
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        command.arg("--config").arg(&path);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run check-config")
}

#[test]
fn valid_configuration_is_printed_with_secrets_redacted() {
    let out = check_config(
        Some("[api]\nlisten = \"127.0.0.1:9191\"\ntoken = \"api-token-5ecret\"\n"),
        &[
            ("CALLS_APP_SECRET", "calls-app-5ecret"),
            ("CALLS_APP_ID", "0123456789abcdef0123456789abcdef"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("listen = \"127.0.0.1:9191\""), "{stdout}");
    assert!(
        stdout.contains("mode") || stdout.contains("app_id = \"0123456789abcdef0123456789abcdef\""),
        "{stdout}"
    );
    assert!(stdout.contains("[redacted]"), "{stdout}");
    assert!(!stdout.contains("5ecret"), "secret leaked: {stdout}");
    assert!(stdout.contains("video-encode-h264"), "{stdout}");
}

#[test]
fn invalid_configurations_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad_fragment_dir = dir.path().join("bad");
    std::fs::create_dir(&bad_fragment_dir).unwrap();
    std::fs::write(
        bad_fragment_dir.join("audio-encode-opus.gst"),
        "audioconvert ! ! opusenc name=encoder",
    )
    .unwrap();
    let unknown_fragment_dir = dir.path().join("unknown");
    std::fs::create_dir(&unknown_fragment_dir).unwrap();
    std::fs::write(unknown_fragment_dir.join("video-encode-av1.gst"), "av1enc name=encoder").unwrap();
    let bad_dir = format!("[pipelines]\ndir = \"{}\"\n", bad_fragment_dir.display());
    let unknown_dir = format!("[pipelines]\ndir = \"{}\"\n", unknown_fragment_dir.display());

    let cases: Vec<Case> = vec![
        (
            Some("[supervisor]\nmax_sessions = \"lots\"\n"),
            vec![],
            "supervisor.max_sessions",
        ),
        (Some("[api]\nlisten = \"127.0.0.1:65536\"\n"), vec![], "api.listen"),
        (None, vec![("GATEWAY__API__LISTEN", "127.0.0.1:99999")], "api.listen"),
        (
            Some("[supervisor]\ndrain_timeout = \"5 fortnights\"\n"),
            vec![],
            "supervisor.drain_timeout",
        ),
        (
            Some("[sfu.embedded]\nlisten = \"127.0.0.1:8080\"\n"),
            vec![],
            "sfu.embedded.listen",
        ),
        (Some("[api]\nlistne = \"127.0.0.1:1\"\n"), vec![], "listne"),
        (Some(&unknown_dir), vec![], "pipelines.dir"),
        (Some(&bad_dir), vec![], "pipelines.audio-encode-opus"),
        (Some("[pipelines]\ndir = \"/no/such/dir\"\n"), vec![], "pipelines.dir"),
        (
            Some("[rtmp]\ntls_cert = \"/no/such/cert.pem\"\ntls_key = \"/no/such/key.pem\"\n"),
            vec![],
            "rtmp.tls_cert",
        ),
    ];
    for (file, env, key) in cases {
        let out = check_config(file, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file:?} {env:?}: {stderr}");
        assert!(stderr.contains(key), "{file:?} {env:?} should name {key}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }
}

#[test]
fn missing_config_file_exits_2() {
    let out = Command::new(common::binary())
        .args(["check-config", "--config", "/no/such/gateway.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/gateway.toml"));
}
