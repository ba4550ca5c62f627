//! EFI device paths (UEFI 2.10 §10.3), decoded node by node and rendered in
//! the text form of UEFI 2.10 §10.6 (`PciRoot(0x0)/Pci(0x1,0x1)/...`).

use serde::Serialize;

use crate::cursor::Cursor;
use crate::guid::Guid;

/// A decoded device path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DevicePath {
    /// The nodes, in order (End nodes excluded).
    pub nodes: Vec<DevicePathNode>,
    /// The UEFI text form; instances are separated by `,`.
    pub text: String,
}

/// One device path node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DevicePathNode {
    /// `Type`.
    #[serde(rename = "type")]
    pub node_type: u8,
    /// `SubType`.
    pub subtype: u8,
    /// The node's text form.
    pub text: String,
    /// The node's data after its 4-byte header.
    #[serde(serialize_with = "crate::ser::hex")]
    pub data: Vec<u8>,
}

/// Why a device path could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("device path node at offset {offset}: {reason}")]
pub struct DevicePathError {
    /// Absolute offset of the node.
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

impl DevicePath {
    /// Decodes a device path; `base` is the absolute offset of `bytes`.
    /// Stops at the End-of-entire-path node; bytes after it are ignored, as
    /// firmware does.
    pub fn parse(bytes: &[u8], base: usize) -> Result<Self, DevicePathError> {
        let mut c = Cursor::new(bytes, base);
        let mut nodes = Vec::new();
        let mut text = String::new();
        let mut need_sep = false;
        while !c.is_empty() {
            let at = c.offset();
            let err = |reason: String| DevicePathError { offset: at, reason };
            let header = c.take(4).map_err(|_| err("truncated node header".into()))?;
            let (node_type, subtype, len) = match header {
                [t, s, l0, l1] => (*t, *s, usize::from(u16::from_le_bytes([*l0, *l1]))),
                _ => return Err(err("truncated node header".into())),
            };
            if len < 4 {
                return Err(err(format!("node length {len} is below 4")));
            }
            let data = c.take(len.saturating_sub(4)).map_err(|s| {
                err(format!(
                    "node length {len} runs past the path ({} left)",
                    s.available
                ))
            })?;
            if node_type == 0x7f {
                if subtype == 0x01 {
                    text.push(',');
                    need_sep = false;
                    continue;
                }
                break;
            }
            let node_text = node_to_text(node_type, subtype, data);
            if need_sep {
                text.push('/');
            }
            text.push_str(&node_text);
            need_sep = true;
            nodes.push(DevicePathNode {
                node_type,
                subtype,
                text: node_text,
                data: data.to_vec(),
            });
        }
        Ok(Self { nodes, text })
    }

    /// The file path of the last media file-path node(s), if any
    /// (`\EFI\BOOT\BOOTX64.EFI`).
    pub fn file_path(&self) -> Option<String> {
        let parts: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.node_type == 4 && n.subtype == 4)
            .map(|n| n.text.as_str())
            .collect();
        (!parts.is_empty()).then(|| parts.concat())
    }
}

fn hexdump(data: &[u8]) -> String {
    crate::hex::encode(data)
}

fn node_to_text(t: u8, s: u8, data: &[u8]) -> String {
    let mut c = Cursor::new(data, 0);
    decode_node(t, s, &mut c, data).unwrap_or_else(|| generic(t, s, data))
}

fn generic(t: u8, s: u8, data: &[u8]) -> String {
    let name = match t {
        1 => "HardwarePath",
        2 => "AcpiPath",
        3 => "Msg",
        4 => "MediaPath",
        5 => "BbsPath",
        _ => "Path",
    };
    if t <= 5 {
        format!("{name}({s},{})", hexdump(data))
    } else {
        format!("Path({t},{s},{})", hexdump(data))
    }
}

fn eisa_id(hid: u32) -> String {
    // EISA ID: compressed 3-letter vendor + 16-bit product (UEFI 2.10 §10.3.3).
    if hid & 0xffff == 0x41d0 {
        return format!("PNP{:04X}", hid >> 16);
    }
    let letter = |v: u32| char::from(b'@'.saturating_add(u8::try_from(v & 0x1f).unwrap_or(0)));
    format!(
        "{}{}{}{:04X}",
        letter(hid >> 10),
        letter(hid >> 5),
        letter(hid),
        hid >> 16
    )
}

