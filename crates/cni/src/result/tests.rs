//! Golden tests for result parsing and conversion (expected JSON written from libcni's
//! `pkg/types/{020,040,100}` conversion rules).

use serde_json::{Value, json};

use super::*;
use crate::error::code;

fn full_110() -> Value {
    json!({
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
            {"name": "veth1", "mac": "aa:bb:cc:dd:ee:02"},
            {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "mtu": 1450, "sandbox": "/var/run/netns/x",
             "socketPath": "/run/vhost.sock", "pciID": "0000:00:1f.6"}
        ],
        "ips": [
            {"interface": 2, "address": "10.244.1.5/24", "gateway": "10.244.1.1"},
            {"interface": 2, "address": "10.244.1.6/24"},
            {"interface": 2, "address": "fd00::5/64", "gateway": "fd00::1"}
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.244.1.1", "mtu": 1400, "advmss": 1360, "priority": 10,
             "table": 100, "scope": 0},
            {"dst": "10.244.0.0/16"},
            {"dst": "::/0", "gw": "fd00::1"}
        ],
        "dns": {"nameservers": ["10.96.0.10"], "domain": "cluster.local",
                "search": ["svc.cluster.local"], "options": ["ndots:5"]}
    })
}

fn dns() -> Value {
    json!({"nameservers": ["10.96.0.10"], "domain": "cluster.local",
           "search": ["svc.cluster.local"], "options": ["ndots:5"]})
}

fn expected_100() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
            {"name": "veth1", "mac": "aa:bb:cc:dd:ee:02"},
            {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/var/run/netns/x"}
        ],
        "ips": [
            {"interface": 2, "address": "10.244.1.5/24", "gateway": "10.244.1.1"},
            {"interface": 2, "address": "10.244.1.6/24"},
            {"interface": 2, "address": "fd00::5/64", "gateway": "fd00::1"}
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.244.1.1"},
            {"dst": "10.244.0.0/16"},
            {"dst": "::/0", "gw": "fd00::1"}
        ],
        "dns": dns()
    })
}

fn expected_04x(version: &str) -> Value {
    json!({
        "cniVersion": version,
        "interfaces": [
            {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
            {"name": "veth1", "mac": "aa:bb:cc:dd:ee:02"},
            {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/var/run/netns/x"}
        ],
        "ips": [
            {"version": "4", "interface": 2, "address": "10.244.1.5/24", "gateway": "10.244.1.1"},
            {"version": "4", "interface": 2, "address": "10.244.1.6/24"},
            {"version": "6", "interface": 2, "address": "fd00::5/64", "gateway": "fd00::1"}
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.244.1.1"},
            {"dst": "10.244.0.0/16"},
            {"dst": "::/0", "gw": "fd00::1"}
        ],
        "dns": dns()
    })
}

fn expected_02x(version: &str) -> Value {
    json!({
        "cniVersion": version,
        "ip4": {
            "ip": "10.244.1.5/24",
            "gateway": "10.244.1.1",
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}, {"dst": "10.244.0.0/16"}]
        },
        "ip6": {
            "ip": "fd00::5/64",
            "gateway": "fd00::1",
            "routes": [{"dst": "::/0", "gw": "fd00::1"}]
        },
        "dns": dns()
    })
}

fn parse(v: &Value) -> CniResult {
    CniResult::from_json(v, "1.1.0").unwrap()
}

#[test]
fn canonical_fields() {
    let r = parse(&full_110());
    assert_eq!(r.interfaces.len(), 3);
    assert_eq!(r.interfaces[2].mtu, Some(1450));
    assert_eq!(r.interfaces[2].pci_id.as_deref(), Some("0000:00:1f.6"));
    assert_eq!(r.ips[0].interface, Some(2));
    // Host bits are kept.
    assert_eq!(r.ips[0].address.ip().to_string(), "10.244.1.5");
    assert_eq!(r.ips[0].address.prefix(), 24);
    assert_eq!(r.ips[1].gateway, None);
    assert_eq!(r.routes[0].table, Some(100));
    assert_eq!(r.routes[0].scope, Some(0));
    assert_eq!(r.routes[1].gw, None);
    assert_eq!(r.dns.domain.as_deref(), Some("cluster.local"));
}

