//! The RSA public-key operation for signature verification, `s^e mod n`,
//! with Montgomery multiplication on 64-bit limbs (CIOS, Koç et al. 1996),
//! and EMSA-PKCS1-v1_5 verification (RFC 8017 §8.2.2) by comparing the whole
//! encoded block. A verifier checks thousands of quotes a second with one
//! AK per VM: the per-key constants (R² mod n, −n⁻¹ mod 2⁶⁴) are computed
//! once when the key is prepared, so a verification is 17 modular
//! multiplications for e = 65537.
//!
//! Only public values pass through here (modulus, exponent, signature), so
//! the code need not be constant-time. Differentially tested against
//! `num-bigint-dig`'s `modpow` (the `rsa` crate's arithmetic).

// Indices below are bounded by construction: every limb vector has the
// length `k` (or `k + 2`) fixed when the key is prepared, and the loops run
// over `0..k`. Untrusted input only reaches `from_be` (bounded by `k`).
#![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use crate::alg::HashAlg;

/// An RSA public key prepared for fast verification.
#[derive(Clone, Debug)]
pub struct RsaVerifyingKey {
    /// Modulus limbs, little-endian.
    n: Vec<u64>,
    /// −n⁻¹ mod 2⁶⁴.
    n0inv: u64,
    /// R² mod n, R = 2^(64k).
    r2: Vec<u64>,
    e: u32,
    /// Modulus length in bytes.
    len: usize,
}

/// Smallest and largest moduli accepted (bits).
const MIN_BITS: usize = 1024;
const MAX_BITS: usize = 4096;

impl RsaVerifyingKey {
    /// Prepares a key; `None` unless the modulus is odd, 1024–4096 bits,
    /// and the exponent is odd and > 1.
    pub fn new(modulus_be: &[u8], e: u32) -> Option<Self> {
        let start = modulus_be.iter().position(|b| *b != 0)?;
        let m = modulus_be.get(start..)?;
        let bits = m.len() * 8 - usize::try_from(m.first()?.leading_zeros()).ok()?;
        if !(MIN_BITS..=MAX_BITS).contains(&bits) || e < 3 || e % 2 == 0 {
            return None;
        }
        let len = m.len();
        let k = len.div_ceil(8);
        let n = from_be(m, k)?;
        if n[0] & 1 == 0 {
            return None;
        }
        // Newton's iteration for n[0]⁻¹ mod 2⁶⁴.
        let mut inv: u64 = 1;
        for _ in 0..6 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(n[0].wrapping_mul(inv)));
        }
        let n0inv = inv.wrapping_neg();
        // R² mod n by doubling 1 modulo n, 2·64k times.
        let mut r2 = vec![0u64; k];
        r2[0] = 1;
        for _ in 0..(2 * 64 * k) {
            let carry = shl1(&mut r2);
            if carry || !less(&r2, &n) {
                sub_in_place(&mut r2, &n);
            }
        }
        Some(Self {
            n,
            n0inv,
            r2,
            e,
            len,
        })
    }

    /// Modulus length in bytes (the signature length).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a prepared key has a modulus.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `sig^e mod n` as `len` big-endian bytes; `None` when the signature
    /// is not exactly `len` bytes or is not below the modulus.
    pub fn public_op(&self, sig_be: &[u8]) -> Option<Vec<u8>> {
        if sig_be.len() != self.len {
            return None;
        }
        let k = self.n.len();
        let s = from_be(sig_be, k)?;
        if !less(&s, &self.n) {
            return None;
        }
        let mut t = vec![0u64; k + 2];
        let base = self.mont_mul(&s, &self.r2, &mut t);
        let mut acc = base.clone();
        let top = 31 - self.e.leading_zeros();
        for bit in (0..top).rev() {
            acc = self.mont_mul(&acc, &acc, &mut t);
            if self.e >> bit & 1 == 1 {
                acc = self.mont_mul(&acc, &base, &mut t);
            }
        }
        let mut one = vec![0u64; k];
        one[0] = 1;
        let out = self.mont_mul(&acc, &one, &mut t);
        Some(to_be(&out, self.len))
    }

    /// Verifies an RSASSA-PKCS1-v1_5 signature over `digest` made with
    /// `hash`.
    pub fn verify_pkcs1v15(&self, hash: HashAlg, digest: &[u8], sig: &[u8]) -> bool {
        let Some(em) = self.public_op(sig) else {
            return false;
        };
        let prefix = digest_info_prefix(hash);
        let t_len = prefix.len() + digest.len();
        if digest.len() != hash.size() || self.len < t_len + 11 {
            return false;
        }
        let ps = self.len - t_len - 3;
        let mut expected = Vec::with_capacity(self.len);
        expected.extend_from_slice(&[0x00, 0x01]);
        expected.resize(2 + ps, 0xff);
        expected.push(0x00);
        expected.extend_from_slice(prefix);
        expected.extend_from_slice(digest);
        em == expected
    }

    /// Montgomery product a·b·R⁻¹ mod n.
    fn mont_mul(&self, a: &[u64], b: &[u64], t: &mut [u64]) -> Vec<u64> {
        let n = &self.n;
        let k = n.len();
        t.iter_mut().for_each(|x| *x = 0);
        for &b_i in b.iter().take(k) {
            let bi = u128::from(b_i);
            let mut c: u128 = 0;
            for j in 0..k {
                let s = u128::from(t[j]) + u128::from(a[j]) * bi + c;
                t[j] = s as u64;
                c = s >> 64;
            }
            let s = u128::from(t[k]) + c;
            t[k] = s as u64;
            t[k + 1] = (s >> 64) as u64;
            let m = u128::from(t[0].wrapping_mul(self.n0inv));
            let mut c = (u128::from(t[0]) + m * u128::from(n[0])) >> 64;
            for j in 1..k {
                let s = u128::from(t[j]) + m * u128::from(n[j]) + c;
                t[j - 1] = s as u64;
                c = s >> 64;
            }
            let s = u128::from(t[k]) + c;
            t[k - 1] = s as u64;
            t[k] = t[k + 1] + (s >> 64) as u64;
        }
        let mut out = t[..k].to_vec();
        if t[k] != 0 || !less(&out, n) {
            sub_in_place(&mut out, n);
        }
        out
    }
}

