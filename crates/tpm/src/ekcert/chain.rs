//! Chain validation for EK certificates (RFC 5280 §6.1, reduced to what an
//! EK chain needs): signature of every link, validity at a caller-given
//! time, issuer/subject chaining, basicConstraints cA and keyCertSign on
//! every issuer, pathLenConstraint, unhandled critical extensions, and a
//! bounded path length and search.
//!
//! Not done: revocation (CRL/OCSP need IO), name constraints and policy
//! processing (a critical extension of either fails the chain), and RFC
//! 4518 name matching: names match when their decoded forms are equal.

use super::sig::{self, SigFailure};
use super::time::UnixTime;
use super::x509::{split_pem, CertError, CertId, ParsedCert};
use super::EkCertificate;

/// Signature checks one verification may do before it gives up: bounds the
/// search when many candidate issuers share a name.
const MAX_SIGNATURE_CHECKS: usize = 32;

/// A certificate that may issue others: a trust anchor or an intermediate.
///
/// Parsing does not judge it; verification checks that it is a CA.
#[derive(Clone, Debug)]
pub struct CaCertificate(pub(crate) ParsedCert);

impl CaCertificate {
    /// Reads one certificate, DER or PEM.
    pub fn parse(input: &[u8]) -> Result<Self, CertError> {
        ParsedCert::parse(input).map(CaCertificate)
    }

    /// Reads every certificate of a PEM bundle, in order. Text without any
    /// PEM block is an error.
    pub fn parse_pem_bundle(text: &[u8]) -> Result<Vec<Self>, CertError> {
        let blocks = split_pem(text);
        if blocks.is_empty() {
            return Err(CertError::Pem {
                reason: "no PEM block".into(),
            });
        }
        blocks.into_iter().map(Self::parse).collect()
    }

    /// Subject, issuer and serial.
    pub fn id(&self) -> &CertId {
        &self.0.id
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.0.der
    }

    /// The PEM encoding.
    pub fn to_pem(&self) -> String {
        self.0.to_pem()
    }

    /// Start of the validity period.
    pub fn not_before(&self) -> UnixTime {
        self.0.not_before
    }

    /// End of the validity period (inclusive).
    pub fn not_after(&self) -> UnixTime {
        self.0.not_after
    }

    /// Whether basicConstraints says cA and keyUsage (if present) allows
    /// keyCertSign.
    pub fn is_ca(&self) -> bool {
        self.0
            .ext
            .basic_constraints
            .as_ref()
            .is_some_and(|bc| bc.ca)
            && self.0.ext.allows_cert_sign()
    }
}

/// Why a chain was not accepted: the failed check and the certificate it
/// failed on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The EK certificate could not be read (from
    /// [`EkTrustStore::verify_der`]).
    #[error("EK certificate unreadable: {0}")]
    Malformed(#[from] CertError),
    /// No trust anchor or intermediate has the issuer's name.
    #[error("{cert}: no known certificate for issuer [{issuer}]")]
    UnknownIssuer {
        /// The certificate whose issuer is unknown.
        cert: CertId,
        /// Its issuer name, RFC 4514 form.
        issuer: String,
    },
    /// Past notAfter.
    #[error("{cert}: expired at {not_after}")]
    Expired {
        /// The expired certificate.
        cert: CertId,
        /// Its notAfter.
        not_after: UnixTime,
    },
    /// Before notBefore.
    #[error("{cert}: not valid before {not_before}")]
    NotYetValid {
        /// The certificate.
        cert: CertId,
        /// Its notBefore.
        not_before: UnixTime,
    },
    /// The signature does not verify under the named issuer's key.
    #[error("{cert}: signature does not verify under the key of {issuer}")]
    BadSignature {
        /// The signed certificate.
        cert: CertId,
        /// The issuer tried.
        issuer: CertId,
    },
    /// The certificate is signed with an algorithm this crate does not check
    /// (SHA-1, DSA, Ed25519, ...).
    #[error("{cert}: unsupported signature algorithm {algorithm}")]
    UnsupportedSignatureAlgorithm {
        /// The certificate.
        cert: CertId,
        /// The algorithm.
        algorithm: String,
    },
    /// The issuer's key is unusable for the signature (wrong type, RSA
    /// under 2048 or over 4096 bits, unknown curve).
    #[error("{issuer}: key unusable: {reason}")]
    UnsupportedIssuerKey {
        /// The issuer.
        issuer: CertId,
        /// Why.
        reason: String,
    },
    /// An issuer lacks basicConstraints with cA set.
    #[error("{cert}: issues a certificate but is not a CA (basicConstraints)")]
    NotACa {
        /// The issuer.
        cert: CertId,
    },
    /// An issuer has keyUsage without keyCertSign.
    #[error("{cert}: keyUsage does not allow keyCertSign")]
    NoKeyCertSign {
        /// The issuer.
        cert: CertId,
    },
    /// More CA certificates below an issuer than its pathLenConstraint allows.
    #[error("{cert}: pathLenConstraint {path_len} exceeded")]
    PathLenExceeded {
        /// The issuer.
        cert: CertId,
        /// Its pathLenConstraint.
        path_len: u8,
    },
    /// A critical extension this crate does not process (RFC 5280 §4.2).
    #[error("{cert}: unhandled critical extension {oid}")]
    UnhandledCriticalExtension {
        /// The certificate.
        cert: CertId,
        /// The extension, dotted OID.
        oid: String,
    },
    /// The path would be longer than allowed.
    #[error("{cert}: chain longer than {max} certificates")]
    ChainTooLong {
        /// The certificate at which the limit was reached.
        cert: CertId,
        /// The limit.
        max: usize,
    },
    /// Too many candidate issuers were tried.
    #[error("{cert}: gave up after {max} signature checks")]
    SearchLimit {
        /// The certificate being linked when the limit was reached.
        cert: CertId,
        /// The limit.
        max: usize,
    },
}

