//! The CNI verbs of the flannel meta-plugin.
//!
//! * ADD: build the delegate config from our config and subnet.env, save it, run the delegate's
//!   ADD and return its result unchanged. On failure, undo only what this ADD did: the saved
//!   config (see [`AddUndo`]). The delegate undoes its own steps; a delegate DEL here
//!   would also remove what an earlier ADD made (a repeated ADD of a running pod fails in the
//!   delegate because its interface exists, and DEL would then delete that live interface).
//! * DEL: run the delegate's DEL with the saved config, then forget it. Without a usable saved
//!   config, rebuild it from subnet.env so the IP is still released.
//! * CHECK: run the delegate's CHECK with the saved config plus our `prevResult`.
//! * STATUS: subnet.env must be loadable (else 50), then the delegate's STATUS.
//! * GC: the delegate's GC, drop saved configs of attachments that are no longer valid, and
//!   sweep temp files of killed saves.

use std::collections::HashSet;

use cni::skel::{AddOutput, CmdArgs, Plugin};
use cni::{CniError, code};
use serde_json::{Map, Value};

use crate::config::FlannelConf;
use crate::delegate;
use crate::error::FlannelError;
use crate::store::Store;
use flannel_state::subnet_env::SubnetEnv;

/// GC input keys forwarded verbatim to the delegate (libcni sets both, cni#1101).
const GC_KEYS: [&str; 2] = ["cni.dev/valid-attachments", "cni.dev/attachments"];

/// The flannel plugin (stateless: all state is on disk).
#[derive(Debug, Default, Clone, Copy)]
pub struct Flannel;

/// A delegate config ready to send: its plugin type and its exact bytes.
struct DelegateConf {
    plugin_type: String,
    bytes: Vec<u8>,
}

impl DelegateConf {
    fn from_map(map: &Map<String, Value>) -> Self {
        DelegateConf {
            // `delegate::build` always sets a string type; saved configs are checked on load.
            plugin_type: plugin_type(map)
                .unwrap_or(delegate::DEFAULT_TYPE)
                .to_owned(),
            bytes: delegate::to_bytes(map),
        }
    }

    /// Builds the delegate config from our config and subnet.env.
    fn build(conf: &FlannelConf) -> Result<(Self, Map<String, Value>), FlannelError> {
        delegate::validate(&conf.delegate)?;
        let env = SubnetEnv::load(&conf.subnet_file)?;
        let map = delegate::build(conf, &env)?;
        Ok((Self::from_map(&map), map))
    }
}

fn plugin_type(map: &Map<String, Value>) -> Option<&str> {
    map.get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
}

/// A saved config is usable when it is a JSON object with a string `type`.
fn parse_saved(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    let map: Map<String, Value> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    match plugin_type(&map) {
        Some(_) => Ok(map),
        None => Err("no string \"type\"".to_owned()),
    }
}

/// The delegate config of this container: the saved one when usable, otherwise rebuilt from
/// subnet.env and our config (logged). An error means the saved file could not be read.
fn saved_or_rebuilt(
    conf: &FlannelConf,
    store: &Store,
    container_id: &str,
) -> Result<Source, FlannelError> {
    let path = store.path(container_id)?;
    match store.load(container_id)? {
        Some(bytes) => match parse_saved(&bytes) {
            Ok(map) => return Ok(Source::Saved(map)),
            Err(why) => log::warn!(
                "saved delegate config {} is unusable ({why}); rebuilding it from {}",
                path.display(),
                conf.subnet_file.display()
            ),
        },
        None => log::info!(
            "no saved delegate config {}; rebuilding it from {}",
            path.display(),
            conf.subnet_file.display()
        ),
    }
    Ok(match DelegateConf::build(conf) {
        Ok((_, map)) => Source::Rebuilt(map),
        Err(why) => Source::Unavailable(why),
    })
}

