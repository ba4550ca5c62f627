//! Moving command and response buffers: the Linux TPM resource manager
//! device (`/dev/tpmrm0`), a connected unix stream to swtpm (a socket pair
//! handed to it, or its unix command socket), and swtpm's TCP command port.
//!
//! Both carry the plain TPM 2.0 command stream (TPM 2.0 Part 1 §18: a
//! 10-byte header `tag, size, code`, then the body). A transport checks the
//! response frame only: at least a header, the header's size field equals
//! the bytes received and is at most [`MAX_RESPONSE_SIZE`]. It never
//! allocates more than that for a response.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

/// Size of a command or response header.
pub const HEADER_SIZE: usize = 10;

/// The largest response accepted: a 4096-byte TPM buffer
/// (`TPM_PT_MAX_RESPONSE_SIZE` on PC Client TPMs and swtpm) plus a header.
pub const MAX_RESPONSE_SIZE: usize = 4096 + HEADER_SIZE;

/// A transport-level failure (below the TPM response code).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Reading or writing failed.
    #[error("IO error: {0}")]
    Io(#[source] io::Error),
    /// No response within the transport's timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection before a full response arrived.
    #[error("connection closed after {received} of {expected} response bytes")]
    Closed {
        /// Bytes received.
        received: usize,
        /// Bytes the header announced (or the header size, if none arrived).
        expected: usize,
    },
    /// The response header's size field is impossible.
    #[error("response size field {size} outside {HEADER_SIZE}..={MAX_RESPONSE_SIZE}")]
    BadSize {
        /// The size field.
        size: u32,
    },
    /// The response is shorter or longer than its size field says.
    #[error("response size field says {size} bytes, received {received}")]
    SizeMismatch {
        /// The size field.
        size: usize,
        /// Bytes received.
        received: usize,
    },
}

/// Something that carries one TPM command and returns its response.
pub trait Transport: Send {
    /// Sends `command` (a complete command buffer) and returns the complete
    /// response, whose header size field has been checked against its length.
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError>;
}

/// Reads the size field of a response header, bounded.
pub fn response_size(header: &[u8]) -> Result<usize, TransportError> {
    let field = header.get(2..6).ok_or(TransportError::Closed {
        received: header.len(),
        expected: HEADER_SIZE,
    })?;
    let mut b = [0u8; 4];
    b.copy_from_slice(field);
    let size = u32::from_be_bytes(b);
    match usize::try_from(size) {
        Ok(s) if (HEADER_SIZE..=MAX_RESPONSE_SIZE).contains(&s) => Ok(s),
        _ => Err(TransportError::BadSize { size }),
    }
}

fn io_error(e: io::Error, timeout: Option<Duration>) -> TransportError {
    match (e.kind(), timeout) {
        (io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut, Some(t)) => {
            TransportError::Timeout(t)
        }
        _ => TransportError::Io(e),
    }
}

/// Reads one framed response from a byte stream: the header, then exactly
/// the rest its size field announces.
fn read_framed(
    stream: &mut impl Read,
    timeout: Option<Duration>,
) -> Result<Vec<u8>, TransportError> {
    let mut header = [0u8; HEADER_SIZE];
    read_exact(stream, &mut header, HEADER_SIZE, timeout)?;
    let size = response_size(&header)?;
    let mut response = vec![0u8; size];
    let (head, body) = response.split_at_mut(HEADER_SIZE);
    head.copy_from_slice(&header);
    read_exact(stream, body, size, timeout)?;
    Ok(response)
}

fn read_exact(
    stream: &mut impl Read,
    buf: &mut [u8],
    expected: usize,
    timeout: Option<Duration>,
) -> Result<(), TransportError> {
    let mut filled = 0usize;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match stream.read(rest) {
            Ok(0) => {
                return Err(TransportError::Closed {
                    received: expected.saturating_sub(rest.len()),
                    expected,
                })
            }
            Ok(n) => filled = filled.saturating_add(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e, timeout)),
        }
    }
    Ok(())
}

/// The Linux TPM character device, normally `/dev/tpmrm0` (the in-kernel
/// resource manager: transient objects and sessions are flushed when the
/// file is closed, and several users can share the TPM).
///
/// The kernel driver enforces the TPM's command durations; reads on the
/// device have no user-space timeout.
#[derive(Debug)]
pub struct DeviceTransport {
    path: PathBuf,
    file: File,
}

