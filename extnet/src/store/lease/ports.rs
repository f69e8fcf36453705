//! Which ports are taken, one bit per port: what allocation asks of every candidate block
//! ("is any of its ports leased or in quarantine?") and what the consistency check asks of
//! every lease ("does it share a port with another?").

/// Which of the 65 536 ports are taken (leased or in quarantine): one bit each (8 KiB), so
/// marking or testing a block costs a few word operations whatever the number of leases,
/// and the blocks need no sorting.
pub(super) struct PortMap {
    words: Box<[u64; 1024]>,
}

impl PortMap {
    pub(super) fn new() -> PortMap {
        PortMap {
            words: Box::new([0u64; 1024]),
        }
    }

    /// The words a block `lo..=hi` covers, each with the mask of its ports in it.
    fn spans(lo: u16, hi: u16) -> impl Iterator<Item = (usize, u64)> {
        let (lo, hi) = (usize::from(lo), usize::from(hi.max(lo)));
        (lo / 64..=hi / 64).map(move |w| {
            let from = if w == lo / 64 { lo % 64 } else { 0 };
            let to = if w == hi / 64 { hi % 64 } else { 63 };
            let mask = (u64::MAX >> (63 - (to - from))) << from;
            (w, mask)
        })
    }

    /// True when a port of the block `lo..=hi` is marked.
    pub(super) fn overlaps(&self, lo: u16, hi: u16) -> bool {
        Self::spans(lo, hi).any(|(w, m)| self.words[w] & m != 0)
    }

    /// Marks the block; true when a port of it was marked already.
    pub(super) fn mark(&mut self, lo: u16, hi: u16) -> bool {
        let mut clash = false;
        for (w, m) in Self::spans(lo, hi) {
            clash |= self.words[w] & m != 0;
            self.words[w] |= m;
        }
        clash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_map_agrees_with_comparing_ranges() {
        // blocks of every width and alignment, against the plain overlap test
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            let mut map = PortMap::new();
            let mut held: Vec<(u16, u16)> = Vec::new();
            for _ in 0..20 {
                let lo = (next() % 65536) as u16;
                let width = [1u64, 2, 31, 32, 63, 64, 65, 200, 5000][(next() % 9) as usize];
                let hi = (u64::from(lo) + (next() % width)).min(65535) as u16;
                let plain = held.iter().any(|&(a, b)| a <= hi && lo <= b);
                assert_eq!(
                    map.overlaps(lo, hi),
                    plain,
                    "round {round}: {lo}-{hi} against {held:?}"
                );
                assert_eq!(map.mark(lo, hi), plain, "round {round}: {lo}-{hi}");
                held.push((lo, hi));
            }
        }
        let mut map = PortMap::new();
        assert!(!map.mark(0, 65535));
        assert!(map.overlaps(65535, 65535) && map.overlaps(0, 0));
    }
}
