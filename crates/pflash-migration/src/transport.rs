//! Unix-socket and TCP connections for a migration, for a VMM (or `nvram flash`) that has no
//! channel of its own: `unix:PATH` and `tcp:HOST:PORT` addresses, a connect that retries
//! while the destination starts, and a listener that accepts one source within a timeout.
//!
//! ```
//! use pflash_migration::transport::{Address, Listener};
//! use std::time::Duration;
//!
//! let listener = Listener::bind(&"tcp:127.0.0.1:0".parse::<Address>()?)?;
//! let address = listener.local_address()?; // the real port
//! let source = std::thread::spawn(move || {
//!     address.connect(Duration::from_secs(5)).map(|_| ())
//! });
//! let connection = listener.accept(Duration::from_secs(5))?;
//! source.join().unwrap()?;
//! // `&connection` is Read + Write: hand it to `Outgoing::start` or `incoming`.
//! # let _ = connection;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A migration endpoint: `tcp:HOST:PORT` or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A TCP address, `HOST:PORT` (port 0 picks a free one when listening).
    Tcp(String),
    /// A unix socket path.
    Unix(PathBuf),
}

/// An address that is neither `tcp:HOST:PORT` nor `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither tcp:HOST:PORT nor unix:PATH")]
pub struct BadAddress(pub String);

impl std::str::FromStr for Address {
    type Err = BadAddress;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(addr) = s.strip_prefix("tcp:") {
            Ok(Address::Tcp(addr.to_owned()))
        } else if let Some(path) = s.strip_prefix("unix:") {
            Ok(Address::Unix(PathBuf::from(path)))
        } else {
            Err(BadAddress(s.to_owned()))
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "tcp:{a}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A connection or listening failure, naming the address.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Connecting, binding, accepting or configuring the socket failed.
    #[error("{address}: cannot {action}: {source}")]
    Io {
        /// The address.
        address: Address,
        /// What was being done: `connect`, `listen`, `accept a connection`…
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No source connected within the time given to [`Listener::accept`].
    #[error("no migration source connected to {address} within {timeout:?}")]
    AcceptTimeout {
        /// The address listened on.
        address: Address,
        /// How long it waited.
        timeout: Duration,
    },
}

/// One connection, either kind. `&Connection` is [`Read`] and [`Write`].
#[derive(Debug)]
pub enum Connection {
    /// Over TCP (with `TCP_NODELAY`: the small final records and replies must not wait).
    Tcp(TcpStream),
    /// Over a unix socket.
    Unix(UnixStream),
}

impl Address {
    /// Connects, retrying every 20 ms for up to `timeout` while the destination refuses or
    /// its socket does not exist yet (it may still be starting).
    ///
    /// # Errors
    ///
    /// [`TransportError::Io`] with the last error once `timeout` has passed, or at once for
    /// any other error.
    pub fn connect(&self, timeout: Duration) -> Result<Connection, TransportError> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = match self {
                Address::Tcp(a) => TcpStream::connect(a).map(|s| {
                    let _ = s.set_nodelay(true);
                    Connection::Tcp(s)
                }),
                Address::Unix(p) => UnixStream::connect(p).map(Connection::Unix),
            };
            match result {
                Ok(connection) => return Ok(connection),
                Err(e)
                    if Instant::now() < deadline
                        && matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                        ) =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(source) => {
                    return Err(TransportError::Io {
                        address: self.clone(),
                        action: "connect",
                        source,
                    })
                }
            }
        }
    }
}

impl Connection {
    /// Sets the read timeout (a stalled peer then fails a read instead of blocking).
    ///
    /// # Errors
    ///
    /// The socket refused it.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Connection::Tcp(s) => s.set_read_timeout(timeout),
            Connection::Unix(s) => s.set_read_timeout(timeout),
        }
    }
}

impl Read for &Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Connection::Tcp(s) => (&*s).read(buf),
            Connection::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Connection::Tcp(s) => (&*s).write(buf),
            Connection::Unix(s) => (&*s).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Connection::Tcp(s) => (&*s).flush(),
            Connection::Unix(s) => (&*s).flush(),
        }
    }
}

/// A bound socket waiting for one migration source.
///
/// A unix socket's path is removed when the listener has accepted or is dropped; a stale
/// socket left at the path by an earlier run is replaced (anything else at the path is an
/// error).
#[derive(Debug)]
pub struct Listener {
    address: Address,
    socket: ListenerSocket,
}

#[derive(Debug)]
enum ListenerSocket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Binds `address`.
    ///
    /// # Errors
    ///
    /// [`TransportError::Io`] naming the address.
    pub fn bind(address: &Address) -> Result<Listener, TransportError> {
        let error = |action, source| TransportError::Io {
            address: address.clone(),
            action,
            source,
        };
        let socket = match address {
            Address::Tcp(a) => {
                ListenerSocket::Tcp(TcpListener::bind(a).map_err(|e| error("listen", e))?)
            }
            Address::Unix(path) => {
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                    let _ = std::fs::remove_file(path);
                }
                ListenerSocket::Unix(UnixListener::bind(path).map_err(|e| error("listen", e))?)
            }
        };
        let nonblocking = match &socket {
            ListenerSocket::Tcp(l) => l.set_nonblocking(true),
            ListenerSocket::Unix(l) => l.set_nonblocking(true),
        };
        let listener = Listener {
            address: address.clone(),
            socket,
        };
        nonblocking.map_err(|e| error("listen", e))?;
        Ok(listener)
    }

    /// The address listened on, with the real port for `tcp:HOST:0`.
    ///
    /// # Errors
    ///
    /// The socket cannot tell its address.
    pub fn local_address(&self) -> Result<Address, TransportError> {
        match &self.socket {
            ListenerSocket::Tcp(l) => {
                l.local_addr()
                    .map(|a| Address::Tcp(a.to_string()))
                    .map_err(|source| TransportError::Io {
                        address: self.address.clone(),
                        action: "find the local address",
                        source,
                    })
            }
            ListenerSocket::Unix(_) => Ok(self.address.clone()),
        }
    }

    /// Accepts one connection within `timeout` (polling every 5 ms), in blocking mode.
    ///
    /// # Errors
    ///
    /// [`TransportError::AcceptTimeout`], or [`TransportError::Io`].
    pub fn accept(self, timeout: Duration) -> Result<Connection, TransportError> {
        let deadline = Instant::now() + timeout;
        let error = |action, source| TransportError::Io {
            address: self.address.clone(),
            action,
            source,
        };
        loop {
            let accepted = match &self.socket {
                ListenerSocket::Tcp(l) => l.accept().and_then(|(s, _)| {
                    s.set_nonblocking(false)?;
                    let _ = s.set_nodelay(true);
                    Ok(Connection::Tcp(s))
                }),
                ListenerSocket::Unix(l) => l
                    .accept()
                    .and_then(|(s, _)| s.set_nonblocking(false).map(|()| Connection::Unix(s))),
            };
            match accepted {
                Ok(connection) => return Ok(connection),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(TransportError::AcceptTimeout {
                            address: self.address.clone(),
                            timeout,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(error("accept a connection", e)),
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let (Address::Unix(path), ListenerSocket::Unix(_)) = (&self.address, &self.socket) {
            let _ = std::fs::remove_file(path);
        }
    }
}
