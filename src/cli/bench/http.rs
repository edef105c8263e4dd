//! The benchmark's HTTP/1.1 client for the status service (OCSP and timestamp requests):
//! keep-alive connections through hyper, one request at a time per connection.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;

use signet::config::Config;

/// One keep-alive connection to the status service.
pub(crate) struct Conn {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

/// The status service's address: `given` (`host:port` or `http://host:port`), else
/// `[http] listen` (an unspecified address means this host).
pub(crate) fn address(cfg: &Config, given: Option<&str>) -> Result<SocketAddr, String> {
    let mut addr = match given {
        Some(text) => text
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .map_err(|e| format!("--http {text:?}: {e} (give the daemon's HTTP host:port)"))?,
        None => {
            cfg.http
                .as_ref()
                .ok_or("the configuration has no [http] section; pass --http host:port")?
                .listen
        }
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(addr)
}

impl Conn {
    /// Connect (with TCP_NODELAY, as the daemon's own sockets).
    pub(crate) async fn open(addr: SocketAddr) -> Result<Conn, String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| format!("HTTP to {addr}: {e}"))?;
        tokio::spawn(conn);
        Ok(Conn { addr, sender })
    }

    /// POST `body` as `content_type` to `path`; the body of a 2xx answer.
    pub(crate) async fn post(
        &mut self,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<Bytes, String> {
        let req = hyper::Request::post(path)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(body));
        self.exchange(req).await
    }

    /// GET `path`; the body of a 2xx answer.
    pub(crate) async fn get(&mut self, path: &str) -> Result<Bytes, String> {
        self.exchange(hyper::Request::get(path).body(Full::new(Bytes::new())))
            .await
            .map_err(|e| format!("GET {path}: {e}"))
    }

    async fn exchange(
        &mut self,
        req: Result<hyper::Request<Full<Bytes>>, hyper::http::Error>,
    ) -> Result<Bytes, String> {
        let mut req = req.map_err(|e| e.to_string())?;
        let host = hyper::header::HeaderValue::from_str(&self.addr.to_string())
            .map_err(|e| e.to_string())?;
        req.headers_mut().insert(hyper::header::HOST, host);
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        Ok(body)
    }
}