/// Where a container's delegate config came from.
enum Source {
    /// The file ADD saved.
    Saved(Map<String, Value>),
    /// Rebuilt from subnet.env and the current config.
    Rebuilt(Map<String, Value>),
    /// Neither: no usable saved file, and rebuilding failed for this reason.
    Unavailable(FlannelError),
}

/// The undo of a flannel ADD, run on drop (a failed ADD, or a panic unwinding through it)
/// unless [`AddUndo::keep`] disarmed it:
/// * once the delegate's ADD succeeded, the attachment is this ADD's: the delegate's DEL
///   removes it (and if that fails, the saved config stays for the runtime's DEL);
/// * the saved config this ADD wrote is removed, or the bytes an earlier ADD of the same
///   container ID had saved are put back, so that a running pod's DEL still finds the config
///   it was made with. A failed delegate ADD undoes its own steps.
struct AddUndo<'a> {
    store: &'a Store,
    args: &'a CmdArgs,
    previous: Option<Vec<u8>>,
    /// Set once the delegate's ADD succeeded.
    added: Option<&'a DelegateConf>,
    armed: bool,
}

impl AddUndo<'_> {
    /// The ADD succeeded: everything stays.
    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for AddUndo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let cid = &self.args.container_id;
        if let Some(dc) = self.added
            && let Err(e) = cni::delegate::del(&dc.plugin_type, &dc.bytes, self.args)
        {
            log::warn!(
                "undoing the delegate's ADD with its DEL failed: {e}; the saved config stays for the runtime's DEL"
            );
            return;
        }
        let undone = match &self.previous {
            None => self.store.remove(cid),
            Some(bytes) => self.store.save(cid, bytes),
        };
        // The ADD's own error is what the runtime must see; its DEL still cleans up.
        if let Err(e) = undone {
            log::warn!("undoing the saved delegate config after a failed ADD: {e}");
        }
    }
}

impl Plugin for Flannel {
    const NAME: &'static str = "flannel";

