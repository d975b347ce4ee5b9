//! The decision table: which classes we resolve, keyed by the (module, name) a record's class
//! pickle names. Everything else is [`crate::Refusal::NotResolvable`].
//!
//! The families are those BTrees 6 defines (`BTrees/_datatypes.py`, one `_XXBTree` C module
//! each): two letters for the key and value types, O = any object, I/U = signed/unsigned 32-bit
//! int, L/Q = signed/unsigned 64-bit int, F = 32-bit float (values only), plus `fsBTree`
//! (2-byte keys, 6-byte values; FileStorage's index). Each module defines a bucket, a set, a
//! BTree and a TreeSet class. Their records name the public module (`BTrees.OOBTree`, the
//! classes' `__module__`); the C module (`BTrees._OOBTree`) holds the same class objects, so it
//! is accepted too, and the result names the public one, as Python's pickler would. The pure
//! Python classes (`OOBucketPy`, ...) are not in the table: their records do not occur (they
//! pickle under the C names) and their conflict code is separate Python.

/// The key type of a family: what its `__setstate__` accepts and how its merge orders keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// Any Python object, ordered by Python's `<` (`O`).
    Object,
    /// A C `int` (`I`).
    I32,
    /// A C `long long` (`L`).
    I64,
    /// A C `unsigned int` (`U`).
    U32,
    /// A C `unsigned long long` (`Q`).
    U64,
    /// Two bytes, compared as unsigned chars (`fsBTree`).
    Fs2,
}

/// The value type of a mapping family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// Any Python object, compared with Python's `<` and `==` (`O`).
    Object,
    /// A C `int` (`I`).
    I32,
    /// A C `long long` (`L`).
    I64,
    /// A C `unsigned int` (`U`).
    U32,
    /// A C `unsigned long long` (`Q`).
    U64,
    /// A C `float` (`F`): stored at single precision.
    F32,
    /// Six bytes (`fsBTree`).
    Fs6,
}

/// One BTrees family: a module and the four classes in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// The prefix of its module and class names: `OO`, `IF`, ..., `fs`.
    pub prefix: &'static str,
    /// Its key type.
    pub key: KeyType,
    /// Its value type (for the bucket and the BTree; sets have keys only).
    pub value: ValueType,
}

impl Family {
    /// The module the classes' `__module__` names, e.g. `BTrees.OOBTree`.
    pub fn module(&self) -> String {
        format!("BTrees.{}BTree", self.prefix)
    }
}

use KeyType as K;
use ValueType as V;

const fn family(prefix: &'static str, key: KeyType, value: ValueType) -> Family {
    Family { prefix, key, value }
}

/// Every family BTrees 6 defines (there is no `OF`).
pub const FAMILIES: [Family; 22] = [
    family("OO", K::Object, V::Object),
    family("OI", K::Object, V::I32),
    family("OL", K::Object, V::I64),
    family("OU", K::Object, V::U32),
    family("OQ", K::Object, V::U64),
    family("IO", K::I32, V::Object),
    family("II", K::I32, V::I32),
    family("IF", K::I32, V::F32),
    family("IU", K::I32, V::U32),
    family("LO", K::I64, V::Object),
    family("LL", K::I64, V::I64),
    family("LF", K::I64, V::F32),
    family("LQ", K::I64, V::U64),
    family("QO", K::U64, V::Object),
    family("QQ", K::U64, V::U64),
    family("QF", K::U64, V::F32),
    family("QL", K::U64, V::I64),
    family("UO", K::U32, V::Object),
    family("UU", K::U32, V::U32),
    family("UI", K::U32, V::I32),
    family("UF", K::U32, V::F32),
    family("fs", K::Fs2, V::Fs6),
];

/// The four classes of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `XXBucket`: a mapping bucket.
    Bucket,
    /// `XXSet`: a set bucket.
    Set,
    /// `XXBTree`: resolvable only while its state is one inline bucket.
    BTree,
    /// `XXTreeSet`: likewise, with a set bucket.
    TreeSet,
}

impl Shape {
    const ALL: [Shape; 4] = [Shape::Bucket, Shape::Set, Shape::BTree, Shape::TreeSet];

