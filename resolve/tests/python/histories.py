"""Random three-way histories of BTrees objects, resolved by ZODB itself.

Builds old/committed/new versions of buckets, sets, one-bucket trees and Length counters with
the installed BTrees package, writes each as the data record a ZODB client stores
(ZODB.serialize.ObjectWriter), and resolves them with ZODB.ConflictResolution's
tryToResolveConflict, as a FileStorage or a ZEO server does. Prints one JSON line per case:

    {"case": N, "shape": "...", "old": HEX, "committed": HEX, "new": HEX,
     "python": {"ok": HEX} | {"conflict": [p1, p2, p3, reason]} | {"error": "Name: text"}}

Usage: histories.py --cases N --seed S [--app-importable]
       histories.py --list-classes

Persistent values reference objects of application classes (Plone's content types, in made-up
modules that exist only while records are written), so the server side sees what a plain
runzeo sees: classes it cannot import. With --app-importable the modules stay, as on a server
with the application installed.
"""

import argparse
import json
import logging
import random
import sys
import types

import BTrees
import persistent
import persistent.mapping
from BTrees.Length import Length
from ZODB import ConflictResolution
from ZODB.POSException import BTreesConflictError
from ZODB.POSException import ConflictError
from ZODB.serialize import ObjectWriter


# Every family module BTrees defines: _OOBTree, _IIBTree, ..., _fsBTree.
FAMILIES = [n[1:-5] for n in dir(BTrees) if n.startswith('_') and n.endswith('BTree') and len(n) == 8]

APP_MODULES = {
    'plone.app.contenttypes.content': ['Document', 'Folder', 'File'],
    'Products.ZCatalog.Catalog': ['Catalog'],
}


def list_classes():
    for fam in sorted(FAMILIES):
        module = __import__('BTrees.%sBTree' % fam, fromlist=['x'])
        for kind in ('Bucket', 'Set', 'BTree', 'TreeSet'):
            cls = getattr(module, fam + kind)
            print('%s %s' % (cls.__module__, cls.__qualname__))
    print('%s %s' % (Length.__module__, Length.__qualname__))


class Jar:
    """The little a ZODB connection must be for ObjectWriter: hands out oids."""

    xrefs = True
    databases = {}

    def __init__(self):
        self.next = 1000

    def new_oid(self):
        self.next += 1
        return self.next.to_bytes(8, 'big')

    def db(self):
        return self

    def register(self, obj):
        pass


JAR = Jar()


def install_app_modules():
    classes = []
    for dotted, names in APP_MODULES.items():
        parts = dotted.split('.')
        for i in range(1, len(parts) + 1):
            name = '.'.join(parts[:i])
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
            if i > 1:
                setattr(sys.modules['.'.join(parts[:i - 1])], parts[i - 1], sys.modules[name])
        for cname in names:
            cls = type(cname, (persistent.Persistent,), {'__module__': dotted})
            setattr(sys.modules[dotted], cname, cls)
            classes.append(cls)
    return classes


def remove_app_modules():
    for name in list(sys.modules):
        if name.split('.')[0] in ('plone', 'Products'):
            del sys.modules[name]
    ConflictResolution._class_cache.clear()


def record(obj):
    obj._p_jar = JAR
    if obj._p_oid is None:
        obj._p_oid = JAR.new_oid()
    return ObjectWriter(obj).serialize(obj)


