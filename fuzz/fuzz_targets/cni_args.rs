//! `CNI_ARGS`: strict and lenient parsing agree, errors are code 4, well-formed pairs
//! survive a re-join, the last value of a key wins.
#![no_main]

use cni::args::CniArgs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let lenient = CniArgs::parse_lenient(raw);
    for known in [
        &[][..],
        &["IP", "MAC"][..],
        &["K8S_POD_NAME", "K8S_POD_NAMESPACE"][..],
    ] {
        if let Err(e) = lenient.check_known(known) {
            assert_eq!(e.code, cni::code::INVALID_ENVIRONMENT, "{e:?}");
            assert!(!e.msg.is_empty());
        }
    }
    let _ = lenient.ignore_unknown();
    for (k, _) in lenient.pairs() {
        let last = lenient
            .pairs()
            .iter()
            .rev()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.as_str());
        assert_eq!(lenient.get(k), last);
    }
    match CniArgs::parse(raw) {
        Ok(strict) => {
            assert_eq!(strict, lenient);
            let joined: Vec<String> = strict
                .pairs()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let again = CniArgs::parse(&joined.join(";")).expect("re-joined pairs parse");
            assert_eq!(again.pairs(), strict.pairs());
        }
        Err(e) => {
            assert_eq!(e.code, cni::code::INVALID_ENVIRONMENT, "{e:?}");
            assert!(
                lenient.check_known(&[]).is_err(),
                "lenient forgot the bad pair"
            );
        }
    }
});
