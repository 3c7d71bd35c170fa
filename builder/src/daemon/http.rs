//! Just enough HTTP/1.1 for kilnd's API over a Unix socket: one request
//! per connection (`Connection: close`), bodies by `Content-Length`, and
//! streamed answers (`logs --follow`, events) as chunks written as they
//! come. httparse parses the heads. (tiny_http would serve the requests
//! too, but its chunked bodies wait for 8 KiB before anything is sent,
//! which a followed log cannot.)

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

/// Longest request or response head read.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted (create requests are small).
pub const MAX_BODY: usize = 1 << 20;

/// HTTP failures.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The peer's bytes are not HTTP kilnd can read.
    #[error("malformed HTTP: {0}")]
    Malformed(String),
    /// A head or body over the limits.
    #[error("{0} too large")]
    TooLarge(&'static str),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A request as the server reads it.
#[derive(Debug)]
pub struct Request {
    /// GET, POST, DELETE, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query's `name=value` pairs, percent-decoded.
    pub query: Vec<(String, String)>,
    /// The body (empty without one).
    pub body: Vec<u8>,
}

impl Request {
    /// The query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the flag `name` is set (`1`, `true`, or present and empty).
    pub fn flag(&self, name: &str) -> bool {
        self.param(name)
            .is_some_and(|v| matches!(v, "" | "1" | "true" | "yes"))
    }
}

/// Reads the head, through its blank line, from `reader`.
fn read_head(reader: &mut impl BufRead) -> Result<Vec<u8>, HttpError> {
    let mut head = Vec::new();
    loop {
        let n = reader.read_until(b'\n', &mut head)?;
        if n == 0 {
            return Err(HttpError::Malformed("connection closed in the head".into()));
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(HttpError::TooLarge("head"));
        }
    }
}

/// Reads one request from `stream` (a Unix or TCP socket).
///
/// # Errors
/// When the bytes are not an HTTP request or exceed the limits.
pub fn read_request(stream: impl Read) -> Result<Request, HttpError> {
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader)?;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    whole_head(parsed.parse(&head))?;
    let method = parsed.method.unwrap_or_default().to_owned();
    let target = parsed.path.unwrap_or("/");
    let length = content_length(parsed.headers)?;
    if length > MAX_BODY {
        return Err(HttpError::TooLarge("body"));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method,
        path: percent_decode(path),
        query: query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect(),
        body,
    })
}

/// httparse's verdict on a head read through its blank line.
fn whole_head(parsed: httparse::Result<usize>) -> Result<(), HttpError> {
    match parsed {
        Ok(httparse::Status::Complete(_)) => Ok(()),
        Ok(httparse::Status::Partial) => Err(HttpError::Malformed("partial head".into())),
        Err(e) => Err(HttpError::Malformed(e.to_string())),
    }
}

fn content_length(headers: &[httparse::Header<'_>]) -> Result<usize, HttpError> {
    match headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        None => Ok(0),
        Some(h) => std::str::from_utf8(h.value)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| HttpError::Malformed("bad Content-Length".into())),
    }
}

/// `%XX` and `+` decoded (invalid escapes kept as they are).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` with everything but unreserved characters percent-encoded (for
/// a path segment or query value).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// Writes a whole response.
///
/// # Errors
/// When the socket fails.
pub fn respond(
    mut stream: impl Write,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out)
}

/// A response whose body is written in chunks as it comes.
pub struct Chunked<'a> {
    stream: &'a UnixStream,
}

impl<'a> Chunked<'a> {
    /// Sends the head of a 200 response of `content_type`.
    ///
    /// # Errors
    /// When the socket fails.
    pub fn start(mut stream: &'a UnixStream, content_type: &str) -> std::io::Result<Self> {
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )?;
        Ok(Self { stream })
    }

    /// Sends `data` as one chunk (nothing for no data).
    ///
    /// # Errors
    /// When the socket fails (the client went away).
    pub fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut out = format!("{:x}\r\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        self.stream.write_all(&out)
    }

    /// Ends the body.
    ///
    /// # Errors
    /// When the socket fails.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.stream.write_all(b"0\r\n\r\n")
    }
}