class Gen:
    def __init__(self, rng, app_classes):
        self.rng = rng
        self.app = app_classes
        # Persistent objects values may reference, shared by the three versions (same oids).
        self.targets = []
        for i in range(6):
            cls = rng.choice(app_classes) if i < 4 else persistent.mapping.PersistentMapping
            obj = cls()
            obj._p_jar = JAR
            obj._p_oid = (500 + i).to_bytes(8, 'big')
            self.targets.append(obj)
        # Values shared by several keys, to exercise the pickler's memo.
        self.shared = ['shared-%d' % i for i in range(3)] + [('a', 'tuple'), 'é']

    # --- keys and values of each type ---

    def key(self, ktype):
        r = self.rng
        if ktype == 'I':
            return r.choice([r.randint(-3, 40), r.randint(-2**31, 2**31 - 1)])
        if ktype == 'L':
            return r.choice([r.randint(-3, 40), r.randint(-2**63, 2**63 - 1)])
        if ktype == 'U':
            return r.choice([r.randint(0, 40), r.randint(0, 2**32 - 1)])
        if ktype == 'Q':
            return r.choice([r.randint(0, 40), r.randint(0, 2**64 - 1)])
        if ktype == 'fs':
            return bytes([r.randint(0, 3), r.randint(0, 255)])
        # O keys: one kind per bucket, as real applications keep them.
        return self.okey()

    def value(self, vtype):
        r = self.rng
        if vtype == 'F':
            return r.choice([float(r.randint(-5, 5)), r.uniform(-1e6, 1e6), r.randint(-100, 100)])
        if vtype == 'fs':
            return bytes(r.randint(0, 255) for _ in range(6))
        if vtype in 'ILUQ':
            return self.key(vtype)
        return self.ovalue()

    def ovalue(self):
        r = self.rng
        pick = r.randint(0, 11)
        if pick <= 2:
            return r.choice(self.targets)
        if pick == 3:
            return r.choice(self.shared)
        if pick == 4:
            return r.randint(-10, 10)
        if pick == 5:
            return ('doc', r.randint(0, 3), None, r.random() < 0.5, 2 ** r.randint(60, 70))
        if pick == 6:
            return ['kw%d' % r.randint(0, 4) for _ in range(r.randint(0, 3))]
        if pick == 7:
            return b'\x00\x01' * r.randint(0, 3)
        if pick == 8:
            return None
        if pick == 9:
            return r.choice([0.5, -2.25, 1e300, float(r.randint(0, 3))])
        return 'v%d' % r.randint(0, 5)

    def okey_kind(self):
        self.kind = self.rng.choice(['str', 'str', 'tuple', 'int', 'bytes', 'bigint'])

    def okey(self):
        r = self.rng
        if self.kind == 'str':
            return r.choice(['', 'a', 'é', 'doc-%d' % r.randint(0, 25), 'Ünïcode-%d' % r.randint(0, 3)])
        if self.kind == 'tuple':
            return ('path', r.randint(0, 5), 'x' * r.randint(0, 2))
        if self.kind == 'int':
            return r.choice([r.randint(0, 30), float(r.randint(0, 30)) + 0.5, r.random() < 0.5])
        if self.kind == 'bytes':
            return bytes([r.randint(0, 4)]) * r.randint(0, 3)
        return r.choice([2 ** 64 + r.randint(0, 5), -(2 ** 70) - r.randint(0, 5), r.randint(0, 5)])

    # --- histories ---

    def edit(self, items, mapping, ktype, vtype):
        """A transaction's change: a few inserts, deletes and value changes."""
        items = dict(items)
        r = self.rng
        for _ in range(r.choice([0, 1, 1, 2, 2, 3, 4])):
            op = r.random()
            if op < 0.4 or not items:
                items[self.key(ktype)] = self.value(vtype) if mapping else None
            elif op < 0.7:
                del items[r.choice(sorted(items, key=repr))]
            elif mapping:
                items[r.choice(sorted(items, key=repr))] = self.value(vtype)
        if r.random() < 0.05:
            items.clear()
        return items

    def btrees(self, fam, kind):
        module = __import__('BTrees.%sBTree' % fam, fromlist=['x'])
        cls = getattr(module, fam + kind)
        ktype = 'fs' if fam == 'fs' else fam[0]
        vtype = 'fs' if fam == 'fs' else fam[1]
        mapping = kind in ('Bucket', 'BTree')
        self.okey_kind()
        r = self.rng
        size = r.choice([0, 1, 2, 3, 5, 8, 12])
        if kind in ('BTree', 'TreeSet') and r.random() < 0.05:
            size = 200  # more than one bucket: never resolved (reason 11)
        base = {}
        for _ in range(size):
            base[self.key(ktype)] = self.value(vtype) if mapping else None
        versions = [base, self.edit(base, mapping, ktype, vtype), self.edit(base, mapping, ktype, vtype)]
        next_bucket = None
        if kind in ('Bucket', 'Set') and r.random() < 0.25:
            next_bucket = getattr(module, fam + kind)()
            next_bucket._p_jar = JAR
            next_bucket._p_oid = JAR.new_oid()
        records = []
        for i, items in enumerate(versions):
            obj = cls()
            if mapping:
                obj.update(items)
            else:
                obj.update(list(items))
            if next_bucket is not None:
                state = obj.__getstate__()
                nxt = next_bucket
                if i == 2 and r.random() < 0.2:  # the other side split the bucket
                    nxt = getattr(module, fam + kind)()
                    nxt._p_jar = JAR
                    nxt._p_oid = JAR.new_oid()
                obj.__setstate__((state[0], nxt) if state else ((), nxt))
            obj._p_oid = b'\x00' * 7 + b'\x01'
            records.append(record(obj))
        return '%s%s' % (fam, kind), records

    def length(self):
        r = self.rng
        old = r.choice([0, r.randint(0, 10 ** 6), 2 ** 63 - r.randint(0, 3), -(2 ** 80)])
        values = [old, old + r.randint(-5, 5), old + r.randint(-5, 5)]
        if r.random() < 0.1:
            values[r.randint(0, 2)] = r.choice([0.5, 2.0, True])
        records = []
        for v in values:
            obj = Length(v)
            obj._p_oid = b'\x00' * 7 + b'\x02'
            records.append(record(obj))
        return 'Length', records

    def plone(self):
        """The shapes Plone writes most: a BTreeFolder2's id tree and a catalog's indexes."""
        r = self.rng
        shape = r.choice(['folder', 'unindex', 'uids', 'docids', 'dates'])
        fam, kind = {'folder': ('OO', 'BTree'), 'unindex': ('IO', 'BTree'), 'uids': ('OI', 'BTree'),
                     'docids': ('II', 'TreeSet'), 'dates': ('II', 'BTree')}[shape]
        module = __import__('BTrees.%sBTree' % fam, fromlist=['x'])
        cls = getattr(module, fam + kind)

        def key():
            if shape == 'folder':
                return 'page-%d' % r.randint(0, 20)
            if shape == 'uids':
                return '/plone/news/item-%d' % r.randint(0, 20)
            return r.randint(10 ** 8, 10 ** 8 + 30)

        def value():
            if shape == 'folder':
                return r.choice(self.targets[:4])
            if shape == 'unindex':
                return r.choice([r.choice(self.shared), ['Member', 'Reader'][:r.randint(0, 2)],
                                 ('Document', 'private', 2 ** 40 + r.randint(0, 9), None)])
            return r.randint(0, 10 ** 9)

        base = {key(): value() for _ in range(r.randint(0, 10))}

        def change(items):
            items = dict(items)
            for _ in range(r.randint(0, 3)):
                if r.random() < 0.5 or not items:
                    items[key()] = value()
                else:
                    del items[r.choice(sorted(items))]
            return items

        records = []
        for items in (base, change(base), change(base)):
            obj = cls()
            if kind == 'TreeSet':
                obj.update(list(items))
            else:
                obj.update(items)
            obj._p_oid = b'\x00' * 7 + b'\x03'
            records.append(record(obj))
        return 'plone-' + shape, records

    def case(self):
        r = self.rng.random()
        if r < 0.08:
            return self.length()
        if r < 0.35:
            return self.plone()
        fam = self.rng.choice(FAMILIES + ['OO', 'IO', 'II', 'OI', 'LL', 'IF', 'fs'])
        kind = self.rng.choice(['Bucket', 'Bucket', 'Set', 'BTree', 'TreeSet'])
        return self.btrees(fam, kind)


