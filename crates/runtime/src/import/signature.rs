//! Who signed a boot component and which db certificate allows it, in the
//! words of an import's report: a refusal names the signer and the issuer
//! it claims, and says when a certificate of the signature is named like
//! one of db's — a name anyone can write, which is never trust.

use trustlaunch_secureboot::pe::PeImage;
use trustlaunch_secureboot::verify::{verify_image, Database, EntryKind, Verdict};

use super::TemplateDbs;
use crate::image_meta::CertificateInfo;

/// Who signed `data`, for a refusal whose signer no db certificate
/// anchors: each signature's signer with the issuer it names, and any
/// certificate of the signature named like a db certificate — a name is
/// not a key, and the look-alike is worth saying.
pub(super) fn signed_by(data: &[u8], db: &Database) -> String {
    let Some(table) = PeImage::parse(data)
        .ok()
        .and_then(|pe| pe.cert_table_bytes(data))
    else {
        return String::new();
    };
    let Ok(sigs) = trustlaunch_secureboot::pkcs7::signatures(table) else {
        return String::new();
    };
    let mut signers = Vec::new();
    let mut names = Vec::new();
    for s in &sigs {
        let signer = s.certificates.iter().find(|c| {
            c.cert.tbs_certificate.serial_number.as_bytes() == s.signer.serial.as_slice()
        });
        match signer {
            Some(c) => signers.push(format!(
                "{} (issued by {})",
                c.cert.tbs_certificate.subject, c.cert.tbs_certificate.issuer
            )),
            None => signers.push("<signer certificate not embedded>".into()),
        }
        for c in &s.certificates {
            names.push(c.cert.tbs_certificate.subject.to_string());
            names.push(c.cert.tbs_certificate.issuer.to_string());
        }
    }
    let mut out = format!("; signed by {}", signers.join("; "));
    let lookalikes: Vec<String> = (0..db.records().len())
        .filter_map(|i| db.entry(i))
        .filter_map(|e| {
            let cn = common_name(e.subject.as_deref()?)?;
            names
                .iter()
                .any(|n| common_name(n) == Some(cn))
                .then(|| format!("{cn:?} (db entry #{})", e.index))
        })
        .collect();
    if !lookalikes.is_empty() {
        out.push_str(&format!(
            "; its certificates are named like db's {}, but no db certificate verifies the signature: a signer is trusted by its key, never by its name",
            lookalikes.join(", ")
        ));
    }
    out
}

/// The `CN=` value of a name in RFC 4514 text.
fn common_name(name: &str) -> Option<&str> {
    name.split(',')
        .find_map(|rdn| rdn.trim().strip_prefix("CN="))
}

/// The db certificate under `t` that allows `data`, when an X.509 entry
/// allows it.
pub(super) fn allowing_certificate(data: &[u8], t: &TemplateDbs) -> Option<CertificateInfo> {
    let Ok(Verdict::Allowed { by, .. }) = verify_image(data, &t.db, &t.dbx) else {
        return None;
    };
    let r = t.db.records().get(by.index)?;
    (r.kind == EntryKind::X509).then(|| crate::image_build::certificate_info(&r.data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_names_are_read_from_rfc4514_text() {
        assert_eq!(
            common_name(
                "CN=Microsoft Windows Production PCA 2011,O=Microsoft Corporation,L=Redmond,ST=Washington,C=US"
            ),
            Some("Microsoft Windows Production PCA 2011")
        );
        assert_eq!(common_name("C=US, CN=x"), Some("x"));
        assert_eq!(common_name("O=Nobody"), None);
    }

    #[test]
    fn what_is_not_a_signed_pe_names_no_signer() {
        assert_eq!(signed_by(b"not a PE", &Database::default()), "");
        assert_eq!(signed_by(b"MZ", &Database::default()), "");
    }
}
