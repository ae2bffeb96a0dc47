//! A tiny HTTP/1.1 file server for firmware network boots (HTTP boot fetches from it through
//! QEMU's user network, where the host is `10.0.2.2`). The protocol is `tiny_http`'s; this
//! module only chooses the answers and records the requests.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use tiny_http::{Header, Method, Response, Server};

/// A file that [`HttpFileServer`] serves.
#[derive(Debug, Clone)]
pub struct HttpFile {
    /// Absolute request path, e.g. `"/app.efi"` (compared exactly, query included).
    pub path: String,
    /// `Content-Type` of the answer, e.g. `"application/efi"`.
    pub content_type: String,
    /// The body.
    pub data: Vec<u8>,
}

impl HttpFile {
    /// A file served at `path` as `content_type`.
    pub fn new(path: &str, content_type: &str, data: Vec<u8>) -> Self {
        HttpFile {
            path: path.into(),
            content_type: content_type.into(),
            data,
        }
    }
}

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The request target as sent, e.g. `/app.efi`.
    pub path: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Status code of the answer.
    pub status: u16,
}

impl HttpRequest {
    /// `"GET /app.efi"`, for assertions and messages.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// Serves fixed files over HTTP/1.1 on `127.0.0.1` at an ephemeral port, from a thread, until
/// dropped, and records every request.
///
/// `GET` and `HEAD` of a listed path answer `200` with `Content-Type` and `Content-Length`
/// (`HEAD` without the body, as HTTP boot asks for the size first); other paths get `404`,
/// other methods `405`. Connections are kept alive unless the client sends
/// `Connection: close` (`tiny_http` handles the connections).
///
/// ```no_run
/// use testkit::{HttpFile, HttpFileServer};
///
/// let server = HttpFileServer::start(vec![HttpFile::new("/a.efi", "application/efi", vec![1])])?;
/// let url = format!("http://10.0.2.2:{}/a.efi", server.port()); // as a QEMU guest sees it
/// // … boot …
/// assert!(server.requests().iter().any(|r| r.line() == "GET /a.efi"));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct HttpFileServer {
    addr: SocketAddr,
    server: Arc<Server>,
    requests: Arc<Mutex<Vec<HttpRequest>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HttpFileServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFileServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl HttpFileServer {
    /// Binds `127.0.0.1:0` and starts serving `files`.
    ///
    /// # Errors
    ///
    /// Binding or spawning the thread failed.
    pub fn start(files: Vec<HttpFile>) -> io::Result<Self> {
        let server = Server::http((Ipv4Addr::LOCALHOST, 0)).map_err(io::Error::other)?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("tiny_http listens on no IP address"))?;
        let server = Arc::new(server);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let server = Arc::clone(&server);
            let requests = Arc::clone(&requests);
            thread::Builder::new()
                .name("testkit-http".into())
                .spawn(move || {
                    // Ends when `unblock` is called on drop.
                    for request in server.incoming_requests() {
                        answer(request, &files, &requests);
                    }
                })?
        };
        Ok(HttpFileServer {
            addr,
            server,
            requests,
            acceptor: Some(acceptor),
        })
    }

    /// The port it listens on (at `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The requests received so far, in order of arrival.
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for HttpFileServer {
    fn drop(&mut self) {
        // Ends `incoming_requests`; dropping the last `Server` then closes the socket.
        self.server.unblock();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Answers one request and records it.
fn answer(request: tiny_http::Request, files: &[HttpFile], requests: &Mutex<Vec<HttpRequest>>) {
    let method = request.method().clone();
    let path = request.url().to_string();
    let file = files.iter().find(|f| f.path == path);
    let (status, content_type, body): (u16, &str, &[u8]) = match (&method, file) {
        (Method::Get | Method::Head, Some(f)) => (200, &f.content_type, &f.data),
        (Method::Get | Method::Head, None) => (404, "text/plain", b"not found\n"),
        _ => (405, "text/plain", b"GET or HEAD only\n"),
    };
    let header = |name: &str, value: &str| {
        Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("an ASCII header")
    };
    // Content-Length always (never chunked): HTTP boot reads the size from HEAD's answer.
    let mut response = Response::from_data(body)
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
        .with_chunked_threshold(usize::MAX);
    if status == 405 {
        response.add_header(header("Allow", "GET, HEAD"));
    }
    requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(HttpRequest {
            method: method.to_string(),
            path,
            headers: request
                .headers()
                .iter()
                .map(|h| (h.field.to_string(), h.value.to_string()))
                .collect(),
            status,
        });
    // A client that went away is no failure of the server.
    let _ = request.respond(response);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn server() -> HttpFileServer {
        HttpFileServer::start(vec![HttpFile::new(
            "/app.efi",
            "application/efi",
            b"MZ-payload".to_vec(),
        )])
        .unwrap()
    }

    /// Sends `raw` on one connection and reads until the server closes it.
    fn exchange(server: &HttpFileServer, raw: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
        stream.write_all(raw.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    /// One answer: status line, header fields (names in lower case), body.
    type Answer = (String, Vec<(String, String)>, String);

    /// The answers in `raw`, bodies cut by their Content-Length, no body for `HEAD` (`heads`
    /// says which answers are to HEAD).
    fn answers(raw: &str, heads: &[bool]) -> Vec<Answer> {
        let mut rest = raw;
        let mut out = Vec::new();
        for &head in heads {
            let (head_text, after) = rest.split_once("\r\n\r\n").expect("a complete head");
            let mut lines = head_text.split("\r\n");
            let status = lines.next().unwrap().to_string();
            let fields: Vec<(String, String)> = lines
                .map(|l| l.split_once(": ").unwrap())
                .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
                .collect();
            let len: usize = fields
                .iter()
                .find(|(n, _)| n == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let len = if head { 0 } else { len };
            out.push((status, fields, after[..len].to_string()));
            rest = &after[len..];
        }
        assert_eq!(rest, "", "nothing after the last answer");
        out
    }

    fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn serves_get_and_head_and_records_them() {
        let server = server();
        // Keep-alive: two requests on one connection, the second closes it.
        let raw = exchange(
            &server,
            "HEAD /app.efi HTTP/1.1\r\nHost: x\r\n\r\n\
             GET /app.efi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        let answers = answers(&raw, &[true, false]);
        for (status, fields, _) in &answers {
            assert_eq!(status, "HTTP/1.1 200 OK", "{raw}");
            assert_eq!(
                field(fields, "content-type"),
                Some("application/efi"),
                "{raw}"
            );
            assert_eq!(field(fields, "content-length"), Some("10"), "{raw}");
            assert_eq!(field(fields, "transfer-encoding"), None, "{raw}");
        }
        assert_eq!(answers[0].2, "");
        assert_eq!(answers[1].2, "MZ-payload");
        let requests = server.requests();
        let lines: Vec<_> = requests.iter().map(HttpRequest::line).collect();
        assert_eq!(lines, ["HEAD /app.efi", "GET /app.efi"]);
        assert_eq!(requests[1].status, 200);
        assert!(requests[0]
            .headers
            .contains(&("Host".to_string(), "x".to_string())));
    }

    #[test]
    fn large_files_keep_their_content_length() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let server =
            HttpFileServer::start(vec![HttpFile::new("/big.efi", "application/efi", data)])
                .unwrap();
        let raw = exchange(
            &server,
            "HEAD /big.efi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        let answers = answers(&raw, &[true]);
        assert_eq!(
            field(&answers[0].1, "content-length"),
            Some("100000"),
            "{raw}"
        );
    }

    #[test]
    fn unknown_paths_and_methods_are_refused() {
        let server = server();
        let answer = exchange(
            &server,
            "GET /other.efi HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
        let answer = exchange(
            &server,
            "POST /app.efi HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        );
        assert!(
            answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{answer}"
        );
        assert!(answer.contains("\r\nAllow: GET, HEAD\r\n"), "{answer}");
        let statuses: Vec<_> = server.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [404, 405]);
    }

    #[test]
    fn dropping_stops_listening() {
        let server = server();
        let port = server.port();
        drop(server);
        // tiny_http's accept thread closes the socket once it sees the wake-up connection
        // its drop makes, just after the drop returns.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "port {port} still accepts connections 10 s after the drop"
            );
            thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
