//! A minimal HTTP/1.1 client, enough to tell a served request from a failed one.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
    /// The server said `Connection: close`.
    pub close: bool,
}

impl Response {
    /// The `pid=` the fixture put in its answer.
    pub fn pid(&self) -> Option<i32> {
        self.field("pid")?.parse().ok()
    }

    /// A `key=value` field of the fixture's answer.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.body
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One request on a new connection from source address `from` (any 127.x.y.z works on
/// Linux loopback), with `Connection: close`.
pub fn get_from(addr: SocketAddr, from: std::net::IpAddr, path: &str) -> io::Result<Response> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.set_read_timeout(Some(IO_TIMEOUT))?;
    socket.set_write_timeout(Some(IO_TIMEOUT))?;
    socket.connect_timeout(&addr.into(), IO_TIMEOUT)?;
    let mut stream: TcpStream = socket.into();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    read_response(&mut BufReader::new(stream))
}

/// One request on a new connection, with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    get_after(addr, path, Duration::ZERO)
}

/// [`get`] from a client that waits `pause` between connecting and sending its request,
/// as slow networks and TLS handshakes make real clients do.
pub fn get_after(addr: SocketAddr, path: &str, pause: Duration) -> io::Result<Response> {
    let mut stream = connect(addr)?;
    std::thread::sleep(pause);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    read_response(&mut BufReader::new(stream))
}

fn read_response(reader: &mut impl BufRead) -> io::Result<Response> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {line:?}"),
            )
        })?;
    let mut length = None;
    let mut close = false;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
    }
    let length =
        length.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no content-length"))?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        close,
    })
}

/// A client that reuses one connection until the server says `Connection: close`.
/// Like every real keep-alive client, it opens a new connection then; it never retries
/// a request, so any failure counts.
pub struct KeepAlive {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    /// Requests answered on the current connection, and by which pid last.
    served: usize,
    last_pid: Option<i32>,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr) -> Self {
        KeepAlive {
            addr,
            conn: None,
            served: 0,
            last_pid: None,
        }
    }

    /// One request; a failure says where on its connection it happened, so that a
    /// stalled connection can be told from one refused at connect.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                self.served = 0;
                self.last_pid = None;
                BufReader::new(connect(self.addr)?)
            }
        };
        let local = conn.get_ref().local_addr().map(|a| a.port()).unwrap_or(0);
        let asked = write!(conn.get_mut(), "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
            .and_then(|()| read_response(&mut conn));
        let response = asked.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{e} (request {} on the connection from port {local}, last answered by pid {:?})",
                    self.served + 1,
                    self.last_pid
                ),
            )
        })?;
        self.served += 1;
        self.last_pid = response.pid().or(self.last_pid);
        if !response.close {
            self.conn = Some(conn);
        }
        Ok(response)
    }
}

/// A loopback port that was free a moment ago, for servers that must be told a port
/// before they start (a tiny race, acceptable in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}
