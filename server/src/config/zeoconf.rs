//! `--zeo-conf FILE` (`-C`): runzeo's ZConfig file, mapped onto a configuration `Layer` (issue 14).
//!
//! `parse` reads the ZConfig structure; this module gives the sections and keys of ZEO's
//! `server.xml`, ZODB's `component.xml` (filestorage, blobstorage) and ZConfig's logger their
//! zeo-server meaning. What zeo-server cannot honour is refused with the file, the line and the
//! key, never dropped: an operator who wrote `quota 10GB` must not believe it holds. Only what
//! changes nothing about the data or the protocol (`<runner>`, a log line format) is accepted
//! with a note, logged at INFO once logging is up.

mod datatypes;
mod parse;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use datatypes::{address, boolean, byte_size, dirpath, integer, level_number, log_level};
use parse::{Key, Loc, Section};

use super::layers::{Layer, StorageEntry};
use super::values::{Seconds, Toggle};
use super::{ConfigError, HostPort, LogLevel};

/// Keys zeo-server refuses whatever their value, and why. One table, mirrored in docs/PLONE.md.
const REFUSED: &[(&str, &str, &str)] = &[
    (
        "zeo",
        "invalidation-age",
        "zeo-server answers reconnecting clients from its invalidation queue only (it does not \
         iterate the storage); raise invalidation-queue-size instead",
    ),
    (
        "zeo",
        "monitor-address",
        "the ZEO 4 monitor server is gone in ZEO 5; use the admin API's /status and /metrics (--admin)",
    ),
    ("zeo", "authentication-protocol", "ZEO 4 digest authentication is gone in ZEO 5; use <ssl> client certificates"),
    ("zeo", "authentication-database", "ZEO 4 digest authentication is gone in ZEO 5; use <ssl> client certificates"),
    ("zeo", "authentication-realm", "ZEO 4 digest authentication is gone in ZEO 5; use <ssl> client certificates"),
    ("ssl", "password-function", "zeo-server reads unencrypted private keys only; decrypt the key file"),
    ("filestorage", "quota", "zeo-server has no storage quota; alert on zeo_storage_bytes (/metrics) instead"),
    ("filestorage", "packer", "zeo-server packs with its own packer only"),
    ("logfile", "max-size", "zeo-server does not rotate its log; rotate it with logrotate's copytruncate"),
    ("logfile", "old-files", "zeo-server does not rotate its log; rotate it with logrotate's copytruncate"),
    ("logfile", "when", "zeo-server does not rotate its log; rotate it with logrotate's copytruncate"),
    ("logfile", "interval", "zeo-server does not rotate its log; rotate it with logrotate's copytruncate"),
];

/// Storage section types of ZODB and its add-ons that zeo-server does not serve.
const OTHER_STORAGES: &[&str] = &[
    "mappingstorage",
    "demostorage",
    "zeoclient",
    "relstorage",
    "zlibstorage",
    "beforestorage",
    "temporarystorage",
    "fullstorage",
    "minimalstorage",
];

/// Logger keys that only shape the text of a log line: zeo-server has its own (`--log-format`).
const LOG_FORMAT_KEYS: &[&str] = &["format", "dateformat", "style", "formatter"];

/// What a zeo.conf gives: a layer of settings, and notes to log once logging is up.
#[derive(Debug, Default)]
pub(super) struct ZeoConf {
    pub(super) layer: Layer,
    pub(super) notes: Vec<String>,
}

fn err(loc: &Loc, message: impl Into<String>) -> ConfigError {
    ConfigError::ZeoConf { location: loc.to_string(), message: message.into() }
}

/// Reads and maps `path`; `env` resolves `$(NAME)`.
pub(super) fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<ZeoConf, ConfigError> {
    let root = parse::parse_file(path, env).map_err(|e| err(&e.loc, e.message))?;
    map(&root, path)
}

