//! The table's file format (version 2): a header, then one fixed-size record per slot, each
//! sealed by its own CRC-32; and how a lease or a quarantine entry becomes a record and back.
//! Reading and writing whole files is in `load.rs` and `store.rs`; this is the layout they
//! share.
//!
//! All integers are little-endian.
//!
//! Header, 512 bytes at offset 0: magic `EXTNETLT` (8), version u32, record size u32 (256),
//! slots u32 (the number of records), node name length u16 and up to 128 bytes of node name,
//! zeros, CRC-32 (IEEE) of bytes 0..508 at 508.
//!
//! Record of slot `s`, 256 bytes at `512 + 256 * s`: state u8 (0 free, 1 lease,
//! 2 quarantine), mode u8 (0 cgroup, 1 netns), user length u8, profile length u8, job id u32,
//! uid u32, slot u32 (= `s`), first port u16, last port u16, mark u32, node address 4 bytes,
//! flags u32 (bit 0: `last_logged` is set; in a quarantine record bit 1: the uid of the user
//! who released the block is set; in a lease record bit 2: the node's IPv6 address is set),
//! since u64, last_logged u64, quarantine end u64, user 64 bytes, profile 64 bytes, the
//! node's IPv6 address 16 bytes (`node_addr6`; zeros in records of earlier versions, whose
//! flags lack bit 2), zeros, CRC-32 of bytes 0..252 at 252. A free record is all zeros.
//!
//! Why this shape: a record never straddles a 512-byte sector and carries its own checksum,
//! so a torn write is detected rather than read as a lease; records are independent of each
//! other, so a lease or a release rewrites one record in place and a crash between two
//! record writes leaves a valid table.

use super::{Lease, LeaseError, Quarantined};
use compact_str::CompactString;
use extnet_policy::Mode;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

/// The version of the table's file format.
pub const TABLE_VERSION: u32 = 2;

pub const MAGIC: &[u8; 8] = b"EXTNETLT";
pub const HEADER: usize = 512;
pub const RECORD: usize = 256;
pub const NODE_MAX: usize = 128;
pub const USER_MAX: usize = 64;
pub const PROFILE_MAX: usize = 64;
/// The file grows by this many slots at a time (each growth rewrites it whole).
pub const GROW: usize = 64;
/// A record's state byte.
pub const FREE: u8 = 0;
pub const LEASE: u8 = 1;
pub const QUARANTINE: u8 = 2;

/// Where the header's fields start (the magic at 0, the checksum in the last 4 bytes).
pub mod header_at {
    pub const VERSION: usize = 8;
    pub const RECORD_SIZE: usize = 12;
    pub const SLOTS: usize = 16;
    pub const NODE_LEN: usize = 20;
    pub const NODE: usize = 22;
}

/// Where a record's fields start (the checksum in the last 4 bytes).
pub mod at {
    pub const STATE: usize = 0;
    pub const MODE: usize = 1;
    pub const USER_LEN: usize = 2;
    pub const PROFILE_LEN: usize = 3;
    pub const JOB_ID: usize = 4;
    pub const UID: usize = 8;
    pub const SLOT: usize = 12;
    pub const PORT_FIRST: usize = 16;
    pub const PORT_LAST: usize = 18;
    pub const MARK: usize = 20;
    pub const NODE_ADDR: usize = 24;
    /// Bit 0: `last_logged` is set.
    pub const FLAGS: usize = 28;
    pub const SINCE: usize = 32;
    pub const LAST_LOGGED: usize = 40;
    /// The end of a quarantine.
    pub const UNTIL: usize = 48;
    pub const USER: usize = 56;
    pub const PROFILE: usize = 120;
    /// The node's IPv6 address (flag [`super::LEASE_ADDR6`]).
    pub const NODE_ADDR6: usize = 184;
}

/// The bytes of slot `slot`'s record in the file.
pub fn record_range(slot: usize) -> Range<usize> {
    let o = HEADER + slot * RECORD;
    o..o + RECORD
}

