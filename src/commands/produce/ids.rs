//! Message ids: random UUIDs (version 4) from the operating system's random source.
//!
//! The producer needs one id per message, hundreds of thousands a second at `--interval 0`.
//! `Uuid::new_v4()` asks the OS for 16 bytes each time (a system call per message); reading the
//! OS's random bytes for 256 ids at once costs a fraction of that, with ids exactly as random.
//! The ids stay 16 bytes until the message's JSON is written.

use uuid::{Builder, Uuid};

/// Ids per read of the OS's random source.
const IDS_PER_READ: usize = 256;

/// Hands out random version-4 UUIDs as lower-case hyphenated text.
pub struct RandomIds {
    bytes: Box<[u8; 16 * IDS_PER_READ]>,
    next: usize,
}

impl RandomIds {
    pub fn new() -> Self {
        RandomIds {
            bytes: Box::new([0; 16 * IDS_PER_READ]),
            next: IDS_PER_READ,
        }
    }

    /// The next id.
    pub fn next_id(&mut self) -> Uuid {
        if self.next == IDS_PER_READ {
            if getrandom::fill(&mut self.bytes[..]).is_err() {
                // The OS source failed (it practically never does): uuid's own path, which
                // reads it once per id.
                return Uuid::new_v4();
            }
            self.next = 0;
        }
        let start = self.next * 16;
        let mut random = [0; 16];
        random.copy_from_slice(&self.bytes[start..start + 16]);
        self.next += 1;
        Builder::from_random_bytes(random).into_uuid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_distinct_version_4_uuids_across_reads() {
        let mut ids = RandomIds::new();
        let made: Vec<Uuid> = (0..3 * IDS_PER_READ + 5).map(|_| ids.next_id()).collect();
        let distinct: HashSet<&Uuid> = made.iter().collect();
        assert_eq!(distinct.len(), made.len());
        for id in &made {
            assert_eq!(id.get_version_num(), 4, "{id}");
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
    }
}
