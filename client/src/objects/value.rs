//! The object layer's types: [`ObjValue`] (what an object's state holds), [`ObjRef`] (a
//! reference to another persistent object), [`ClassName`] and [`Object`] (one whole record).

use std::collections::BTreeMap;

use zeo_proto::Oid;

/// A dotted Python class name, split as pickles write it (`GLOBAL module name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassName {
    /// The module, e.g. `persistent.mapping`.
    pub module: String,
    /// The class inside it, e.g. `PersistentMapping`.
    pub name: String,
}

impl ClassName {
    /// A class name from its two parts.
    pub fn new(module: &str, name: &str) -> ClassName {
        ClassName { module: module.to_owned(), name: name.to_owned() }
    }

    /// `persistent.mapping.PersistentMapping`, the class of ZODB's root object.
    pub fn persistent_mapping() -> ClassName {
        ClassName::new(MAPPING.0, MAPPING.1)
    }

    /// `persistent.list.PersistentList`.
    pub fn persistent_list() -> ClassName {
        ClassName::new(LIST.0, LIST.1)
    }

    /// Whether this names `PersistentMapping`, under its current or its ZODB 3 module.
    pub(crate) fn is_mapping(&self) -> bool {
        self.name == MAPPING.1 && (self.module == MAPPING.0 || self.module == "ZODB.PersistentMapping")
    }

    /// Whether this names `PersistentList`, under its current or its ZODB 3 module.
    pub(crate) fn is_list(&self) -> bool {
        self.name == LIST.1 && (self.module == LIST.0 || self.module == "ZODB.PersistentList")
    }
}

impl std::fmt::Display for ClassName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.module, self.name)
    }
}

const MAPPING: (&str, &str) = ("persistent.mapping", "PersistentMapping");
const LIST: (&str, &str) = ("persistent.list", "PersistentList");

/// A reference to another persistent object, as ZODB pickles it.
///
/// ZODB writes `(oid, class)` so that loading the referring object can make a ghost of the
/// referenced one without loading it; a reference without the class (a bare oid) is valid too,
/// and makes Python load the target to learn its class.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjRef {
    /// The referenced object.
    pub oid: Oid,
    /// Its class, when the reference carries it.
    pub class: Option<ClassName>,
}

impl ObjRef {
    /// A reference to a `PersistentMapping`.
    pub fn mapping(oid: Oid) -> ObjRef {
        ObjRef { oid, class: Some(ClassName::persistent_mapping()) }
    }

    /// A reference to a `PersistentList`.
    pub fn list(oid: Oid) -> ObjRef {
        ObjRef { oid, class: Some(ClassName::persistent_list()) }
    }
}

/// A value inside an object's state: the Python types the object layer maps.
///
/// Dict keys are `str` only, kept sorted (a `BTreeMap`): Python dicts remember insertion order,
/// which this layer does not preserve (iteration order is all it affects). Values the layer
/// cannot represent (sets, big ints, instances of arbitrary classes, weak or cross-database
/// references, dicts with non-`str` keys) make decoding fail rather than be silently dropped.
#[derive(Debug, Clone, PartialEq)]
pub enum ObjValue {
    /// `None`.
    None,
    /// `bool`.
    Bool(bool),
    /// `int` within i64.
    Int(i64),
    /// `float`.
    Float(f64),
    /// `str`.
    Str(String),
    /// `bytes` (and Python 2 byte strings).
    Bytes(Vec<u8>),
    /// `list`.
    List(Vec<ObjValue>),
    /// `tuple`: kept apart from lists so that records written by Python round-trip.
    Tuple(Vec<ObjValue>),
    /// `dict` with `str` keys.
    Dict(BTreeMap<String, ObjValue>),
    /// A persistent reference to another object.
    Ref(ObjRef),
}