/// CRC-32 (IEEE 802.3, as zlib's `crc32`).
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

pub fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
pub fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
pub fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}
pub fn put(b: &mut [u8], o: usize, v: &[u8]) {
    b[o..o + v.len()].copy_from_slice(v);
}

/// Seals a header or record: CRC of all but its last 4 bytes, in its last 4 bytes.
pub fn seal(b: &mut [u8]) {
    let n = b.len() - 4;
    let c = crc32(&b[..n]);
    put(b, n, &c.to_le_bytes());
}

/// [`seal`], or the CRC of `old` when the bytes it covers are the same: a whole-file write
/// re-encodes every record, and only the changed ones need their checksum computed again.
pub fn seal_like(b: &mut [u8], old: Option<&[u8]>) {
    let n = b.len() - 4;
    match old {
        Some(o) if o[..n] == b[..n] => {
            let (dst, src) = (&mut b[n..], &o[n..]);
            dst.copy_from_slice(src);
        }
        _ => seal(b),
    }
}

pub fn sealed(b: &[u8]) -> bool {
    let n = b.len() - 4;
    crc32(&b[..n]) == u32_at(b, n)
}

/// A lease record's mode byte.
pub fn mode_byte(m: Mode) -> u8 {
    match m {
        Mode::Cgroup => 0,
        Mode::Netns => 1,
    }
}

/// The mode a lease record's mode byte stands for (`None`: an unknown byte).
pub fn mode_of(b: u8) -> Option<Mode> {
    match b {
        0 => Some(Mode::Cgroup),
        1 => Some(Mode::Netns),
        _ => None,
    }
}

/// Refuses a job whose names do not fit in a lease record: it is denied, its names are never
/// cut.
pub fn check_names(job_id: u32, user: &str, profile: &str) -> Result<(), LeaseError> {
    for (what, v, max) in [
        ("user name", user, USER_MAX),
        ("profile name", profile, PROFILE_MAX),
    ] {
        if v.len() > max {
            return Err(LeaseError::TooLong {
                what: format!("job {job_id}'s {what} {v:?}"),
                len: v.len(),
                max,
                fix: "the job is denied; use shorter names",
            });
        }
    }
    Ok(())
}

/// The header of node `node`'s file of `slots` records, sealed.
pub fn header(node: &str, slots: usize) -> Result<[u8; HEADER], LeaseError> {
    if node.len() > NODE_MAX {
        return Err(LeaseError::TooLong {
            what: format!("node name {node:?}"),
            len: node.len(),
            max: NODE_MAX,
            fix: "use a shorter node name",
        });
    }
    let mut h = [0u8; HEADER];
    put(&mut h, 0, MAGIC);
    put(&mut h, header_at::VERSION, &TABLE_VERSION.to_le_bytes());
    put(
        &mut h,
        header_at::RECORD_SIZE,
        &(RECORD as u32).to_le_bytes(),
    );
    put(&mut h, header_at::SLOTS, &(slots as u32).to_le_bytes());
    put(
        &mut h,
        header_at::NODE_LEN,
        &(node.len() as u16).to_le_bytes(),
    );
    put(&mut h, header_at::NODE, node.as_bytes());
    seal(&mut h);
    Ok(h)
}