    fn suffix(self) -> &'static str {
        match self {
            Shape::Bucket => "Bucket",
            Shape::Set => "Set",
            Shape::BTree => "BTree",
            Shape::TreeSet => "TreeSet",
        }
    }

    /// Whether the items have values (bucket and BTree) or are keys only (set and TreeSet).
    pub fn is_mapping(self) -> bool {
        matches!(self, Shape::Bucket | Shape::BTree)
    }

    /// Whether the state is a tree's (one inline bucket, or more).
    pub fn is_tree(self) -> bool {
        matches!(self, Shape::BTree | Shape::TreeSet)
    }
}

/// What a class is resolved as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A class of a BTrees family.
    BTrees {
        /// The family.
        family: Family,
        /// Which of its four classes.
        shape: Shape,
    },
    /// `BTrees.Length.Length`: the state is a number; the result is committed + new - old.
    Length,
}

/// A class from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    /// How its states merge.
    pub kind: Kind,
    /// The module Python's pickler names for it.
    pub module: String,
    /// Its name.
    pub name: String,
}

/// Looks up the class a record names. `None`: not a class we resolve.
pub fn lookup(module: &str, name: &str) -> Option<Class> {
    if (module, name) == ("BTrees.Length", "Length") {
        return Some(Class { kind: Kind::Length, module: module.to_owned(), name: name.to_owned() });
    }
    let stem = module.strip_prefix("BTrees.")?;
    let stem = stem.strip_prefix('_').unwrap_or(stem);
    let prefix = stem.strip_suffix("BTree")?;
    let family = FAMILIES.iter().find(|f| f.prefix == prefix)?;
    let suffix = name.strip_prefix(prefix)?;
    let shape = Shape::ALL.into_iter().find(|s| s.suffix() == suffix)?;
    Some(Class { kind: Kind::BTrees { family: *family, shape }, module: family.module(), name: name.to_owned() })
}

/// Every (module, name) of the table, in its canonical spelling: what the property test checks
/// against the installed BTrees package.
pub fn covered() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        FAMILIES.iter().flat_map(|f| Shape::ALL.map(|s| (f.module(), format!("{}{}", f.prefix, s.suffix())))).collect();
    out.push(("BTrees.Length".to_owned(), "Length".to_owned()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_c_module_names_resolve_to_the_public_one() {
        for module in ["BTrees.OOBTree", "BTrees._OOBTree"] {
            let class = lookup(module, "OOBucket").expect("in the table");
            assert_eq!((class.module.as_str(), class.name.as_str()), ("BTrees.OOBTree", "OOBucket"));
            assert!(matches!(class.kind, Kind::BTrees { shape: Shape::Bucket, family } if family.prefix == "OO"));
        }
        let fs = lookup("BTrees._fsBTree", "fsBucket").expect("fsBucket");
        assert_eq!(fs.module, "BTrees.fsBTree");
        assert!(matches!(fs.kind, Kind::BTrees { family, .. } if family.key == KeyType::Fs2));
        assert_eq!(lookup("BTrees.Length", "Length").map(|c| c.kind), Some(Kind::Length));
        let tree_set = lookup("BTrees.IIBTree", "IITreeSet").expect("IITreeSet");
        assert!(matches!(tree_set.kind, Kind::BTrees { shape: Shape::TreeSet, .. }));
    }

    #[test]
    fn everything_else_is_not_in_the_table() {
        for (module, name) in [
            ("BTrees.OOBTree", "OOBucketPy"),
            ("BTrees.OOBTree", "IIBucket"),
            ("BTrees.OOBTree", "OOBTreeItems"),
            ("BTrees.XXBTree", "XXBucket"),
            ("BTrees.__OOBTree", "OOBucket"),
            ("BTrees.Length", "LengthPy"),
            ("BTrees.OOBTree", "OO"),
            ("persistent.mapping", "PersistentMapping"),
            ("BTrees", "OOBTree"),
        ] {
            assert_eq!(lookup(module, name), None, "{module}.{name}");
        }
    }

    #[test]
    fn covered_lists_four_classes_per_family_and_length() {
        let all = covered();
        assert_eq!(all.len(), FAMILIES.len() * 4 + 1);
        assert!(all.iter().all(|(m, n)| lookup(m, n).is_some()));
        assert!(all.contains(&("BTrees.QLBTree".to_owned(), "QLTreeSet".to_owned())));
    }
}
