//! Mesh DNS's data: the services a proxy knows, the names a client reaches each by, and
//! the **VIP table** — the address each one answers with, and back.
//!
//! A proxy's [`crate::Snapshot`] lists the hosts of the ServiceEntries it sees
//! ([`MeshService`]: each host with its namespace, its declared `addresses` and the DNS
//! names that reach it from the proxy's namespace). [`VipTable::build`] turns that list
//! into the table mesh DNS answers from (`weft proxy --dns`) and transparent interception
//! reads to map a connection's original destination back to its service
//! ([`VipTable::host_for`]). It is built once per installed config, never per query.
//!
//! **Addresses.** A service that declares `addresses` answers with those that are one IP
//! each (`10.0.0.5`, `10.0.0.5/32`, `2001:db8::5/128`; a wider CIDR names no one
//! address and is left out): A with the IPv4 ones, AAAA with the IPv6 ones. Every other
//! (non-wildcard) host gets a **virtual IP** in Istio's auto-allocation range
//! 240.240.0.0/16 ([`VIP_NET`]) — IPv4 only: AAAA for it is answered with no records
//! (NODATA), so that a client falls back to IPv4 at once instead of trying an IPv6
//! address that interception (iptables, IPv4) would not catch.
//!
//! **Stable VIPs.** A host's VIP depends on the set of hosts alone: its slot is a hash
//! of the host name (FNV-1a, fixed forever: changing it moves every VIP in every mesh),
//! and when two hosts want one slot the one first in sorted order keeps it, the other
//! taking the next free slot. So every proxy that sees the same services gives the same
//! VIPs, and a service keeps its VIP while others come and go — unless a newcomer
//! sorting before it wants the same slot, which with a few thousand services among
//! 65,024 slots is rare. The last octet is never 0 or 255 (.0 and .255 addresses are
//! treated specially by some stacks). A declared address that happens to lie in the
//! range is reserved first, so no VIP duplicates it. Past [`VIP_SLOTS`] hosts the rest
//! get no VIP (their names answer NODATA) and [`VipTable::unallocated`] says how many.
//!
//! **Wildcard hosts** (`*.example.com`): no VIP — one address could not be mapped back
//! to the name asked. A wildcard host with declared addresses answers every name under
//! it (`a.example.com`, not `example.com`) with them, the longest wildcard first, an
//! exact host before any wildcard; a wildcard host without addresses is not answered
//! (those names are forwarded to the system's resolver, as Istio's DNS proxy does).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

/// Istio's auto-allocation range for ServiceEntry VIPs: 240.240.0.0/16.
pub const VIP_NET: Ipv4Addr = Ipv4Addr::new(240, 240, 0, 0);

/// Addresses in the range a VIP may take: 256 × 254 (no .0 or .255 last octet).
pub const VIP_SLOTS: usize = 256 * 254;

/// A service host a proxy knows: one host of a ServiceEntry it sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshService {
    /// Lower case, as declared (`reviews.default.svc.cluster.local`, `api.example.com`,
    /// `*.example.com`, or a short name a ServiceEntry declares literally).
    pub host: String,
    /// The declaring ServiceEntry's namespace.
    pub namespace: String,
    /// Its `addresses` that are one IP each (see the module's doc).
    pub addresses: Vec<IpAddr>,
    /// The DNS names (lower case, no trailing dot) that reach it from the proxy's
    /// namespace: the host itself, and for a Kubernetes-style
    /// `name.ns.svc.cluster.local` also `name.ns.svc`, `name.ns` and, from namespace
    /// `ns`, `name` — each name given to one service only (as request hosts are,
    /// [`crate::names`]). Empty for a wildcard host.
    pub names: Vec<String>,
}

