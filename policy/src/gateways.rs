//! `[gateways]`: the NAT gateways, their virtual (VRRP) addresses, and the deterministic
//! mapping (RFC 7422 style) of every node to a fixed public address and a fixed slice of
//! public ports on it.
//!
//! The mapping is a pure function of the policy and a node's place in a virtual address's
//! `nodes` list: node number `k` (0-based) of virtual address `V` uses public address
//! `V.public[k / S]` and slice `k % S` on it, where `S` = slices per address = the public
//! port range's length / `ports_per_node`. Slice `s` is the port pools as written shifted by
//! `s * ports_per_node`: the pools as written are slice 0. Nodes that share an address get
//! disjoint slices, and a node's port blocks are carved from its own slice, so the port a
//! node's SNAT gives a job's connection is the public port too: the gateway only rewrites the
//! address (no two nodes can ask it for the same public address and port, so it never remaps).
//!
//! IPv6 (optional, per virtual address: `address6`, `public6`) uses the same arithmetic with
//! the same slices and ports: node `k` leaves as `V.public6[k / S]` from the same ports as
//! its IPv4 connections, its source being its own IPv6 address (`nodes.first_address6`).
//!
//! What moves a node (changes its public address or ports): its place in the `nodes` list
//! (inserting or removing a name before it, reordering), `ports`' first port,
//! `ports_per_node`, the order of `public`, and the pools' ranges. Appending nodes at the end
//! of a list, or public addresses at the end of `public`, moves nobody.

use crate::{Policy, Pool};
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The checked `[gateways]` section.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Gateways {
    /// The public port range (inclusive).
    pub first_port: u16,
    pub last_port: u16,
    /// Ports in each node's slice.
    pub ports_per_node: u32,
    /// An outside address each gateway must reach through its public interface to hold its
    /// virtual addresses: pinged, or with a port, connected to over TCP.
    pub check: Option<(Ipv4Addr, Option<u16>)>,
    /// Percent of the conntrack table above which a gateway gives one virtual address away.
    pub conntrack_max_fill: u32,
    /// VRRP advertisement interval in milliseconds: a whole number of seconds from
    /// `advert_secs` (VRRPv2), or any multiple of 10 ms from `advert_ms` (VRRPv3's
    /// centiseconds).
    pub advert_ms: u32,
    pub hosts: Vec<GatewayHost>,
    pub vips: Vec<Vip>,
    /// Every node's cluster address, by name.
    pub node_addresses: BTreeMap<String, Ipv4Addr>,
    /// The nodes' IPv6 cluster addresses (`first_address6`), by name: only nodes that have one.
    pub node_addresses6: BTreeMap<String, Ipv6Addr>,
}

/// One gateway machine.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GatewayHost {
    pub name: String,
    pub cluster_interface: String,
    pub cluster_address: Ipv4Net,
    pub public_interface: String,
    pub public_address: Ipv4Net,
    pub sync_interface: String,
    pub sync_address: Ipv4Net,
    /// IPv6 on the cluster and public links (both or neither; needed to hold a virtual
    /// address with `address6`).
    pub cluster_address6: Option<Ipv6Net>,
    pub public_address6: Option<Ipv6Net>,
}

/// One virtual address, its public addresses, its holders and its nodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Vip {
    pub name: String,
    pub address: Ipv4Addr,
    pub vrid: u8,
    pub public: Vec<Ipv4Addr>,
    /// The IPv6 virtual address and its public addresses (`None`, empty: IPv4 only).
    pub address6: Option<Ipv6Addr>,
    pub public6: Vec<Ipv6Addr>,
    /// Host name and VRRP priority, in file order.
    pub holders: Vec<(String, u8)>,
    /// The host lists as written (for messages).
    pub nodes_written: Vec<String>,
    /// The expanded node names, in order: a node's index is its place on `public`.
    pub nodes: Vec<String>,
}

impl Vip {
    /// The priority of host `host`, when it holds this address.
    pub fn priority_of(&self, host: &str) -> Option<u8> {
        self.holders
            .iter()
            .find(|(h, _)| h == host)
            .map(|&(_, p)| p)
    }

    /// The holder with the highest priority (the master while it is up).
    pub fn master(&self) -> &str {
        self.holders
            .iter()
            .max_by_key(|(_, p)| *p)
            .map_or("", |(h, _)| h.as_str())
    }
}

/// Where one node's pool leaves: through which virtual address, from which ports, as which
/// public address (the same ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatEntry {
    pub node: String,
    pub node_addr: Ipv4Addr,
    /// Index of the pool in [`Policy::pools`].
    pub pool: usize,
    /// Index of the virtual address in [`Gateways::vips`].
    pub vip: usize,
    /// The node's ports of this pool (inclusive) = the public ports.
    pub ports: (u16, u16),
    pub public: Ipv4Addr,
    /// The node's slice on `public` (0-based), and on `public6`.
    pub slice: u32,
    /// The node's IPv6 address and the public IPv6 address its pool leaves as (the same
    /// ports and slice), when the virtual address has IPv6.
    pub node_addr6: Option<Ipv6Addr>,
    pub public6: Option<Ipv6Addr>,
}

