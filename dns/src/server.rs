//! The DNS server (hickory-server over UDP and TCP): names in the domain are answered from
//! the current record set (authoritative; NXDOMAIN for a name that does not exist, an
//! empty NOERROR for one without records of the type asked), everything else goes to
//! the forwarder. Malformed messages get FORMERR from hickory (or, under 12 bytes, no
//! answer), opcodes other than QUERY NOTIMP, zone transfers REFUSED, and nothing a client
//! sends stops the server.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::authority::MessageResponseBuilder;
use hickory_server::proto::op::{Header, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, SOA, SRV};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::forward::{read_upstreams, Forwarded, Forwarder};
use crate::http_api::relative_name;
use crate::records::DnsRecords;

pub const DEFAULT_PORT: u16 = 53;
pub const DEFAULT_DOMAIN: &str = "mesos";
pub const DEFAULT_TTL_SECS: u32 = 5;
/// A TCP client silent this long is dropped.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

/// `--dns-port`, `--dns-domain`, `--dns-ttl`, `--dns-resolv-conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// 0: no DNS server.
    pub port: u16,
    pub domain: String,
    pub ttl_secs: u32,
    /// Where the upstream resolvers are read from.
    pub resolv_conf: PathBuf,
    /// Address the server binds (all of the node's by default).
    pub listen: IpAddr,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            port: DEFAULT_PORT,
            domain: DEFAULT_DOMAIN.to_string(),
            ttl_secs: DEFAULT_TTL_SECS,
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            listen: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}

impl DnsSettings {
    /// No server (what in-process tests and embedded uses start with).
    pub fn disabled() -> Self {
        DnsSettings { port: 0, ..DnsSettings::default() }
    }

    /// A domain as a DNS name: labels of letters, digits and hyphens.
    pub fn check_domain(domain: &str) -> Result<String, String> {
        let domain = domain.trim_matches('.').to_ascii_lowercase();
        let valid = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if domain.is_empty() || !domain.split('.').all(valid) {
            return Err(format!("'{domain}' is not a DNS domain (labels of letters, digits and hyphens)"));
        }
        Ok(domain)
    }
}

/// Starts the server when `settings.port` is not 0, answering from `records` as they
/// change. A port that cannot be bound (another resolver holds :53 on a dev host) is
/// logged as a warning naming `--dns-port`, and the node runs on without DNS there.
pub async fn serve(
    settings: &DnsSettings,
    records: watch::Receiver<Arc<DnsRecords>>,
) -> Option<tokio::task::JoinHandle<()>> {
    if settings.port == 0 {
        return None;
    }
    let address = SocketAddr::new(settings.listen, settings.port);
    let udp = match UdpSocket::bind(address).await {
        Ok(socket) => socket,
        Err(e) => {
            tracing::warn!(listen = %address, error = %e,
                "DNS not served: cannot bind UDP (something else holds the port?); choose another with --dns-port, 0 to disable");
            return None;
        }
    };
    let tcp = match TcpListener::bind(address).await {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::warn!(listen = %address, error = %e, "DNS over TCP not served: cannot bind (see --dns-port)");
            None
        }
    };
    let forwarder = match read_upstreams(&settings.resolv_conf) {
        Ok(upstreams) => {
            let forwarder = Forwarder::new(&upstreams);
            if forwarder.is_none() {
                tracing::warn!(path = %settings.resolv_conf.display(),
                    "no upstream DNS resolver (loopback stubs are skipped): names outside the domain are refused");
            }
            forwarder
        }
        Err(e) => {
            tracing::warn!(error = %plinth_error_chain(&e), "no upstream DNS resolver: names outside the domain are refused");
            None
        }
    };
    let handler = Handler::new(settings, records, forwarder);
    tracing::info!(listen = %address, domain = %settings.domain, tcp = tcp.is_some(), "DNS server listening");
    Some(tokio::spawn(run(handler, udp, tcp)))
}

async fn run(handler: Handler, udp: UdpSocket, tcp: Option<TcpListener>) {
    let mut server = ServerFuture::new(handler);
    server.register_socket(udp);
    if let Some(listener) = tcp {
        server.register_listener(listener, TCP_TIMEOUT);
    }
    if let Err(e) = server.block_until_done().await {
        tracing::warn!(error = %e, "DNS server stopped");
    }
}

/// `outer: inner: root`, as `plinth_protocol::error_chain` prints (this crate stands below it).
fn plinth_error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Answers queries: see the module comment.
pub struct Handler {
    domain: String,
    ttl: u32,
    records: watch::Receiver<Arc<DnsRecords>>,
    forwarder: Option<Arc<Forwarder>>,
}

