//! Which classes the Python server could import: what decides how a persistent reference is
//! written back.
//!
//! ZODB reads the three states with a `find_global` that imports the class a reference names
//! (`ZODB/ConflictResolution.py`). When that fails, the reference's class becomes a stand-in,
//! and a resolved record spells the reference `(oid, (module, name))` instead of
//! `(oid, <class>)`; readers accept both. So the bytes Python stores depend on what its server
//! process can import. [`AppClasses`] says what we assume about the application's classes; the
//! server's own packages (ZODB and its dependencies, the standard library) are known here, and a
//! class inside them that we do not know is refused rather than guessed.

use crate::classes;

/// What the Python server we reproduce can import besides its own packages (ZODB, ZEO,
/// BTrees, persistent and their dependencies, the standard library).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppClasses {
    /// Nothing: a plain `runzeo` (no application installed), the usual deployment. References
    /// to application classes come out as `(oid, (module, name))`.
    #[default]
    Missing,
    /// Every class, under the name it is written with: a server with the application's
    /// packages installed. References come out as they went in.
    Importable,
}

/// What a reference's class is to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RefClass {
    /// Importable; pickled under this module and name.
    Importable { module: String, name: String },
    /// Not importable: Python's stand-in for it.
    Missing,
    /// In the server's own packages but not a class we know: whether it exists is a guess.
    Unknown,
}

/// Persistent classes of the server's own packages, other than the decision table's, that
/// references commonly name; each pickles under the name written.
const KNOWN_CLASSES: [(&str, &str); 4] = [
    ("persistent", "Persistent"),
    ("persistent.mapping", "PersistentMapping"),
    ("persistent.list", "PersistentList"),
    ("ZODB.blob", "Blob"),
];

/// The server's own packages: ZEO's install requirements, transitively (namespace packages by
/// their full name).
const SERVER_PACKAGES: [&str; 16] = [
    "ZEO",
    "ZODB",
    "BTrees",
    "persistent",
    "transaction",
    "zodbpickle",
    "ZConfig",
    "zdaemon",
    "zc.lockfile",
    "zope.interface",
    "zope.deferredimport",
    "zope.proxy",
    "cffi",
    "pycparser",
    "setuptools",
    "pkg_resources",
];

/// How the server sees the class `module.name` of a reference.
pub(crate) fn ref_class(module: &str, name: &str, app: AppClasses) -> RefClass {
    if let Some(class) = classes::lookup(module, name) {
        return RefClass::Importable { module: class.module, name: class.name };
    }
    if KNOWN_CLASSES.contains(&(module, name)) {
        return RefClass::Importable { module: module.to_owned(), name: name.to_owned() };
    }
    if is_server_module(module) {
        return RefClass::Unknown;
    }
    match app {
        AppClasses::Missing => RefClass::Missing,
        AppClasses::Importable => RefClass::Importable { module: module.to_owned(), name: name.to_owned() },
    }
}

/// Whether `module` is in a server package or the standard library.
fn is_server_module(module: &str) -> bool {
    let mut parts = module.split('.');
    let top = parts.next().unwrap_or_default();
    let two = parts.next().map(|second| format!("{top}.{second}"));
    SERVER_PACKAGES.iter().any(|p| *p == top || two.as_deref() == Some(p)) || STDLIB_MODULES.binary_search(&top).is_ok()
}

