//! Persistent references as ZODB's conflict resolution sees them
//! (`ZODB/ConflictResolution.py`): every persistent id of the three states becomes a
//! `PersistentReference`, one per distinct id (`PersistentReferenceFactory` caches them by
//! `tuple(id)`), and the resolved record is pickled with each reference written as its `data`.
//!
//! What that means for us:
//! - identity: two persistent ids with equal factory keys are one object (`is`), which is what
//!   a bucket's `next` pointers are checked with, and what lets the pickler `BINGET` the second
//!   use of a reference;
//! - equality: `__cmp__` (in [`crate::pyobj`]) needs the oid, the database name and whether the
//!   reference is weak;
//! - the bytes: a reference whose class the server cannot import ([`crate::AppClasses`]) is
//!   written back as `(oid, (module, name))`.
//!
//! The factory builds a reference for every persistent id Python unpickles, in order (the new
//! record first, then the old one, then the committed one), and any that fails to build fails
//! the whole resolution; so do we.

use std::collections::HashMap;

use zeo_proto::pickle::{Graph, Obj, ObjId};

use crate::server_classes::{AppClasses, RefClass, ref_class};

/// What a `PersistentReference` holds that comparisons need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RefInfo {
    pub(crate) oid: Option<Vec<u8>>,
    pub(crate) database: Option<String>,
    pub(crate) weak: bool,
    /// What the resolved record pickles in its place.
    pub(crate) data: ObjId,
}

/// The references of one resolution, by persistent id object.
#[derive(Debug, Default)]
pub(crate) struct PrTable {
    by_pid: HashMap<ObjId, usize>,
    refs: Vec<RefInfo>,
}

/// `tuple(pid)` as a dict key: hashable values with Python's equality.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyAtom {
    None,
    Int(Vec<u8>),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<KeyAtom>),
    /// An importable class: one object per (module, name).
    Class(String, String),
    /// The stand-in for a class the server cannot import: one per `GLOBAL` unpickled.
    Missing(ObjId),
}

impl PrTable {
    /// The reference a persistent id object stands for.
    pub(crate) fn reference(&self, pid: ObjId) -> Option<usize> {
        self.by_pid.get(&pid).copied()
    }

    pub(crate) fn info(&self, reference: usize) -> &RefInfo {
        // Indexes come from `reference`, which only returns valid ones.
        &self.refs[reference]
    }

    /// Builds the references of `pids` (every persistent id of the decoded records, in the
    /// order Python loads them). May change the graph the way `PersistentReference` changes its
    /// data: a missing class inside a `['m', ...]` reference is replaced in place, and an
    /// importable class is renamed to the name it pickles under.
    pub(crate) fn build(graph: &mut Graph, pids: &[ObjId], app: AppClasses) -> Result<PrTable, &'static str> {
        let mut table = PrTable::default();
        let mut keys: HashMap<KeyAtom, usize> = HashMap::new();
        let mut stand_ins: HashMap<ObjId, ObjId> = HashMap::new();
        for &pid in pids {
            let Some(&Obj::PersistentId(data)) = graph.get(pid) else { continue };
            let key = key_of(graph, data, app, 0)?;
            if let Some(&r) = keys.get(&key) {
                table.by_pid.insert(pid, r);
                continue;
            }
            let info = reference_from(graph, data, app, &mut stand_ins)?;
            table.refs.push(info);
            keys.insert(key, table.refs.len() - 1);
            table.by_pid.insert(pid, table.refs.len() - 1);
        }
        Ok(table)
    }

    /// Points every persistent id at its reference's data, as the pickler writes it.
    pub(crate) fn rewrite(&self, graph: &mut Graph) {
        for (&pid, &r) in &self.by_pid {
            graph.replace(pid, Obj::PersistentId(self.info(r).data));
        }
    }
}