impl DeviceTransport {
    /// The resource-manager device path.
    pub const DEFAULT_PATH: &'static str = "/dev/tpmrm0";

    /// Opens the device read-write.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        Ok(Self { path, file })
    }

    /// The device path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Transport for DeviceTransport {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        device_transact(&mut self.file, command)
    }
}

/// One exchange with a TPM character device: write the command, then read
/// the response, which the driver hands over in the first read (a buffer of
/// the maximum size keeps that read bounded); should a driver split it, the
/// rest the header announces is read too.
fn device_transact<D: Read + Write>(
    dev: &mut D,
    command: &[u8],
) -> Result<Vec<u8>, TransportError> {
    dev.write_all(command).map_err(TransportError::Io)?;
    let mut buf = vec![0u8; MAX_RESPONSE_SIZE];
    let mut filled = 0usize;
    let mut size = None;
    loop {
        let want = size.unwrap_or(MAX_RESPONSE_SIZE);
        if size.is_some() && filled >= want {
            break;
        }
        let rest = buf.get_mut(filled..want).unwrap_or_default();
        match dev.read(rest) {
            Ok(0) => {
                return Err(TransportError::Closed {
                    received: filled,
                    expected: size.unwrap_or(HEADER_SIZE),
                })
            }
            Ok(n) => filled = filled.saturating_add(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(TransportError::Io(e)),
        }
        if size.is_none() && filled >= HEADER_SIZE {
            let s = response_size(&buf)?;
            if filled > s {
                return Err(TransportError::SizeMismatch {
                    size: s,
                    received: filled,
                });
            }
            size = Some(s);
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// swtpm's TCP command port (`swtpm socket --server type=tcp,port=P`),
/// which speaks the raw command stream.
///
/// Each command uses its own connection, as tpm2-tss's `swtpm` TCTI does:
/// swtpm serves one client at a time, so holding no connection between
/// commands lets other clients (tpm2-tools, QEMU's host-side tooling) use
/// the same simulator in between. Connect, write and read are bounded by the
/// timeout.
#[derive(Debug, Clone)]
pub struct TcpTransport {
    addr: SocketAddr,
    timeout: Duration,
}

impl TcpTransport {
    /// A default timeout long enough for RSA-2048 key generation in swtpm.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    /// A transport to `addr` (typically `127.0.0.1:P`). Connects once to
    /// check the simulator is listening.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let t = Self { addr, timeout };
        drop(t.open()?);
        Ok(t)
    }

    /// The simulator's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn open(&self) -> io::Result<TcpStream> {
        let stream = TcpStream::connect_timeout(&self.addr, self.timeout)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

impl Transport for TcpTransport {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        let timeout = Some(self.timeout);
        let mut stream = self.open().map_err(|e| io_error(e, timeout))?;
        stream
            .write_all(command)
            .map_err(|e| io_error(e, timeout))?;
        let response = read_framed(&mut stream, timeout)?;
        // Ignore errors closing: the response is complete.
        let _ = stream.shutdown(std::net::Shutdown::Both);
        Ok(response)
    }
}

/// A connected unix stream to swtpm's command channel: one end of a socket
/// pair whose other end swtpm was started with (`swtpm socket --server
/// type=unixio,fd=N`), or a connection to its unix command socket
/// (`--server type=unixio,path=P`).
///
/// Unlike TCP on loopback, nobody but the holder of the stream can send
/// commands: a socket pair has no address at all, and a socket path is
/// guarded by its directory's permissions. The connection is kept for
/// every command (swtpm serves one connection at a time). Writes and reads
/// are bounded by the timeout.
#[derive(Debug)]
pub struct UnixTransport {
    stream: UnixStream,
    timeout: Duration,
}

impl UnixTransport {
    /// A transport over a connected stream.
    pub fn new(stream: UnixStream, timeout: Duration) -> io::Result<Self> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self { stream, timeout })
    }

    /// Connects to swtpm's unix command socket at `path`.
    pub fn connect(path: impl AsRef<Path>, timeout: Duration) -> io::Result<Self> {
        Self::new(UnixStream::connect(path)?, timeout)
    }
}

impl Transport for UnixTransport {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        let timeout = Some(self.timeout);
        self.stream
            .write_all(command)
            .map_err(|e| io_error(e, timeout))?;
        read_framed(&mut self.stream, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake character device: records writes, serves scripted reads.
    struct FakeDevice {
        written: Vec<u8>,
        reads: Vec<Vec<u8>>,
    }

    impl Read for FakeDevice {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.reads.is_empty() {
                return Ok(0);
            }
            let chunk = self.reads.remove(0);
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            Ok(n)
        }
    }

    impl Write for FakeDevice {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn device_reads_whole_and_split_responses() {
        let response = vec![0x80, 0x01, 0, 0, 0, 12, 0, 0, 0, 0, 0xaa, 0xbb];
        let mut dev = FakeDevice {
            written: Vec::new(),
            reads: vec![response.clone()],
        };
        assert_eq!(device_transact(&mut dev, &[1, 2, 3]).unwrap(), response);
        assert_eq!(dev.written, [1, 2, 3]);

        let mut split = FakeDevice {
            written: Vec::new(),
            reads: vec![
                response[..4].to_vec(),
                response[4..11].to_vec(),
                response[11..].to_vec(),
            ],
        };
        assert_eq!(device_transact(&mut split, &[]).unwrap(), response);
    }

    #[test]
    fn device_rejects_bad_frames() {
        // More bytes than the size field says.
        let mut long = FakeDevice {
            written: Vec::new(),
            reads: vec![vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0, 0xff]],
        };
        assert!(matches!(
            device_transact(&mut long, &[]),
            Err(TransportError::SizeMismatch {
                size: 10,
                received: 11
            })
        ));
        // Fewer bytes, then end of file.
        let mut short = FakeDevice {
            written: Vec::new(),
            reads: vec![vec![0x80, 0x01, 0, 0, 0, 20, 0, 0, 0, 0]],
        };
        assert!(matches!(
            device_transact(&mut short, &[]),
            Err(TransportError::Closed {
                received: 10,
                expected: 20
            })
        ));
        // An impossible size field.
        let mut huge = FakeDevice {
            written: Vec::new(),
            reads: vec![vec![0x80, 0x01, 0x10, 0, 0, 0, 0, 0, 0, 0]],
        };
        assert!(matches!(
            device_transact(&mut huge, &[]),
            Err(TransportError::BadSize { .. })
        ));
    }

    #[test]
    fn unix_transport_carries_one_framed_exchange_per_command() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut t = UnixTransport::new(ours, Duration::from_secs(5)).unwrap();
        let peer = std::thread::spawn(move || {
            for reply in [
                vec![0x80, 0x01, 0, 0, 0, 12, 0, 0, 0, 0, 0xaa, 0xbb],
                // An impossible size field: refused, not allocated.
                vec![0x80, 0x01, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
            ] {
                let mut cmd = [0u8; 3];
                theirs.read_exact(&mut cmd).unwrap();
                assert_eq!(cmd, [1, 2, 3]);
                theirs.write_all(&reply).unwrap();
            }
        });
        assert_eq!(t.transmit(&[1, 2, 3]).unwrap().len(), 12);
        assert!(matches!(
            t.transmit(&[1, 2, 3]),
            Err(TransportError::BadSize { size: 0xffff_ffff })
        ));
        peer.join().unwrap();
        // The peer is gone: a closed connection, not a hang.
        assert!(t.transmit(&[1, 2, 3]).is_err());
    }

    #[test]
    fn unix_transport_times_out_on_a_silent_peer() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let mut t = UnixTransport::new(ours, Duration::from_millis(50)).unwrap();
        assert!(matches!(
            t.transmit(&[1, 2, 3]),
            Err(TransportError::Timeout(_))
        ));
    }

    #[test]
    fn framed_read_checks_the_size_field() {
        let mut ok: &[u8] = &[0x80, 0x01, 0, 0, 0, 12, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc];
        assert_eq!(read_framed(&mut ok, None).unwrap().len(), 12);
        assert_eq!(ok, &[0xcc]);

        let mut short: &[u8] = &[0x80, 0x01, 0, 0, 0, 12, 0, 0, 0, 0, 0xaa];
        assert!(matches!(
            read_framed(&mut short, None),
            Err(TransportError::Closed {
                received: 11,
                expected: 12
            })
        ));

        let mut huge: &[u8] = &[0x80, 0x01, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert!(matches!(
            read_framed(&mut huge, None),
            Err(TransportError::BadSize { size: 0xffff_ffff })
        ));

        let mut tiny: &[u8] = &[0x80, 0x01, 0, 0, 0, 9, 0, 0, 0, 0];
        assert!(matches!(
            read_framed(&mut tiny, None),
            Err(TransportError::BadSize { size: 9 })
        ));
    }
}
