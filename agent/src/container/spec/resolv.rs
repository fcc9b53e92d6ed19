//! The container's `/etc/resolv.conf` (pure): the node's own, with the node's DNS server
//! (Mesos-DNS names, everything else forwarded) first and its search domain
//! (`marathon.mesos`) first in the search list, so `hello` and `hello.marathon.mesos`
//! both resolve from inside.

/// `host` is the node's resolv.conf; `dns` the node's DNS server as the container reaches
/// it and the search domain, when the node serves DNS on port 53.
pub fn resolv_conf(host: &str, dns: Option<(std::net::IpAddr, &str)>) -> String {
    let Some((server, search)) = dns else { return host.to_string() };
    let mut searches = vec![search.to_string()];
    let mut rest = Vec::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            // The last search/domain line wins in resolv.conf: fold them into one.
            Some("search" | "domain") => searches.extend(words.map(str::to_string).filter(|w| w != search)),
            // Loopback stubs of the host are not reachable from a container's namespace.
            Some("nameserver")
                if words
                    .next()
                    .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
                    .is_some_and(|ip| ip.is_loopback()) => {}
            _ => rest.push(line.to_string()),
        }
    }
    let mut text = format!("nameserver {server}\nsearch {}\n", searches.join(" "));
    for line in rest {
        text.push_str(&line);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_comes_first_and_the_host_follows() {
        let host = "# resolv\nnameserver 127.0.0.53\nnameserver 10.0.0.1\nsearch corp.example\noptions edns0\n";
        let ip = "172.31.0.1".parse().unwrap();
        assert_eq!(
            resolv_conf(host, Some((ip, "marathon.mesos"))),
            "nameserver 172.31.0.1\nsearch marathon.mesos corp.example\n# resolv\nnameserver 10.0.0.1\noptions edns0\n"
        );
    }

    #[test]
    fn without_node_dns_the_host_file_is_kept_as_is() {
        let host = "nameserver 10.0.0.1\n";
        assert_eq!(resolv_conf(host, None), host);
    }
}
