//! Host name resolution without glibc's NSS.
//!
//! The release binary is statically linked with glibc and runs in a
//! `FROM scratch` image. There, `getaddrinfo` (and so `ToSocketAddrs`) cannot
//! load the NSS modules it needs, yet the quotes service must be found by
//! name through Docker's embedded DNS (127.0.0.11 in `/etc/resolv.conf`).
//! So names are resolved here: literal IPs, `localhost`, `/etc/hosts`, then a
//! plain DNS A query over UDP to the configured name servers.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, PacketFlag, Question, CLASS, RCODE, TYPE};
use tokio::net::UdpSocket;
use tokio::time::timeout;

/// How long one name server gets to answer one query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub enum ResolveError {
    NotFound {
        host: String,
    },
    NoNameServer {
        host: String,
    },
    Io {
        server: SocketAddr,
        source: io::Error,
    },
    Timeout {
        server: SocketAddr,
    },
    BadAnswer {
        server: SocketAddr,
        detail: String,
    },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NotFound { host } => write!(f, "no IPv4 address found for {host:?}"),
            ResolveError::NoNameServer { host } => {
                write!(f, "cannot resolve {host:?}: no name server configured")
            }
            ResolveError::Io { server, source } => write!(f, "DNS query to {server}: {source}"),
            ResolveError::Timeout { server } => write!(f, "DNS query to {server} timed out"),
            ResolveError::BadAnswer { server, detail } => {
                write!(f, "bad DNS answer from {server}: {detail}")
            }
        }
    }
}

impl std::error::Error for ResolveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ResolveError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Resolver {
    nameservers: Vec<SocketAddr>,
    search: Vec<String>,
    hosts_file: PathBuf,
}

impl Resolver {
    /// Reads `/etc/resolv.conf` once; Docker writes it before the process starts.
    pub fn from_system() -> Self {
        let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let (nameservers, search) = parse_resolv_conf(&conf);
        Resolver {
            nameservers,
            search,
            hosts_file: PathBuf::from("/etc/hosts"),
        }
    }

    #[cfg(test)]
    pub fn new(nameservers: Vec<SocketAddr>, search: Vec<String>, hosts_file: PathBuf) -> Self {
        Resolver {
            nameservers,
            search,
            hosts_file,
        }
    }

    /// Addresses for `host`, best first.
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let lower = host.trim_end_matches('.').to_ascii_lowercase();
        if lower == "localhost" || lower.ends_with(".localhost") {
            return Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        }
        // /etc/hosts may change under Docker (links, --add-host), so read it
        // each time; it is tiny and this path is not the hot one.
        if let Ok(hosts) = std::fs::read_to_string(&self.hosts_file) {
            let found = lookup_hosts_file(&hosts, &lower);
            if !found.is_empty() {
                return Ok(found);
            }
        }
        if self.nameservers.is_empty() {
            return Err(ResolveError::NoNameServer { host: lower });
        }
        let mut candidates = vec![lower.clone()];
        if !host.ends_with('.') && !lower.contains('.') {
            candidates.extend(self.search.iter().map(|d| format!("{lower}.{d}")));
        }
        let mut last_err = ResolveError::NotFound {
            host: lower.clone(),
        };
        for name in &candidates {
            for &server in &self.nameservers {
                match query_a(server, name).await {
                    Ok(addrs) if !addrs.is_empty() => return Ok(addrs),
                    // NXDOMAIN or no A record: the next server would say the same.
                    Ok(_) => break,
                    Err(e) => last_err = e,
                }
            }
        }
        Err(last_err)
    }
}

fn parse_resolv_conf(conf: &str) -> (Vec<SocketAddr>, Vec<String>) {
    let mut nameservers = Vec::new();
    let mut search = Vec::new();
    for line in conf.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
                    nameservers.push(SocketAddr::new(ip, 53));
                }
            }
            // The last search/domain line wins, as in glibc.
            Some("search") | Some("domain") => {
                search = words.map(|w| w.trim_end_matches('.').to_owned()).collect();
            }
            _ => {}
        }
    }
    (nameservers, search)
}

fn lookup_hosts_file(hosts: &str, name: &str) -> Vec<IpAddr> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        if words.any(|w| w.eq_ignore_ascii_case(name)) {
            match ip {
                IpAddr::V4(_) => v4.push(ip),
                IpAddr::V6(_) => v6.push(ip),
            }
        }
    }
    // The containers talk IPv4 on Docker networks; prefer it.
    v4.extend(v6);
    v4
}

fn random_id() -> u16 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u16
}