#[test]
fn convert_110_to_every_version() {
    let r = parse(&full_110());
    assert_eq!(r.to_json("1.1.0").unwrap(), full_110());
    assert_eq!(r.to_json("1.0.0").unwrap(), expected_100());
    for v in ["0.4.0", "0.3.1", "0.3.0"] {
        assert_eq!(r.to_json(v).unwrap(), expected_04x(v), "{v}");
    }
    for v in ["0.2.0", "0.1.0"] {
        assert_eq!(r.to_json(v).unwrap(), expected_02x(v), "{v}");
    }
}

#[test]
fn every_version_round_trips() {
    // Each version's sample parses to the canonical form and renders back identically.
    let samples = [
        ("1.1.0", full_110()),
        ("1.0.0", expected_100()),
        ("0.4.0", expected_04x("0.4.0")),
        ("0.3.1", expected_04x("0.3.1")),
        ("0.3.0", expected_04x("0.3.0")),
        ("0.2.0", expected_02x("0.2.0")),
        ("0.1.0", expected_02x("0.1.0")),
    ];
    for (v, sample) in samples {
        let r = CniResult::from_json(&sample, "9.9.9").unwrap();
        assert_eq!(r.to_json(v).unwrap(), sample, "{v}");
    }
}

#[test]
fn legacy_up_conversion() {
    // types040.convertFrom02x: ip4 then ip6, each followed by its routes; no interface index.
    let r = CniResult::from_json(&expected_02x("0.2.0"), "").unwrap();
    let want = json!({
        "cniVersion": "1.0.0",
        "ips": [
            {"address": "10.244.1.5/24", "gateway": "10.244.1.1"},
            {"address": "fd00::5/64", "gateway": "fd00::1"}
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.244.1.1"},
            {"dst": "10.244.0.0/16"},
            {"dst": "::/0", "gw": "fd00::1"}
        ],
        "dns": dns()
    });
    assert_eq!(r.to_json("1.0.0").unwrap(), want);
}

#[test]
fn fallback_version_when_missing() {
    // A prevResult without cniVersion takes the config's version (ParsePrevResult).
    let legacy = json!({"ip4": {"ip": "10.0.0.2/8"}});
    let r = CniResult::from_json(&legacy, "0.2.0").unwrap();
    assert_eq!(r.ips[0].address.to_string(), "10.0.0.2/8");
    let rich = json!({"ips": [{"address": "10.0.0.2/8"}]});
    let r = CniResult::from_json(&rich, "1.0.0").unwrap();
    assert_eq!(r.ips.len(), 1);
    // An empty fallback means 0.1.0 (legacy): the rich keys are not read.
    let r = CniResult::from_json(&rich, "").unwrap();
    assert!(r.ips.is_empty());
}

#[test]
fn empty_parts_omitted() {
    let r = CniResult {
        ips: vec![IpConfig::new("10.1.0.2/16".parse().unwrap())],
        ..CniResult::default()
    };
    // 1.x: empty dns/interfaces/routes omitted (MarshalJSON + omitempty).
    assert_eq!(
        r.to_json("1.1.0").unwrap(),
        json!({"cniVersion": "1.1.0", "ips": [{"address": "10.1.0.2/16"}]})
    );
    // 0.x: dns is a plain struct field, printed as {}.
    assert_eq!(
        r.to_json("0.3.1").unwrap(),
        json!({"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.1.0.2/16"}], "dns": {}})
    );
    assert_eq!(
        r.to_json("0.2.0").unwrap(),
        json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.2/16"}, "dns": {}})
    );
    assert_eq!(
        CniResult::default().to_json("1.0.0").unwrap(),
        json!({"cniVersion": "1.0.0"})
    );
}

#[test]
fn legacy_drops_routes_of_missing_family() {
    let r = CniResult {
        ips: vec![IpConfig::new("fd00::2/64".parse().unwrap())],
        routes: vec![
            Route::new("0.0.0.0/0".parse().unwrap(), None),
            Route::new("::/0".parse().unwrap(), Some("fd00::1".parse().unwrap())),
        ],
        ..CniResult::default()
    };
    assert_eq!(
        r.to_json("0.2.0").unwrap(),
        json!({"cniVersion": "0.2.0",
               "ip6": {"ip": "fd00::2/64", "routes": [{"dst": "::/0", "gw": "fd00::1"}]},
               "dns": {}})
    );
}

#[test]
fn legacy_without_addresses_fails() {
    let e = CniResult::default().to_json("0.2.0").unwrap_err();
    assert_eq!(e.code, code::INTERNAL);
    assert_eq!(e.msg, "cannot convert: no valid IP addresses");
}

