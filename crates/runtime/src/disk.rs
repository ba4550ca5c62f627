//! Read-only views of a raw disk image: its partition table (GPT through
//! the `gpt` crate, or a classic MBR), a FAT partition (`fatfs`) and an
//! ext2/3/4 partition (`ext4-view`), each a pure-Rust reader over a byte
//! range of the file. Nothing is mounted, nothing is written: the file is
//! opened read-only and every writer the libraries are handed refuses to
//! write. Every value read from the disk is untrusted; the libraries
//! bound their reads by the structures' sizes and [`MAX_FILE_BYTES`]
//! bounds what is read whole.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Largest file read whole from a partition (a kernel, an initrd).
pub const MAX_FILE_BYTES: u64 = 512 << 20;

/// The EFI system partition's type GUID.
pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// Linux file-system data.
pub const LINUX_DATA_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// The Discoverable Partitions Specification's x86-64 root.
pub const LINUX_ROOT_X86_64_TYPE: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// The Discoverable Partitions Specification's `/boot` (XBOOTLDR).
pub const XBOOTLDR_TYPE: &str = "BC13C2FF-59E6-4262-A352-B275FD6F7172";

/// Why a disk could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The disk.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A partition's file system could not be read.
    #[error("partition {number} ({fs}): {message}")]
    FileSystem {
        /// Partition number (1-based).
        number: u32,
        /// `FAT` or `ext4`.
        fs: &'static str,
        /// What the reader said.
        message: String,
    },
    /// A file in a partition could not be read.
    #[error("partition {number}: {path}: {message}")]
    File {
        /// Partition number.
        number: u32,
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// The partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// GUID partition table (UEFI).
    Gpt,
    /// A classic MBR with no GPT behind it (BIOS).
    Mbr,
    /// Neither.
    None,
}

/// A partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Partition {
    /// 1-based number (GPT entry index or MBR slot).
    pub number: u32,
    /// GPT type GUID (upper case) or the MBR type byte (`0x83`).
    pub type_id: String,
    /// GPT partition name.
    pub name: String,
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Partition {
    /// Whether this is an EFI system partition (GPT type or MBR 0xEF).
    pub fn is_esp(&self) -> bool {
        self.type_id == ESP_TYPE || self.type_id == "0xEF"
    }
}

/// A disk's partition table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Table {
    /// Which kind.
    pub kind: TableKind,
    /// Its partitions, in number order.
    pub partitions: Vec<Partition>,
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads the partition table of the raw disk at `path`.
pub fn read_table(path: &Path) -> Result<Table, DiskError> {
    let file = File::open(path).map_err(io_at(path))?;
    let len = file.metadata().map_err(io_at(path))?.len();
    let mut mbr = [0u8; 512];
    if len < 512 {
        return Ok(Table {
            kind: TableKind::None,
            partitions: Vec::new(),
        });
    }
    file.read_exact_at(&mut mbr, 0).map_err(io_at(path))?;
    let signed = mbr[510] == 0x55 && mbr[511] == 0xaa;
    let entries: Vec<(u8, u64, u64)> = (0..4)
        .map(|i| {
            let e = &mbr[446 + 16 * i..446 + 16 * (i + 1)];
            let lba = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]]));
            let sectors = u64::from(u32::from_le_bytes([e[12], e[13], e[14], e[15]]));
            (e[4], lba, sectors)
        })
        .collect();
    let protective = signed && entries.iter().any(|(t, _, _)| *t == 0xee);
    if protective {
        let disk = gpt::GptConfig::new()
            .writable(false)
            .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
            .open_from_device(ReadOnly(file))
            .map_err(|e| DiskError::Io {
                path: path.to_owned(),
                source: io::Error::new(io::ErrorKind::InvalidData, format!("GPT: {e}")),
            })?;
        let mut partitions = Vec::new();
        for (number, p) in disk.partitions() {
            if p.part_type_guid.guid.is_nil() {
                continue;
            }
            let start = p.first_lba.saturating_mul(512);
            let end = p.last_lba.saturating_add(1).saturating_mul(512);
            if end > len || start >= end {
                continue;
            }
            partitions.push(Partition {
                number: *number,
                type_id: p.part_type_guid.guid.to_string().to_ascii_uppercase(),
                name: p.name.clone(),
                start,
                len: end - start,
            });
        }
        return Ok(Table {
            kind: TableKind::Gpt,
            partitions,
        });
    }
    let partitions: Vec<Partition> = entries
        .iter()
        .enumerate()
        .filter(|(_, (t, lba, n))| *t != 0 && *lba > 0 && *n > 0)
        .filter_map(|(i, (t, lba, n))| {
            let start = lba.checked_mul(512)?;
            let plen = n.checked_mul(512)?;
            (start.checked_add(plen)? <= len).then(|| Partition {
                number: u32::try_from(i).unwrap_or(0) + 1,
                type_id: format!("0x{t:02X}"),
                name: String::new(),
                start,
                len: plen,
            })
        })
        .collect();
    Ok(Table {
        kind: if signed && !partitions.is_empty() {
            TableKind::Mbr
        } else {
            TableKind::None
        },
        partitions: if signed { partitions } else { Vec::new() },
    })
}

/// A file handed to a library that wants a writer: every write fails.
#[derive(Debug)]
struct ReadOnly<T>(T);

impl<T: Read> Read for ReadOnly<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<T: Seek> Seek for ReadOnly<T> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}

