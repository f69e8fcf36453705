//! The gateway's conntrackd configuration: FTFW state sync with the hosts it shares a virtual
//! address with, over the sync link, so that a connection a peer translated is in this host's
//! external cache and is committed into its kernel when this host becomes master
//! (`notify.sh`): established connections survive a failover. One peer: unicast UDP; more:
//! multicast on the sync link. No peer: no conntrackd (`None`). Both families are synced
//! (no family filter); a host with IPv6 also accepts ICMPv6 and ignores its own IPv6
//! addresses.
//!
//! The lock file and the control socket live in the rendering's directory, so that two
//! gateways on one machine (the test cluster's namespaces) do not share them.

use super::peers;
use extnet_policy::gateways::{GatewayHost, Gateways};
use std::fmt::Write;

/// The UDP port (unicast) or multicast group number of the sync.
pub const SYNC_PORT: u16 = 3780;
/// The multicast group of the sync with more than one peer.
pub const SYNC_GROUP: &str = "225.0.0.50";

pub fn config(g: &Gateways, h: &GatewayHost, dir: &str) -> Option<String> {
    let peers = peers(g, h);
    if peers.is_empty() {
        return None;
    }
    let mut s = format!(
        "# conntrackd of NAT gateway {}, rendered by `extnet gateway render` from the policy; do not edit\nSync {{\n    Mode FTFW {{\n        DisableExternalCache Off\n        CommitTimeout 1800\n        PurgeTimeout 5\n    }}\n",
        h.name
    );
    if let [peer] = peers.as_slice() {
        let _ = write!(
            s,
            "    UDP {{\n        IPv4_address {}\n        IPv4_Destination_Address {}\n        Port {SYNC_PORT}\n        Interface {}\n        SndSocketBuffer 1249280\n        RcvSocketBuffer 1249280\n        Checksum on\n    }}\n",
            h.sync_address.addr(),
            peer.sync_address.addr(),
            h.sync_interface
        );
    } else {
        let _ = write!(
            s,
            "    Multicast {{\n        IPv4_address {SYNC_GROUP}\n        Group {SYNC_PORT}\n        IPv4_interface {}\n        Interface {}\n        SndSocketBuffer 1249280\n        RcvSocketBuffer 1249280\n        Checksum on\n    }}\n",
            h.sync_address.addr(),
            h.sync_interface
        );
    }
    let mut own: Vec<String> = [
        h.cluster_address.addr(),
        h.public_address.addr(),
        h.sync_address.addr(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    own.sort();
    own.dedup();
    let mut own6: Vec<String> = [h.cluster_address6, h.public_address6]
        .iter()
        .flatten()
        .map(|a| a.addr().to_string())
        .collect();
    own6.sort();
    own6.dedup();
    if !own6.is_empty() {
        own6.insert(0, "::1".to_owned());
    }
    let _ = write!(
        s,
        "}}\n\nGeneral {{\n    HashSize 32768\n    HashLimit 262144\n    LogFile off\n    Syslog on\n    LockFile {dir}/conntrackd.lock\n    UNIX {{\n        Path {dir}/conntrackd.ctl\n        Backlog 20\n    }}\n    NetlinkBufferSize 2097152\n    NetlinkBufferSizeMaxGrowth 8388608\n    Filter From Userspace {{\n        Protocol Accept {{\n            TCP\n            UDP\n            ICMP\n{}        }}\n        Address Ignore {{\n            IPv4_address 127.0.0.1\n{}{}        }}\n    }}\n}}\n",
        if own6.is_empty() {
            ""
        } else {
            "            IPv6-ICMP\n"
        },
        own.iter().map(|a| format!("            IPv4_address {a}\n")).collect::<String>(),
        own6.iter().map(|a| format!("            IPv6_address {a}\n")).collect::<String>()
    );
    Some(s)
}