fn map(root: &Section, path: &Path) -> Result<ZeoConf, ConfigError> {
    if let Some(k) = root.keys.first() {
        return Err(err(&k.loc, format!("{} is outside any section (runzeo has no top-level keys)", k.name)));
    }
    let mut out = ZeoConf::default();
    let mut zeo_seen = None;
    let mut eventlog_seen = false;
    let mut storages: Vec<(StorageEntry, Loc)> = Vec::new();
    for s in &root.sections {
        let loc = header(s);
        match s.kind.as_str() {
            "zeo" if zeo_seen.is_some() => return Err(err(&loc, "a second <zeo> section")),
            "zeo" => {
                zeo(s, &mut out.layer)?;
                zeo_seen = Some(());
            }
            "filestorage" | "blobstorage" => {
                let entry = storage(s)?;
                if storages.iter().any(|(e, _)| e.name == entry.name) {
                    return Err(err(&loc, format!("storage {:?} is configured twice", entry.name)));
                }
                storages.push((entry, loc));
            }
            "eventlog" if eventlog_seen => return Err(err(&loc, "a second <eventlog> section")),
            "eventlog" => {
                eventlog(s, &mut out)?;
                eventlog_seen = true;
            }
            "runner" => out.notes.push(format!(
                "{loc}: <runner> ignored: it configures zdaemon (zeoctl); run zeo-server under systemd, \
                 a container runtime or zeo-supervisor instead"
            )),
            other => return Err(unknown_section(&loc, other)),
        }
    }
    if zeo_seen.is_none() {
        return Err(err(&Loc { file: path.into(), line: 0 }, "no <zeo> section (runzeo requires one, with address)"));
    }
    let mut others = Vec::new();
    for (e, _) in storages {
        if e.name == "1" {
            out.layer.path = Some(e.path);
            out.layer.blob_dir = e.blob_dir;
            if e.read_only {
                out.layer.read_only_storages = Some(vec!["1".into()]);
            }
        } else {
            others.push(e);
        }
    }
    if !others.is_empty() {
        out.layer.storages = Some(others);
    }
    Ok(out)
}

fn header(s: &Section) -> Loc {
    // Every section but the root has a header line.
    s.loc.clone().unwrap_or_else(|| Loc { file: Path::new("").into(), line: 0 })
}

fn unknown_section(loc: &Loc, kind: &str) -> ConfigError {
    if OTHER_STORAGES.contains(&kind) {
        err(loc, format!("<{kind}> is not supported: zeo-server serves FileStorage (optionally in <blobstorage>) only"))
    } else {
        err(loc, format!("unknown or unsupported section <{kind}>"))
    }
}

/// The keys of one section, each at most once; what is not taken is refused by `done`.
struct Fields<'a> {
    kind: &'a str,
    keys: Vec<&'a Key>,
}

impl<'a> Fields<'a> {
    fn of(s: &'a Section) -> Result<Fields<'a>, ConfigError> {
        let mut keys: Vec<&Key> = Vec::new();
        for k in &s.keys {
            if let Some(first) = keys.iter().find(|f| f.name == k.name) {
                return Err(err(
                    &k.loc,
                    format!("{} is set twice in <{}> (first on line {})", k.name, s.kind, first.loc.line),
                ));
            }
            keys.push(k);
        }
        Ok(Fields { kind: &s.kind, keys })
    }

    fn take(&mut self, name: &str) -> Option<&'a Key> {
        let i = self.keys.iter().position(|k| k.name == name)?;
        Some(self.keys.remove(i))
    }

    /// A key runzeo requires; its absence is reported on the section's header line.
    fn require(&mut self, name: &str, section: &Loc) -> Result<&'a Key, ConfigError> {
        self.take(name).ok_or_else(|| err(section, format!("<{}> needs {name}", self.kind)))
    }

    /// Refuses the first key left over, with the reason from `REFUSED` when there is one.
    fn done(self) -> Result<(), ConfigError> {
        let Some(k) = self.keys.first() else { return Ok(()) };
        let why = REFUSED.iter().find(|(kind, key, _)| *kind == self.kind && *key == k.name);
        Err(match why {
            Some((_, _, why)) => err(&k.loc, format!("{} (in <{}>) is not supported: {why}", k.name, self.kind)),
            None => err(&k.loc, format!("unknown or unsupported key {} in <{}>", k.name, self.kind)),
        })
    }
}