/// A lease's record, without its checksum.
pub fn encode_lease(l: &Lease) -> Result<[u8; RECORD], LeaseError> {
    check_names(l.job_id, &l.user, &l.profile)?;
    let mut r = [0u8; RECORD];
    r[at::STATE] = LEASE;
    r[at::MODE] = mode_byte(l.mode);
    r[at::USER_LEN] = l.user.len() as u8;
    r[at::PROFILE_LEN] = l.profile.len() as u8;
    put(&mut r, at::JOB_ID, &l.job_id.to_le_bytes());
    put(&mut r, at::UID, &l.uid.to_le_bytes());
    put(&mut r, at::SLOT, &l.slot.to_le_bytes());
    put(&mut r, at::PORT_FIRST, &l.port_first.to_le_bytes());
    put(&mut r, at::PORT_LAST, &l.port_last.to_le_bytes());
    put(&mut r, at::MARK, &l.mark.to_le_bytes());
    put(&mut r, at::NODE_ADDR, &l.node_addr.octets());
    put(&mut r, at::FLAGS, &lease_flags(l).to_le_bytes());
    put(&mut r, at::SINCE, &l.since.to_le_bytes());
    let last_logged = l.last_logged.unwrap_or(0);
    put(&mut r, at::LAST_LOGGED, &last_logged.to_le_bytes());
    put(&mut r, at::USER, l.user.as_bytes());
    put(&mut r, at::PROFILE, l.profile.as_bytes());
    if let Some(a6) = l.node_addr6 {
        put(&mut r, at::NODE_ADDR6, &a6.octets());
    }
    Ok(r)
}

/// Bit of a lease record's flags: the node's IPv6 address is set.
const LEASE_ADDR6: u32 = 4;

/// A lease record's flags.
fn lease_flags(l: &Lease) -> u32 {
    u32::from(l.last_logged.is_some()) | l.node_addr6.map_or(0, |_| LEASE_ADDR6)
}

/// The node IPv6 address of lease record `r`, if its flags say it has one.
fn node_addr6_of(r: &[u8]) -> Option<Ipv6Addr> {
    (u32_at(r, at::FLAGS) & LEASE_ADDR6 != 0).then(|| {
        let b: [u8; 16] = r[at::NODE_ADDR6..at::NODE_ADDR6 + 16]
            .try_into()
            .expect("16 bytes");
        Ipv6Addr::from(b)
    })
}

/// A quarantine entry's record, without its checksum.
pub fn encode_quarantine(q: &Quarantined) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[at::STATE] = QUARANTINE;
    put(&mut r, at::JOB_ID, &q.job_id.to_le_bytes());
    put(&mut r, at::SLOT, &q.slot.to_le_bytes());
    put(&mut r, at::PORT_FIRST, &q.port_first.to_le_bytes());
    put(&mut r, at::PORT_LAST, &q.port_last.to_le_bytes());
    put(&mut r, at::UNTIL, &q.until.to_le_bytes());
    if let Some(uid) = q.uid {
        put(&mut r, at::UID, &uid.to_le_bytes());
        put(&mut r, at::FLAGS, &QUARANTINE_UID.to_le_bytes());
    }
    r
}

/// Bit of a quarantine record's flags: the uid field holds the releasing user.
const QUARANTINE_UID: u32 = 2;

/// True when record `r` says what [`encode_lease`] would write for `l` (its padding aside):
/// the store then leaves it alone without encoding it.
pub fn holds_lease(r: &[u8], l: &Lease) -> bool {
    let (u, p) = (l.user.as_bytes(), l.profile.as_bytes());
    r[at::STATE] == LEASE
        && r[at::MODE] == mode_byte(l.mode)
        && usize::from(r[at::USER_LEN]) == u.len()
        && usize::from(r[at::PROFILE_LEN]) == p.len()
        && u32_at(r, at::JOB_ID) == l.job_id
        && u32_at(r, at::UID) == l.uid
        && u32_at(r, at::SLOT) == l.slot
        && u16_at(r, at::PORT_FIRST) == l.port_first
        && u16_at(r, at::PORT_LAST) == l.port_last
        && u32_at(r, at::MARK) == l.mark
        && r[at::NODE_ADDR..at::NODE_ADDR + 4] == l.node_addr.octets()
        && u32_at(r, at::FLAGS) == lease_flags(l)
        && node_addr6_of(r) == l.node_addr6
        && u64_at(r, at::SINCE) == l.since
        && u64_at(r, at::LAST_LOGGED) == l.last_logged.unwrap_or(0)
        && r.get(at::USER..at::USER + u.len()) == Some(u)
        && r.get(at::PROFILE..at::PROFILE + p.len()) == Some(p)
}

