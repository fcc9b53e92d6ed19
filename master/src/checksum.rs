//! Checksummed store records: every value the store writes is `P1` + the CRC-32 of the
//! payload (little endian) + the payload (JSON). A record whose checksum fails is an
//! error naming it, never served: a flipped bit in a stored `cmd` would otherwise run.
//! Values written before checksums (a bare JSON object) still read, unchecked, until
//! the core next writes them.

const MAGIC: &[u8; 2] = b"P1";
const HEADER: usize = MAGIC.len() + 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    #[error("its checksum does not match its content ({stored:08x} stored, {computed:08x} computed)")]
    Mismatch { stored: u32, computed: u32 },
    #[error("it is neither a checksummed record nor a record from before checksums ({len} bytes)")]
    Unknown { len: usize },
}

/// The stored form of `payload`.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a stored value, once its checksum holds.
pub fn open(stored: &[u8]) -> Result<&[u8], ChecksumError> {
    if let Some(rest) = stored.strip_prefix(MAGIC) {
        let (sum, payload) = rest.split_at_checked(4).ok_or(ChecksumError::Unknown { len: stored.len() })?;
        let stored_sum = u32::from_le_bytes(sum.try_into().expect("split at 4"));
        let computed = crc32fast::hash(payload);
        return if stored_sum == computed {
            Ok(payload)
        } else {
            Err(ChecksumError::Mismatch { stored: stored_sum, computed })
        };
    }
    // Records from before checksums are JSON objects.
    if stored.first() == Some(&b'{') {
        return Ok(stored);
    }
    Err(ChecksumError::Unknown { len: stored.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_opens_to_its_payload_and_any_flipped_bit_is_caught() {
        let payload = br#"{"id":"/web","cmd":"python3 -m http.server 8080"}"#;
        let sealed = seal(payload);
        assert_eq!(open(&sealed), Ok(&payload[..]));
        for bit in 0..sealed.len() * 8 {
            let mut damaged = sealed.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(open(&damaged).is_err(), "bit {bit} flipped went unnoticed");
        }
    }

    #[test]
    fn records_from_before_checksums_still_read_and_garbage_does_not() {
        assert_eq!(open(b"{\"id\":\"/old\"}"), Ok(&b"{\"id\":\"/old\"}"[..]));
        assert_eq!(open(b""), Err(ChecksumError::Unknown { len: 0 }));
        assert_eq!(open(b"P1\x00"), Err(ChecksumError::Unknown { len: 3 }));
        assert!(matches!(open(b"\x00\x00garbage"), Err(ChecksumError::Unknown { .. })));
    }
}