/// Why a node has no place in the mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatError {
    #[error("node {node:?} is in no [[gateways.vip]] nodes list, so it has no gateway, public address or ports; add it to the nodes of a virtual address (and its address to [[gateways.nodes]])")]
    NoVip { node: String },
    #[error("node {node:?} uses virtual address {vip:?} for profile {profile:?}'s pool but is not in its nodes list; add it there")]
    NotOnPoolVip {
        node: String,
        vip: String,
        profile: String,
    },
}

impl Gateways {
    /// Node slices on one public address.
    pub fn slices_per_address(&self) -> u32 {
        (u32::from(self.last_port) - u32::from(self.first_port) + 1) / self.ports_per_node
    }

    /// The virtual address a node routes to by default: the first in file order that lists
    /// it.
    pub fn home(&self, node: &str) -> Option<usize> {
        self.vips
            .iter()
            .position(|v| v.nodes.iter().any(|n| n == node))
    }

    /// The virtual address with this cluster-side address.
    pub fn vip_by_address(&self, address: Ipv4Addr) -> Option<usize> {
        self.vips.iter().position(|v| v.address == address)
    }

    /// The public address and slice of node number `position` of virtual address `vip`.
    pub fn place(&self, vip: usize, position: usize) -> (Ipv4Addr, u32) {
        let spa = self.slices_per_address() as usize;
        (
            self.vips[vip].public[position / spa],
            (position % spa) as u32,
        )
    }

    /// The public IPv6 address of node number `position` of virtual address `vip` (its slice
    /// is the IPv4 one), when the address has IPv6.
    pub fn place6(&self, vip: usize, position: usize) -> Option<Ipv6Addr> {
        let spa = self.slices_per_address() as usize;
        self.vips[vip].public6.get(position / spa).copied()
    }

    /// The virtual address with this cluster-side IPv6 address.
    pub fn vip_by_address6(&self, address: Ipv6Addr) -> Option<usize> {
        self.vips.iter().position(|v| v.address6 == Some(address))
    }

    /// Public addresses virtual address `vip` needs for its nodes (per family).
    pub fn addresses_needed(&self, vip: usize) -> usize {
        self.vips[vip]
            .nodes
            .len()
            .div_ceil(self.slices_per_address() as usize)
    }

    /// The virtual addresses host `host` may hold, with its priority on each.
    pub fn vips_of_host(&self, host: &str) -> Vec<(usize, u8)> {
        self.vips
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.priority_of(host).map(|p| (i, p)))
            .collect()
    }

    pub fn host(&self, name: &str) -> Option<&GatewayHost> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

impl Policy {
    /// The virtual address pool `pool` of node `node` leaves through: the node's home for a
    /// pool routed by `node.route_table`, the pool's own gateway otherwise.
    fn pool_vip(&self, g: &Gateways, home: usize, pool: &Pool) -> usize {
        if pool.route_table == self.node.route_table {
            home
        } else {
            g.vip_by_address(pool.gateway)
                .expect("validation: a pool's gateway is a virtual address")
        }
    }

    /// Every pool of node `node` through the gateways: its ports, virtual address and public
    /// address. Empty without `[gateways]`.
    pub fn nat_entries(&self, node: &str) -> Result<Vec<NatEntry>, NatError> {
        let Some(g) = &self.gateways else {
            return Ok(Vec::new());
        };
        self.entries_with(g, node, |vip| {
            g.vips[vip].nodes.iter().position(|n| n == node)
        })
    }

    /// [`Policy::nat_entries`] with `position(vip)`: the node's place in that address's list.
    fn entries_with(
        &self,
        g: &Gateways,
        node: &str,
        position: impl Fn(usize) -> Option<usize>,
    ) -> Result<Vec<NatEntry>, NatError> {
        let home = (0..g.vips.len())
            .find(|&v| position(v).is_some())
            .ok_or_else(|| NatError::NoVip {
                node: node.to_owned(),
            })?;
        let node_addr = g.node_addresses[node];
        let node_addr6 = g.node_addresses6.get(node).copied();
        let mut out = Vec::with_capacity(self.pools.len());
        for (i, pool) in self.pools.iter().enumerate() {
            let vip = self.pool_vip(g, home, pool);
            let position = position(vip).ok_or_else(|| NatError::NotOnPoolVip {
                node: node.to_owned(),
                vip: g.vips[vip].name.clone(),
                profile: pool.name().to_owned(),
            })?;
            let (public, slice) = g.place(vip, position);
            // validation: every node of a virtual address with IPv6 has an IPv6 address
            let public6 = node_addr6.and(g.place6(vip, position));
            let shift = slice * g.ports_per_node;
            out.push(NatEntry {
                node: node.to_owned(),
                node_addr,
                pool: i,
                vip,
                ports: (
                    (u32::from(pool.ports.first) + shift) as u16,
                    (u32::from(pool.ports.last) + shift) as u16,
                ),
                public,
                slice,
                node_addr6: public6.and(node_addr6),
                public6,
            });
        }
        Ok(out)
    }

