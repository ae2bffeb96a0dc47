//! A tiny HTTP/1.1 file server for firmware network boots (HTTP boot fetches from it through
//! QEMU's user network, where the host is `10.0.2.2`).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

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
/// `Connection: close`; each is served by its own thread.
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
#[derive(Debug)]
pub struct HttpFileServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<HttpRequest>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl HttpFileServer {
    /// Binds `127.0.0.1:0` and starts serving `files`.
    ///
    /// # Errors
    ///
    /// Binding or spawning the thread failed.
    pub fn start(files: Vec<HttpFile>) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let files = Arc::new(files);
        let acceptor = {
            let requests = Arc::clone(&requests);
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("testkit-http".into())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        let files = Arc::clone(&files);
                        let requests = Arc::clone(&requests);
                        // Detached: it ends when the client closes or goes quiet.
                        let _ = thread::Builder::new()
                            .name("testkit-http-conn".into())
                            .spawn(move || {
                                let _ = serve_connection(stream, &files, &requests);
                            });
                    }
                })?
        };
        Ok(HttpFileServer {
            addr,
            requests,
            stop,
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
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so that the thread sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Answers requests on one connection until the client closes it, asks to, or is idle for
/// 30 s.
fn serve_connection(
    stream: TcpStream,
    files: &[HttpFile],
    requests: &Mutex<Vec<HttpRequest>>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let request_line = request_line.trim_end();
        if request_line.is_empty() {
            continue; // RFC 9112 §2.2: ignore empty lines before a request line
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        // A request body (none expected) is skipped so that the next request parses.
        if let Some(len) = header("Content-Length").and_then(|v| v.parse::<u64>().ok()) {
            io::copy(&mut (&mut reader).take(len), &mut io::sink())?;
        }
        let close = header("Connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));

        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let file = files.iter().find(|f| f.path == path);
        let (status, reason, content_type, body): (u16, &str, &str, &[u8]) =
            match (method.as_str(), file) {
                ("GET" | "HEAD", Some(f)) => (200, "OK", &f.content_type, &f.data),
                ("GET" | "HEAD", None) => (404, "Not Found", "text/plain", b"not found\n"),
                _ => (
                    405,
                    "Method Not Allowed",
                    "text/plain",
                    b"GET or HEAD only\n",
                ),
            };
        let mut head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        );
        if status == 405 {
            head.push_str("Allow: GET, HEAD\r\n");
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let is_head = method == "HEAD";
        requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(HttpRequest {
                method,
                path,
                headers: headers.clone(),
                status,
            });
        writer.write_all(head.as_bytes())?;
        if !is_head {
            writer.write_all(body)?;
        }
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn serves_get_and_head_and_records_them() {
        let server = server();
        // Keep-alive: two requests on one connection, the second closes it.
        let answer = exchange(
            &server,
            "HEAD /app.efi HTTP/1.1\r\nHost: x\r\n\r\n\
             GET /app.efi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/efi\r\nContent-Length: 10\r\n";
        assert_eq!(
            answer,
            format!("{head}\r\n{head}Connection: close\r\n\r\nMZ-payload")
        );
        let requests = server.requests();
        let lines: Vec<_> = requests.iter().map(HttpRequest::line).collect();
        assert_eq!(lines, ["HEAD /app.efi", "GET /app.efi"]);
        assert_eq!(requests[1].status, 200);
        assert!(requests[0]
            .headers
            .contains(&("Host".to_string(), "x".to_string())));
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
        let statuses: Vec<_> = server.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [404, 405]);
    }

    #[test]
    fn dropping_stops_listening() {
        let server = server();
        let port = server.port();
        drop(server);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