/// A chain that verified: leaf first, trust anchor last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedChain {
    /// The certificates of the path, the EK certificate first.
    pub certs: Vec<CertId>,
}

impl VerifiedChain {
    /// The trust anchor that ends the path.
    pub fn anchor(&self) -> Option<&CertId> {
        self.certs.last()
    }
}

/// Trust anchors (the vTPM CA, TPM manufacturers' roots) and the
/// intermediates that may link EK certificates to them.
#[derive(Clone, Debug)]
pub struct EkTrustStore {
    roots: Vec<CaCertificate>,
    intermediates: Vec<CaCertificate>,
    max_chain_len: usize,
}

impl EkTrustStore {
    /// Default bound on certificates in a path, EK certificate and anchor
    /// included.
    pub const DEFAULT_MAX_CHAIN_LEN: usize = 5;

    /// A store trusting `roots`, with no intermediates.
    pub fn new(roots: Vec<CaCertificate>) -> Self {
        EkTrustStore {
            roots,
            intermediates: Vec::new(),
            max_chain_len: Self::DEFAULT_MAX_CHAIN_LEN,
        }
    }

    /// Adds intermediates that may appear in paths (not trusted by
    /// themselves).
    pub fn with_intermediates(mut self, intermediates: Vec<CaCertificate>) -> Self {
        self.intermediates.extend(intermediates);
        self
    }

    /// Sets the bound on certificates in a path (at least 2: EK and anchor).
    pub fn with_max_chain_len(mut self, max: usize) -> Self {
        self.max_chain_len = max.max(2);
        self
    }

    /// Verifies `ek` up to one of the roots at time `now`.
    pub fn verify(&self, ek: &EkCertificate, now: UnixTime) -> Result<VerifiedChain, ChainError> {
        self.verify_with(ek, &[], now)
    }

    /// Verifies `ek` at `now`, with `extra` intermediates that came with it
    /// (for example read from the TPM's NV indices).
    pub fn verify_with(
        &self,
        ek: &EkCertificate,
        extra: &[CaCertificate],
        now: UnixTime,
    ) -> Result<VerifiedChain, ChainError> {
        let intermediates: Vec<&ParsedCert> = self
            .intermediates
            .iter()
            .chain(extra)
            .map(|c| &c.0)
            .collect();
        let mut search = Search {
            store: self,
            intermediates,
            now,
            checks: 0,
        };
        let mut path = vec![&ek.inner];
        search.extend(&mut path)
    }

    /// Reads an EK certificate (DER or PEM) and verifies it at `now`.
    pub fn verify_der(
        &self,
        input: &[u8],
        now: UnixTime,
    ) -> Result<(EkCertificate, VerifiedChain), ChainError> {
        let ek = EkCertificate::parse(input)?;
        let chain = self.verify(&ek, now)?;
        Ok((ek, chain))
    }
}

/// One depth-first path search.
struct Search<'a> {
    store: &'a EkTrustStore,
    intermediates: Vec<&'a ParsedCert>,
    now: UnixTime,
    checks: usize,
}

