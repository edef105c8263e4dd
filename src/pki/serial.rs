//! Certificate serial numbers: 127 bits from the operating system's random number generator,
//! so serials are unpredictable (CA/B Forum: at least 64 random bits) and never collide in
//! practice; the store still refuses a repeat.

use x509_cert::serial_number::SerialNumber;

/// Octets of a serial number as drawn; the first has its top bit clear and is never zero,
/// so the DER encoding is exactly this long (no sign octet, no stripped leading zero).
const SERIAL_LEN: usize = 16;

/// A fresh random serial: 16 content octets, positive, 127 bits of which 120+ are random.
///
/// # Panics
///
/// If the operating system's random number generator fails, which leaves nothing safe to do.
pub fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; SERIAL_LEN];
    loop {
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut bytes).expect("the operating system random number generator failed");
        bytes[0] &= 0x7f;
        // A zero first octet would shorten the encoding; draw again (1 time in 128).
        if bytes[0] != 0 {
            break;
        }
    }
    #[allow(clippy::expect_used)]
    SerialNumber::new(&bytes).expect("16 octets with the top bit clear are a valid serial")
}

/// The serial as lower-case hex of its DER content octets (the store's key).
pub fn serial_hex(serial: &SerialNumber) -> String {
    hex::encode(serial.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Encode;

    #[test]
    fn serials_are_sixteen_positive_octets_and_differ() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let s = random_serial();
            let der = s.to_der().unwrap();
            // INTEGER, length 16, first content octet 0x01..=0x7f
            assert_eq!(der[0], 0x02);
            assert_eq!(der[1] as usize, SERIAL_LEN);
            assert!((0x01..=0x7f).contains(&der[2]), "{der:02x?}");
            let hex = serial_hex(&s);
            assert_eq!(hex.len(), 32);
            assert_eq!(hex, hex.to_lowercase());
            assert!(seen.insert(hex), "serial repeated");
        }
    }

    #[test]
    fn serial_hex_is_the_content_octets() {
        let s = SerialNumber::new(&[0x00, 0x81, 0x02]).unwrap();
        // A positive value with the top bit set keeps its sign octet.
        assert_eq!(serial_hex(&s), "008102");
    }
}
