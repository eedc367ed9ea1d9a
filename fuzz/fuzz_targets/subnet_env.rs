//! flanneld's `subnet.env`: never a panic, errors carry the operator's hint, and what parses
//! has what the plugin needs (a network and a subnet of some family, an MTU) and reads back
//! the same from its canonical form.
#![no_main]

use std::path::Path;

use flannel_state::subnet_env::SubnetEnv;
use libfuzzer_sys::fuzz_target;

fn join(nets: &[ipnetwork::IpNetwork]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/run/flannel/subnet.env");
    match SubnetEnv::parse(path, &text) {
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("failed to load flannel 'subnet.env' file: "),
                "{msg}"
            );
            assert!(
                msg.ends_with("Check the flannel pod log for this node."),
                "{msg}"
            );
        }
        Ok(env) => {
            let _ = env.inconsistencies();
            assert!(
                !env.networks.is_empty() || !env.ipv6_networks.is_empty(),
                "parsed without any network: {env:?} from {text:?}"
            );
            assert!(
                env.subnet.is_some() || env.ipv6_subnet.is_some(),
                "parsed without a subnet: {env:?}"
            );
            let mut canonical = format!("FLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n", env.mtu, env.ipmasq);
            if !env.networks.is_empty() {
                canonical += &format!("FLANNEL_NETWORK={}\n", join(&env.networks));
            }
            if !env.ipv6_networks.is_empty() {
                canonical += &format!("FLANNEL_IPV6_NETWORK={}\n", join(&env.ipv6_networks));
            }
            if let Some(s) = env.subnet {
                canonical += &format!("FLANNEL_SUBNET={s}\n");
            }
            if let Some(s) = env.ipv6_subnet {
                canonical += &format!("FLANNEL_IPV6_SUBNET={s}\n");
            }
            let again = SubnetEnv::parse(path, &canonical)
                .unwrap_or_else(|e| panic!("canonical form does not parse: {e}\n{canonical}"));
            assert_eq!(again, env, "{canonical}");
        }
    }
});