/// One answer before it is put into a message.
#[derive(Default)]
struct Answer {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authority: Vec<Record>,
    additionals: Vec<Record>,
}

impl Answer {
    fn code(code: ResponseCode) -> Answer {
        Answer { code, ..Answer::default() }
    }
}

impl Handler {
    pub fn new(
        settings: &DnsSettings,
        records: watch::Receiver<Arc<DnsRecords>>,
        forwarder: Option<Forwarder>,
    ) -> Handler {
        Handler {
            domain: settings.domain.trim_matches('.').to_ascii_lowercase(),
            ttl: settings.ttl_secs,
            records,
            forwarder: forwarder.map(Arc::new),
        }
    }

    fn fqdn(&self, relative: &str) -> Option<Name> {
        let text =
            if relative.is_empty() { format!("{}.", self.domain) } else { format!("{relative}.{}.", self.domain) };
        Name::from_ascii(text).ok()
    }

    async fn answer(&self, request: &Request) -> Answer {
        if request.op_code() != OpCode::Query {
            return Answer::code(ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else { return Answer::code(ResponseCode::FormErr) };
        let query = info.query;
        let record_type = query.query_type();
        if matches!(record_type, RecordType::AXFR | RecordType::IXFR) {
            return Answer::code(ResponseCode::Refused);
        }
        let name = query.name().to_string();
        match relative_name(&name, &self.domain) {
            Some(relative) => {
                if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
                    return Answer::code(ResponseCode::NotImp);
                }
                self.local(&relative, record_type)
            }
            None => self.forward(Name::from(query.name()), record_type).await,
        }
    }

    /// A name in the domain, from the current record set.
    fn local(&self, relative: &str, record_type: RecordType) -> Answer {
        let current = self.records.borrow().clone();
        let set = &current.records;
        let Some(owner) = self.fqdn(relative) else { return Answer::code(ResponseCode::NXDomain) };
        let mut answer = Answer { authoritative: true, ..Answer::default() };
        let wants = |t: RecordType| record_type == t || record_type == RecordType::ANY;
        if wants(RecordType::A) {
            for ip in set.a_of(relative) {
                answer.answers.push(Record::from_rdata(owner.clone(), self.ttl, RData::A(A(*ip))));
            }
        }
        if wants(RecordType::SRV) {
            for srv in set.srv_of(relative) {
                let Some(target) = self.fqdn(&srv.target) else { continue };
                let rdata = RData::SRV(SRV::new(0, 0, srv.port, target.clone()));
                answer.answers.push(Record::from_rdata(owner.clone(), self.ttl, rdata));
                for ip in set.a_of(&srv.target) {
                    let record = Record::from_rdata(target.clone(), self.ttl, RData::A(A(*ip)));
                    if !answer.additionals.contains(&record) {
                        answer.additionals.push(record);
                    }
                }
            }
        }
        if relative.is_empty() && wants(RecordType::SOA) {
            answer.answers.push(self.soa(current.generation));
        }
        if answer.answers.is_empty() {
            // NODATA or NXDOMAIN, with the SOA so resolvers cache the negative answer.
            answer.code = if set.name_exists(relative) { ResponseCode::NoError } else { ResponseCode::NXDomain };
            answer.authority.push(self.soa(current.generation));
        }
        answer
    }

    fn soa(&self, generation: u64) -> Record {
        let apex = self.fqdn("").unwrap_or_else(Name::root);
        let ns = self.fqdn("ns1").unwrap_or_else(Name::root);
        let mailbox = Name::from_ascii(format!("root.ns1.{}.", self.domain)).unwrap_or_else(|_| Name::root());
        // The serial follows the record set (wrapping is how serials work, RFC 1982).
        let serial = u32::try_from(generation % (1 << 32)).unwrap_or_default();
        let ttl = i32::try_from(self.ttl).unwrap_or(i32::MAX);
        let rdata = SOA::new(ns, mailbox, serial, ttl, ttl, 86_400, self.ttl);
        Record::from_rdata(apex, self.ttl, RData::SOA(rdata))
    }

    /// A name outside the domain, through the caching forwarder.
    async fn forward(&self, name: Name, record_type: RecordType) -> Answer {
        let Some(forwarder) = &self.forwarder else { return Answer::code(ResponseCode::Refused) };
        match forwarder.lookup(name.clone(), record_type).await {
            Forwarded::Answer(records) => Answer { answers: records, ..Answer::default() },
            Forwarded::Empty(code) => Answer::code(code),
            Forwarded::Failed(reason) => {
                tracing::debug!(name = %name, record_type = %record_type, error = %reason, "DNS forward failed");
                Answer::code(ResponseCode::ServFail)
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(&self, request: &Request, mut response_handle: R) -> ResponseInfo {
        let answer = self.answer(request).await;
        let mut header = Header::response_from_request(request.header());
        header.set_response_code(answer.code);
        header.set_authoritative(answer.authoritative);
        header.set_recursion_available(self.forwarder.is_some());
        let builder = MessageResponseBuilder::from_message_request(request);
        let response =
            builder.build(header, answer.answers.iter(), answer.authority.iter(), [].iter(), answer.additionals.iter());
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "DNS answer not sent");
                let mut failed = Header::response_from_request(request.header());
                failed.set_response_code(ResponseCode::ServFail);
                failed.into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::RecordSet;
    use hickory_server::authority::MessageRequest;
    use hickory_server::proto::op::{Message, Query};
    use hickory_server::proto::serialize::binary::BinDecodable;
    use hickory_server::proto::xfer::Protocol;

    fn handler() -> Handler {
        let mut set = RecordSet::default();
        set.add_a("web.marathon", Ipv4Addr::new(10, 0, 0, 11));
        set.add_a("web-1.marathon.slave", Ipv4Addr::new(10, 0, 0, 11));
        set.add_srv("_web._tcp.marathon", "web-1.marathon.slave", 31001);
        let (_sender, records) = watch::channel(Arc::new(DnsRecords { generation: 3, records: set }));
        Handler::new(&DnsSettings::default(), records, None)
    }

    fn request(name: &str, record_type: RecordType, op_code: OpCode) -> Request {
        let mut message = Message::new();
        message.set_op_code(op_code);
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
        let bytes = message.to_vec().unwrap();
        Request::new(MessageRequest::from_bytes(&bytes).unwrap(), "127.0.0.1:5353".parse().unwrap(), Protocol::Udp)
    }

    async fn ask(name: &str, record_type: RecordType) -> Answer {
        handler().answer(&request(name, record_type, OpCode::Query)).await
    }

    #[tokio::test]
    async fn names_in_the_domain_are_answered_with_the_right_rcode() {
        let a = ask("Web.Marathon.Mesos.", RecordType::A).await;
        assert_eq!((a.code, a.authoritative, a.answers.len()), (ResponseCode::NoError, true, 1));
        assert_eq!(a.answers[0].ttl(), DEFAULT_TTL_SECS);

        let srv = ask("_web._tcp.marathon.mesos.", RecordType::SRV).await;
        assert_eq!(srv.answers.len(), 1);
        assert_eq!(srv.additionals.len(), 1, "the target's address comes along");
        assert_eq!(srv.additionals[0].name().to_ascii(), "web-1.marathon.slave.mesos.");

        let nodata = ask("web.marathon.mesos.", RecordType::TXT).await;
        assert_eq!((nodata.code, nodata.answers.len(), nodata.authority.len()), (ResponseCode::NoError, 0, 1));
        let parent = ask("marathon.mesos.", RecordType::A).await;
        assert_eq!(parent.code, ResponseCode::NoError, "an empty non-terminal exists");
        let missing = ask("nope.marathon.mesos.", RecordType::A).await;
        assert_eq!((missing.code, missing.authority.len()), (ResponseCode::NXDomain, 1), "with the SOA");
        let apex = ask("mesos.", RecordType::SOA).await;
        assert_eq!((apex.code, apex.answers.len()), (ResponseCode::NoError, 1));
        assert_eq!(ask("mesos.", RecordType::AXFR).await.code, ResponseCode::Refused);
    }

    #[tokio::test]
    async fn other_opcodes_and_names_without_upstream_are_refused_or_not_implemented() {
        let update = handler().answer(&request("web.marathon.mesos.", RecordType::A, OpCode::Update)).await;
        assert_eq!(update.code, ResponseCode::NotImp);
        assert_eq!(ask("example.org.", RecordType::A).await.code, ResponseCode::Refused, "no forwarder");
    }

    #[test]
    fn domains_are_checked_and_normalized() {
        assert_eq!(DnsSettings::check_domain("Cluster.Example."), Ok("cluster.example".into()));
        for bad in ["", "a..b", "bad domain", "-x.mesos", "x_y"] {
            assert!(DnsSettings::check_domain(bad).is_err(), "{bad:?}");
        }
    }
}
