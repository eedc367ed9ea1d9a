//! Rendering the canonical result in a given spec version, as libcni converts
//! (`types100.convertTo04x`, `types040.convertTo02x`, `types100.Result.MarshalJSON`).

use serde_json::{Map, Value, json};

use super::{CniResult, Dns, Interface, IpConfig, Route};
use crate::error::{CniError, code};
use crate::version::{SUPPORTED, SpecVersion};

/// Which optional parts a version's layout has.
#[derive(Clone, Copy)]
struct Layout {
    /// `ips[].version` (0.3.0-0.4.0).
    ip_version: bool,
    /// The 1.1.0 interface and route fields.
    v1_1: bool,
    /// Empty `dns` omitted (1.x `MarshalJSON`); 0.x prints `"dns": {}`.
    omit_empty_dns: bool,
}

pub(super) fn to_json(r: &CniResult, version: &str) -> Result<Value, CniError> {
    if !SUPPORTED.contains(&version) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("no converter for CNI result version 1.1.0 to {version}"),
        ));
    }
    let v = SpecVersion::parse(version)?;
    if v.is_legacy() {
        return legacy(r, version);
    }
    let layout = Layout {
        ip_version: v < SpecVersion::V1_0_0,
        v1_1: v >= SpecVersion::V1_1_0,
        omit_empty_dns: v >= SpecVersion::V1_0_0,
    };
    let mut out = Map::new();
    out.insert("cniVersion".into(), json!(version));
    if !r.interfaces.is_empty() {
        let ifs = r.interfaces.iter().map(|i| interface(i, layout)).collect();
        out.insert("interfaces".into(), Value::Array(ifs));
    }
    if !r.ips.is_empty() {
        let ips = r.ips.iter().map(|ip| ip_config(ip, layout)).collect();
        out.insert("ips".into(), Value::Array(ips));
    }
    if !r.routes.is_empty() {
        let routes = r.routes.iter().map(|rt| route(rt, layout.v1_1)).collect();
        out.insert("routes".into(), Value::Array(routes));
    }
    if !(layout.omit_empty_dns && r.dns.is_empty()) {
        out.insert("dns".into(), dns(&r.dns));
    }
    Ok(Value::Object(out))
}

fn put_str(m: &mut Map<String, Value>, key: &str, v: &Option<String>) {
    if let Some(s) = v.as_deref().filter(|s| !s.is_empty()) {
        m.insert(key.into(), json!(s));
    }
}

fn put_nonzero(m: &mut Map<String, Value>, key: &str, v: Option<u32>) {
    if let Some(x) = v.filter(|&x| x != 0) {
        m.insert(key.into(), json!(x));
    }
}

fn interface(i: &Interface, layout: Layout) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(i.name));
    put_str(&mut m, "mac", &i.mac);
    if layout.v1_1 {
        put_nonzero(&mut m, "mtu", i.mtu);
    }
    put_str(&mut m, "sandbox", &i.sandbox);
    if layout.v1_1 {
        put_str(&mut m, "socketPath", &i.socket_path);
        put_str(&mut m, "pciID", &i.pci_id);
    }
    Value::Object(m)
}

fn ip_config(ip: &IpConfig, layout: Layout) -> Value {
    let mut m = Map::new();
    if layout.ip_version {
        m.insert("version".into(), json!(ip.family()));
    }
    if let Some(idx) = ip.interface {
        m.insert("interface".into(), json!(idx));
    }
    m.insert("address".into(), json!(ip.address.to_string()));
    if let Some(gw) = ip.gateway {
        m.insert("gateway".into(), json!(gw.to_string()));
    }
    Value::Object(m)
}

fn route(r: &Route, v1_1: bool) -> Value {
    let mut m = Map::new();
    m.insert("dst".into(), json!(r.dst.to_string()));
    if let Some(gw) = r.gw {
        m.insert("gw".into(), json!(gw.to_string()));
    }
    if v1_1 {
        put_nonzero(&mut m, "mtu", r.mtu);
        put_nonzero(&mut m, "advmss", r.advmss);
        put_nonzero(&mut m, "priority", r.priority);
        if let Some(t) = r.table {
            m.insert("table".into(), json!(t));
        }
        if let Some(s) = r.scope {
            m.insert("scope".into(), json!(s));
        }
    }
    Value::Object(m)
}

fn dns(d: &Dns) -> Value {
    let mut m = Map::new();
    if !d.nameservers.is_empty() {
        m.insert("nameservers".into(), json!(d.nameservers));
    }
    put_str(&mut m, "domain", &d.domain);
    if !d.search.is_empty() {
        m.insert("search".into(), json!(d.search));
    }
    if !d.options.is_empty() {
        m.insert("options".into(), json!(d.options));
    }
    Value::Object(m)
}

/// Go `types040.convertTo02x`: the first address of each family, routes by destination family.
fn legacy(r: &CniResult, version: &str) -> Result<Value, CniError> {
    let ip4 = r.ips.iter().find(|ip| ip.address.is_ipv4());
    let ip6 = r.ips.iter().find(|ip| ip.address.is_ipv6());
    if ip4.is_none() && ip6.is_none() {
        return Err(CniError::internal("cannot convert: no valid IP addresses"));
    }
    let family = |ip: &IpConfig, want_v4: bool| {
        let mut m = Map::new();
        m.insert("ip".into(), json!(ip.address.to_string()));
        if let Some(gw) = ip.gateway {
            m.insert("gateway".into(), json!(gw.to_string()));
        }
        let routes: Vec<Value> = r
            .routes
            .iter()
            .filter(|rt| rt.dst.is_ipv4() == want_v4)
            .map(|rt| route(rt, false))
            .collect();
        if !routes.is_empty() {
            m.insert("routes".into(), Value::Array(routes));
        }
        Value::Object(m)
    };
    let mut out = Map::new();
    out.insert("cniVersion".into(), json!(version));
    if let Some(ip) = ip4 {
        out.insert("ip4".into(), family(ip, true));
    }
    if let Some(ip) = ip6 {
        out.insert("ip6".into(), family(ip, false));
    }
    out.insert("dns".into(), dns(&r.dns));
    Ok(Value::Object(out))
}
