//! A network config or conflist, as a runtime hands it over: the shared keys (and every
//! typed accessor), the conflist and the request configs a runtime derives from it, and the
//! real plugins' config loaders (bridge, host-local). Never a panic; what parses survives a
//! serialize/parse round trip with nothing lost.
#![no_main]

use cni::args::CniArgs;
use cni::config::{Bandwidth, ConfList, NetConf, PortMapping, RuntimeDns};
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

fn conflist(data: &[u8]) {
    let Ok(list) = serde_json::from_slice::<ConfList>(data) else {
        return;
    };
    let version = list.effective_version();
    for i in 0..=list.plugins.len() {
        let Some(p) = list.plugin_conf(i) else {
            assert!(i == list.plugins.len() || !list.plugins[i].is_object());
            continue;
        };
        assert_eq!(p["name"], list.name.as_str());
        assert_eq!(p["cniVersion"], version.as_str());
        assert!(p.get("capabilities").is_none());
        netconf(&serde_json::to_vec(&p).expect("serialize"));
    }
    let bytes = serde_json::to_vec(&list).expect("serialize");
    let again: ConfList = serde_json::from_slice(&bytes).expect("our conflist parses");
    assert_eq!(again, list);
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
