//! The kernel's notifications of routing objects: links, IPv4 addresses, routes, rules and
//! interface settings, as `ip -4 monitor link address route rule netconf` prints them. The
//! socket is a [`Listener`]; this module names the groups and reads what a notification is
//! about, no more (who acts on it is the caller's business).

use super::socket::{Listener, Notification, Protocol};
use super::NetlinkError;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
const RTM_NEWNETCONF: u16 = 80;
const RTM_DELNETCONF: u16 = 81;

/// An rtnetlink multicast group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// `RTNLGRP_LINK`: links made, deleted, set up or down, renamed.
    Link,
    /// `RTNLGRP_IPV4_IFADDR`: IPv4 addresses.
    Ipv4Addr,
    /// `RTNLGRP_IPV4_ROUTE`: IPv4 routes of every table.
    Ipv4Route,
    /// `RTNLGRP_IPV4_RULE`: IPv4 policy routing rules.
    Ipv4Rule,
    /// `RTNLGRP_IPV4_NETCONF`: IPv4 interface settings (`forwarding`).
    Ipv4Netconf,
    /// `RTNLGRP_IPV6_ROUTE`: IPv6 routes of every table.
    Ipv6Route,
    /// `RTNLGRP_IPV6_RULE`: IPv6 policy routing rules.
    Ipv6Rule,
}

impl Group {
    fn number(self) -> u32 {
        match self {
            Group::Link => libc::RTNLGRP_LINK,
            Group::Ipv4Addr => libc::RTNLGRP_IPV4_IFADDR,
            Group::Ipv4Route => libc::RTNLGRP_IPV4_ROUTE,
            Group::Ipv4Rule => libc::RTNLGRP_IPV4_RULE,
            Group::Ipv4Netconf => libc::RTNLGRP_IPV4_NETCONF,
            Group::Ipv6Route => libc::RTNLGRP_IPV6_ROUTE,
            Group::Ipv6Rule => libc::RTNLGRP_IPV6_RULE,
        }
    }
}

/// Subscribes a new socket, in the calling thread's network namespace, to `groups`. Equals
/// `ip monitor` of those objects.
pub fn listen(groups: &[Group]) -> Result<Listener, NetlinkError> {
    let numbers: Vec<u32> = groups.iter().map(|g| g.number()).collect();
    Listener::open(Protocol::Route, &numbers).map_err(NetlinkError::Open)
}

/// What a routing notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A link was made or changed (`new`), or deleted; `up`: administratively up
    /// (`IFF_UP`) after the change.
    Link {
        new: bool,
        index: u32,
        up: bool,
    },
    Addr {
        new: bool,
    },
    Route {
        new: bool,
    },
    Rule {
        new: bool,
    },
    Netconf,
    /// Another message type.
    Other(u16),
}

/// Reads what `n` is about (its type, and for a link its `ifinfomsg`).
pub fn change(n: &Notification<'_>) -> Change {
    match n.msg_type {
        RTM_NEWLINK | RTM_DELLINK => {
            // struct ifinfomsg: family u8, pad u8, type u16, index i32, flags u32, change u32
            let word = |at: usize| {
                n.payload
                    .get(at..at + 4)
                    .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            };
            Change::Link {
                new: n.msg_type == RTM_NEWLINK,
                index: word(4),
                up: word(8) & libc::IFF_UP as u32 != 0,
            }
        }
        RTM_NEWADDR | RTM_DELADDR => Change::Addr {
            new: n.msg_type == RTM_NEWADDR,
        },
        RTM_NEWROUTE | RTM_DELROUTE => Change::Route {
            new: n.msg_type == RTM_NEWROUTE,
        },
        RTM_NEWRULE | RTM_DELRULE => Change::Rule {
            new: n.msg_type == RTM_NEWRULE,
        },
        RTM_NEWNETCONF | RTM_DELNETCONF => Change::Netconf,
        other => Change::Other(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_notification_says_which_link_and_whether_it_is_up() {
        let mut ifinfo = vec![0u8; 16];
        ifinfo[4..8].copy_from_slice(&7i32.to_ne_bytes());
        ifinfo[8..12].copy_from_slice(&(libc::IFF_UP as u32 | 0x1000).to_ne_bytes());
        let n = Notification {
            msg_type: RTM_NEWLINK,
            payload: &ifinfo,
        };
        assert_eq!(
            change(&n),
            Change::Link {
                new: true,
                index: 7,
                up: true
            }
        );
        ifinfo[8..12].copy_from_slice(&0u32.to_ne_bytes());
        let n = Notification {
            msg_type: RTM_DELLINK,
            payload: &ifinfo,
        };
        assert_eq!(
            change(&n),
            Change::Link {
                new: false,
                index: 7,
                up: false
            }
        );
        // a payload cut short reads as link 0, down; never a panic
        let n = Notification {
            msg_type: RTM_NEWLINK,
            payload: &[1, 2],
        };
        assert!(matches!(change(&n), Change::Link { index: 0, .. }));
        let n = Notification {
            msg_type: RTM_DELROUTE,
            payload: &[],
        };
        assert_eq!(change(&n), Change::Route { new: false });
    }
}