/// The declared addresses of a ServiceEntry that are one IP each.
pub fn single_addresses(addresses: &[String]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for a in addresses {
        let ip = match a.split_once('/') {
            None => a.parse::<IpAddr>().ok(),
            Some((ip, bits)) => match (ip.parse::<IpAddr>(), bits) {
                (Ok(ip @ IpAddr::V4(_)), "32") | (Ok(ip @ IpAddr::V6(_)), "128") => Some(ip),
                _ => None,
            },
        };
        if let Some(ip) = ip {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// The services of `hosts` (host → (namespace, declared addresses)), sorted by host,
/// each with the names a client in namespace `viewer` reaches it by. A name two
/// services could claim goes as [`crate::names`] gives request hosts: a host declared
/// literally keeps its name, unless it is a short name another namespace's
/// ServiceEntry declares and the alternate is a service of the proxy's namespace.
pub fn services<'a>(hosts: impl IntoIterator<Item = (&'a str, &'a str, Vec<IpAddr>)>, viewer: &str) -> Vec<MeshService> {
    let mut out: Vec<MeshService> = hosts
        .into_iter()
        .map(|(host, namespace, addresses)| MeshService {
            host: host.to_ascii_lowercase(),
            namespace: namespace.to_owned(),
            addresses,
            names: Vec::new(),
        })
        .collect();
    out.sort_by(|a, b| a.host.cmp(&b.host));
    out.dedup_by(|a, b| a.host == b.host);
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (i, s) in out.iter().enumerate() {
        if !s.host.starts_with('*') {
            owner.insert(s.host.clone(), i);
        }
    }
    let mut alternates: Vec<(String, usize)> =
        out.iter().enumerate().flat_map(|(i, s)| crate::names::alternates(&s.host, viewer).into_iter().map(move |a| (a, i))).collect();
    alternates.sort();
    for (alt, i) in alternates {
        match owner.get(&alt) {
            None => {
                owner.insert(alt, i);
            }
            Some(&o) if crate::names::is_short(&alt) && out[o].host == alt && out[o].namespace != viewer => {
                owner.insert(alt, i);
            }
            Some(_) => {}
        }
    }
    for (name, i) in owner {
        out[i].names.push(name);
    }
    for s in &mut out {
        s.names.sort();
    }
    out
}

/// FNV-1a (64 bits) of a host name: the VIP slot it asks for. Fixed: every proxy of a
/// mesh, whatever its version, must allocate alike.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn slot_addr(slot: usize) -> Ipv4Addr {
    let [a, b, ..] = VIP_NET.octets();
    Ipv4Addr::new(a, b, (slot / 254) as u8, (slot % 254) as u8 + 1)
}

fn addr_slot(ip: Ipv4Addr) -> Option<usize> {
    let [a, b, c, d] = ip.octets();
    let [na, nb, ..] = VIP_NET.octets();
    (a == na && b == nb && d != 0 && d != 255).then(|| usize::from(c) * 254 + usize::from(d) - 1)
}

/// VIPs for `hosts` (sorted, distinct): each its hash's slot, or the next free one
/// after it (wrapping) when a host before it in the list took it; `reserved` addresses
/// are never given. None once every slot is taken.
pub fn allocate(hosts: &[&str], reserved: &[Ipv4Addr]) -> Vec<Option<Ipv4Addr>> {
    const WORDS: usize = VIP_SLOTS.div_ceil(64);
    let mut taken = vec![0u64; WORDS];
    let mut free = VIP_SLOTS;
    for r in reserved {
        if let Some(s) = addr_slot(*r) {
            if taken[s / 64] & (1 << (s % 64)) == 0 {
                taken[s / 64] |= 1 << (s % 64);
                free -= 1;
            }
        }
    }
    let mut out = Vec::with_capacity(hosts.len());
    for h in hosts {
        if free == 0 {
            out.push(None);
            continue;
        }
        let want = (fnv1a(h) % VIP_SLOTS as u64) as usize;
        // The first free slot at or after `want`, a word at a time.
        let mut slot = None;
        let mut w = want / 64;
        let mut mask = !0u64 << (want % 64);
        for _ in 0..=WORDS {
            let bits = !taken[w] & mask;
            if bits != 0 {
                let s = w * 64 + bits.trailing_zeros() as usize;
                if s < VIP_SLOTS {
                    slot = Some(s);
                    break;
                }
            }
            w = (w + 1) % WORDS;
            mask = !0;
        }
        // (Some: `free` > 0 means a free slot exists, and the scan covers every word.)
        match slot {
            Some(s) => {
                taken[s / 64] |= 1 << (s % 64);
                free -= 1;
                out.push(Some(slot_addr(s)));
            }
            None => out.push(None),
        }
    }
    out
}

struct Entry {
    host: Box<str>,
    addresses: Box<[IpAddr]>,
    /// Whether `addresses` is an allocated VIP (not declared).
    vip: bool,
}

/// The mesh's names and addresses as one proxy answers them: built once per installed
/// config ([`VipTable::build`]), read without locks from the live runtime.
#[derive(Default)]
pub struct VipTable {
    entries: Vec<Entry>,
    /// Host and every other name → entry.
    names: HashMap<Box<str>, u32>,
    hosts: HashMap<Box<str>, u32>,
    /// Wildcard hosts with addresses: (suffix `.example.com`, entry), longest first.
    wildcards: Vec<(Box<str>, u32)>,
    by_ip: HashMap<IpAddr, u32>,
    unallocated: usize,
}

impl std::fmt::Debug for VipTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VipTable").field("hosts", &self.entries.len()).field("names", &self.names.len()).finish()
    }
}