/// The same for a quarantine entry ([`encode_quarantine`]).
pub fn holds_quarantine(r: &[u8], q: &Quarantined) -> bool {
    r[at::STATE] == QUARANTINE
        && u32_at(r, at::JOB_ID) == q.job_id
        && u32_at(r, at::SLOT) == q.slot
        && u16_at(r, at::PORT_FIRST) == q.port_first
        && u16_at(r, at::PORT_LAST) == q.port_last
        && u64_at(r, at::UNTIL) == q.until
        && u32_at(r, at::FLAGS) == q.uid.map_or(0, |_| QUARANTINE_UID)
        && u32_at(r, at::UID) == q.uid.unwrap_or(0)
}

/// The names in lease record `r`, user then profile: what each is, the length its length
/// byte says, and its field (which the length of a damaged record may overrun).
pub fn names(r: &[u8]) -> [(&'static str, usize, &[u8]); 2] {
    [
        (
            "user name",
            usize::from(r[at::USER_LEN]),
            &r[at::USER..at::USER + USER_MAX],
        ),
        (
            "profile name",
            usize::from(r[at::PROFILE_LEN]),
            &r[at::PROFILE..at::PROFILE + PROFILE_MAX],
        ),
    ]
}

/// The lease in record `r`, as slot `slot`'s, with the mode and names the caller read from
/// it ([`mode_of`], [`names`]): checked when loading, as they are when dumping.
pub fn decode_lease(
    r: &[u8],
    slot: u32,
    mode: Mode,
    user: CompactString,
    profile: CompactString,
) -> Lease {
    let a = at::NODE_ADDR;
    Lease {
        job_id: u32_at(r, at::JOB_ID),
        user,
        uid: u32_at(r, at::UID),
        slot,
        port_first: u16_at(r, at::PORT_FIRST),
        port_last: u16_at(r, at::PORT_LAST),
        mark: u32_at(r, at::MARK),
        mode,
        profile,
        node_addr: Ipv4Addr::new(r[a], r[a + 1], r[a + 2], r[a + 3]),
        node_addr6: node_addr6_of(r),
        since: u64_at(r, at::SINCE),
        last_logged: (u32_at(r, at::FLAGS) & 1 != 0).then(|| u64_at(r, at::LAST_LOGGED)),
    }
}

/// The quarantine entry in record `r`, as slot `slot`'s.
pub fn decode_quarantine(r: &[u8], slot: u32) -> Quarantined {
    Quarantined {
        slot,
        port_first: u16_at(r, at::PORT_FIRST),
        port_last: u16_at(r, at::PORT_LAST),
        until: u64_at(r, at::UNTIL),
        job_id: u32_at(r, at::JOB_ID),
        uid: (u32_at(r, at::FLAGS) & QUARANTINE_UID != 0).then(|| u32_at(r, at::UID)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Job 7's lease of slot 3 (IPv4 only, no interim record yet).
    fn lease() -> Lease {
        Lease {
            job_id: 7,
            user: "alice".into(),
            uid: 1000,
            slot: 3,
            port_first: 20768,
            port_last: 21023,
            mark: 0x10003,
            mode: Mode::Cgroup,
            profile: "default".into(),
            node_addr: Ipv4Addr::new(10, 99, 0, 11),
            node_addr6: None,
            since: 1_700_000_000,
            last_logged: None,
        }
    }

    #[test]
    fn a_record_holds_an_entry_exactly_when_encoding_the_entry_gives_it() {
        let base = lease();
        let variants: Vec<Lease> = vec![
            base.clone(),
            Lease {
                job_id: 8,
                ..base.clone()
            },
            Lease {
                user: "alicf".into(),
                ..base.clone()
            },
            Lease {
                user: "alice2".into(),
                ..base.clone()
            },
            Lease {
                uid: 1001,
                ..base.clone()
            },
            Lease {
                slot: 4,
                ..base.clone()
            },
            Lease {
                port_first: 20767,
                ..base.clone()
            },
            Lease {
                port_last: 21024,
                ..base.clone()
            },
            Lease {
                mark: 0x10004,
                ..base.clone()
            },
            Lease {
                mode: Mode::Netns,
                ..base.clone()
            },
            Lease {
                profile: "defaulu".into(),
                ..base.clone()
            },
            Lease {
                profile: "".into(),
                ..base.clone()
            },
            Lease {
                node_addr: Ipv4Addr::new(10, 99, 0, 12),
                ..base.clone()
            },
            Lease {
                since: 1_700_000_001,
                ..base.clone()
            },
            Lease {
                last_logged: Some(0),
                ..base.clone()
            },
            Lease {
                last_logged: Some(1_700_000_600),
                ..base.clone()
            },
            Lease {
                node_addr6: Some("fd00:78e7::11".parse().unwrap()),
                ..base.clone()
            },
            Lease {
                node_addr6: Some("fd00:78e7::12".parse().unwrap()),
                ..base.clone()
            },
            Lease {
                node_addr6: Some("::".parse().unwrap()),
                ..base.clone()
            },
        ];
        for a in &variants {
            let r = encode_lease(a).unwrap();
            for b in &variants {
                let same = encode_lease(b).unwrap() == r;
                assert_eq!(holds_lease(&r, b), same, "{a:?} / {b:?}");
            }
            let q = Quarantined {
                slot: a.slot,
                port_first: a.port_first,
                port_last: a.port_last,
                until: a.since,
                job_id: a.job_id,
                uid: Some(a.uid),
            };
            assert!(
                !holds_quarantine(&r, &q),
                "a lease's record holds no quarantine"
            );
        }
        let q = Quarantined {
            slot: 3,
            port_first: 20768,
            port_last: 21023,
            until: 125,
            job_id: 7,
            uid: Some(1000),
        };
        let qs = [
            q.clone(),
            Quarantined {
                slot: 4,
                ..q.clone()
            },
            Quarantined {
                port_first: 1,
                ..q.clone()
            },
            Quarantined {
                port_last: 2,
                ..q.clone()
            },
            Quarantined {
                until: 126,
                ..q.clone()
            },
            Quarantined {
                job_id: 8,
                ..q.clone()
            },
            Quarantined {
                uid: Some(1001),
                ..q.clone()
            },
            Quarantined {
                uid: None,
                ..q.clone()
            },
        ];
        for a in &qs {
            let r = encode_quarantine(a);
            for b in &qs {
                assert_eq!(
                    holds_quarantine(&r, b),
                    encode_quarantine(b) == r,
                    "{a:?} / {b:?}"
                );
            }
            assert!(!holds_lease(&r, &base));
        }
        assert!(
            !holds_lease(&[0u8; RECORD], &base),
            "a blank record holds nothing"
        );
    }

    /// A lease record of the version before `node_addr6` (its bytes 184.. zero, flag bit 2
    /// clear) reads as a lease without it; one with it reads back the same.
    #[test]
    fn node_addr6_is_optional_in_lease_records() {
        let mut l = Lease {
            last_logged: Some(1_700_000_600),
            ..lease()
        };
        let decode = |r: &[u8]| decode_lease(r, 3, Mode::Cgroup, "alice".into(), "default".into());
        let old = encode_lease(&l).unwrap();
        assert_eq!(
            u32_at(&old, at::FLAGS),
            1,
            "the flags of the earlier version"
        );
        assert!(old[at::NODE_ADDR6..RECORD].iter().all(|&b| b == 0));
        assert_eq!(decode(&old), l);
        l.node_addr6 = Some("fd00:78e7::11".parse().unwrap());
        let new = encode_lease(&l).unwrap();
        assert_eq!(decode(&new), l);
        assert!(holds_lease(&new, &l) && !holds_lease(&old, &l));
    }

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
