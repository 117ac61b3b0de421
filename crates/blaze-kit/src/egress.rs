//! Outbound URL policy (SSRF guard) for URLs that users or models can
//! influence: provider base URLs, template and registry URLs. Only http(s),
//! and never loopback, private, link-local or metadata addresses unless the
//! deployment explicitly allows private targets (a local model server in dev)
//! — and link-local/metadata addresses not even then: nothing legitimate
//! lives there, and cloud credentials do.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn private_v4(ip: Ipv4Addr) -> bool {
    ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified() || ip.is_broadcast() || ip.is_documentation()
        // carrier-grade NAT 100.64/10 and the metadata service 169.254.169.254 (link-local)
        || (ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64)
        || ip.octets()[0] == 0
}

fn private_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return private_v4(v4);
    }
    let seg = ip.segments();
    ip.is_loopback() || ip.is_unspecified() || (seg[0] & 0xfe00) == 0xfc00 || (seg[0] & 0xffc0) == 0xfe80
}

/// Link-local addresses, where cloud metadata services answer.
fn link_local(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(ip) => ip.is_link_local(),
        url::Host::Ipv6(ip) => {
            let v4 = ip.to_ipv4_mapped();
            v4.is_some_and(|v| v.is_link_local()) || (ip.segments()[0] & 0xffc0) == 0xfe80 || ip.segments()[..2] == [0xfd00, 0x0ec2]
        }
        url::Host::Domain(d) => {
            let d = d.to_ascii_lowercase();
            d == "metadata.google.internal" || d == "metadata"
        }
    }
}

/// Is this address off-limits for outbound calls?
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => private_v6(v6),
    }
}

/// Check a URL before storing or calling it. Hostnames are checked again
/// after DNS resolution by the caller ([`check_resolved`]).
pub fn check_url(raw: &str, allow_private: bool) -> Result<url::Url, String> {
    let u = url::Url::parse(raw.trim()).map_err(|_| format!("{raw:?} is not a URL"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("only http and https URLs are allowed".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("credentials in URLs are not allowed".into());
    }
    let host = u.host().ok_or_else(|| "URL has no host".to_owned())?;
    if link_local(&host) {
        return Err("private, loopback and metadata addresses are not allowed".into());
    }
    if allow_private {
        return Ok(u);
    }
    let blocked = match host {
        url::Host::Ipv4(ip) => private_v4(ip),
        url::Host::Ipv6(ip) => private_v6(ip),
        url::Host::Domain(d) => {
            let d = d.to_ascii_lowercase();
            d == "localhost"
                || d.ends_with(".localhost")
                || d.ends_with(".internal")
                || d.ends_with(".local")
                || d == "metadata.google.internal"
        }
    };
    if blocked {
        return Err("private, loopback and metadata addresses are not allowed".into());
    }
    Ok(u)
}

/// After resolving a host: refuse if any address is private.
pub fn check_resolved(addrs: &[std::net::SocketAddr], allow_private: bool) -> Result<(), String> {
    let metadata = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => link_local(&url::Host::Ipv4(v4)),
        IpAddr::V6(v6) => link_local(&url::Host::Ipv6(v6)),
    };
    if addrs.iter().any(|a| metadata(a.ip())) {
        return Err("the host resolves to a metadata address".into());
    }
    if !allow_private && addrs.iter().any(|a| is_private(a.ip())) {
        return Err("the host resolves to a private address".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssrf_targets_are_refused_unless_allowed() {
        for bad in [
            "http://127.0.0.1:8080/v1",
            "http://localhost/v1",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.5/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://metadata.google.internal/",
            "file:///etc/passwd",
            "gopher://x",
            "http://user:pw@api.example.com/",
            "http://100.64.1.1/",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url("https://api.openai.com/v1", false).is_ok());
        assert!(check_url("http://127.0.0.1:3500/v1", true).is_ok());
        // metadata services stay off-limits even where private targets are allowed
        for metadata in [
            "http://169.254.169.254/latest",
            "http://metadata.google.internal/",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:169.254.169.254]/",
        ] {
            assert!(check_url(metadata, true).is_err(), "{metadata}");
        }
        assert!(check_resolved(&["169.254.169.254:80".parse().unwrap()], true).is_err());
        assert!(check_resolved(&["10.1.2.3:443".parse().unwrap()], false).is_err());
        assert!(check_resolved(&["93.184.216.34:443".parse().unwrap()], false).is_ok());
    }
}