/// `tuple(pid)`, element by element; unhashable or unknown parts fail as Python would.
fn key_of(graph: &Graph, pid: ObjId, app: AppClasses, depth: usize) -> Result<KeyAtom, &'static str> {
    let items: Vec<KeyAtom> = match graph.get(pid) {
        Some(Obj::Bytes(b)) => b.iter().map(|&byte| KeyAtom::Int(int_key(i64::from(byte)))).collect(),
        Some(Obj::Str(s)) => s.chars().map(|c| KeyAtom::Str(c.to_string())).collect(),
        Some(Obj::Tuple(v) | Obj::List(v)) => {
            v.iter().map(|&item| atom(graph, item, app, depth + 1)).collect::<Result<_, _>>()?
        }
        _ => return Err("persistent id of a kind ZODB does not write"),
    };
    Ok(KeyAtom::Tuple(items))
}

fn atom(graph: &Graph, id: ObjId, app: AppClasses, depth: usize) -> Result<KeyAtom, &'static str> {
    if depth > 8 {
        return Err("persistent id nested too deeply");
    }
    Ok(match graph.get(id) {
        Some(Obj::None) => KeyAtom::None,
        Some(Obj::Bool(b)) => KeyAtom::Int(int_key(i64::from(*b))),
        Some(Obj::Int(i)) => KeyAtom::Int(int_key(*i)),
        Some(Obj::BigInt(b)) => KeyAtom::Int(b.clone()),
        Some(Obj::Str(s)) => KeyAtom::Str(s.clone()),
        Some(Obj::Bytes(b)) => KeyAtom::Bytes(b.clone()),
        Some(Obj::Tuple(v)) => {
            KeyAtom::Tuple(v.iter().map(|&item| atom(graph, item, app, depth + 1)).collect::<Result<_, _>>()?)
        }
        Some(Obj::Global { module, name }) => match ref_class(module, name, app) {
            RefClass::Importable { module, name } => KeyAtom::Class(module, name),
            RefClass::Missing => KeyAtom::Missing(id),
            RefClass::Unknown => return Err("persistent reference to a class of the server's packages we do not know"),
        },
        _ => return Err("persistent id holding a value we do not model"),
    })
}

/// Ints as minimal little-endian bytes, so that equal ints are equal keys however written.
fn int_key(i: i64) -> Vec<u8> {
    let bytes = i.to_le_bytes();
    let mut len = bytes.len();
    while len > 1
        && ((bytes[len - 1] == 0 && bytes[len - 2] & 0x80 == 0)
            || (bytes[len - 1] == 0xff && bytes[len - 2] & 0x80 != 0))
    {
        len -= 1;
    }
    bytes[..len].to_vec()
}

/// `PersistentReference.__init__(data)`.
fn reference_from(
    graph: &mut Graph,
    data: ObjId,
    app: AppClasses,
    stand_ins: &mut HashMap<ObjId, ObjId>,
) -> Result<RefInfo, &'static str> {
    let malformed = "persistent id of a shape PersistentReference does not accept";
    let obj = graph.get(data).cloned().ok_or(malformed)?;
    match obj {
        Obj::Tuple(items) => {
            let [oid, class] = items[..] else { return Err(malformed) };
            let written = match class_form(graph, class, app, stand_ins)? {
                Some(args) => graph.add(Obj::Tuple(vec![oid, args])),
                None => data,
            };
            Ok(RefInfo { oid: oid_bytes(graph, oid)?, database: None, weak: false, data: written })
        }
        Obj::Bytes(_) | Obj::Str(_) => Ok(RefInfo { oid: oid_bytes(graph, data)?, database: None, weak: false, data }),
        Obj::List(items) => {
            let first = items.first().and_then(|&f| graph.get(f));
            let kind = match first {
                Some(Obj::Str(s)) => s.as_str(),
                _ => "",
            };
            let inner = |graph: &Graph| -> Result<Vec<ObjId>, &'static str> {
                match items.get(1).and_then(|&i| graph.get(i)) {
                    Some(Obj::Tuple(v) | Obj::List(v)) => Ok(v.clone()),
                    _ => Err(malformed),
                }
            };
            match kind {
                "m" => {
                    let [database, oid, class] = inner(graph)?[..] else { return Err(malformed) };
                    if let Some(args) = class_form(graph, class, app, stand_ins)? {
                        let replaced = graph.add(Obj::Tuple(vec![database, oid, args]));
                        let mut list = items.clone();
                        list[1] = replaced;
                        graph.replace(data, Obj::List(list));
                    }
                    let database = database_name(graph, database)?;
                    Ok(RefInfo { oid: oid_bytes(graph, oid)?, database, weak: false, data })
                }
                "n" => {
                    let [database, oid] = inner(graph)?[..] else { return Err(malformed) };
                    let database = database_name(graph, database)?;
                    Ok(RefInfo { oid: oid_bytes(graph, oid)?, database, weak: false, data })
                }
                "w" => {
                    let (oid, database) = match inner(graph)?[..] {
                        [oid] => (oid, None),
                        [oid, database] => (oid, database_name(graph, database)?),
                        _ => return Err(malformed),
                    };
                    Ok(RefInfo { oid: oid_bytes(graph, oid)?, database, weak: true, data })
                }
                _ => {
                    let [oid] = items[..] else { return Err(malformed) };
                    Ok(RefInfo { oid: oid_bytes(graph, oid)?, database: None, weak: true, data })
                }
            }
        }
        _ => Err(malformed),
    }
}

