//! The id of a record: a UUID version 4 (RFC 9562 §5.4) in its 36-character
//! text form, `8-4-4-4-12` lowercase hex digits, from 16 random bytes.

use std::fmt::Write as _;

/// The UUID v4 text of `random` (its version and variant bits are set).
pub fn uuid_v4(mut random: [u8; 16]) -> String {
    random[6] = (random[6] & 0x0f) | 0x40;
    random[8] = (random[8] & 0x3f) | 0x80;
    let mut id = String::with_capacity(36);
    for (i, byte) in random.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            id.push('-');
        }
        // Writing to a String cannot fail.
        let _ = write!(id, "{byte:02x}");
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_version_and_variant_and_groups_the_digits() {
        let id = uuid_v4([0xff; 16]);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = uuid_v4(std::array::from_fn(|i| i as u8));
        assert_eq!(id, "00010203-0405-4607-8809-0a0b0c0d0e0f");
        assert_eq!(uuid_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
    }
}
