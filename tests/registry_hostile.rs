//! The registry client against a malicious registry: tiny HTTP(S) servers on 127.0.0.1, started
//! by each test, that flood, trickle, loop and lure credentials away. Each test proves a bound
//! (bytes, time) or a place credentials never go.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use imagebloat::registry::{
    Credential, Keyring, MAX_RANGE_BYTES, MAX_RANGES_PER_REQUEST, RangeRead, RangesRead, Reference,
    Registry, RegistryError, RegistryOptions,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    /// The `Host` header: the server's own address.
    host: String,
    authorization: Option<String>,
}

/// What the server answers.
enum Reply {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// `total` bytes of `x`, announced by `Content-Length` or else delimited by the close.
    Flood {
        status: u16,
        headers: Vec<(String, String)>,
        total: u64,
        announce: bool,
    },
    /// `Content-Length: length`, then `step` bytes every `every`.
    Trickle {
        length: u64,
        step: usize,
        every: Duration,
    },
}

fn reply(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    Reply::Full {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.to_vec(),
    }
}

fn manifest() -> Reply {
    reply(
        200,
        &[(
            "Content-Type",
            "application/vnd.oci.image.manifest.v1+json",
        )],
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#,
    )
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A hostile registry: what it was asked, and how many bytes it managed to send.
struct Server {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    sent: Arc<AtomicU64>,
    open: Arc<AtomicU64>,
}

impl Server {
    async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Server {
        Server::start_with(Arc::new(handler), None).await
    }

    async fn start_with(handler: Handler, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server {
            addr: listener.local_addr().unwrap().to_string(),
            seen: Arc::default(),
            sent: Arc::default(),
            open: Arc::default(),
        };
        let (seen, sent, open) = (
            server.seen.clone(),
            server.sent.clone(),
            server.open.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (handler, seen, sent, open) =
                    (handler.clone(), seen.clone(), sent.clone(), open.clone());
                let tls = tls.clone();
                open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(tcp).await {
                                serve(stream, &*handler, &seen, &sent).await;
                            }
                        }
                        None => serve(tcp, &*handler, &seen, &sent).await,
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        server
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Bytes sent once every connection has ended (the client hung up).
    async fn sent_when_closed(&self) -> u64 {
        let started = Instant::now();
        while self.open.load(Ordering::SeqCst) > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the client still reads"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.sent.load(Ordering::SeqCst)
    }

    fn image(&self, repository_and_tag: &str) -> Reference {
        format!("{}/{repository_and_tag}", self.addr)
            .parse()
            .unwrap()
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    handler: &(dyn Fn(&Seen) -> Reply + Send + Sync),
    seen: &Mutex<Vec<Seen>>,
    sent: &AtomicU64,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 << 10 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("")
        .to_string();
    let headers: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(':')).collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let request = Seen {
        path,
        host: header("host").unwrap_or_default(),
        authorization: header("authorization"),
    };
    let answer = handler(&request);
    seen.lock().unwrap().push(request);
    let head = |status: u16, headers: &[(String, String)], length: Option<u64>| {
        let mut h = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
        if let Some(n) = length {
            h.push_str(&format!("Content-Length: {n}\r\n"));
        }
        for (k, v) in headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        h.into_bytes()
    };
    let mut write = async |bytes: &[u8]| -> bool {
        let ok = stream.write_all(bytes).await.is_ok() && stream.flush().await.is_ok();
        if ok {
            sent.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        }
        ok
    };
    match answer {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let _ =
                write(&head(status, &headers, Some(body.len() as u64))).await && write(&body).await;
        }
        Reply::Flood {
            status,
            headers,
            total,
            announce,
        } => {
            if !write(&head(status, &headers, announce.then_some(total))).await {
                return;
            }
            let chunk = vec![b'x'; 64 << 10];
            let mut left = total;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                if !write(&chunk[..n]).await {
                    return;
                }
                left -= n as u64;
            }
        }
        Reply::Trickle {
            length,
            step,
            every,
        } => {
            if !write(&head(200, &[], Some(length))).await {
                return;
            }
            let mut left = length;
            while left > 0 {
                let n = left.min(step as u64) as usize;
                if !write(&vec![b'x'; n]).await {
                    return;
                }
                left -= n as u64;
                tokio::time::sleep(every).await;
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// A client that speaks plain HTTP to `insecure` and gives up quickly.
fn client(insecure: &[&str], tune: impl FnOnce(&mut RegistryOptions)) -> Registry {
    let mut options = RegistryOptions {
        insecure: insecure.iter().map(|s| s.to_string()).collect(),
        max_retries: 0,
        ..Default::default()
    };
    tune(&mut options);
    Registry::new(options).unwrap()
}

fn challenge(realm: &str) -> Reply {
    reply(
        401,
        &[(
            "WWW-Authenticate",
            &format!(r#"Bearer realm="{realm}",service="test""#),
        )],
        b"",
    )
}

const FLOOD: u64 = 1 << 30;
/// Far below the flood: what a client that stops at its cap lets through the socket buffers.
const FAR_BELOW: u64 = 64 << 20;

/// Asks a flooding `server` for a manifest: the error, once the server has seen the client hang
/// up far below the flood.
async fn manifest_error_from_flood(server: &Server) -> RegistryError {
    let err = client(&[&server.addr], |_| {})
        .manifest(&server.image("team/app:1"), "1", &[])
        .await
        .unwrap_err();
    let sent = server.sent_when_closed().await;
    eprintln!("the server got {sent} bytes out before the client hung up");
    assert!(sent < FAR_BELOW, "the server sent {sent} bytes");
    err
}

#[tokio::test]
async fn a_1_gib_error_body_costs_at_most_the_cap_and_the_error_names_it() {
    for announce in [true, false] {
        let server = Server::start(move |_| Reply::Flood {
            status: 404,
            headers: vec![],
            total: FLOOD,
            announce,
        })
        .await;
        let err = manifest_error_from_flood(&server).await;
        let text = err.to_string();
        assert!(matches!(err, RegistryError::NotFound { .. }), "{text}");
        assert!(
            text.contains(&format!("{}/team/app:1", server.addr)),
            "{text}"
        );
        assert!(text.contains("65536-byte cap"), "{text}");
    }
}

#[tokio::test]
async fn a_huge_token_response_is_refused_at_its_cap() {
    let server = Server::start(|seen: &Seen| {
        if seen.path.starts_with("/token") {
            Reply::Flood {
                status: 200,
                headers: vec![],
                total: FLOOD,
                announce: false,
            }
        } else {
            challenge(&format!("http://{}/token", seen.host))
        }
    })
    .await;
    let err = manifest_error_from_flood(&server).await;
    let text = err.to_string();
    assert!(matches!(err, RegistryError::Token { .. }), "{text}");
    assert!(text.contains("262144-byte cap"), "{text}");
}

#[tokio::test]
async fn a_token_longer_than_its_cap_is_refused() {
    let server = Server::start(|seen: &Seen| {
        if seen.path.starts_with("/token") {
            let body = format!(r#"{{"token":"{}"}}"#, "t".repeat(40 << 10));
            reply(200, &[], body.as_bytes())
        } else {
            challenge(&format!("http://{}/token", seen.host))
        }
    })
    .await;
    let err = client(&[&server.addr], |_| {})
        .manifest(&server.image("team/app:1"), "1", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Token { .. }), "{err}");
    assert!(err.to_string().contains("32768-byte cap"), "{err}");
}

#[tokio::test]
async fn an_endless_manifest_is_refused_at_the_manifest_cap() {
    let server = Server::start(|_| Reply::Flood {
        status: 200,
        headers: vec![(
            "Content-Type".into(),
            "application/vnd.oci.image.manifest.v1+json".into(),
        )],
        total: FLOOD,
        announce: false,
    })
    .await;
    let err = manifest_error_from_flood(&server).await;
    assert!(
        matches!(err, RegistryError::ManifestTooLarge { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("4194304 bytes"), "{err}");
}

#[tokio::test]
async fn a_manifest_that_never_finishes_fails_at_the_request_deadline() {
    let server = Server::start(|_| Reply::Trickle {
        length: 1000,
        step: 1,
        every: Duration::from_millis(100),
    })
    .await;
    let started = Instant::now();
    let err = client(&[&server.addr], |o| {
        o.request_timeout = Duration::from_secs(1)
    })
    .manifest(&server.image("team/app:1"), "1", &[])
    .await
    .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, RegistryError::TooSlow { .. }), "{err}");
    assert!(err.to_string().contains("1s request deadline"), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test]
async fn a_redirect_loop_ends_after_a_bounded_number_of_hops() {
    let server = Server::start(|seen| reply(307, &[("Location", &seen.path)], b"")).await;
    let err = client(&[&server.addr], |_| {})
        .manifest(&server.image("team/app:1"), "1", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("more than 10 redirects"), "{err}");
    assert!(
        server.seen().len() <= 11,
        "{} requests",
        server.seen().len()
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with openssl.
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl is installed");
        assert!(status.success(), "openssl {args:?}");
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    run(&[
        &["req", "-x509", "-nodes", "-days", "2"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=hostile test CA",
        ],
        &["-addext", "basicConstraints=critical,CA:TRUE"],
        &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    ]
    .concat());
    run(&[
        &["req", "-nodes"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
}

fn tls_acceptor(dir: &Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[tokio::test]
async fn a_redirect_from_https_to_plain_http_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let plain = Server::start(|_| manifest()).await;
    let target = format!("http://{}/v2/team/app/manifests/1", plain.addr);
    let secure = Server::start_with(
        Arc::new(move |_: &Seen| reply(307, &[("Location", &target)], b"")),
        Some(tls_acceptor(dir.path())),
    )
    .await;
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    // Even with the plain host listed insecure: a downgrade is never followed.
    let registry = client(&[&plain.addr], |o| o.ca_pem = vec![ca]);
    let err = registry
        .manifest(
            &secure.image("team/app:1"),
            "1",
            &[&Credential::basic("alice", "secret")],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Refused { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("refused a redirect from https to plain http"),
        "{err}"
    );
    assert_eq!(secure.seen().len(), 1, "the TLS server was asked");
    assert!(plain.seen().is_empty(), "{:?}", plain.seen());
}

fn basic_challenge() -> Reply {
    reply(401, &[("WWW-Authenticate", r#"Basic realm="test""#)], b"")
}

#[tokio::test]
async fn a_redirect_to_another_host_does_not_carry_the_authorization() {
    let other = Server::start(|_| manifest()).await;
    let target = format!("http://{}/elsewhere", other.addr);
    let origin = Server::start(move |seen: &Seen| match &seen.authorization {
        None => basic_challenge(),
        Some(_) => reply(307, &[("Location", &target)], b""),
    })
    .await;
    let registry = client(&[&origin.addr, &other.addr], |_| {});
    registry
        .manifest(
            &origin.image("team/app:1"),
            "1",
            &[&Credential::basic("alice", "secret")],
        )
        .await
        .expect("the redirect is followed");
    let asked = origin.seen();
    assert!(
        asked
            .last()
            .unwrap()
            .authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic ")),
        "{asked:?}"
    );
    let elsewhere = other.seen();
    assert_eq!(elsewhere.len(), 1);
    assert_eq!(elsewhere[0].authorization, None, "{elsewhere:?}");
}

/// A registry on `addr` whose token realm is `realm` and that accepts any bearer token.
fn token_protected(realm: String) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    move |seen: &Seen| match &seen.authorization {
        Some(a) if a.starts_with("Bearer ") => manifest(),
        _ => challenge(&realm),
    }
}

fn token_server(expires_in: u64) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    let issued = AtomicU64::new(0);
    move |_: &Seen| {
        let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
        reply(
            200,
            &[("Content-Type", "application/json")],
            format!(r#"{{"token":"tok-{n}","expires_in":{expires_in}}}"#).as_bytes(),
        )
    }
}

#[tokio::test]
async fn a_token_realm_on_plain_http_is_refused_unless_its_host_is_listed_insecure() {
    let tokens = Server::start(token_server(60)).await;
    let registry = Server::start(token_protected(format!("http://{}/token", tokens.addr))).await;
    let image = registry.image("team/app:1");

    let err = client(&[&registry.addr], |_| {})
        .manifest(&image, "1", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Refused { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!(
            "token realm http://{}/token is not https",
            tokens.addr
        )),
        "{err}"
    );
    assert!(tokens.seen().is_empty(), "{:?}", tokens.seen());

    client(&[&registry.addr, &tokens.addr], |_| {})
        .manifest(&image, "1", &[])
        .await
        .expect("a realm on a host listed insecure is used");
    assert_eq!(tokens.seen().len(), 1);
}

#[tokio::test]
async fn basic_credentials_are_not_sent_over_plain_http_to_a_host_not_listed_insecure() {
    let tokens = Server::start(token_server(60)).await;
    let registry = Server::start(token_protected(format!("http://{}/token", tokens.addr))).await;
    let err = client(&[&registry.addr], |_| {})
        .manifest(
            &registry.image("team/app:1"),
            "1",
            &[&Credential::basic("alice", "secret")],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Refused { .. }), "{err}");
    assert!(tokens.seen().is_empty(), "{:?}", tokens.seen());
    assert!(
        registry.seen().iter().all(|s| s.authorization.is_none()),
        "{:?}",
        registry.seen()
    );
}

#[tokio::test]
async fn an_expired_token_is_fetched_again() {
    let tokens = Server::start(token_server(1)).await;
    let registry = Server::start(token_protected(format!("http://{}/token", tokens.addr))).await;
    let client = client(&[&registry.addr, &tokens.addr], |_| {});
    let image = registry.image("team/app:1");
    client.manifest(&image, "1", &[]).await.unwrap();
    client.manifest(&image, "1", &[]).await.unwrap();
    assert_eq!(tokens.seen().len(), 1, "a live token is reused");
    // expires_in 1 s: used for 0.75 s.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    client.manifest(&image, "1", &[]).await.unwrap();
    assert_eq!(tokens.seen().len(), 2, "an expired token is fetched again");
    let last = registry.seen().last().unwrap().authorization.clone();
    assert_eq!(last.as_deref(), Some("Bearer tok-2"));
}

#[tokio::test]
async fn credentials_for_the_original_registry_are_not_sent_to_its_mirror() {
    let mirror = Server::start(|seen: &Seen| match seen.authorization {
        None => basic_challenge(),
        Some(_) => manifest(),
    })
    .await;
    let config = format!(
        r#"{{"auths": {{"origin.example": {{"username": "alice", "password": "origin-secret"}},
                       "{}": {{"username": "bob", "password": "mirror-secret"}}}}}}"#,
        mirror.addr
    );
    let keyring = Keyring::from_docker_config(config.as_bytes()).unwrap();
    let client = client(&[&mirror.addr], |_| {});
    let image = mirror.image("team/app:1");

    // What the operator does today: the credentials of the image as named, sent to the mirror.
    let origin = keyring.lookup("origin.example", "team/app");
    let err = client.manifest(&image, "1", &origin).await.unwrap_err();
    assert!(matches!(err, RegistryError::Denied { .. }), "{err}");
    assert!(
        mirror.seen().iter().all(|s| s.authorization.is_none()),
        "{:?}",
        mirror.seen()
    );

    // Credentials configured for the mirror are sent to it.
    let own = keyring.lookup(&mirror.addr, "team/app");
    client.manifest(&image, "1", &own).await.unwrap();
    let basic = mirror.seen().last().unwrap().authorization.clone().unwrap();
    assert_eq!(
        basic,
        format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                "bob:mirror-secret"
            )
        )
    );
}

const BLOB: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// Reads a 10,000-byte blob that the server trickles `step` bytes every `every`, with `tune`d
/// options: the error that ends it, and how long that took.
async fn trickled_blob(
    step: usize,
    every: Duration,
    tune: impl FnOnce(&mut RegistryOptions),
) -> (RegistryError, Duration) {
    let server = Server::start(move |_| Reply::Trickle {
        length: 10_000,
        step,
        every,
    })
    .await;
    let client = client(&[&server.addr], tune);
    let started = Instant::now();
    let stream = client
        .blob(&server.image("team/app:1"), BLOB, 10_000, &[])
        .await
        .unwrap();
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            return (e, started.elapsed());
        }
    }
    panic!("the blob ended without an error");
}

#[tokio::test]
async fn a_slow_loris_blob_fails_within_the_stall_window() {
    // One byte every 300 ms against "64 bytes per second of waiting": the scaled-down form of
    // one byte every 20 s against the default 64 KiB per 30 s.
    let (err, took) = trickled_blob(1, Duration::from_millis(300), |o| {
        o.blob_stall_window = Duration::from_secs(1);
        o.blob_min_window_bytes = 64;
    })
    .await;
    assert!(matches!(err, RegistryError::TooSlow { .. }), "{err}");
    assert!(err.to_string().contains(BLOB), "{err}");
    assert!(
        err.to_string().contains("less than the 64 bytes required"),
        "{err}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn a_blob_trickling_just_above_the_stall_rule_fails_at_its_deadline() {
    // 2,000 bytes/s passes the stall rule (1,000 per second of waiting) but not the deadline:
    // 1 s plus 10,000 bytes at 10,000 bytes/s = 2 s, for a transfer that needs 5 s.
    let (err, took) = trickled_blob(200, Duration::from_millis(100), |o| {
        o.request_timeout = Duration::from_secs(1);
        o.blob_stall_window = Duration::from_secs(1);
        o.blob_min_window_bytes = 1_000;
        o.blob_min_throughput = 10_000;
    })
    .await;
    assert!(matches!(err, RegistryError::TooSlow { .. }), "{err}");
    assert!(err.to_string().contains("deadline of 2s"), "{err}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "took {took:?}"
    );
}

// A range of a blob (the table-of-contents path): a registry can answer anything to a `Range`
// request; the client takes exactly the bytes asked for or says why not, and never reads a body
// it did not ask for.

const RANGE_BLOB_SIZE: u64 = 1_000_000;

async fn range_of(server: &Server, offset: u64, len: u64) -> Result<RangeRead, RegistryError> {
    client(&[&server.addr], |_| {})
        .blob_range(
            &server.image("team/app:1"),
            BLOB,
            RANGE_BLOB_SIZE,
            offset,
            len,
            &[],
        )
        .await
}

#[tokio::test]
async fn a_range_is_read_exactly_from_a_206_answer() {
    let server = Server::start(|_| {
        reply(
            206,
            &[("Content-Range", "bytes 100-109/1000000")],
            b"0123456789",
        )
    })
    .await;
    match range_of(&server, 100, 10).await.unwrap() {
        RangeRead::Bytes(b) => assert_eq!(&b[..], b"0123456789"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_registry_that_ignores_range_is_reported_without_its_1_gib_body_being_read() {
    let server = Server::start(|_| Reply::Flood {
        status: 200,
        headers: vec![],
        total: FLOOD,
        announce: true,
    })
    .await;
    let answer = range_of(&server, 100, 10).await.unwrap();
    assert!(
        matches!(answer, RangeRead::Ignored { status: 200 }),
        "{answer:?}"
    );
    let sent = server.sent_when_closed().await;
    assert!(sent < FAR_BELOW, "the server sent {sent} bytes");
}

#[tokio::test]
async fn a_206_answer_for_another_range_is_refused_and_named() {
    for content_range in [
        "bytes 0-9/1000000",
        "bytes 100-109/5",
        "",
        "bytes */1000000",
    ] {
        let server = Server::start(move |_| {
            let headers: &[(&str, &str)] = if content_range.is_empty() {
                &[]
            } else {
                &[("Content-Range", content_range)]
            };
            reply(206, headers, b"0123456789")
        })
        .await;
        let err = range_of(&server, 100, 10).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, RegistryError::Refused { .. }), "{text}");
        assert!(
            text.contains(&format!("bytes 100-109 of blob {BLOB}")),
            "{text}"
        );
        assert!(text.contains("not the range asked for"), "{text}");
    }
}

#[tokio::test]
async fn a_206_answer_longer_or_shorter_than_the_range_is_refused_at_the_range_length() {
    for announce in [true, false] {
        let server = Server::start(move |_| Reply::Flood {
            status: 206,
            headers: vec![("Content-Range".into(), "bytes 100-109/1000000".into())],
            total: FLOOD,
            announce,
        })
        .await;
        let err = range_of(&server, 100, 10).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("longer than the 10 bytes asked for"),
            "{err}"
        );
        let sent = server.sent_when_closed().await;
        assert!(sent < FAR_BELOW, "the server sent {sent} bytes");
    }
    let server =
        Server::start(|_| reply(206, &[("Content-Range", "bytes 100-109/1000000")], b"01234"))
            .await;
    let err = range_of(&server, 100, 10).await.unwrap_err();
    assert!(err.to_string().contains("holds 5 of the 10 bytes"), "{err}");
}

#[tokio::test]
async fn a_range_outside_the_blob_or_empty_is_not_requested() {
    let server = Server::start(|_| reply(500, &[], b"")).await;
    for (offset, len) in [(RANGE_BLOB_SIZE - 5, 10), (0, 0), (u64::MAX - 1, 10)] {
        let err = range_of(&server, offset, len).await.unwrap_err();
        assert!(matches!(err, RegistryError::Refused { .. }), "{err}");
    }
    assert!(server.seen().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn a_range_above_the_cap_is_not_requested() {
    let server = Server::start(|_| reply(500, &[], b"")).await;
    let err = client(&[&server.addr], |_| {})
        .blob_range(
            &server.image("team/app:1"),
            BLOB,
            u64::MAX,
            0,
            MAX_RANGE_BYTES + 1,
            &[],
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("a range must hold 1 to"), "{err}");
    assert!(server.seen().is_empty(), "nothing was sent");
}

async fn ranges_of(server: &Server, ranges: &[(u64, u64)]) -> Result<RangesRead, RegistryError> {
    client(&[&server.addr], |_| {})
        .blob_ranges(
            &server.image("team/app:1"),
            BLOB,
            RANGE_BLOB_SIZE,
            ranges,
            &[],
        )
        .await
}

#[tokio::test]
async fn several_ranges_are_read_from_a_multipart_answer_and_counted_with_their_framing() {
    let body = b"--B\r\nContent-Range: bytes 0-2/1000000\r\n\r\nabc\r\n--B\r\nContent-Range: bytes 10-11/1000000\r\n\r\nde\r\n--B--\r\n";
    let server = Server::start(move |_| {
        reply(
            206,
            &[("Content-Type", "multipart/byteranges; boundary=B")],
            body,
        )
    })
    .await;
    match ranges_of(&server, &[(0, 3), (10, 2)]).await.unwrap() {
        RangesRead::Parts { parts, fetched } => {
            assert_eq!(parts, vec![&b"abc"[..], &b"de"[..]]);
            assert_eq!(fetched, body.len() as u64);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_multipart_request_answered_otherwise_is_refused_or_reported_unread() {
    // One merged part instead of two.
    let server = Server::start(|_| {
        reply(
            206,
            &[("Content-Range", "bytes 0-11/1000000")],
            b"abcdefghijkl",
        )
    })
    .await;
    let err = ranges_of(&server, &[(0, 3), (10, 2)]).await.unwrap_err();
    assert!(
        err.to_string().contains("not multipart/byteranges"),
        "{err}"
    );
    // Parts of other ranges.
    let server = Server::start(|_| {
        reply(
            206,
            &[("Content-Type", "multipart/byteranges; boundary=B")],
            b"--B\r\nContent-Range: bytes 0-2/1000000\r\n\r\nabc\r\n--B\r\nContent-Range: bytes 20-21/1000000\r\n\r\nde\r\n--B--\r\n",
        )
    })
    .await;
    let err = ranges_of(&server, &[(0, 3), (10, 2)]).await.unwrap_err();
    assert!(
        err.to_string().contains("part 1 has Content-Range"),
        "{err}"
    );
    // A flood of parts: cut at the ranges' length plus their framing.
    let server = Server::start(|_| Reply::Flood {
        status: 206,
        headers: vec![(
            "Content-Type".into(),
            "multipart/byteranges; boundary=B".into(),
        )],
        total: FLOOD,
        announce: false,
    })
    .await;
    let err = ranges_of(&server, &[(0, 3), (10, 2)]).await.unwrap_err();
    assert!(err.to_string().contains("longer than the 5 bytes"), "{err}");
    assert!(server.sent_when_closed().await < FAR_BELOW);
    // The whole blob: not read.
    let server = Server::start(|_| Reply::Flood {
        status: 200,
        headers: vec![],
        total: FLOOD,
        announce: true,
    })
    .await;
    let answer = ranges_of(&server, &[(0, 3), (10, 2)]).await.unwrap();
    assert!(
        matches!(answer, RangesRead::Ignored { status: 200 }),
        "{answer:?}"
    );
    assert!(server.sent_when_closed().await < FAR_BELOW);
}

#[tokio::test]
async fn unsorted_touching_or_too_many_ranges_are_not_requested() {
    let server = Server::start(|_| reply(500, &[], b"")).await;
    let many: Vec<(u64, u64)> = (0..=MAX_RANGES_PER_REQUEST as u64)
        .map(|i| (i * 10, 1))
        .collect();
    for ranges in [&[(10, 2), (0, 3)][..], &[(0, 3), (3, 2)], &[], &many] {
        let err = ranges_of(&server, ranges).await.unwrap_err();
        assert!(matches!(err, RegistryError::Refused { .. }), "{err}");
    }
    assert!(server.seen().is_empty(), "nothing was sent");
}