fn digest_info_prefix(hash: HashAlg) -> &'static [u8] {
    match hash {
        HashAlg::Sha1 => &[
            0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
            0x14,
        ],
        HashAlg::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        HashAlg::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        HashAlg::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
    }
}

/// Big-endian bytes into `k` little-endian limbs; `None` if they don't fit.
fn from_be(bytes: &[u8], k: usize) -> Option<Vec<u64>> {
    if bytes.len() > k * 8 {
        return None;
    }
    let mut limbs = vec![0u64; k];
    for (i, chunk) in bytes.rchunks(8).enumerate() {
        let mut buf = [0u8; 8];
        buf[8 - chunk.len()..].copy_from_slice(chunk);
        limbs[i] = u64::from_be_bytes(buf);
    }
    Some(limbs)
}

fn to_be(limbs: &[u64], len: usize) -> Vec<u8> {
    let mut out: Vec<u8> = limbs.iter().rev().flat_map(|l| l.to_be_bytes()).collect();
    let excess = out.len().saturating_sub(len);
    out.drain(..excess);
    out
}

/// a < b (same length).
fn less(a: &[u64], b: &[u64]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

fn sub_in_place(a: &mut [u64], b: &[u64]) {
    let mut borrow = 0u64;
    for (x, y) in a.iter_mut().zip(b) {
        let (d1, b1) = x.overflowing_sub(*y);
        let (d2, b2) = d1.overflowing_sub(borrow);
        *x = d2;
        borrow = u64::from(b1 || b2);
    }
}

/// Shifts left by one bit; returns the bit shifted out.
fn shl1(a: &mut [u64]) -> bool {
    let mut carry = 0u64;
    for x in a.iter_mut() {
        let next = *x >> 63;
        *x = (*x << 1) | carry;
        carry = next;
    }
    carry == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::traits::PublicKeyParts;
    use rsa::BigUint;

    #[test]
    fn agrees_with_num_bigint_modpow() {
        let mut rng = rand_core::OsRng;
        for bits in [1024usize, 2048] {
            let key = rsa::RsaPrivateKey::new(&mut rng, bits).unwrap();
            let n = key.n().to_bytes_be();
            let fast = RsaVerifyingKey::new(&n, 65537).unwrap();
            for seed in 0u8..20 {
                let mut s = vec![seed; n.len()];
                s[0] = 0; // below n
                let want = BigUint::from_bytes_be(&s).modpow(&BigUint::from(65537u32), key.n());
                let mut want = want.to_bytes_be();
                while want.len() < n.len() {
                    want.insert(0, 0);
                }
                assert_eq!(
                    fast.public_op(&s).unwrap(),
                    want,
                    "{bits} bits, seed {seed}"
                );
            }
            let digest = HashAlg::Sha256.hash(b"quote");
            let sig = key
                .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
                .unwrap();
            assert!(fast.verify_pkcs1v15(HashAlg::Sha256, &digest, &sig));
            assert!(!fast.verify_pkcs1v15(HashAlg::Sha1, &digest[..20], &sig));
            let mut bad = sig.clone();
            bad[5] ^= 1;
            assert!(!fast.verify_pkcs1v15(HashAlg::Sha256, &digest, &bad));
        }
    }

    #[test]
    fn refuses_bad_keys_and_signatures() {
        assert!(
            RsaVerifyingKey::new(&[0xff; 64], 65537).is_none(),
            "too small"
        );
        assert!(RsaVerifyingKey::new(&[0xfe; 256], 65537).is_none(), "even");
        assert!(
            RsaVerifyingKey::new(&[0xff; 256], 2).is_none(),
            "even exponent"
        );
        let k = RsaVerifyingKey::new(&[0xff; 256], 65537).unwrap();
        assert!(k.public_op(&[0xff; 256]).is_none(), "not below n");
        assert!(k.public_op(&[0x01; 255]).is_none(), "wrong length");
    }
}