#[test]
fn zero_values_like_go() {
    // mtu/advmss/priority are Go ints with omitempty; table/scope are pointers and keep 0.
    let mut rt = Route::new("10.0.0.0/8".parse().unwrap(), None);
    rt.mtu = Some(0);
    rt.table = Some(0);
    let r = CniResult {
        interfaces: vec![Interface {
            name: "eth0".into(),
            mtu: Some(0),
            mac: Some(String::new()),
            ..Interface::default()
        }],
        routes: vec![rt],
        ..CniResult::default()
    };
    assert_eq!(
        r.to_json("1.1.0").unwrap(),
        json!({"cniVersion": "1.1.0", "interfaces": [{"name": "eth0"}],
               "routes": [{"dst": "10.0.0.0/8", "table": 0}]})
    );
}

#[test]
fn parse_errors() {
    let e = CniResult::from_json(&json!({"cniVersion": "7.0.0"}), "1.0.0").unwrap_err();
    assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
    assert_eq!(e.msg, "unsupported CNI result version \"7.0.0\"");
    let e = CniResult::from_json(
        &json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1"}]}),
        "",
    )
    .unwrap_err();
    assert_eq!(e.code, code::DECODING_FAILURE);
    assert!(
        e.msg.contains("invalid CIDR address: 10.0.0.1"),
        "{}",
        e.msg
    );
    let e = CniResult::from_json(
        &json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "gateway": "x"}]}),
        "",
    )
    .unwrap_err();
    assert!(e.msg.contains("invalid IP address: x"), "{}", e.msg);
    let e = CniResult::from_json(&json!({"cniVersion": "1.0.0", "ips": "x"}), "").unwrap_err();
    assert_eq!(e.code, code::DECODING_FAILURE);
    let e = CniResult::default().to_json("9.9.9").unwrap_err();
    assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
}

#[test]
fn nulls_and_unknown_keys_are_tolerated() {
    let v = json!({"cniVersion": "1.0.0", "interfaces": null, "ips": [{"address": "10.0.0.2/24",
        "gateway": "", "version": "4"}], "routes": null, "dns": null, "extra": 1});
    let r = CniResult::from_json(&v, "").unwrap();
    assert_eq!(r.ips[0].gateway, None);
    assert!(r.dns.is_empty());
    assert!(
        Dns {
            domain: Some(String::new()),
            ..Dns::default()
        }
        .is_empty()
    );
}

#[test]
fn route_from_json_is_the_result_route_parser() {
    let r = Route::from_json(&json!({"dst": "10.0.0.5/8", "gw": "10.1.0.1", "mtu": 0,
        "priority": 5, "table": 0, "scope": 253, "unknown": 1}))
    .unwrap();
    assert_eq!(r.dst, "10.0.0.5/8".parse::<IpNetwork>().unwrap());
    assert_eq!(r.gw, Some("10.1.0.1".parse().unwrap()));
    assert_eq!(
        (r.mtu, r.advmss, r.priority, r.table, r.scope),
        (None, None, Some(5), Some(0), Some(253))
    );
    assert_eq!(
        Route::from_json(&json!({"dst": "::/0", "gw": null})).unwrap(),
        Route::new("::/0".parse().unwrap(), None)
    );

    // Bare reasons with code 6; a result adds its own context.
    for (v, msg) in [
        (json!({"gw": "10.1.0.1"}), "invalid CIDR address: "),
        (json!({"dst": "10.0.0.1"}), "invalid CIDR address: 10.0.0.1"),
        (
            json!({"dst": "0.0.0.0/0", "gw": "x"}),
            "invalid IP address: x",
        ),
    ] {
        let e = Route::from_json(&v).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (code::DECODING_FAILURE, msg));
        let in_result =
            CniResult::from_json(&json!({"cniVersion": "1.0.0", "routes": [v]}), "").unwrap_err();
        assert_eq!(in_result.msg, format!("failed to parse result: {msg}"));
    }
    let e = Route::from_json(&json!("10.0.0.0/8")).unwrap_err();
    assert_eq!(e.code, code::DECODING_FAILURE);
    let e = Route::from_json(&json!({"dst": "10.0.0.0/8", "mtu": "x"})).unwrap_err();
    assert_eq!(e.code, code::DECODING_FAILURE);

    let raw: RawRoute = serde_json::from_value(json!({"dst": "10.0.0.0/8"})).unwrap();
    assert_eq!(
        raw.parse().unwrap(),
        Route::new("10.0.0.0/8".parse().unwrap(), None)
    );
}