fn zeo(s: &Section, layer: &mut Layer) -> Result<(), ConfigError> {
    let loc = header(s);
    let mut f = Fields::of(s)?;
    let a = f.require("address", &loc)?;
    layer.listen = Some(address(&a.value).map_err(|why| err(&a.loc, format!("address: {why}")))?);
    if let Some(k) = f.take("read-only") {
        layer.read_only = Some(boolean(k)?);
    }
    // The bounds `Config::validate` checks, reported here on the file's line.
    if let Some(k) = f.take("invalidation-queue-size") {
        let n = usize::try_from(integer(k)?).map_err(|_| err(&k.loc, "invalidation-queue-size is too large"))?;
        if n < 1 {
            return Err(err(&k.loc, "invalidation-queue-size must be at least 1"));
        }
        layer.invalidation_queue_size = Some(n);
    }
    if let Some(k) = f.take("transaction-timeout") {
        let secs = integer(k)?;
        if secs == 0 || Duration::from_secs(secs) > super::MAX_TRANSACTION_TIMEOUT {
            return Err(err(&k.loc, "transaction-timeout must be 1 to 86400 seconds (leave it out for none)"));
        }
        layer.transaction_timeout = Some(Toggle(Some(Seconds(Duration::from_secs(secs)))));
    }
    if let Some(k) = f.take("pid-filename") {
        layer.pid_file = Some(dirpath(k)?);
    }
    if let Some(k) = f.take("client-conflict-resolution") {
        layer.client_conflict_resolution = Some(boolean(k)?);
    }
    if let Some(k) = f.take("msgpack") {
        layer.msgpack = Some(boolean(k)?);
    }
    f.done()?;
    let mut ssl_seen = false;
    for sub in &s.sections {
        let sub_loc = header(sub);
        match sub.kind.as_str() {
            "ssl" if ssl_seen => return Err(err(&sub_loc, "a second <ssl> section")),
            "ssl" => {
                ssl(sub, layer)?;
                ssl_seen = true;
            }
            other => return Err(unknown_section(&sub_loc, other)),
        }
    }
    Ok(())
}

/// `<ssl>`: ZEO loads `authenticate` as the CA file or directory client certificates must chain
/// to, which is `--tls-client-ca`. Unlike Python's ssl, rustls takes no self-signed client
/// certificate as its own CA: `authenticate` must name the CA that signed them.
fn ssl(s: &Section, layer: &mut Layer) -> Result<(), ConfigError> {
    let loc = header(s);
    let mut f = Fields::of(s)?;
    let cert = dirpath(f.require("certificate", &loc)?)?;
    // Without `key`, Python's load_cert_chain reads the key from the certificate file.
    let key = f.take("key").map_or_else(|| Ok(cert.clone()), dirpath)?;
    let auth = f.require("authenticate", &loc)?;
    layer.tls_client_ca = Some(PathBuf::from(&auth.value));
    layer.tls_cert = Some(cert);
    layer.tls_key = Some(key);
    f.done()?;
    if let Some(sub) = s.sections.first() {
        return Err(unknown_section(&header(sub), &sub.kind));
    }
    Ok(())
}

/// `<filestorage NAME>` or `<blobstorage NAME>` around one `<filestorage>`.
fn storage(s: &Section) -> Result<StorageEntry, ConfigError> {
    let loc = header(s);
    let Some(name) = s.name.clone() else {
        return Err(err(
            &loc,
            format!(
                "<{}> needs a name: clients choose the storage by it (plone.recipe.zeoserver writes <{} 1>)",
                s.kind, s.kind
            ),
        ));
    };
    if s.kind == "filestorage" {
        return filestorage(s, name);
    }
    let mut f = Fields::of(s)?;
    let blob_dir = PathBuf::from(&f.require("blob-dir", &loc)?.value);
    f.done()?;
    let inner = match s.sections.as_slice() {
        [inner] if inner.kind == "filestorage" => inner,
        [inner] => return Err(unknown_section(&header(inner), &inner.kind)),
        [] => return Err(err(&loc, "<blobstorage> needs a <filestorage> section inside")),
        [_, extra, ..] => return Err(err(&header(extra), "<blobstorage> wraps one storage only")),
    };
    let mut entry = filestorage(inner, name)?;
    if entry.blob_dir.is_some() {
        return Err(err(&header(inner), "both <blobstorage> and the <filestorage> inside it name a blob-dir"));
    }
    entry.blob_dir = Some(blob_dir);
    Ok(entry)
}