/// A response as the client reads its head.
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The Content-Type header (empty without one).
    pub content_type: String,
    reader: BufReader<UnixStream>,
    /// Remaining body bytes by Content-Length; `None`: chunked or to EOF.
    length: Option<usize>,
    chunked: bool,
    /// Bytes left in the current chunk.
    chunk_left: usize,
    done: bool,
}

/// Sends `method path` with `body` (JSON when not empty) on `stream` and
/// reads the response's head.
///
/// # Errors
/// When the socket fails or the answer is not HTTP.
pub fn request(
    mut stream: UnixStream,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Response, HttpError> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: kilnd\r\nConnection: close\r\n");
    if let Some(body) = body {
        out.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&bytes)?;
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader)?;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    whole_head(parsed.parse(&head))?;
    let status = parsed.code.unwrap_or(0);
    let chunked = parsed.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
    });
    let length = if chunked {
        None
    } else if parsed
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        Some(content_length(parsed.headers)?)
    } else {
        None
    };
    let content_type = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-type"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned())
        .unwrap_or_default();
    Ok(Response {
        status,
        content_type,
        reader,
        length,
        chunked,
        chunk_left: 0,
        done: false,
    })
}

impl Response {
    /// The whole body.
    ///
    /// # Errors
    /// When the socket fails or the chunks are malformed.
    pub fn body(mut self) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        self.read_to_end(&mut body)?;
        Ok(body)
    }
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if !self.chunked {
            let want = match self.length {
                Some(0) => return Ok(0),
                Some(left) => buf.len().min(left),
                None => buf.len(),
            };
            let n = self.reader.read(&mut buf[..want])?;
            if let Some(left) = &mut self.length {
                *left -= n;
            }
            return Ok(n);
        }
        if self.chunk_left == 0 {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size")
                })?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.chunk_left = size;
        }
        let want = buf.len().min(self.chunk_left);
        let n = self.reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.chunk_left -= n;
        if self.chunk_left == 0 {
            let mut crlf = [0u8; 2];
            self.reader.read_exact(&mut crlf)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_coding_round_trips() {
        for text in ["web-1", "a b/c?d=e&f", "ünï", "%zz"] {
            assert_eq!(percent_decode(&percent_encode(text)), text);
        }
        assert_eq!(percent_decode("a%2Fb+c%zz"), "a/b c%zz");
    }

    #[test]
    fn a_request_and_a_chunked_answer_cross_a_socket_pair() {
        let (client, server) = UnixStream::pair().unwrap();
        let serving = std::thread::spawn(move || {
            let req = read_request(&server).unwrap();
            assert_eq!(req.method, "POST");
            assert_eq!(req.path, "/v1/vms/a b");
            assert_eq!(req.param("follow"), Some("1"));
            assert!(req.flag("follow") && !req.flag("all"));
            assert_eq!(req.body, b"{\"x\":1}");
            let mut chunks = Chunked::start(&server, "text/plain").unwrap();
            chunks.send(b"hello ").unwrap();
            chunks.send(b"").unwrap();
            chunks.send(b"world").unwrap();
            chunks.finish().unwrap();
        });
        let response =
            request(client, "POST", "/v1/vms/a%20b?follow=1", Some(b"{\"x\":1}")).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body().unwrap(), b"hello world");
        serving.join().unwrap();
    }

    #[test]
    fn garbage_and_oversized_requests_are_refused() {
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(b"NOT HTTP\r\n\r\n").unwrap();
        assert!(matches!(
            read_request(&server),
            Err(HttpError::Malformed(_))
        ));
        let (mut client, server) = UnixStream::pair().unwrap();
        client
            .write_all(
                format!(
                    "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                    MAX_BODY + 1
                )
                .as_bytes(),
            )
            .unwrap();
        assert!(matches!(
            read_request(&server),
            Err(HttpError::TooLarge("body"))
        ));
    }
}