impl<T> Write for ReadOnly<T> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the disk is read only",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A byte range of a file, read-only.
#[derive(Debug)]
struct Slice {
    file: File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for Slice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let Some(buf) = buf.get_mut(..n) else {
            return Ok(0);
        };
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(buf, self.start + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Seek for Slice {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(n) if n <= self.len => {
                self.pos = n;
                Ok(n)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

impl ext4_view::Ext4Read for Slice {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        start_byte
            .checked_add(dst.len() as u64)
            .filter(|e| *e <= self.len)
            .ok_or("read outside the partition")?;
        self.file.read_exact_at(dst, self.start + start_byte)?;
        Ok(())
    }
}

fn slice(path: &Path, p: &Partition) -> Result<Slice, DiskError> {
    Ok(Slice {
        file: File::open(path).map_err(io_at(path))?,
        start: p.start,
        len: p.len,
        pos: 0,
    })
}

/// A FAT partition, read-only.
pub struct Fat {
    number: u32,
    fs: fatfs::FileSystem<ReadOnly<Slice>>,
}

/// A file of a FAT partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatFile {
    /// `/`-separated path as stored (`EFI/BOOT/BOOTX64.EFI`).
    pub path: String,
    /// Size in bytes.
    pub len: u64,
}

impl Fat {
    /// Opens partition `p` of `path` as FAT.
    pub fn open(path: &Path, p: &Partition) -> Result<Self, DiskError> {
        let fs = fatfs::FileSystem::new(ReadOnly(slice(path, p)?), fatfs::FsOptions::new())
            .map_err(|e| DiskError::FileSystem {
                number: p.number,
                fs: "FAT",
                message: e.to_string(),
            })?;
        Ok(Self {
            number: p.number,
            fs,
        })
    }

    /// Every file, depth first, at most `limit` of them and 8 levels deep.
    pub fn files(&self, limit: usize) -> Result<Vec<FatFile>, DiskError> {
        let mut out = Vec::new();
        let mut stack = vec![(self.fs.root_dir(), String::new(), 0usize)];
        while let Some((dir, prefix, depth)) = stack.pop() {
            for e in dir.iter() {
                let e = e.map_err(|e| DiskError::File {
                    number: self.number,
                    path: prefix.clone(),
                    message: e.to_string(),
                })?;
                let name = e.file_name();
                if name == "." || name == ".." {
                    continue;
                }
                let path = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                if e.is_dir() {
                    if depth < 8 {
                        stack.push((e.to_dir(), path, depth + 1));
                    }
                } else {
                    out.push(FatFile { path, len: e.len() });
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Reads a file whole (FAT names match without regard to case), at
    /// most [`MAX_FILE_BYTES`]; `None` when it does not exist.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, DiskError> {
        let err = |message: String| DiskError::File {
            number: self.number,
            path: path.to_owned(),
            message,
        };
        let mut f = match self.fs.root_dir().open_file(path.trim_start_matches('/')) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e.to_string())),
        };
        let mut buf = Vec::new();
        (&mut f)
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|e| err(e.to_string()))?;
        if buf.len() as u64 > MAX_FILE_BYTES {
            return Err(err(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        Ok(Some(buf))
    }
}

/// An ext2/3/4 partition, read-only.
pub struct Ext {
    number: u32,
    fs: ext4_view::Ext4,
}

impl Ext {
    /// Opens partition `p` of `path` as ext2/3/4.
    pub fn open(path: &Path, p: &Partition) -> Result<Self, DiskError> {
        let fs = ext4_view::Ext4::load(Box::new(slice(path, p)?)).map_err(|e| {
            DiskError::FileSystem {
                number: p.number,
                fs: "ext4",
                message: e.to_string(),
            }
        })?;
        Ok(Self {
            number: p.number,
            fs,
        })
    }

    /// The partition number.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// The file system's UUID.
    pub fn uuid(&self) -> String {
        self.fs.uuid().to_string()
    }

    fn err(&self, path: &str, e: impl std::fmt::Display) -> DiskError {
        DiskError::File {
            number: self.number,
            path: path.to_owned(),
            message: e.to_string(),
        }
    }

    /// Reads a file whole, following symbolic links, at most `limit`
    /// bytes; `None` when it does not exist.
    pub fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, DiskError> {
        let p = ext4_view::Path::try_from(path).map_err(|e| self.err(path, e))?;
        match self.fs.exists(p) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => return Err(self.err(path, e)),
        }
        let len = self.fs.metadata(p).map_err(|e| self.err(path, e))?.len();
        if len > limit {
            return Err(self.err(path, format!("{len} bytes, more than {limit}")));
        }
        self.fs.read(p).map(Some).map_err(|e| self.err(path, e))
    }

    /// The target of a symbolic link (`None`: not a link or absent).
    pub fn read_link(&self, path: &str) -> Option<String> {
        let p = ext4_view::Path::try_from(path).ok()?;
        let t = self.fs.read_link(p).ok()?;
        Some(t.display().to_string())
    }

    /// The names in a directory (at most `limit`); empty when absent.
    pub fn list(&self, path: &str, limit: usize) -> Vec<String> {
        let Ok(p) = ext4_view::Path::try_from(path) else {
            return Vec::new();
        };
        let Ok(rd) = self.fs.read_dir(p) else {
            return Vec::new();
        };
        rd.filter_map(Result::ok)
            .map(|e| e.file_name().display().to_string())
            .filter(|n| n != "." && n != "..")
            .take(limit)
            .collect()
    }
}
