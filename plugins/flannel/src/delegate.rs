//! Building the delegate's network config from the flannel config and subnet.env
//! (`flannel-cni: flannel_linux.go doCmdAdd, getDelegateIPAM`).
//!
//! The delegate config is a JSON map: the user's `delegate` object, with defaults inserted
//! only where a key is absent, except `name`, `cniVersion` and `ipam`, which flannel owns.

use serde_json::{Map, Value, json};

use crate::config::FlannelConf;
use crate::error::FlannelError;
use flannel_state::subnet_env::SubnetEnv;

/// The delegate plugin used when `delegate.type` is absent.
pub const DEFAULT_TYPE: &str = "bridge";
/// The IPAM plugin used when `ipam.type` is absent.
pub const DEFAULT_IPAM_TYPE: &str = "host-local";

/// Refuses the delegate keys flannel sets itself, with the Go plugin's messages.
pub fn validate(delegate: &Map<String, Value>) -> Result<(), FlannelError> {
    if delegate.get("type").is_some_and(|t| !t.is_string()) {
        return Err(FlannelError::DelegateTypeNotString);
    }
    if delegate.contains_key("name") {
        return Err(FlannelError::DelegateHasName);
    }
    if delegate.contains_key("ipam") {
        return Err(FlannelError::DelegateHasIpam);
    }
    Ok(())
}

/// The complete delegate config for `conf` and the node's lease `env`, in the order of the
/// Go plugin's steps. Validates the `delegate` object first.
pub fn build(conf: &FlannelConf, env: &SubnetEnv) -> Result<Map<String, Value>, FlannelError> {
    validate(&conf.delegate)?;
    let mut d = conf.delegate.clone();
    d.insert("name".into(), Value::String(conf.name.clone()));
    d.entry("type").or_insert_with(|| json!(DEFAULT_TYPE));
    // flanneld masquerades itself when FLANNEL_IPMASQ=true; otherwise the delegate must.
    d.entry("ipMasq").or_insert_with(|| json!(!env.ipmasq));
    d.entry("mtu").or_insert_with(|| json!(env.mtu));
    if d.get("type").and_then(Value::as_str) == Some(DEFAULT_TYPE) {
        d.entry("isGateway").or_insert_with(|| json!(true));
    }
    if !conf.cni_version.is_empty() {
        d.insert("cniVersion".into(), Value::String(conf.cni_version.clone()));
    }
    d.insert("ipam".into(), Value::Object(ipam(conf.ipam.as_ref(), env)?));
    if let Some(rc) = &conf.runtime_config {
        d.insert("runtimeConfig".into(), Value::Object(rc.clone()));
    }
    Ok(d)
}

/// The delegate's `ipam`: the user's top-level `ipam` (unknown keys kept), `type` defaulting to
/// host-local, `ranges` replaced by one range set per family from subnet.env, and `routes` =
/// the user's routes followed by one `{dst}` per flannel network.
pub fn ipam(
    base: Option<&Map<String, Value>>,
    env: &SubnetEnv,
) -> Result<Map<String, Value>, FlannelError> {
    let mut ipam = base.cloned().unwrap_or_default();
    let has_type = ipam
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    if !has_type {
        ipam.insert("type".into(), json!(DEFAULT_IPAM_TYPE));
    }

    let ranges: Vec<Value> = [env.subnet, env.ipv6_subnet]
        .into_iter()
        .flatten()
        .map(|sn| json!([{ "subnet": sn.to_string() }]))
        .collect();
    ipam.insert("ranges".into(), Value::Array(ranges));

    let mut routes = user_routes(ipam.get("routes"))?;
    routes.extend(
        env.networks
            .iter()
            .chain(&env.ipv6_networks)
            .map(|nw| json!({ "dst": nw.to_string() })),
    );
    ipam.insert("routes".into(), Value::Array(routes));
    Ok(ipam)
}

/// Validates the user's `ipam.routes` (an array of routes, parsed by the cni crate as Go's
/// `types.Route`) and returns them unchanged, so keys like `gw`, `mtu` or `priority` reach
/// host-local as written.
fn user_routes(routes: Option<&Value>) -> Result<Vec<Value>, FlannelError> {
    let list = match routes {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(FlannelError::IpamRoutes(format!(
                "expected an array, got {other}"
            )));
        }
    };
    for r in list {
        cni::Route::from_json(r)
            .map_err(|e| FlannelError::IpamRoutes(format!("route {r}: {}", e.msg)))?;
    }
    Ok(list.clone())
}

