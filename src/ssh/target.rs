//! Where to log in: `user@host[:port]` as typed on the command line.
//!
//! The CLI takes one string per machine (`--ssh-manager admin@10.0.0.5`),
//! the same shape people type after `ssh`, so parsing lives here with the
//! rules spelled out once: the user defaults to root because lab machines are
//! usually fresh VMs, and IPv6 needs brackets as soon as a port follows.

use std::fmt;
use std::str::FromStr;

/// An SSH login: who, which machine, which port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub user: String,
    pub host: String,
    pub port: u16,
}

/// Why a `user@host[:port]` string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SSH target {input:?}: {reason} (expected user@host[:port], e.g. admin@10.0.0.5 or root@[fd00::5]:2222)")]
pub struct TargetParseError {
    pub input: String,
    pub reason: &'static str,
}

impl Target {
    pub const DEFAULT_USER: &'static str = "root";
    pub const DEFAULT_PORT: u16 = 22;

    /// `host:port`, bracketed for IPv6: the form error messages and the
    /// TCP connect use, where the port is always shown.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `user@host:port`, always with the port, so an error about the second
    /// of two machines behind one address is unambiguous.
    pub fn endpoint(&self) -> String {
        format!("{}@{}", self.user, self.address())
    }

    /// The name OpenSSH files this host under in known_hosts: the bare host
    /// on port 22, `[host]:port` otherwise.
    pub fn known_hosts_name(&self) -> String {
        if self.port == Self::DEFAULT_PORT {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Target {
    /// Gives back what `from_str` accepts; the port only when it is not 22,
    /// so `admin@10.0.0.5` round-trips unchanged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.host.contains(':')) {
            (Self::DEFAULT_PORT, _) => write!(f, "{}@{}", self.user, self.host),
            (port, true) => write!(f, "{}@[{}]:{}", self.user, self.host, port),
            (port, false) => write!(f, "{}@{}:{}", self.user, self.host, port),
        }
    }
}

impl FromStr for Target {
    type Err = TargetParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason| TargetParseError {
            input: input.to_string(),
            reason,
        };
        if input.is_empty() {
            return Err(fail("it is empty"));
        }
        // Whitespace or control characters can only be a quoting mistake, and
        // a leading '-' would read as an option if the value ever reached a
        // command line.
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail("it contains whitespace"));
        }
        let (user, rest) = match input.split_once('@') {
            Some((user, rest)) => (user, rest),
            None => (Self::DEFAULT_USER, input),
        };
        if user.is_empty() {
            return Err(fail("the user before '@' is empty"));
        }
        if rest.contains('@') {
            return Err(fail("it has more than one '@'"));
        }
        if user.starts_with('-') {
            return Err(fail("the user starts with '-'"));
        }

        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| fail("'[' without a closing ']'"))?;
            if !host.contains(':') {
                return Err(fail("brackets are only for IPv6 addresses"));
            }
            let port = match after {
                "" => Self::DEFAULT_PORT,
                _ => match after.strip_prefix(':') {
                    Some(port) => parse_port(port).map_err(fail)?,
                    None => return Err(fail("unexpected text after ']'")),
                },
            };
            (host, port)
        } else if rest.matches(':').count() > 1 {
            // A bare IPv6 address: its colons cannot also carry a port.
            (rest, Self::DEFAULT_PORT)
        } else if let Some((host, port)) = rest.split_once(':') {
            (host, parse_port(port).map_err(fail)?)
        } else {
            (rest, Self::DEFAULT_PORT)
        };

        if host.is_empty() {
            return Err(fail("the host is empty"));
        }
        if host.starts_with('-') {
            return Err(fail("the host starts with '-'"));
        }
        if host.contains(['[', ']', '/']) {
            return Err(fail("the host contains '[', ']' or '/'"));
        }
        Ok(Target {
            user: user.to_string(),
            host: host.to_string(),
            port,
        })
    }
}

fn parse_port(text: &str) -> Result<u16, &'static str> {
    if text.is_empty() {
        return Err("the port after ':' is empty");
    }
    match text.parse::<u16>() {
        Ok(0) => Err("port 0 is not a port one can connect to"),
        Ok(port) => Ok(port),
        Err(_) => Err("the port is not a number from 1 to 65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(user: &str, host: &str, port: u16) -> Target {
        Target {
            user: user.into(),
            host: host.into(),
            port,
        }
    }

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(
            "admin@10.0.0.5".parse(),
            Ok(target("admin", "10.0.0.5", 22))
        );
        assert_eq!("10.0.0.5".parse(), Ok(target("root", "10.0.0.5", 22)));
        assert_eq!("node1:2222".parse(), Ok(target("root", "node1", 2222)));
        assert_eq!(
            "ubuntu@node1.lab.example:2200".parse(),
            Ok(target("ubuntu", "node1.lab.example", 2200))
        );
    }

    #[test]
    fn parses_ipv6() {
        assert_eq!("admin@[::1]:2222".parse(), Ok(target("admin", "::1", 2222)));
        assert_eq!("[fd00::5]".parse(), Ok(target("root", "fd00::5", 22)));
        assert_eq!("admin@fd00::5".parse(), Ok(target("admin", "fd00::5", 22)));
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "admin@10.0.0.5",
            "root@node1:2222",
            "admin@[::1]:2222",
            "root@fd00::5",
        ] {
            let parsed: Target = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
            assert_eq!(parsed.to_string().parse::<Target>().unwrap(), parsed);
        }
        assert_eq!("node1".parse::<Target>().unwrap().to_string(), "root@node1");
    }

    #[test]
    fn endpoint_and_known_hosts_name() {
        let t: Target = "admin@[::1]:2222".parse().unwrap();
        assert_eq!(t.endpoint(), "admin@[::1]:2222");
        assert_eq!(t.known_hosts_name(), "[::1]:2222");
        let t: Target = "10.0.0.5".parse().unwrap();
        assert_eq!(t.endpoint(), "root@10.0.0.5:22");
        assert_eq!(t.known_hosts_name(), "10.0.0.5");
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        for (text, reason) in [
            ("", "it is empty"),
            ("@host", "the user before '@' is empty"),
            ("admin@", "the host is empty"),
            ("admin@:22", "the host is empty"),
            ("a@b@c", "it has more than one '@'"),
            ("admin@host:", "the port after ':' is empty"),
            ("admin@host:ssh", "the port is not a number from 1 to 65535"),
            (
                "admin@host:65536",
                "the port is not a number from 1 to 65535",
            ),
            ("admin@host:0", "port 0 is not a port one can connect to"),
            ("admin@[::1", "'[' without a closing ']'"),
            ("admin@[::1]22", "unexpected text after ']'"),
            ("admin@[host]:22", "brackets are only for IPv6 addresses"),
            ("admin @host", "it contains whitespace"),
            ("-oProxyCommand=x@host", "the user starts with '-'"),
            ("admin@-host", "the host starts with '-'"),
        ] {
            let err = text.parse::<Target>().unwrap_err();
            assert_eq!(err.reason, reason, "for {text:?}");
            let message = err.to_string();
            assert!(message.contains("expected user@host[:port]"), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }
}