class Storage:
    """What tryToResolveConflict needs of a storage."""

    def __init__(self, old):
        self.old = old

    def loadSerial(self, oid, serial):
        assert serial == b'old', serial
        return self.old

    _crs_untransform_record_data = _crs_transform_record_data = staticmethod(lambda data: data)


class Capture(logging.Handler):
    """Keeps the exception ZODB logs (and hides) before it raises a plain ConflictError."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.exc = None

    def emit(self, rec):
        self.exc = sys.exc_info()[1]


def resolve(capture, old, committed, new):
    capture.exc = None
    try:
        data = ConflictResolution.tryToResolveConflict(
            Storage(old), b'\x00' * 8, b'committed', b'old', new, committed)
    except ConflictError:
        e = capture.exc
        if isinstance(e, BTreesConflictError):
            return {'conflict': [e.p1, e.p2, e.p3, e.reason]}
        return {'error': '%s: %s' % (type(e).__name__, e)}
    return {'ok': data.hex()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cases', type=int, default=1000)
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--app-importable', action='store_true')
    parser.add_argument('--list-classes', action='store_true')
    args = parser.parse_args()
    if args.list_classes:
        list_classes()
        return
    rng = random.Random(args.seed)
    gen = Gen(rng, install_app_modules())
    cases = [gen.case() for _ in range(args.cases)]
    if not args.app_importable:
        remove_app_modules()
    capture = Capture()
    log = logging.getLogger('ZODB.ConflictResolution')
    log.addHandler(capture)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    out = sys.stdout
    for i, (shape, (old, committed, new)) in enumerate(cases):
        result = resolve(capture, old, committed, new)
        out.write(json.dumps({'case': i, 'shape': shape, 'old': old.hex(), 'committed': committed.hex(),
                              'new': new.hex(), 'python': result}) + '\n')


if __name__ == '__main__':
    main()