    fn add(&self, args: &CmdArgs) -> Result<AddOutput, CniError> {
        let conf = FlannelConf::parse(&args.stdin)?;
        let (dc, _) = DelegateConf::build(&conf)?;
        log::info!(
            "delegateAdd: netconf sent to delegate plugin: {}",
            String::from_utf8_lossy(&dc.bytes)
        );
        // Nothing is saved for a delegate that cannot run.
        cni::delegate::find_in_path(&dc.plugin_type, &args.path)?;
        // Saved before the delegate runs, so that a DEL after a crash finds it. What an
        // earlier ADD of this container ID saved is kept aside, for the undo.
        let store = Store::new(&conf.data_dir);
        let previous = store.load(&args.container_id)?;
        store.save(&args.container_id, &dc.bytes)?;
        let mut undo = AddUndo {
            store: &store,
            args,
            previous,
            added: None,
            armed: true,
        };

        match cni::delegate::add(&dc.plugin_type, &dc.bytes, args) {
            Ok(result) => {
                undo.added = Some(&dc);
                cni::fault::point("flannel-add-after-delegate");
                undo.keep();
                Ok(AddOutput::Raw(result))
            }
            // `undo` drops here and puts the saved config back as it was.
            Err(e) => Err(CniError {
                code: e.code,
                msg: format!("failed to delegate add: {}", e.msg),
                details: e.details,
            }),
        }
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = FlannelConf::parse(&args.stdin)?;
        let store = Store::new(&conf.data_dir);
        let map = match saved_or_rebuilt(&conf, &store, &args.container_id)? {
            Source::Saved(map) => map,
            Source::Rebuilt(map) => {
                let dc = DelegateConf::from_map(&map);
                if let Err(e) = cni::delegate::find_in_path(&dc.plugin_type, &args.path) {
                    // ADD never saves for a delegate it cannot find, so nothing was made.
                    log::warn!("DEL of {}: {e}; nothing to release", args.container_id);
                    store.remove(&args.container_id)?;
                    return Ok(());
                }
                map
            }
            Source::Unavailable(why) => {
                // Nothing to undo that we can name: DEL must succeed (spec), say why.
                log::warn!(
                    "DEL of {}: no usable saved delegate config and it cannot be rebuilt: {why}; nothing released",
                    args.container_id
                );
                store.remove(&args.container_id)?;
                return Ok(());
            }
        };
        let dc = DelegateConf::from_map(&map);
        cni::delegate::del(&dc.plugin_type, &dc.bytes, args)?;
        // Only after a successful DEL: a failed one is retried by the runtime with the file.
        store.remove(&args.container_id)?;
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = FlannelConf::parse(&args.stdin)?;
        let store = Store::new(&conf.data_dir);
        let mut map = match saved_or_rebuilt(&conf, &store, &args.container_id)? {
            Source::Saved(map) | Source::Rebuilt(map) => map,
            Source::Unavailable(why) => return Err(why.into()),
        };
        if let Some(prev) = &conf.prev_result {
            map.insert("prevResult".into(), prev.clone());
        }
        let dc = DelegateConf::from_map(&map);
        cni::delegate::check(&dc.plugin_type, &dc.bytes, args)
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = FlannelConf::parse(&args.stdin)?;
        let (dc, _) = DelegateConf::build(&conf).map_err(|e| match e {
            FlannelError::SubnetEnv(e) => {
                CniError::new(code::PLUGIN_NOT_AVAILABLE, "flannel network not available")
                    .with_details(e.to_string())
            }
            other => other.into(),
        })?;
        cni::delegate::status(&dc.plugin_type, &dc.bytes, args)
    }

    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = FlannelConf::parse(&args.stdin)?;
        // Keep going on errors (spec): forward first, then drop stale files; report the first.
        let forwarded = forward_gc(&conf, args);
        let dropped = drop_stale(&conf, args);
        // Temp files of killed saves go whatever the list says: their writers are gone.
        let swept = Store::new(&conf.data_dir).sweep().map(drop);
        forwarded.and(dropped).and(swept.map_err(Into::into))
    }
}

/// GC through the delegate, with a delegate config built as for ADD plus the GC keys.
fn forward_gc(conf: &FlannelConf, args: &CmdArgs) -> Result<(), CniError> {
    let (_, mut map) = DelegateConf::build(conf)?;
    for k in GC_KEYS {
        if let Some(v) = conf.raw.get(k) {
            map.insert(k.to_owned(), v.clone());
        }
    }
    let dc = DelegateConf::from_map(&map);
    cni::delegate::gc(&dc.plugin_type, &dc.bytes, args)
}

/// Removes saved configs of this network whose container has no valid attachment. Files that
/// belong to another network sharing the dataDir are left alone; unreadable ones of stale
/// containers are removed (a DEL would rebuild them anyway).
fn drop_stale(conf: &FlannelConf, args: &CmdArgs) -> Result<(), CniError> {
    let Some(valid) = args.conf.valid_attachments()? else {
        log::warn!("GC without cni.dev/valid-attachments: saved delegate configs kept");
        return Ok(());
    };
    let valid: HashSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
    let store = Store::new(&conf.data_dir);
    let mut first_err = None;
    for id in store.ids()? {
        if valid.contains(id.as_str()) {
            continue;
        }
        let other_network = match store.load(&id) {
            Ok(Some(bytes)) => parse_saved(&bytes)
                .ok()
                .and_then(|m| {
                    m.get("name")
                        .and_then(Value::as_str)
                        .map(|n| n != conf.name)
                })
                .unwrap_or(false),
            _ => false,
        };
        if other_network {
            continue;
        }
        log::info!("GC: removing the saved delegate config of stale container {id}");
        if let Err(e) = store.remove(&id) {
            log::warn!("{e}");
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), |e| Err(e.into()))
}
