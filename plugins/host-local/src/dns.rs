//! `resolvConf`: a resolv.conf file turned into the result's `dns`.

use std::path::Path;

use crate::error::PluginError;

/// Parses resolv.conf text as the reference does: `nameserver`, `domain`,
/// `search` and `options` lines; `#` and `;` start comments; lines with
/// fewer than two fields and unknown keywords are ignored.
pub fn parse(text: &str) -> cni::Dns {
    let mut dns = cni::Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 2 {
            continue;
        }
        let rest = fields[1..].iter().map(|s| (*s).to_owned());
        match fields[0] {
            "nameserver" => dns.nameservers.push(fields[1].to_owned()),
            "domain" => dns.domain = Some(fields[1].to_owned()),
            "search" => dns.search.extend(rest),
            "options" => dns.options.extend(rest),
            _ => {}
        }
    }
    dns
}

/// Reads and parses the file at `path`.
pub fn load(path: &Path) -> Result<cni::Dns, PluginError> {
    let data = std::fs::read(path).map_err(|source| PluginError::ResolvConf {
        path: path.to_owned(),
        source,
    })?;
    Ok(parse(&String::from_utf8_lossy(&data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_keys() {
        let dns = parse(
            "# comment\n; other comment\nnameserver 10.0.0.10\n  nameserver   fd00::a \n\
             domain example.com\nsearch a.example b.example\nsearch c.example\n\
             options ndots:5 timeout:1\nbogus line here\nnameserver\n",
        );
        assert_eq!(dns.nameservers, vec!["10.0.0.10", "fd00::a"]);
        assert_eq!(dns.domain.as_deref(), Some("example.com"));
        assert_eq!(dns.search, vec!["a.example", "b.example", "c.example"]);
        assert_eq!(dns.options, vec!["ndots:5", "timeout:1"]);
    }

    #[test]
    fn missing_file() {
        let e = load(Path::new("/nonexistent/resolv.conf")).expect_err("must fail");
        assert!(e.to_string().starts_with("open /nonexistent/resolv.conf: "));
    }
}