/// What a name resolves to: the service's host and its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved<'a> {
    pub host: &'a str,
    pub addresses: &'a [IpAddr],
}

impl VipTable {
    /// The table for `services` (as [`services`] makes them: sorted by host).
    pub fn build(services: &[MeshService]) -> VipTable {
        let mut t = VipTable::default();
        let wants_vip = |s: &MeshService| s.addresses.is_empty() && !s.host.starts_with('*');
        let vip_hosts: Vec<&str> = services.iter().filter(|s| wants_vip(s)).map(|s| s.host.as_str()).collect();
        let reserved: Vec<Ipv4Addr> = services
            .iter()
            .flat_map(|s| s.addresses.iter())
            .filter_map(|a| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .collect();
        let mut vips = allocate(&vip_hosts, &reserved).into_iter();
        for s in services {
            let (addresses, vip): (Box<[IpAddr]>, bool) = if wants_vip(s) {
                match vips.next().flatten() {
                    Some(v) => (Box::new([IpAddr::V4(v)]), true),
                    None => {
                        t.unallocated += 1;
                        (Box::new([]), false)
                    }
                }
            } else {
                (s.addresses.clone().into_boxed_slice(), false)
            };
            let i = t.entries.len() as u32;
            for a in addresses.iter() {
                // (Services are sorted: of a declared address shared by several hosts, the
                // first host's it stays.)
                t.by_ip.entry(*a).or_insert(i);
            }
            if let Some(suffix) = s.host.strip_prefix('*') {
                if !addresses.is_empty() && suffix.starts_with('.') {
                    t.wildcards.push((suffix.into(), i));
                }
            }
            t.hosts.insert(s.host.as_str().into(), i);
            for n in &s.names {
                t.names.insert(n.as_str().into(), i);
            }
            t.entries.push(Entry { host: s.host.as_str().into(), addresses, vip });
        }
        t.wildcards.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        t
    }

    /// The service (its host, as declared: `reviews.default.svc.cluster.local`,
    /// `*.example.com`) whose VIP or declared address `ip` is. An IPv4-mapped IPv6
    /// address (`::ffff:240.240.1.2`, as a dual-stack socket reports it) is its IPv4 one.
    pub fn host_for(&self, ip: IpAddr) -> Option<&str> {
        self.by_ip.get(&ip.to_canonical()).map(|&i| &*self.entries[i as usize].host)
    }

    /// A service's addresses (its VIP, or its declared ones) by its host as declared
    /// (any case); None for a host the mesh does not have.
    pub fn addresses_for(&self, host: &str) -> Option<&[IpAddr]> {
        let i = match self.hosts.get(host) {
            Some(i) => *i,
            None => *self.hosts.get(host.to_ascii_lowercase().as_str())?,
        };
        Some(&self.entries[i as usize].addresses)
    }

    /// Whether `ip` is an allocated VIP (rather than a declared address).
    pub fn is_vip(&self, ip: IpAddr) -> bool {
        self.by_ip.get(&ip.to_canonical()).is_some_and(|&i| self.entries[i as usize].vip)
    }

    /// A DNS name (lower case, no trailing dot): the mesh service it names and its
    /// addresses (empty: the name is the mesh's but has no address — NODATA).
    pub fn lookup(&self, name: &str) -> Option<Resolved<'_>> {
        let i = match self.names.get(name) {
            Some(i) => *i,
            None => self.wildcards.iter().find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(&**suffix))?.1,
        };
        let e = &self.entries[i as usize];
        Some(Resolved { host: &e.host, addresses: &e.addresses })
    }

    /// Every service: (host, addresses, whether the address is an allocated VIP).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[IpAddr], bool)> {
        self.entries.iter().map(|e| (&*e.host, &*e.addresses, e.vip))
    }

    /// How many services it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Services that wanted a VIP and got none: the range was full.
    pub fn unallocated(&self) -> usize {
        self.unallocated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(host: &str, ns: &str, addrs: &[&str]) -> (String, String, Vec<IpAddr>) {
        (host.into(), ns.into(), addrs.iter().map(|a| a.parse().unwrap()).collect())
    }

    fn table(list: &[(String, String, Vec<IpAddr>)], viewer: &str) -> VipTable {
        VipTable::build(&services(list.iter().map(|(h, n, a)| (h.as_str(), n.as_str(), a.clone())), viewer))
    }

    fn v4(ip: IpAddr) -> Ipv4Addr {
        match ip {
            IpAddr::V4(v) => v,
            IpAddr::V6(_) => panic!("not IPv4"),
        }
    }

    #[test]
    fn every_name_form_of_a_service_and_back() {
        let t = table(
            &[svc("reviews.default.svc.cluster.local", "default", &[]), svc("ratings.prod.svc.cluster.local", "prod", &[])],
            "default",
        );
        let fqdn = "reviews.default.svc.cluster.local";
        let vip = t.addresses_for(fqdn).unwrap()[0];
        assert!(v4(vip).octets()[..2] == [240, 240], "{vip}");
        for n in ["reviews", "reviews.default", "reviews.default.svc", fqdn] {
            assert_eq!(t.lookup(n), Some(Resolved { host: fqdn, addresses: &[vip] }), "{n}");
        }
        assert_eq!(t.host_for(vip), Some(fqdn));
        assert!(t.is_vip(vip));
        let mapped: IpAddr = format!("::ffff:{vip}").parse().unwrap();
        assert_eq!(t.host_for(mapped), Some(fqdn), "an IPv4-mapped address is the IPv4 one");
        assert_eq!(t.addresses_for("Reviews.Default.svc.cluster.local"), Some(&[vip][..]));
        // Another namespace's service: not by its short name.
        assert!(t.lookup("ratings").is_none());
        assert!(t.lookup("ratings.prod").is_some());
        assert!(t.lookup("reviews.default.svc.cluster").is_none());
        assert!(t.lookup("example.com").is_none());
    }

    #[test]
    fn declared_addresses_are_answered_and_mapped_back() {
        let t = table(
            &[
                svc("db.example.com", "default", &["10.9.0.5", "2001:db8::5"]),
                svc("shared-a.example.com", "default", &["10.9.0.9"]),
                svc("shared-b.example.com", "default", &["10.9.0.9"]),
            ],
            "default",
        );
        let r = t.lookup("db.example.com").unwrap();
        assert_eq!(r.addresses, ["10.9.0.5".parse::<IpAddr>().unwrap(), "2001:db8::5".parse().unwrap()]);
        assert_eq!(t.host_for("2001:db8::5".parse().unwrap()), Some("db.example.com"));
        assert!(!t.is_vip("10.9.0.5".parse().unwrap()));
        assert_eq!(t.host_for("10.9.0.9".parse().unwrap()), Some("shared-a.example.com"), "the first host in order keeps a shared address");
    }

    #[test]
    fn only_single_addresses_count() {
        let a = single_addresses(&["10.0.0.1".into(), "10.0.0.2/32".into(), "10.1.0.0/16".into(), "2001:db8::1/128".into(), "x".into()]);
        assert_eq!(a, ["10.0.0.1".parse::<IpAddr>().unwrap(), "10.0.0.2".parse().unwrap(), "2001:db8::1".parse().unwrap()]);
    }

    #[test]
    fn wildcards_answer_only_with_declared_addresses() {
        let t = table(
            &[
                svc("*.example.com", "default", &["10.2.0.1"]),
                svc("*.a.example.com", "default", &["10.2.0.2"]),
                svc("*.nodns.com", "default", &[]),
                svc("exact.example.com", "default", &[]),
            ],
            "default",
        );
        assert_eq!(t.lookup("x.example.com").unwrap().host, "*.example.com");
        assert_eq!(t.lookup("x.a.example.com").unwrap().host, "*.a.example.com", "the longest wildcard");
        assert_eq!(t.lookup("exact.example.com").unwrap().host, "exact.example.com", "an exact host first");
        assert!(t.lookup("example.com").is_none(), "a wildcard covers names under it only");
        assert!(t.lookup("x.nodns.com").is_none(), "a wildcard without addresses is not answered");
        assert_eq!(t.addresses_for("*.nodns.com"), Some(&[][..]), "and gets no VIP");
        assert_eq!(t.host_for("10.2.0.1".parse().unwrap()), Some("*.example.com"));
    }

    #[test]
    fn a_literal_short_host_keeps_its_name_unless_foreign() {
        // A ServiceEntry of this namespace declaring `reviews` literally keeps it.
        let t = table(&[svc("reviews", "default", &["10.3.0.1"]), svc("reviews.default.svc.cluster.local", "default", &[])], "default");
        assert_eq!(t.lookup("reviews").unwrap().host, "reviews");
        assert_eq!(t.lookup("reviews.default").unwrap().host, "reviews.default.svc.cluster.local");
        // Another namespace's literal `reviews` yields to this namespace's service.
        let t = table(&[svc("reviews", "other", &["10.3.0.1"]), svc("reviews.default.svc.cluster.local", "default", &[])], "default");
        assert_eq!(t.lookup("reviews").unwrap().host, "reviews.default.svc.cluster.local");
        assert_eq!(t.host_for("10.3.0.1".parse().unwrap()), Some("reviews"), "its address still maps back");
    }

    fn hosts(n: usize) -> Vec<String> {
        let mut v: Vec<String> = (0..n).map(|i| format!("svc{i}.ns{}.svc.cluster.local", i % 7)).collect();
        v.sort();
        v
    }

    #[test]
    fn vips_depend_on_the_set_alone_and_survive_additions() {
        let base = hosts(2000);
        let refs: Vec<&str> = base.iter().map(String::as_str).collect();
        let a = allocate(&refs, &[]);
        // Same set, same VIPs (nothing random, nothing from order of arrival).
        assert_eq!(a, allocate(&refs, &[]));
        let all: std::collections::HashSet<_> = a.iter().flatten().collect();
        assert_eq!(all.len(), base.len(), "distinct");
        assert!(a.iter().flatten().all(|ip| {
            let o = ip.octets();
            o[0] == 240 && o[1] == 240 && o[3] != 0 && o[3] != 255
        }));
        // Add 200 services: all but a handful keep their VIP (only a collision with a
        // newcomer that sorts first moves one).
        let mut more = base.clone();
        more.extend((0..200).map(|i| format!("new{i}.default.svc.cluster.local")));
        more.sort();
        let refs2: Vec<&str> = more.iter().map(String::as_str).collect();
        let b = allocate(&refs2, &[]);
        let before: HashMap<&str, Ipv4Addr> = refs.iter().zip(&a).map(|(h, ip)| (*h, ip.unwrap())).collect();
        let moved = refs2.iter().zip(&b).filter(|(h, ip)| before.get(**h).is_some_and(|old| Some(*old) != **ip)).count();
        assert!(moved <= 10, "{moved} of 2000 services changed VIP when 200 were added");
        // Remove half: the rest keep theirs but for collisions resolved the other way.
        let half: Vec<&str> = refs.iter().copied().step_by(2).collect();
        let c = allocate(&half, &[]);
        let moved = half.iter().zip(&c).filter(|(h, ip)| before[**h] != ip.unwrap()).count();
        assert!(moved <= 10, "{moved} of 1000 services changed VIP when 1000 were removed");
    }

    #[test]
    fn collisions_go_to_the_first_in_order_and_the_next_free_slot() {
        // Find two hosts hashing to one slot.
        let mut seen: HashMap<usize, String> = HashMap::new();
        let (x, y) = (0..)
            .find_map(|i| {
                let h = format!("h{i}.example.com");
                let s = (fnv1a(&h) % VIP_SLOTS as u64) as usize;
                seen.insert(s, h.clone()).map(|prev| (prev, h))
            })
            .unwrap();
        let (first, second) = if x < y { (x, y) } else { (y, x) };
        let slot = (fnv1a(&first) % VIP_SLOTS as u64) as usize;
        let got = allocate(&[&first, &second], &[]);
        assert_eq!(got[0], Some(slot_addr(slot)));
        assert_eq!(got[1], Some(slot_addr((slot + 1) % VIP_SLOTS)));
        // The second alone gets the slot it wanted.
        assert_eq!(allocate(&[&second], &[])[0], Some(slot_addr(slot)));
        // A declared address in the range is never handed out.
        let got = allocate(&[&first], &[slot_addr(slot)]);
        assert_eq!(got[0], Some(slot_addr((slot + 1) % VIP_SLOTS)));
    }

    #[test]
    fn slots_wrap_around_and_the_range_is_bounded() {
        assert_eq!(slot_addr(0), Ipv4Addr::new(240, 240, 0, 1));
        assert_eq!(slot_addr(253), Ipv4Addr::new(240, 240, 0, 254));
        assert_eq!(slot_addr(254), Ipv4Addr::new(240, 240, 1, 1));
        assert_eq!(slot_addr(VIP_SLOTS - 1), Ipv4Addr::new(240, 240, 255, 254));
        for s in [0, 253, 254, 1000, VIP_SLOTS - 1] {
            assert_eq!(addr_slot(slot_addr(s)), Some(s));
        }
        assert_eq!(addr_slot(Ipv4Addr::new(240, 240, 3, 0)), None);
        assert_eq!(addr_slot(Ipv4Addr::new(240, 241, 3, 1)), None);
        // More hosts than slots: every slot is used once, the rest get none, quickly.
        let many = hosts(VIP_SLOTS + 500);
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let t = std::time::Instant::now();
        let got = allocate(&refs, &[]);
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "{:?}", t.elapsed());
        assert_eq!(got.iter().flatten().count(), VIP_SLOTS);
        assert_eq!(got.iter().filter(|g| g.is_none()).count(), 500);
        let distinct: std::collections::HashSet<_> = got.iter().flatten().collect();
        assert_eq!(distinct.len(), VIP_SLOTS);
        let list: Vec<_> = many.iter().map(|h| svc(h, "ns", &[])).collect();
        let table = VipTable::build(&services(list.iter().map(|(h, n, a)| (h.as_str(), n.as_str(), a.clone())), "ns0"));
        assert_eq!(table.unallocated(), 500);
        assert_eq!(table.len(), VIP_SLOTS + 500);
    }
}