/// The class part of a reference: `Some(args)` when the server cannot import it (the data then
/// holds Python's stand-in's `(module, name)`, one tuple per `GLOBAL` unpickled), `None` when it
/// stays (an importable class is renamed to the name it pickles under).
fn class_form(
    graph: &mut Graph,
    class: ObjId,
    app: AppClasses,
    stand_ins: &mut HashMap<ObjId, ObjId>,
) -> Result<Option<ObjId>, &'static str> {
    let Some(Obj::Global { module, name }) = graph.get(class).cloned() else { return Ok(None) };
    match ref_class(&module, &name, app) {
        RefClass::Importable { module, name } => {
            graph.replace(class, Obj::Global { module, name });
            Ok(None)
        }
        RefClass::Missing => {
            if let Some(&args) = stand_ins.get(&class) {
                return Ok(Some(args));
            }
            let module = graph.add(Obj::Str(module));
            let name = graph.add(Obj::Str(name));
            let args = graph.add(Obj::Tuple(vec![module, name]));
            stand_ins.insert(class, args);
            Ok(Some(args))
        }
        RefClass::Unknown => Err("persistent reference to a class of the server's packages we do not know"),
    }
}

/// The oid as `PersistentReference` keeps it: bytes, `None`, or a str encoded as ASCII.
fn oid_bytes(graph: &Graph, oid: ObjId) -> Result<Option<Vec<u8>>, &'static str> {
    match graph.get(oid) {
        Some(Obj::Bytes(b)) => Ok(Some(b.clone())),
        Some(Obj::None) => Ok(None),
        Some(Obj::Str(s)) if s.is_ascii() => Ok(Some(s.as_bytes().to_vec())),
        _ => Err("persistent reference oid that is neither bytes nor ASCII text"),
    }
}