/// One A query to one server. `Ok(vec![])` means the name does not exist or
/// has no A record.
async fn query_a(server: SocketAddr, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
    let io_err = |source| ResolveError::Io { server, source };
    let bad = |detail: String| ResolveError::BadAnswer { server, detail };

    let id = random_id();
    let mut query = Packet::new_query(id);
    query.set_flags(PacketFlag::RECURSION_DESIRED);
    let qname = Name::new(name).map_err(|e| bad(format!("invalid name {name:?}: {e}")))?;
    query.questions.push(Question::new(
        qname,
        TYPE::A.into(),
        CLASS::IN.into(),
        false,
    ));
    let bytes = query
        .build_bytes_vec()
        .map_err(|e| bad(format!("cannot encode query: {e}")))?;

    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(io_err)?;
    // connect() makes the kernel drop datagrams from anyone but the server.
    socket.connect(server).await.map_err(io_err)?;
    socket.send(&bytes).await.map_err(io_err)?;

    let mut buf = [0u8; 1500];
    let exchange = async {
        loop {
            let n = socket.recv(&mut buf).await.map_err(io_err)?;
            let Ok(reply) = Packet::parse(&buf[..n]) else {
                continue;
            };
            if reply.id() != id || !reply.has_flags(PacketFlag::RESPONSE) {
                continue;
            }
            return match reply.rcode() {
                RCODE::NoError => Ok(reply
                    .answers
                    .iter()
                    .filter_map(|rr| match &rr.rdata {
                        RData::A(a) => Some(IpAddr::V4(Ipv4Addr::from(a.address))),
                        _ => None,
                    })
                    .collect()),
                RCODE::NameError => Ok(Vec::new()),
                other => Err(bad(format!("response code {other:?} for {name:?}"))),
            };
        }
    };
    match timeout(QUERY_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(ResolveError::Timeout { server }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::A;
    use simple_dns::ResourceRecord;

    /// A real UDP DNS server on loopback that knows exactly one name.
    async fn dns_stub(known: &'static str, ip: Ipv4Addr) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let (n, peer) = socket.recv_from(&mut buf).await.unwrap();
                let query = Packet::parse(&buf[..n]).unwrap();
                let question = query.questions[0].clone();
                let asked = question.qname.to_string();
                let mut reply = Packet::new_reply(query.id());
                reply.questions.push(question);
                if asked == known {
                    reply.answers.push(ResourceRecord::new(
                        Name::new_unchecked(known),
                        CLASS::IN,
                        600,
                        RData::A(A::from(ip)),
                    ));
                } else {
                    *reply.rcode_mut() = RCODE::NameError;
                }
                let out = reply.build_bytes_vec().unwrap();
                socket.send_to(&out, peer).await.unwrap();
            }
        });
        addr
    }

    #[test]
    fn reads_resolv_conf_like_docker_writes_it() {
        let (ns, search) = parse_resolv_conf(
            "# Generated by Docker\nsearch corp.example. lab\nnameserver 127.0.0.11\noptions ndots:0\nnameserver bogus\n",
        );
        assert_eq!(ns, vec!["127.0.0.11:53".parse().unwrap()]);
        assert_eq!(search, vec!["corp.example", "lab"]);
    }

    #[tokio::test]
    async fn literal_ips_and_localhost_need_no_lookup() {
        let r = Resolver::new(vec![], vec![], "/nonexistent".into());
        assert_eq!(
            r.lookup("10.1.2.3").await.unwrap(),
            vec![IpAddr::from([10, 1, 2, 3])]
        );
        assert_eq!(
            r.lookup("[::1]").await.unwrap(),
            vec!["::1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            r.lookup("LocalHost").await.unwrap(),
            vec![IpAddr::from([127, 0, 0, 1])]
        );
        assert!(matches!(
            r.lookup("quotes-service").await,
            Err(ResolveError::NoNameServer { .. })
        ));
    }

    #[tokio::test]
    async fn hosts_file_wins_over_dns() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(
            &hosts,
            "127.0.0.1 localhost\n10.0.0.7 box quotes-service # docker\n",
        )
        .unwrap();
        let r = Resolver::new(vec![], vec![], hosts);
        assert_eq!(
            r.lookup("Quotes-Service").await.unwrap(),
            vec![IpAddr::from([10, 0, 0, 7])]
        );
    }

    #[tokio::test]
    async fn asks_the_name_server_then_the_search_domains() {
        let server = dns_stub("quotes-service.lab", Ipv4Addr::new(10, 0, 1, 9)).await;
        let r = Resolver::new(vec![server], vec!["lab".into()], "/nonexistent".into());
        assert_eq!(
            r.lookup("quotes-service").await.unwrap(),
            vec![IpAddr::from([10, 0, 1, 9])]
        );
        assert!(matches!(
            r.lookup("nothing.here").await,
            Err(ResolveError::NotFound { .. })
        ));
    }
}