impl ObjValue {
    /// The text of a [`ObjValue::Str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ObjValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The int of an [`ObjValue::Int`] (bools count, as in Python).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            ObjValue::Int(i) => Some(*i),
            ObjValue::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The items of an [`ObjValue::List`] or [`ObjValue::Tuple`].
    pub fn as_list(&self) -> Option<&[ObjValue]> {
        match self {
            ObjValue::List(items) | ObjValue::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// The entries of an [`ObjValue::Dict`].
    pub fn as_dict(&self) -> Option<&BTreeMap<String, ObjValue>> {
        match self {
            ObjValue::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// The reference of an [`ObjValue::Ref`].
    pub fn as_ref(&self) -> Option<&ObjRef> {
        match self {
            ObjValue::Ref(r) => Some(r),
            _ => None,
        }
    }

    /// The Python type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            ObjValue::None => "None",
            ObjValue::Bool(_) => "bool",
            ObjValue::Int(_) => "int",
            ObjValue::Float(_) => "float",
            ObjValue::Str(_) => "str",
            ObjValue::Bytes(_) => "bytes",
            ObjValue::List(_) => "list",
            ObjValue::Tuple(_) => "tuple",
            ObjValue::Dict(_) => "dict",
            ObjValue::Ref(_) => "persistent reference",
        }
    }
}

impl From<&str> for ObjValue {
    fn from(s: &str) -> Self {
        ObjValue::Str(s.to_owned())
    }
}

impl From<String> for ObjValue {
    fn from(s: String) -> Self {
        ObjValue::Str(s)
    }
}

impl From<i64> for ObjValue {
    fn from(i: i64) -> Self {
        ObjValue::Int(i)
    }
}

impl From<bool> for ObjValue {
    fn from(b: bool) -> Self {
        ObjValue::Bool(b)
    }
}

impl From<f64> for ObjValue {
    fn from(f: f64) -> Self {
        ObjValue::Float(f)
    }
}

impl From<ObjRef> for ObjValue {
    fn from(r: ObjRef) -> Self {
        ObjValue::Ref(r)
    }
}

impl From<Vec<ObjValue>> for ObjValue {
    fn from(items: Vec<ObjValue>) -> Self {
        ObjValue::List(items)
    }
}

impl From<BTreeMap<String, ObjValue>> for ObjValue {
    fn from(d: BTreeMap<String, ObjValue>) -> Self {
        ObjValue::Dict(d)
    }
}

/// One persistent object: what a ZODB data record holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// `persistent.mapping.PersistentMapping` (state `{'data': {...}}`); ZODB's root is one.
    Mapping(BTreeMap<String, ObjValue>),
    /// `persistent.list.PersistentList` (state `{'data': [...]}`).
    List(Vec<ObjValue>),
    /// Any other class whose state the layer can represent, typically a plain `Persistent`
    /// subclass whose state is its `__dict__`. Written back as ZODB writes such classes: the
    /// class as a global, no constructor arguments.
    Other {
        /// The object's class.
        class: ClassName,
        /// Its state (what `__getstate__` returned).
        state: ObjValue,
    },
}

impl Object {
    /// The object's class.
    pub fn class(&self) -> ClassName {
        match self {
            Object::Mapping(_) => ClassName::persistent_mapping(),
            Object::List(_) => ClassName::persistent_list(),
            Object::Other { class, .. } => class.clone(),
        }
    }

    /// A reference to this object stored under `oid`, carrying its class as ZODB's do.
    pub fn reference(&self, oid: Oid) -> ObjRef {
        ObjRef { oid, class: Some(self.class()) }
    }

    /// The entries of a [`Object::Mapping`].
    pub fn into_mapping(self) -> Option<BTreeMap<String, ObjValue>> {
        match self {
            Object::Mapping(m) => Some(m),
            _ => None,
        }
    }

    /// The items of a [`Object::List`].
    pub fn into_list(self) -> Option<Vec<ObjValue>> {
        match self {
            Object::List(items) => Some(items),
            _ => None,
        }
    }
}