/// A database name we can compare as Python would: a str or `None`.
fn database_name(graph: &Graph, id: ObjId) -> Result<Option<String>, &'static str> {
    match graph.get(id) {
        Some(Obj::Str(s)) => Ok(Some(s.clone())),
        Some(Obj::None) => Ok(None),
        _ => Err("persistent reference database name that is not a str"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(g: &mut Graph, b: &[u8]) -> ObjId {
        g.add(Obj::Bytes(b.to_vec()))
    }

    fn pid(g: &mut Graph, data: ObjId) -> ObjId {
        g.add(Obj::PersistentId(data))
    }

    #[test]
    fn equal_ids_are_one_reference_and_missing_classes_are_spelled_out() {
        let mut g = Graph::new();
        let doc = g.add(Obj::global("myapp.content", "Doc"));
        let oid = bytes(&mut g, &[0, 0, 0, 0, 0, 0, 0, 5]);
        let oid2 = bytes(&mut g, &[0, 0, 0, 0, 0, 0, 0, 5]);
        let t1 = g.add(Obj::Tuple(vec![oid, doc]));
        let t2 = g.add(Obj::Tuple(vec![oid2, doc]));
        let p1 = pid(&mut g, t1);
        let p2 = pid(&mut g, t2);
        // The same class written again (another GLOBAL) is another stand-in.
        let doc_again = g.add(Obj::global("myapp.content", "Doc"));
        let t3 = g.add(Obj::Tuple(vec![oid, doc_again]));
        let p3 = pid(&mut g, t3);
        let table = PrTable::build(&mut g, &[p1, p2, p3], AppClasses::Missing).expect("builds");
        assert_eq!(table.reference(p1), table.reference(p2));
        assert_ne!(table.reference(p1), table.reference(p3));
        let info = table.info(table.reference(p1).expect("known"));
        assert_eq!(info.oid.as_deref(), Some(&[0, 0, 0, 0, 0, 0, 0, 5][..]));
        let Some(Obj::Tuple(data)) = g.get(info.data) else { panic!("a tuple") };
        assert_eq!(data[0], oid);
        let Some(Obj::Tuple(class)) = g.get(data[1]) else { panic!("(module, name)") };
        assert_eq!(g.get(class[0]), Some(&Obj::Str("myapp.content".into())));
    }

    #[test]
    fn importable_classes_stay_and_get_their_public_name() {
        let mut g = Graph::new();
        let class = g.add(Obj::global("BTrees._OOBTree", "OOBucket"));
        let oid = bytes(&mut g, b"12345678");
        let t = g.add(Obj::Tuple(vec![oid, class]));
        let p = pid(&mut g, t);
        let table = PrTable::build(&mut g, &[p], AppClasses::Missing).expect("builds");
        assert_eq!(table.info(0).data, t);
        assert_eq!(g.get(class), Some(&Obj::global("BTrees.OOBTree", "OOBucket")));
    }

    #[test]
    fn list_forms() {
        let mut g = Graph::new();
        let oid = bytes(&mut g, b"12345678");
        let w = g.add(Obj::Str("w".into()));
        let inner = g.add(Obj::Tuple(vec![oid]));
        let weak = g.add(Obj::List(vec![w, inner]));
        let pw = pid(&mut g, weak);
        let n = g.add(Obj::Str("n".into()));
        let db = g.add(Obj::Str("other".into()));
        let inner = g.add(Obj::Tuple(vec![db, oid]));
        let cross = g.add(Obj::List(vec![n, inner]));
        let pn = pid(&mut g, cross);
        let m = g.add(Obj::Str("m".into()));
        let class = g.add(Obj::global("myapp", "Thing"));
        let inner = g.add(Obj::Tuple(vec![db, oid, class]));
        let multi = g.add(Obj::List(vec![m, inner]));
        let pm = pid(&mut g, multi);
        let table = PrTable::build(&mut g, &[pw, pn, pm], AppClasses::Missing).expect("builds");
        let info = |p| table.info(table.reference(p).expect("known")).clone();
        assert!(info(pw).weak);
        assert_eq!(info(pn).database.as_deref(), Some("other"));
        assert!(!info(pm).weak);
        // The missing class inside ['m', ...] was replaced in the list itself.
        let Some(Obj::List(items)) = g.get(multi) else { panic!("a list") };
        assert_ne!(items[1], inner);
    }

    #[test]
    fn shapes_python_rejects_fail() {
        for bad in [Obj::Int(5), Obj::None] {
            let mut g = Graph::new();
            let data = g.add(bad);
            let p = pid(&mut g, data);
            assert!(PrTable::build(&mut g, &[p], AppClasses::Missing).is_err());
        }
        let mut g = Graph::new();
        let oid = bytes(&mut g, b"12345678");
        let three = g.add(Obj::Tuple(vec![oid, oid, oid]));
        let p = pid(&mut g, three);
        assert!(PrTable::build(&mut g, &[p], AppClasses::Missing).is_err());
        let mut g = Graph::new();
        let class = g.add(Obj::global("persistent.mapping", "NoSuchClass"));
        let oid = bytes(&mut g, b"12345678");
        let t = g.add(Obj::Tuple(vec![oid, class]));
        let p = pid(&mut g, t);
        assert!(PrTable::build(&mut g, &[p], AppClasses::Missing).is_err());
    }
}