/// Python 3.11's `sys.stdlib_module_names`, sorted.
#[rustfmt::skip]
const STDLIB_MODULES: [&str; 305] = [
    "__future__", "_abc", "_aix_support", "_ast", "_asyncio", "_bisect", "_blake2", "_bootsubprocess",
    "_bz2", "_codecs", "_codecs_cn", "_codecs_hk", "_codecs_iso2022", "_codecs_jp", "_codecs_kr",
    "_codecs_tw", "_collections", "_collections_abc", "_compat_pickle", "_compression", "_contextvars",
    "_crypt", "_csv", "_ctypes", "_curses", "_curses_panel", "_datetime", "_dbm", "_decimal", "_elementtree",
    "_frozen_importlib", "_frozen_importlib_external", "_functools", "_gdbm", "_hashlib", "_heapq", "_imp",
    "_io", "_json", "_locale", "_lsprof", "_lzma", "_markupbase", "_md5", "_msi", "_multibytecodec",
    "_multiprocessing", "_opcode", "_operator", "_osx_support", "_overlapped", "_pickle", "_posixshmem",
    "_posixsubprocess", "_py_abc", "_pydecimal", "_pyio", "_queue", "_random", "_scproxy", "_sha1",
    "_sha256", "_sha3", "_sha512", "_signal", "_sitebuiltins", "_socket", "_sqlite3", "_sre", "_ssl",
    "_stat", "_statistics", "_string", "_strptime", "_struct", "_symtable", "_thread", "_threading_local",
    "_tkinter", "_tokenize", "_tracemalloc", "_typing", "_uuid", "_warnings", "_weakref", "_weakrefset",
    "_winapi", "_zoneinfo", "abc", "aifc", "antigravity", "argparse", "array", "ast", "asynchat", "asyncio",
    "asyncore", "atexit", "audioop", "base64", "bdb", "binascii", "bisect", "builtins", "bz2", "cProfile",
    "calendar", "cgi", "cgitb", "chunk", "cmath", "cmd", "code", "codecs", "codeop", "collections",
    "colorsys", "compileall", "concurrent", "configparser", "contextlib", "contextvars", "copy", "copyreg",
    "crypt", "csv", "ctypes", "curses", "dataclasses", "datetime", "dbm", "decimal", "difflib", "dis",
    "distutils", "doctest", "email", "encodings", "ensurepip", "enum", "errno", "faulthandler", "fcntl",
    "filecmp", "fileinput", "fnmatch", "fractions", "ftplib", "functools", "gc", "genericpath", "getopt",
    "getpass", "gettext", "glob", "graphlib", "grp", "gzip", "hashlib", "heapq", "hmac", "html", "http",
    "idlelib", "imaplib", "imghdr", "imp", "importlib", "inspect", "io", "ipaddress", "itertools", "json",
    "keyword", "lib2to3", "linecache", "locale", "logging", "lzma", "mailbox", "mailcap", "marshal", "math",
    "mimetypes", "mmap", "modulefinder", "msilib", "msvcrt", "multiprocessing", "netrc", "nis", "nntplib",
    "nt", "ntpath", "nturl2path", "numbers", "opcode", "operator", "optparse", "os", "ossaudiodev",
    "pathlib", "pdb", "pickle", "pickletools", "pipes", "pkgutil", "platform", "plistlib", "poplib", "posix",
    "posixpath", "pprint", "profile", "pstats", "pty", "pwd", "py_compile", "pyclbr", "pydoc", "pydoc_data",
    "pyexpat", "queue", "quopri", "random", "re", "readline", "reprlib", "resource", "rlcompleter", "runpy",
    "sched", "secrets", "select", "selectors", "shelve", "shlex", "shutil", "signal", "site", "smtpd",
    "smtplib", "sndhdr", "socket", "socketserver", "spwd", "sqlite3", "sre_compile", "sre_constants",
    "sre_parse", "ssl", "stat", "statistics", "string", "stringprep", "struct", "subprocess", "sunau",
    "symtable", "sys", "sysconfig", "syslog", "tabnanny", "tarfile", "telnetlib", "tempfile", "termios",
    "textwrap", "this", "threading", "time", "timeit", "tkinter", "token", "tokenize", "tomllib", "trace",
    "traceback", "tracemalloc", "tty", "turtle", "turtledemo", "types", "typing", "unicodedata", "unittest",
    "urllib", "uu", "uuid", "venv", "warnings", "wave", "weakref", "webbrowser", "winreg", "winsound",
    "wsgiref", "xdrlib", "xml", "xmlrpc", "zipapp", "zipfile", "zipimport", "zlib", "zoneinfo",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn importable(module: &str, name: &str) -> RefClass {
        RefClass::Importable { module: module.to_owned(), name: name.to_owned() }
    }

    #[test]
    fn server_classes_are_importable_under_their_public_names() {
        assert_eq!(
            ref_class("BTrees._OOBTree", "OOBucket", AppClasses::Missing),
            importable("BTrees.OOBTree", "OOBucket")
        );
        assert_eq!(ref_class("BTrees.Length", "Length", AppClasses::Missing), importable("BTrees.Length", "Length"));
        let mapping = ref_class("persistent.mapping", "PersistentMapping", AppClasses::Missing);
        assert_eq!(mapping, importable("persistent.mapping", "PersistentMapping"));
    }

    #[test]
    fn application_classes_follow_the_setting() {
        let name = ("plone.app.contenttypes.content", "Document");
        assert_eq!(ref_class(name.0, name.1, AppClasses::Missing), RefClass::Missing);
        assert_eq!(ref_class(name.0, name.1, AppClasses::Importable), importable(name.0, name.1));
        assert_eq!(ref_class("zope.container.btree", "BTreeContainer", AppClasses::Missing), RefClass::Missing);
        assert_eq!(ref_class("__main__", "Thing", AppClasses::Missing), RefClass::Missing);
    }

    #[test]
    fn unknown_names_in_server_packages_are_not_guessed() {
        for (module, name) in [
            ("BTrees.OOBTree", "OOBucketPy"),
            ("persistent.mapping", "Nope"),
            ("zope.interface", "Interface"),
            ("collections", "OrderedDict"),
            ("os.path", "join"),
        ] {
            assert_eq!(ref_class(module, name, AppClasses::Importable), RefClass::Unknown, "{module}.{name}");
        }
    }

    #[test]
    fn the_stdlib_list_is_sorted() {
        assert!(STDLIB_MODULES.windows(2).all(|w| w[0] < w[1]));
    }
}
