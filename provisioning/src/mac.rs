//! MAC addresses as machine keys (`aa:bb:cc:dd:ee:ff`, lowercase).
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address; use six hex pairs like 52:54:00:12:34:56")]
pub struct BadMac(pub String);

impl FromStr for MacAddr {
    type Err = BadMac;

    /// Accepts `:` or `-` separators, any case.
    fn from_str(s: &str) -> Result<Self, BadMac> {
        let bad = || BadMac(s.to_string());
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        Ok(MacAddr(mac))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl MacAddr {
    /// The first six bytes of a DHCP `chaddr`, if it has them.
    pub fn from_chaddr(chaddr: &[u8]) -> Option<MacAddr> {
        let bytes: [u8; 6] = chaddr.get(..6)?.try_into().ok()?;
        Some(MacAddr(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_colons_and_dashes_and_prints_lowercase() {
        let mac: MacAddr = "52-54-00-AB-cd-0F".parse().expect("valid");
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!("52:54:00:ab:cd:0f".parse::<MacAddr>(), Ok(mac));
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "52:54:00:ab:cd", "52:54:00:ab:cd:0f:11", "5:54:00:ab:cd:0f", "zz:54:00:ab:cd:0f", "../etc"] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
