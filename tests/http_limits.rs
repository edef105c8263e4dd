//! The public HTTP port bounds what a client can hold: stalled connections (silent sockets,
//! half a request line, partial headers, a body that never arrives, idle keep-alive, headers
//! dribbled a byte at a time) are closed after `[http]` header and request timeouts while
//! good requests are served, connections over the cap wait their turn instead of being
//! lost, and each endpoint reads a body of its own size at most.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::api::*;
use common::ca::run;

/// `GET {base}{path}` with curl: (HTTP code, seconds taken).
fn curl_get(base: &str, path: &str) -> (String, f64) {
    let out = run(Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}"])
        .args(["--max-time", "30"])
        .arg(format!("{base}{path}")));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    let code = words.next().unwrap_or("").to_owned();
    let secs = words
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::MAX);
    (code, secs)
}

/// Read until the server closes the connection (EOF or reset) or `limit` passes; the
/// bytes read and whether it closed.
fn until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

#[test]
fn stalled_connections_are_closed_while_good_requests_are_served() {
    let ca = ApiCa::with_http(
        "header_timeout_seconds = 2\nrequest_timeout_seconds = 3\nmax_connections = 40\n",
    );
    let d = Daemon::start(&ca);
    let base = d.http.clone().expect("[http]");
    let addr = base.trim_start_matches("http://").to_owned();
    let connect = || TcpStream::connect(&addr).expect("connect");

    // Five of each kind of stall: thirty connections, under the cap of forty.
    let mut stalled: Vec<(&str, TcpStream)> = Vec::new();
    for _ in 0..5 {
        stalled.push(("silent", connect()));
        let mut s = connect();
        s.write_all(b"GET /heal").unwrap();
        stalled.push(("half a request line", s));
        let mut s = connect();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: signet\r\n")
            .unwrap();
        stalled.push(("partial headers", s));
        let mut s = connect();
        s.write_all(
            b"POST /ocsp HTTP/1.1\r\nHost: signet\r\nContent-Type: application/ocsp-request\r\n\
              Content-Length: 1000\r\n\r\n0123456789",
        )
        .unwrap();
        stalled.push(("partial body", s));
        let mut s = connect();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: signet\r\n\r\n")
            .unwrap();
        let mut first = [0u8; 12];
        s.read_exact(&mut first).unwrap();
        assert_eq!(
            &first, b"HTTP/1.1 200",
            "the keep-alive request was answered"
        );
        stalled.push(("idle keep-alive", s));
    }
    // One dribbling a header byte every 300 ms: the deadline is for the whole head.
    let dribbler = {
        let mut s = connect();
        std::thread::spawn(move || {
            let start = Instant::now();
            s.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
            while start.elapsed() < Duration::from_secs(20) {
                if s.write_all(b"X").is_err() {
                    return Some(start.elapsed());
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            None
        })
    };

    // Good requests are answered at once meanwhile.
    for path in ["/healthz", "/ca/chain.p7b", "/crl/issuing-ec.crl"] {
        let (code, secs) = curl_get(&base, path);
        assert_eq!(code, "200", "{path} while connections stall");
        assert!(secs < 2.0, "{path} took {secs} s while connections stall");
    }

    // Every stalled connection is closed by the server within the timeouts (2 s for heads,
    // 3 s for a request with its body), with room for a loaded machine.
    let started = Instant::now();
    for (kind, mut s) in stalled {
        let left = Duration::from_secs(15).saturating_sub(started.elapsed());
        let (got, closed) = until_closed(&mut s, left);
        assert!(closed, "a {kind} connection is still open after 15 s");
        if kind == "partial body" {
            assert!(
                got.starts_with(b"HTTP/1.1 408"),
                "a body that never arrives gets 408: {:?}",
                String::from_utf8_lossy(&got)
            );
        }
    }
    let dribbled = dribbler.join().unwrap();
    assert!(
        dribbled.is_some_and(|t| t < Duration::from_secs(10)),
        "a dribbled head is cut off: {dribbled:?}"
    );
    let (ok, _) = curl_get(&base, "/healthz");
    assert_eq!(ok, "200");
}

#[test]
fn connections_over_the_cap_wait_their_turn_and_bodies_are_bounded_per_endpoint() {
    let ca = ApiCa::with_http(&format!(
        "header_timeout_seconds = 2\nmax_connections = 8\n{TSA_AND_AUDIT}"
    ));
    let d = Daemon::start(&ca);
    let base = d.http.clone().expect("[http]");
    let addr = base.trim_start_matches("http://").to_owned();
    // Eight silent connections take every place.
    let silent: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    // The ninth waits until the header timeout frees a place, then is served.
    let (code, secs) = curl_get(&base, "/healthz");
    assert_eq!(code, "200", "served once a place is free");
    assert!(
        (1.0..10.0).contains(&secs),
        "it waited for a place (took {secs} s; the header timeout is 2 s)"
    );
    drop(silent);

    // A timestamp query over 16 KiB is refused without reading it all; an OCSP request
    // over 64 KiB is malformedRequest: both with HTTP 200 and a signed-protocol answer.
    let dir = ca.dir.join("bodies");
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.bin");
    std::fs::write(&big, vec![0x30u8; 20 * 1024]).unwrap();
    let (code, _) = curl_post(
        &format!("{base}/tsa"),
        "application/timestamp-query",
        &big,
        &dir.join("r.tsr"),
    );
    assert_eq!(code, 200);
    let text = run(Command::new("openssl")
        .args(["ts", "-reply", "-text", "-in"])
        .arg(dir.join("r.tsr")));
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("Status: Rejected"), "{text}");
    std::fs::write(&big, vec![0x30u8; 100 * 1024]).unwrap();
    let (code, _) = curl_post(
        &format!("{base}/ocsp"),
        "application/ocsp-request",
        &big,
        &dir.join("r.ocsp"),
    );
    assert_eq!(code, 200);
    let answer = std::fs::read(dir.join("r.ocsp")).unwrap();
    // OCSPResponse { responseStatus malformedRequest (1) } and nothing else.
    assert_eq!(answer, [0x30, 0x03, 0x0a, 0x01, 0x01]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_to_the_ra_port_are_closed_while_calls_are_served() {
    let ca = ApiCa::with_api_settings(
        "handshake_timeout_seconds = 2\nmax_connection_age_seconds = 4\nkeepalive_seconds = 5\n",
    );
    let d = Daemon::start(&ca);
    let addr = format!("127.0.0.1:{}", d.port);
    let mut stalled: Vec<(&str, TcpStream)> = Vec::new();
    for _ in 0..5 {
        stalled.push(("silent", TcpStream::connect(&addr).unwrap()));
        let mut s = TcpStream::connect(&addr).unwrap();
        // The first bytes of a TLS record carrying a ClientHello, and nothing more.
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])
            .unwrap();
        stalled.push(("half a ClientHello", s));
    }
    // A client that completes the mutual-TLS handshake and then says nothing.
    let mut quiet = Command::new("openssl")
        .args(["s_client", "-quiet", "-alpn", "h2", "-connect", &addr])
        .arg("-cert")
        .arg(ca.tls.pem("ra-one"))
        .arg("-key")
        .arg(ca.tls.key("ra-one"))
        .arg("-CAfile")
        .arg(ca.tls.pem("root"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    // Calls are served meanwhile.
    let mut c = d.client("ra-one").await;
    c.get_ca_chain(signet::api::pb::GetCaChainRequest::default())
        .await
        .expect("a call while connections stall");

    let started = Instant::now();
    for (kind, mut s) in stalled {
        let left = Duration::from_secs(10).saturating_sub(started.elapsed());
        let (_, closed) = until_closed(&mut s, left);
        assert!(
            closed,
            "a {kind} connection to the RA port is still open after 10 s"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = quiet.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = quiet.kill();
    assert!(
        status.is_some(),
        "a connection that completed TLS and stayed silent was not closed within 20 s"
    );
    let log = d.log_text();
    assert!(
        log.contains("no complete handshake within 2 s"),
        "the refused handshakes are logged:\n{log}"
    );
    c.get_ca_chain(signet::api::pb::GetCaChainRequest::default())
        .await
        .expect("calls still served");
}
