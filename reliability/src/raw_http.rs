//! A raw HTTP/1.1 client: it writes the request bytes itself, so a test can send any header
//! bytes (NUL, bare CR, non-UTF-8, oversized), and reads the answer with a small parser.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The longest response head the client accepts.
const MAX_HEAD: usize = 64 * 1024;
/// The longest response body the client accepts.
const MAX_BODY: usize = 1024 * 1024;

/// One answer.
#[derive(Debug, Clone)]
pub struct RawReply {
    /// Status code.
    pub status: u16,
    /// Header fields in order (names lower-cased).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body.
    pub body: Vec<u8>,
}

impl RawReply {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Every `Set-Cookie` value (lossy text).
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(name, _)| name == "set-cookie")
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
            .collect()
    }

    /// The first value of header `name` (lower-case), as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The value of cookie `name` set by this answer, if any (`Some("")` for a removal).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().into_iter().find_map(|set| {
            let first = set.split(';').next()?;
            let (n, v) = first.split_once('=')?;
            (n.trim() == name).then(|| v.trim().to_owned())
        })
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Reads one response from `reader`.
pub async fn read_reply<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<RawReply> {
    let mut head_len = 0;
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).await?;
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before any answer",
        ));
    }
    head_len += line.len();
    let status_line = String::from_utf8_lossy(&line).into_owned();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Err(bad("connection closed inside the response head"));
        }
        head_len += n;
        if head_len > MAX_HEAD {
            return Err(bad("response head too large"));
        }
        let trimmed = line.trim_ascii_end();
        if trimmed.is_empty() {
            break;
        }
        let at = trimmed
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| bad("header line without a colon"))?;
        let name = String::from_utf8_lossy(&trimmed[..at]).to_ascii_lowercase();
        headers.push((name, trimmed[at + 1..].trim_ascii().to_vec()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).to_ascii_lowercase())
    };
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            reader.read_until(b'\n', &mut line).await?;
            let size_text = String::from_utf8_lossy(line.trim_ascii());
            let size_text = size_text.split(';').next().unwrap_or("");
            let size =
                usize::from_str_radix(size_text.trim(), 16).map_err(|_| bad("bad chunk size"))?;
            if body.len() + size > MAX_BODY {
                return Err(bad("response body too large"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).await?;
            line.clear();
            reader.read_until(b'\n', &mut line).await?;
            if size == 0 {
                break;
            }
        }
    } else if let Some(length) = find("content-length") {
        let length: usize = length
            .trim()
            .parse()
            .map_err(|_| bad("bad content-length"))?;
        if length > MAX_BODY {
            return Err(bad("response body too large"));
        }
        body.resize(length, 0);
        reader.read_exact(&mut body).await?;
    } else if status >= 200 && status != 204 && status != 304 {
        reader.take(MAX_BODY as u64).read_to_end(&mut body).await?;
    }
    Ok(RawReply {
        status,
        headers,
        body,
    })
}

/// `GET path` with `extra_head` (complete header lines, each ending in CRLF) inserted
/// verbatim, on a fresh connection that the server is asked to close.
pub fn get_request(path: &str, extra_head: &[u8]) -> Vec<u8> {
    let mut out =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n").into_bytes();
    out.extend_from_slice(extra_head);
    out.extend_from_slice(b"\r\n");
    out
}

/// Sends `request` (raw bytes) on a fresh connection and reads one answer, within
/// `timeout`.
pub async fn send_raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> io::Result<RawReply> {
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        let mut stream = BufReader::new(stream);
        stream.get_mut().write_all(request).await?;
        stream.get_mut().flush().await?;
        read_reply(&mut stream).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))?
}

/// A browser-like client for one session cookie over one keep-alive connection.
#[derive(Debug)]
pub struct KeepAliveClient {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    /// The cookie name the client keeps.
    pub cookie_name: String,
    /// The cookie's current value, if the server set one.
    pub cookie: Option<String>,
    /// How many times the server set the cookie to a new value.
    pub cookie_changes: usize,
}

impl KeepAliveClient {
    /// A client of `addr` keeping cookie `cookie_name`.
    pub fn new(addr: SocketAddr, cookie_name: &str) -> Self {
        Self {
            addr,
            conn: None,
            cookie_name: cookie_name.to_owned(),
            cookie: None,
            cookie_changes: 0,
        }
    }

    /// `GET path` with the cookie; keeps the cookie the answer sets. Transport errors are
    /// returned (a server that panics drops the connection), never retried.
    pub async fn get(&mut self, path: &str) -> io::Result<RawReply> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.conn = Some(BufReader::new(stream));
        }
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
        if let Some(value) = &self.cookie {
            request.push_str(&format!("Cookie: {}={value}\r\n", self.cookie_name));
        }
        request.push_str("\r\n");
        let conn = self.conn.as_mut().expect("connected above");
        let result = async {
            conn.get_mut().write_all(request.as_bytes()).await?;
            read_reply(conn).await
        }
        .await;
        let reply = match result {
            Ok(reply) => reply,
            Err(error) => {
                self.conn = None;
                return Err(error);
            }
        };
        if reply
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            self.conn = None;
        }
        if let Some(value) = reply.cookie(&self.cookie_name) {
            let removal = value.is_empty();
            if removal {
                self.cookie = None;
            } else if self.cookie.as_deref() != Some(value.as_str()) {
                self.cookie = Some(value);
            }
            self.cookie_changes += 1;
        }
        Ok(reply)
    }
}