fn filestorage(s: &Section, name: String) -> Result<StorageEntry, ConfigError> {
    let loc = header(s);
    let mut f = Fields::of(s)?;
    let path = dirpath(f.require("path", &loc)?)?;
    // An empty blob-dir means no blob support, as in ZODB.
    let blob_dir = f.take("blob-dir").filter(|k| !k.value.is_empty()).map(dirpath).transpose()?;
    let read_only = f.take("read-only").map(boolean).transpose()?.unwrap_or(false);
    if let Some(k) = f.take("create")
        && boolean(k)?
    {
        return Err(err(
            &k.loc,
            "create true (truncate the storage at every start) is not supported: zeo-server never truncates \
             a storage; remove the file to start empty",
        ));
    }
    if let Some(k) = f.take("pack-gc")
        && !boolean(k)?
    {
        return Err(err(&k.loc, "pack-gc false is not supported: zeo-server's pack always collects garbage"));
    }
    if let Some(k) = f.take("pack-keep-old")
        && !boolean(k)?
    {
        return Err(err(
            &k.loc,
            "pack-keep-old false is not supported: zeo-server always keeps Data.fs.old after a pack",
        ));
    }
    if let Some(k) = f.keys.iter().find(|k| k.name == "quota") {
        // A malformed size is reported as such; a valid one is refused by `done`.
        byte_size(&k.value).map_err(|why| err(&k.loc, format!("quota: {why}")))?;
    }
    f.done()?;
    if let Some(sub) = s.sections.first() {
        return Err(unknown_section(&header(sub), &sub.kind));
    }
    Ok(StorageEntry { name, path, blob_dir, read_only })
}

/// `<eventlog>` with at most one `<logfile>`: the level is the stricter of the two, as Python's
/// logger and handler filter in turn.
fn eventlog(s: &Section, out: &mut ZeoConf) -> Result<(), ConfigError> {
    let mut f = Fields::of(s)?;
    let mut threshold = f.take("level").map(level_number).transpose()?.unwrap_or(20);
    f.done()?;
    let mut logfile_seen = false;
    for sub in &s.sections {
        let loc = header(sub);
        match sub.kind.as_str() {
            "logfile" if logfile_seen => {
                return Err(err(&loc, "a second <logfile>: zeo-server logs to one file"));
            }
            "logfile" => {
                logfile_seen = true;
                let mut lf = Fields::of(sub)?;
                let path = lf.require("path", &loc)?;
                match path.value.as_str() {
                    "STDERR" => {}
                    "STDOUT" => {
                        out.notes.push(format!("{}: logging to stderr (zeo-server logs to stderr or a file)", path.loc))
                    }
                    _ => out.layer.log_file = Some(dirpath(path)?),
                }
                if let Some(k) = lf.take("level") {
                    threshold = threshold.max(level_number(k)?);
                }
                for key in LOG_FORMAT_KEYS {
                    if let Some(k) = lf.take(key) {
                        out.notes.push(format!(
                            "{}: {} ignored: zeo-server writes its own line format (--log-format plain|json)",
                            k.loc, k.name
                        ));
                    }
                }
                lf.done()?;
                if let Some(inner) = sub.sections.first() {
                    return Err(unknown_section(&header(inner), &inner.kind));
                }
            }
            other => {
                return Err(err(
                    &loc,
                    format!("<{other}> is not supported: zeo-server logs to stderr or one <logfile>"),
                ));
            }
        }
    }
    out.layer.log_level = Some(log_level(threshold));
    Ok(())
}
