//! The `civic-coordinator` binary as an operator runs it: bootstrap an admin from the
//! command line, serve from a config file, answer on /healthz, shut down on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

#[test]
fn bootstrap_serve_and_shut_down_gracefully() {
    let url = common::fresh_store_url("cli");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("civic-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("coordinator.toml");
    std::fs::write(
        &config,
        format!("bind = \"127.0.0.1:{port}\"\nstore_url = \"{url}\"\n"),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_civic-coordinator");

    let out = Command::new(bin)
        .args([
            "--config",
            config.to_str().unwrap(),
            "admin",
            "create-account",
            "root",
            "--role",
            "admin",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token (shown once; store it now): "))
        .expect("token printed")
        .to_string();
    assert_eq!(token.len(), 64);

    let bad = Command::new(bin)
        .args(["admin", "create-account", "x", "--role", "emperor"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown role"));
    let missing = Command::new(bin)
        .args(["--config", "/nonexistent/c.toml", "serve"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/c.toml"));

    let mut server = Command::new(bin)
        .args(["--config", config.to_str().unwrap(), "serve"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let health = common::http_get(&format!("http://127.0.0.1:{port}/healthz"), "");
    assert!(health.contains("\"ok\""), "{health}");
    let who = common::http_get(&format!("http://127.0.0.1:{port}/v1/audit"), &token);
    assert!(who.contains("account.create"), "{who}");
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(s) = server.try_wait().unwrap() {
            exited = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let exited = exited.unwrap_or_else(|| {
        let _ = server.kill();
        panic!("no exit within 10 s of SIGTERM")
    });
    assert!(exited.success(), "{exited:?}");
}

#[test]
fn serves_https_with_the_configured_certificate() {
    // A test CA and a certificate for 127.0.0.1 signed by it, from the openssl command line.
    let dir = std::env::temp_dir().join(format!("civic-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (ca, cert, key) = (path("ca.pem"), path("cert.pem"), path("key.pem"));
    std::fs::write(
        path("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let openssl = |args: Vec<&str>| {
        let out = Command::new("openssl")
            .args(&args)
            .output()
            .expect("the openssl command line makes the test certificates");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (ca_key, csr, ext) = (path("ca.key"), path("leaf.csr"), path("leaf.ext"));
    openssl(
        [
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=civic-test-ca",
                "-keyout",
                &ca_key,
                "-out",
                &ca,
            ],
        ]
        .concat(),
    );
    openssl(
        [
            &["req"][..],
            &ec,
            &["-subj", "/CN=127.0.0.1", "-keyout", &key, "-out", &csr],
        ]
        .concat(),
    );
    openssl(vec![
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("coordinator.toml");
    let toml = format!(
        "bind = \"127.0.0.1:{port}\"\nstore_url = \"{}\"\n[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
        common::fresh_store_url("tls"),
        cert,
        key
    );
    std::fs::write(&config, toml).unwrap();
    let server = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_civic-coordinator"))
            .args(["--config", config.to_str().unwrap(), "serve"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_file(&ca).unwrap())
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut answer = String::new();
    for _ in 0..100 {
        let Ok(tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn =
            rustls::ClientConnection::new(std::sync::Arc::new(client.clone()), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        use std::io::{Read, Write};
        write!(
            tls,
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let _ = tls.read_to_string(&mut answer);
        break;
    }
    drop(server);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"ok\""), "{answer}");
}

/// A server process killed when the test ends, even by a panic (it would otherwise hold the
/// test harness's output pipe open).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