/// The bytes sent to the delegate and saved on disk: compact JSON with keys sorted at every
/// level, as Go's `json.Marshal` of a map writes them (so saved files look like the reference's).
pub fn to_bytes(conf: &Map<String, Value>) -> Vec<u8> {
    let mut v = Value::Object(conf.clone());
    sort_keys(&mut v);
    // Serializing a Value cannot fail (all map keys are strings).
    serde_json::to_vec(&v).unwrap_or_default()
}

fn sort_keys(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.sort_keys();
            m.values_mut().for_each(sort_keys);
        }
        Value::Array(a) => a.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const IPV4_ENV: &str = "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n";
    const DUAL_ENV: &str = "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\n\
                            FLANNEL_IPV6_SUBNET=fc00::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n";

    fn env(text: &str) -> SubnetEnv {
        SubnetEnv::parse(Path::new("subnet.env"), text).expect("valid subnet.env")
    }

    fn conf(v: Value) -> FlannelConf {
        FlannelConf::parse(v.to_string().as_bytes()).expect("valid conf")
    }

    fn built(c: Value, e: &str) -> Value {
        Value::Object(build(&conf(c), &env(e)).expect("build"))
    }

    /// The stored config of flannel_linux_test.go "uses dataDir for storing network
    /// configuration with ipv4 stack".
    #[test]
    fn golden_go_ipv4() {
        let got = built(json!({"name":"cni-flannel","type":"flannel"}), IPV4_ENV);
        let want = json!({"ipMasq":false,"ipam":{"routes":[{"dst":"10.1.0.0/16"}],"ranges":[[{"subnet":"10.1.17.0/24"}]],"type":"host-local"},"isGateway":true,"mtu":1472,"name":"cni-flannel","type":"bridge"});
        assert_eq!(got, want);
        // Byte-for-byte what Go's json.Marshal writes (sorted keys, compact).
        let bytes = to_bytes(got.as_object().expect("object"));
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            r#"{"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.1.17.0/24"}]],"routes":[{"dst":"10.1.0.0/16"}],"type":"host-local"},"isGateway":true,"mtu":1472,"name":"cni-flannel","type":"bridge"}"#
        );
    }

    #[test]
    fn golden_go_dual_and_multi_network() {
        let got = built(json!({"name":"cni-flannel","type":"flannel"}), DUAL_ENV);
        assert_eq!(
            got["ipam"],
            json!({"routes":[{"dst":"10.1.0.0/16"},{"dst":"fc00::/48"}],
                   "ranges":[[{"subnet":"10.1.17.0/24"}],[{"subnet":"fc00::/64"}]],"type":"host-local"})
        );
        let multi = "FLANNEL_NETWORK=10.1.0.0/16,192.168.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n";
        let got = built(json!({"name":"cni-flannel"}), multi);
        assert_eq!(
            got["ipam"]["routes"],
            json!([{"dst":"10.1.0.0/16"},{"dst":"192.168.0.0/16"}])
        );
        assert_eq!(got["ipam"]["ranges"], json!([[{"subnet":"10.1.17.0/24"}]]));
    }

    #[test]
    fn ipv6_only() {
        let e = "FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n";
        let got = built(json!({"name":"cni-flannel"}), e);
        assert_eq!(
            got["ipam"],
            json!({"routes":[{"dst":"fc00::/48"}],"ranges":[[{"subnet":"fc00::/64"}]],"type":"host-local"})
        );
    }

    /// flannel_linux_test.go getDelegateIPAM "when input IPAM is provided".
    #[test]
    fn user_ipam_is_the_base() {
        let c = json!({"name":"cni-flannel","ipam":{
            "type":"my-ipam","unknown-param":"unknown-value",
            "routes":[{"dst":"10.96.0.0/12"},{"dst":"192.168.244.0/24","gw":"10.1.17.20"}],
            "ranges":[[{"subnet":"1.2.3.0/24"}]]}});
        let got = built(c, DUAL_ENV);
        assert_eq!(
            got["ipam"],
            json!({"type":"my-ipam","unknown-param":"unknown-value",
                   "routes":[{"dst":"10.96.0.0/12"},{"dst":"192.168.244.0/24","gw":"10.1.17.20"},
                             {"dst":"10.1.0.0/16"},{"dst":"fc00::/48"}],
                   "ranges":[[{"subnet":"10.1.17.0/24"}],[{"subnet":"fc00::/64"}]]})
        );
        // Without a type: host-local.
        let got = built(json!({"name":"n","ipam":{"unknown-param":"v"}}), IPV4_ENV);
        assert_eq!(got["ipam"]["type"], json!("host-local"));
        assert_eq!(got["ipam"]["unknown-param"], json!("v"));
    }

    #[test]
    fn bad_user_routes_are_config_errors() {
        for routes in [
            json!("10.0.0.0/8"),
            json!([{"gw":"10.0.0.1"}]),
            json!([{"dst":"nope"}]),
            json!([{"dst":"10.0.0.0/8","gw":"nope"}]),
            json!(["10.0.0.0/8"]),
        ] {
            let err = build(
                &conf(json!({"name":"n","ipam":{"routes":routes}})),
                &env(IPV4_ENV),
            )
            .expect_err("bad routes");
            assert!(matches!(err, FlannelError::IpamRoutes(_)), "{err:?}");
            assert!(
                err.to_string()
                    .starts_with("failed to assemble Delegate IPAM: failed to read IPAM routes")
            );
        }
    }

    /// kube-flannel.yml's delegate: its keys pass through, defaults fill the rest.
    #[test]
    fn delegate_keys_are_honoured() {
        let got = built(
            json!({"cniVersion":"0.3.1","name":"cbr0","type":"flannel",
                   "delegate":{"hairpinMode":true,"isDefaultGateway":true,"ipMasq":true,"mtu":1400,
                               "isGateway":false,"cniVersion":"0.2.0","bridge":"cni1"}}),
            IPV4_ENV,
        );
        assert_eq!(got["hairpinMode"], json!(true));
        assert_eq!(got["isDefaultGateway"], json!(true));
        assert_eq!(got["ipMasq"], json!(true));
        assert_eq!(got["mtu"], json!(1400));
        assert_eq!(got["isGateway"], json!(false));
        assert_eq!(got["bridge"], json!("cni1"));
        // flannel owns these.
        assert_eq!(got["cniVersion"], json!("0.3.1"));
        assert_eq!(got["name"], json!("cbr0"));
        assert_eq!(got["type"], json!("bridge"));
    }

    #[test]
    fn defaults_depend_on_subnet_env_and_type() {
        let e = IPV4_ENV.replace("FLANNEL_IPMASQ=true", "FLANNEL_IPMASQ=false");
        let got = built(json!({"name":"n","delegate":{"type":"ipvlan"}}), &e);
        assert_eq!(got["ipMasq"], json!(true));
        assert_eq!(got["type"], json!("ipvlan"));
        assert!(got.get("isGateway").is_none(), "isGateway only for bridge");
        assert!(
            got.get("cniVersion").is_none(),
            "no cniVersion when the conf has none"
        );
        assert!(got.get("runtimeConfig").is_none());
    }

    #[test]
    fn runtime_config_passes_through() {
        let got = built(
            json!({"name":"n","runtimeConfig":{"ips":["10.1.17.9/24"],"mac":"aa:bb:cc:dd:ee:ff"},
                   "capabilities":{"ips":true},"args":{"x":1},"dns":{"nameservers":["1.1.1.1"]}}),
            IPV4_ENV,
        );
        assert_eq!(
            got["runtimeConfig"],
            json!({"ips":["10.1.17.9/24"],"mac":"aa:bb:cc:dd:ee:ff"})
        );
        for k in ["capabilities", "args", "dns", "prevResult"] {
            assert!(got.get(k).is_none(), "{k} must not reach the delegate");
        }
    }

    #[test]
    fn refused_delegate_keys() {
        let e = env(IPV4_ENV);
        let cases = [
            (
                json!({"name":"x"}),
                "'delegate' dictionary must not have 'name' field, it'll be set by flannel",
            ),
            (
                json!({"ipam":{}}),
                "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel",
            ),
            (
                json!({"type":5}),
                "'delegate' dictionary, if present, must have (string) 'type' field",
            ),
        ];
        for (delegate, msg) in cases {
            let err = build(&conf(json!({"name":"n","delegate":delegate})), &e).expect_err(msg);
            assert_eq!(err.to_string(), msg);
        }
    }

    #[test]
    fn to_bytes_sorts_nested_keys() {
        let m = json!({"b":1,"a":{"z":[{"y":1,"x":2}],"c":true}});
        let bytes = to_bytes(m.as_object().expect("object"));
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            r#"{"a":{"c":true,"z":[{"x":2,"y":1}]},"b":1}"#
        );
    }
}