fn decode_node(t: u8, s: u8, c: &mut Cursor<'_>, data: &[u8]) -> Option<String> {
    let text = match (t, s) {
        (1, 1) => {
            let function = c.u8().ok()?;
            let device = c.u8().ok()?;
            format!("Pci(0x{device:x},0x{function:x})")
        }
        (1, 4) | (3, 10) | (4, 3) => {
            let guid = c.guid().ok()?;
            let prefix = match t {
                1 => "VenHw",
                3 => "VenMsg",
                _ => "VenMedia",
            };
            if c.is_empty() {
                format!("{prefix}({guid})")
            } else {
                format!("{prefix}({guid},{})", hexdump(c.rest()))
            }
        }
        (1, 5) => format!("Ctrl(0x{:x})", c.u32().ok()?),
        (2, 1) => {
            let hid = c.u32().ok()?;
            let uid = c.u32().ok()?;
            match hid {
                0x0a03_41d0 => format!("PciRoot(0x{uid:x})"),
                0x0a08_41d0 => format!("PcieRoot(0x{uid:x})"),
                _ => format!("Acpi({},0x{uid:x})", eisa_id(hid)),
            }
        }
        (2, 3) => format!("AcpiAdr(0x{:x})", c.u32().ok()?),
        (3, 1) => {
            let primary = c.u8().ok()?;
            let slave = c.u8().ok()?;
            let lun = c.u16().ok()?;
            format!("Ata({primary},{slave},{lun})")
        }
        (3, 2) => {
            let pun = c.u16().ok()?;
            let lun = c.u16().ok()?;
            format!("Scsi(0x{pun:x},0x{lun:x})")
        }
        (3, 5) => {
            let port = c.u8().ok()?;
            let iface = c.u8().ok()?;
            format!("USB(0x{port:x},0x{iface:x})")
        }
        (3, 11) => {
            let mac = c.take(32).ok()?;
            let if_type = c.u8().ok()?;
            let n = if if_type == 0 || if_type == 1 { 6 } else { 32 };
            format!("MAC({},0x{if_type:x})", hexdump(mac.get(..n)?))
        }
        (3, 18) => {
            let hba = c.u16().ok()?;
            let pmp = c.u16().ok()?;
            let lun = c.u16().ok()?;
            format!("Sata(0x{hba:x},0x{pmp:x},0x{lun:x})")
        }
        (3, 23) => {
            let nsid = c.u32().ok()?;
            let eui = c.take(8).ok()?;
            let eui: Vec<String> = eui.iter().map(|b| format!("{b:02X}")).collect();
            format!("NVMe(0x{nsid:x},{})", eui.join("-"))
        }
        (3, 24) => format!("Uri({})", String::from_utf8_lossy(data)),
        (4, 1) => {
            let partition = c.u32().ok()?;
            let start = c.u64().ok()?;
            let size = c.u64().ok()?;
            let sig = c.array::<16>().ok()?;
            let format = c.u8().ok()?;
            let sig_type = c.u8().ok()?;
            let (fmt, sig) = match (format, sig_type) {
                (1, 1) => (
                    "MBR".to_string(),
                    format!(
                        "0x{:08x}",
                        u32::from_le_bytes([sig[0], sig[1], sig[2], sig[3]])
                    ),
                ),
                (2, 2) => ("GPT".to_string(), Guid::from_bytes(sig).to_string()),
                _ => (format!("{format}"), hexdump(&sig)),
            };
            format!("HD({partition},{fmt},{sig},0x{start:x},0x{size:x})")
        }
        (4, 2) => {
            let entry = c.u32().ok()?;
            let start = c.u64().ok()?;
            let size = c.u64().ok()?;
            format!("CDROM(0x{entry:x},0x{start:x},0x{size:x})")
        }
        (4, 4) => crate::text::utf16le(data)?,
        (4, 5) => format!("Media({})", c.guid().ok()?),
        (4, 6) => format!("FvFile({})", c.guid().ok()?),
        (4, 7) => format!("Fv({})", c.guid().ok()?),
        (4, 8) => {
            let _reserved = c.u32().ok()?;
            let start = c.u64().ok()?;
            let end = c.u64().ok()?;
            format!("Offset(0x{start:x},0x{end:x})")
        }
        (5, 1) => {
            let dev_type = c.u16().ok()?;
            let _status = c.u16().ok()?;
            let desc = String::from_utf8_lossy(c.rest());
            format!("BBS(0x{dev_type:x},{})", desc.trim_end_matches('\0'))
        }
        _ => return None,
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(t: u8, s: u8, data: &[u8]) -> Vec<u8> {
        let len = u16::try_from(data.len() + 4).expect("small");
        let mut v = vec![t, s];
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn renders_a_boot_path() {
        let mut p = node(2, 1, &[0xd0, 0x41, 0x03, 0x0a, 0, 0, 0, 0]);
        p.extend(node(1, 1, &[0x1, 0x2]));
        let file: Vec<u8> = "\\EFI\\BOOT\\BOOTX64.EFI\0"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        p.extend(node(4, 4, &file));
        p.extend(node(0x7f, 0xff, &[]));
        let dp = DevicePath::parse(&p, 0).expect("valid");
        assert_eq!(
            dp.text,
            "PciRoot(0x0)/Pci(0x2,0x1)/\\EFI\\BOOT\\BOOTX64.EFI"
        );
        assert_eq!(dp.file_path().as_deref(), Some("\\EFI\\BOOT\\BOOTX64.EFI"));
    }

    #[test]
    fn rejects_bad_lengths() {
        assert!(DevicePath::parse(&[1, 1, 2, 0], 10).is_err());
        let e = DevicePath::parse(&[1, 1, 0xff, 0], 10).expect_err("too long");
        assert_eq!(e.offset, 10);
    }
}