    /// The policy as node `node` uses it: with `[gateways]`, its pools' ranges are its own
    /// slice's and its gateways are its virtual addresses; without, the policy itself.
    pub fn for_node(&self, node: &str) -> Result<Policy, NatError> {
        let entries = self.nat_entries(node)?;
        let mut p = self.clone();
        let Some(g) = &self.gateways else {
            return Ok(p);
        };
        let home = g.home(node).expect("nat_entries found it");
        for e in &entries {
            let pool = &mut p.pools[e.pool];
            pool.ports.first = e.ports.0;
            pool.ports.last = e.ports.1;
            pool.gateway = g.vips[e.vip].address;
            // each pool's IPv6 leaves through the IPv6 twin of the address its IPv4 leaves
            // through, whose master translates it to that address's `public6`
            if p.node.gateway6.is_some() {
                pool.gateway6 = g.vips[e.vip].address6;
            }
        }
        p.node.gateway = g.vips[home].address;
        // on a node with IPv6 (`node.gateway6` set), IPv6 goes to the home address's IPv6
        // twin, as IPv4 goes to the home address
        if let (Some(_), Some(a6)) = (p.node.gateway6, g.vips[home].address6) {
            p.node.gateway6 = Some(a6);
        }
        p.ports = p.pools[0].ports;
        Ok(p)
    }

    /// Every node's NAT entries, in the order of the virtual addresses' lists (each node
    /// once, at its first listing). Linear in the nodes: one index per virtual address.
    pub fn all_nat_entries(&self) -> Vec<NatEntry> {
        let Some(g) = &self.gateways else {
            return Vec::new();
        };
        let index: Vec<std::collections::HashMap<&str, usize>> = g
            .vips
            .iter()
            .map(|v| {
                v.nodes
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.as_str(), i))
                    .collect()
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for v in &g.vips {
            for n in &v.nodes {
                if seen.insert(n.as_str()) {
                    // validation: every listed node is on the virtual address of every pool
                    if let Ok(e) =
                        self.entries_with(g, n, |vip| index[vip].get(n.as_str()).copied())
                    {
                        out.extend(e);
                    }
                }
            }
        }
        out
    }

    /// Which node and pool public `address:port` belongs to (IPv4 `public` or IPv6
    /// `public6`: the same arithmetic): the inverse of the mapping.
    pub fn nat_lookup(
        &self,
        address: impl Into<IpAddr>,
        port: u16,
    ) -> Result<NatEntry, NatLookupError> {
        let address = address.into();
        let g = self.gateways.as_ref().ok_or(NatLookupError::NoGateways)?;
        let (vip, index) = g
            .vips
            .iter()
            .enumerate()
            .find_map(|(i, v)| {
                match address {
                    IpAddr::V4(a) => v.public.iter().position(|&p| p == a),
                    IpAddr::V6(a) => v.public6.iter().position(|&p| p == a),
                }
                .map(|a| (i, a))
            })
            .ok_or(NatLookupError::NotPublic(address))?;
        if port < g.first_port || port > g.last_port {
            return Err(NatLookupError::PortOutside {
                port,
                first: g.first_port,
                last: g.last_port,
            });
        }
        let at = SocketAddr::new(address, port);
        let slice = (u32::from(port) - u32::from(g.first_port)) / g.ports_per_node;
        let spa = g.slices_per_address();
        if slice >= spa {
            return Err(NatLookupError::NoSlice { at });
        }
        let position = index * spa as usize + slice as usize;
        let node = g.vips[vip]
            .nodes
            .get(position)
            .ok_or(NatLookupError::NoNode {
                at,
                vip: g.vips[vip].name.clone(),
                position,
            })?;
        let entries = self.nat_entries(node).map_err(NatLookupError::Node)?;
        entries
            .into_iter()
            .find(|e| e.vip == vip && e.ports.0 <= port && port <= e.ports.1)
            .ok_or_else(|| NatLookupError::NoPool {
                at,
                node: node.clone(),
            })
    }
}

/// Why a public address and port belong to no node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatLookupError {
    #[error("the policy has no [gateways] section: public addresses are not mapped to nodes")]
    NoGateways,
    #[error("{0} is none of the policy's public addresses ([[gateways.vip]] public, public6)")]
    NotPublic(IpAddr),
    #[error("port {port} is outside the public port range {first}-{last} ([gateways] ports)")]
    PortOutside { port: u16, first: u16, last: u16 },
    #[error("{at} is past the last whole node slice of the public port range: no node uses it")]
    NoSlice { at: SocketAddr },
    #[error("{at} is node slice {position} of virtual address {vip:?}, but its nodes list is shorter: no node uses it")]
    NoNode {
        at: SocketAddr,
        vip: String,
        position: usize,
    },
    #[error("{at} is in node {node:?}'s slice but in none of its pools that leave through this address: no job of it uses that port")]
    NoPool { at: SocketAddr, node: String },
    #[error(transparent)]
    Node(NatError),
}
