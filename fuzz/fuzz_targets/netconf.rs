//! A network config or conflist, as a runtime hands it over: the shared keys (and every
//! typed accessor), the config file loader and the request and GC configs a runtime derives
//! from a list, and the real plugins' config loaders (bridge, host-local). Never a panic; what parses survives a
//! serialize/parse round trip with nothing lost.
#![no_main]

use cni::args::CniArgs;
use cni::config::{Attachment, Bandwidth, ConfList, NetConf, PortMapping, RuntimeDns};
use cni::version::SpecVersion;
use libfuzzer_sys::fuzz_target;

fn netconf(data: &[u8]) {
    let Ok(conf) = NetConf::from_slice(data) else {
        return;
    };
    let _ = conf.version_or_default();
    let _ = conf.valid_attachments();
    let _ = conf.parsed_prev_result();
    let _ = conf.runtime_config_get::<Vec<PortMapping>>("portMappings");
    let _ = conf.runtime_config_get::<RuntimeDns>("dns");
    let _ = conf.runtime_config_get::<Bandwidth>("bandwidth");
    let _ = conf.runtime_config_get::<Vec<String>>("ips");
    let _ = conf.runtime_config_get::<String>("mac");
    let _ = conf.args_cni_get::<Vec<String>>("ips");
    let _ = conf.has_capability("portMappings");
    let bytes = serde_json::to_vec(&conf).expect("serialize");
    let again = NetConf::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("our own serialization does not parse: {e:?}"));
    assert_eq!(again, conf, "round trip");
}

/// The config file loader (as a `.conflist`, and as a `.conf` that becomes a list of one):
/// what it accepts has plugins that are objects with a string `type`; the request and GC
/// configs a runtime derives carry the list's name and version (GC at least 1.1.0, with the
/// attachments); a loaded list written out and loaded again is the same list.
fn conflist(data: &[u8]) {
    for file in ["10-net.conflist", "10-net.conf"] {
        let Ok(list) = ConfList::from_bytes(data, file) else {
            continue;
        };
        assert!(!list.plugins.is_empty());
        assert_eq!(
            list.plugin_types().len(),
            list.plugins.len(),
            "a plugin without a type"
        );
        let version = list.effective_version();
        let valid = [Attachment {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        }];
        for i in 0..list.plugins.len() {
            let p = list.plugin_conf(i).expect("every plugin is an object");
            assert_eq!(p["name"], list.name.as_str());
            assert_eq!(p["cniVersion"], version.as_str());
            assert!(p.get("capabilities").is_none());
            netconf(&serde_json::to_vec(&p).expect("serialize"));
            let gc = list.gc_conf(i, &valid).expect("GC config");
            let gv = gc["cniVersion"].as_str().expect("GC version");
            if let Ok(v) = SpecVersion::parse(gv) {
                assert!(v >= SpecVersion::V1_1_0, "GC at {gv}");
            }
            let listed: Vec<Attachment> =
                serde_json::from_value(gc[cni::config::VALID_ATTACHMENTS_KEY].clone())
                    .expect("the attachments");
            assert_eq!(listed, valid);
        }
        assert!(list.plugin_conf(list.plugins.len()).is_none());
        let bytes = serde_json::to_vec(&list).expect("serialize");
        let again = ConfList::from_bytes(&bytes, "10-net.conflist")
            .unwrap_or_else(|e| panic!("a loaded list written out does not load: {e}"));
        assert_eq!(again, list);
    }
}

fn loaders(data: &[u8]) {
    let args = CniArgs::default();
    if let Ok(c) = bridge::config::BridgeConf::load(data, &args) {
        let _ = c.validate_for_add();
        let _ = c.dns.to_result();
    }
    let _ = host_local::config::load(data, &args);
}

fuzz_target!(|data: &[u8]| {
    netconf(data);
    conflist(data);
    loaders(data);
});
