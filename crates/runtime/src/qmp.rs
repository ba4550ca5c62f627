//! A small QMP client (QEMU Machine Protocol: JSON over the VM's unix
//! socket): capabilities negotiation, `query-status`, `system_powerdown`,
//! `quit`. Asynchronous events arriving between replies are skipped.
//! Lines from QEMU are bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QmpError {
    /// The socket could not be reached or broke.
    #[error("QMP {socket}: {source}")]
    Io {
        /// The socket.
        socket: String,
        /// The error.
        source: std::io::Error,
    },
    /// QEMU answered with an error or something unexpected.
    #[error("QMP {command}: {message}")]
    Command {
        /// The command.
        command: String,
        /// QEMU's error description, or what was wrong.
        message: String,
    },
}

/// A negotiated QMP connection.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    socket: String,
}

const MAX_LINE: u64 = 1 << 20;

impl Qmp {
    /// Connects and leaves capabilities negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let socket = path.display().to_string();
        let io = |source| QmpError::Io {
            socket: socket.clone(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let mut q = Self {
            reader: BufReader::new(stream),
            writer,
            socket,
        };
        let greeting = q.read_value()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Command {
                command: "greeting".into(),
                message: format!("not a QMP greeting: {greeting}"),
            });
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn read_value(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_line(&mut line)
            .map_err(|source| QmpError::Io {
                socket: self.socket.clone(),
                source,
            })?;
        if n == 0 {
            return Err(QmpError::Io {
                socket: self.socket.clone(),
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        serde_json::from_str(&line).map_err(|e| QmpError::Command {
            command: "read".into(),
            message: format!("not JSON: {e}"),
        })
    }

    /// Runs a command and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|source| QmpError::Io {
                socket: self.socket.clone(),
                source,
            })?;
        loop {
            let v = self.read_value()?;
            if v.get("event").is_some() {
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            let message = v
                .pointer("/error/desc")
                .and_then(Value::as_str)
                .map_or_else(|| v.to_string(), str::to_owned);
            return Err(QmpError::Command {
                command: command.into(),
                message,
            });
        }
    }

    /// `query-status`: the run state (`running`, `paused`, `shutdown`, ...).
    pub fn status(&mut self) -> Result<String, QmpError> {
        let r = self.execute("query-status", None)?;
        r.get("status")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| QmpError::Command {
                command: "query-status".into(),
                message: format!("no status in {r}"),
            })
    }
}