impl<'a> Search<'a> {
    /// Extends `path` (leaf first; its last element still needs an issuer)
    /// to a trust anchor.
    fn extend(&mut self, path: &mut Vec<&'a ParsedCert>) -> Result<VerifiedChain, ChainError> {
        let Some(&cert) = path.last() else {
            return Err(ChainError::Malformed(CertError::Empty));
        };
        check_self(cert, self.now)?;
        let issuer_name = &cert.cert.tbs_certificate.issuer;
        let mut candidates: Vec<(&'a ParsedCert, bool)> = self
            .store
            .roots
            .iter()
            .map(|r| (&r.0, true))
            .chain(self.intermediates.iter().map(|&i| (i, false)))
            .filter(|(c, _)| c.cert.tbs_certificate.subject == *issuer_name)
            .filter(|(c, _)| !path.iter().any(|p| p.der == c.der))
            .collect();
        if candidates.is_empty() {
            return Err(ChainError::UnknownIssuer {
                cert: cert.id.clone(),
                issuer: cert.id.issuer().to_string(),
            });
        }
        // Issuers whose key identifier matches the authority key identifier
        // first; otherwise roots before intermediates.
        if let Some(aki) = &cert.ext.authority_key_id {
            candidates.sort_by_key(|(c, _)| c.ext.subject_key_id.as_ref() != Some(aki));
        }
        let mut first_error = None;
        for (issuer, is_root) in candidates {
            match self.link(path, issuer, is_root) {
                Ok(chain) => return Ok(chain),
                Err(e @ ChainError::SearchLimit { .. }) => return Err(e),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| ChainError::UnknownIssuer {
            cert: cert.id.clone(),
            issuer: cert.id.issuer().to_string(),
        }))
    }

    /// Checks that `issuer` issued the last certificate of `path`, then
    /// ends the path there (a root) or searches on.
    fn link(
        &mut self,
        path: &mut Vec<&'a ParsedCert>,
        issuer: &'a ParsedCert,
        is_root: bool,
    ) -> Result<VerifiedChain, ChainError> {
        let Some(&cert) = path.last() else {
            return Err(ChainError::Malformed(CertError::Empty));
        };
        let bc = issuer.ext.basic_constraints.as_ref().filter(|bc| bc.ca);
        let Some(bc) = bc else {
            return Err(ChainError::NotACa {
                cert: issuer.id.clone(),
            });
        };
        if !issuer.ext.allows_cert_sign() {
            return Err(ChainError::NoKeyCertSign {
                cert: issuer.id.clone(),
            });
        }
        // CA certificates between this issuer and the EK certificate.
        let below = path.len().saturating_sub(1);
        if let Some(path_len) = bc.path_len_constraint {
            if below > usize::from(path_len) {
                return Err(ChainError::PathLenExceeded {
                    cert: issuer.id.clone(),
                    path_len,
                });
            }
        }
        if self.checks >= MAX_SIGNATURE_CHECKS {
            return Err(ChainError::SearchLimit {
                cert: cert.id.clone(),
                max: MAX_SIGNATURE_CHECKS,
            });
        }
        self.checks = self.checks.saturating_add(1);
        let signature = cert.signature().unwrap_or_default();
        let spki = &issuer.cert.tbs_certificate.subject_public_key_info;
        sig::verify(
            spki,
            &cert.cert.signature_algorithm,
            &cert.tbs_der,
            signature,
        )
        .map_err(|failure| match failure {
            SigFailure::Invalid => ChainError::BadSignature {
                cert: cert.id.clone(),
                issuer: issuer.id.clone(),
            },
            SigFailure::UnsupportedAlgorithm(algorithm) => {
                ChainError::UnsupportedSignatureAlgorithm {
                    cert: cert.id.clone(),
                    algorithm,
                }
            }
            SigFailure::UnsupportedKey(reason) => ChainError::UnsupportedIssuerKey {
                issuer: issuer.id.clone(),
                reason,
            },
        })?;
        path.push(issuer);
        let result = if is_root {
            check_self(issuer, self.now).map(|()| VerifiedChain {
                certs: path.iter().map(|c| c.id.clone()).collect(),
            })
        } else if path.len() >= self.store.max_chain_len {
            Err(ChainError::ChainTooLong {
                cert: issuer.id.clone(),
                max: self.store.max_chain_len,
            })
        } else {
            self.extend(path)
        };
        path.pop();
        result
    }
}

/// The checks on a certificate by itself: validity at `now`, no
/// unhandled critical extension.
fn check_self(cert: &ParsedCert, now: UnixTime) -> Result<(), ChainError> {
    if now < cert.not_before {
        return Err(ChainError::NotYetValid {
            cert: cert.id.clone(),
            not_before: cert.not_before,
        });
    }
    if now > cert.not_after {
        return Err(ChainError::Expired {
            cert: cert.id.clone(),
            not_after: cert.not_after,
        });
    }
    if let Some(oid) = cert.ext.unhandled_critical.first() {
        return Err(ChainError::UnhandledCriticalExtension {
            cert: cert.id.clone(),
            oid: oid.to_string(),
        });
    }
    Ok(())
}
