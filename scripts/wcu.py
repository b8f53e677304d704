#!/usr/bin/env python3
"""Measure DynamoDB write capacity units (WCU) of a real workload on moto server.

DynamoDB Streams (NEW_AND_OLD_IMAGES) show every item write with its old and
new image, enough to recompute what each write costs on AWS in the base table
and in every secondary index (GSIs; LSIs are counted the same way).

Usage (the project venv has boto3; credentials default to testing/us-east-1):
    .venv/bin/python scripts/wcu.py arm      --endpoint http://127.0.0.1:4566 [--table T]...
    ... run the workload ...
    .venv/bin/python scripts/wcu.py report   --endpoint http://127.0.0.1:4566 [--per N] [--json]
    .venv/bin/python scripts/wcu.py selftest --endpoint http://127.0.0.1:4590
`arm` enables a stream on every existing table (a run that creates its own
tables must be armed after creating them and before writing). `report` reads
every stream from TRIM_HORIZON (all writes since `arm`): writes and WCU per
table and index, total, WCU per delivery (--per N) and per write shape (table,
event, attributes written or changed). `selftest` creates, measures and deletes
its own table on an already running server; exits 1 on a mismatch.

Cost rules (AWS docs "Item sizes and formats", "GSI provisioned throughput"):
1 WCU per started KB (1024 B) of item size, at least 1; MODIFY is charged on
the larger of old and new item. An index write is charged on the projected
entry (table keys + index keys + projected attributes): put when the item
enters the (possibly sparse) index, delete when it leaves, delete + put when
its index key changes, update when projected attributes change, else nothing.

Known limits:
  * On AWS, streams omit failed conditional writes, no-op updates and deletes
    of missing items, though all cost WCU. moto does emit records for no-op
    updates and puts (so they are counted, as AWS charges them) but none for
    failed conditions or deletes of missing items (not counted).
  * Transactions cost double on AWS; the project does not use them and this
    tool doubles nothing.
  * Number size is approximate: AWS stores base-100 digit pairs, taken here as
    ceil(significant digits / 2) + 1 bytes.
  * moto quirk, corrected: an UpdateItem that creates an item emits two INSERT
    records (key-only item, then the full item); the first one is dropped.
  * Reading a shard stops at the first empty page: exact on moto, where every
    page has a NextShardIterator; an open AWS shard can return empty pages early.
"""
import argparse, json, math, os, signal, sys
from collections import defaultdict

for _k, _v in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
               ("AWS_DEFAULT_REGION", "us-east-1")):
    os.environ.setdefault(_k, _v)
try:
    import boto3
except ImportError:
    sys.exit("boto3 missing: run with .venv/bin/python (bash scripts/venv.sh creates it)")


def number_size(text):
    """Approximate bytes of a DynamoDB number: ceil(significant digits/2) + 1."""
    digits = text.lstrip("+-").lower().split("e")[0].replace(".", "").strip("0")
    return math.ceil(len(digits) / 2) + 1


# Bytes of each AttributeValue type, attribute name excluded. M and L: 3 bytes
# overhead plus 1 byte per element (AWS docs); map elements add their name.
SIZES = {
    "S": lambda v: len(v.encode()), "N": number_size, "B": len,
    "BOOL": lambda v: 1, "NULL": lambda v: 1,
    "SS": lambda v: sum(len(s.encode()) for s in v),
    "NS": lambda v: sum(map(number_size, v)), "BS": lambda v: sum(map(len, v)),
    "M": lambda v: 3 + sum(len(k.encode()) + value_size(x) + 1 for k, x in v.items()),
    "L": lambda v: 3 + sum(value_size(x) + 1 for x in v),
}


def value_size(av):
    """Bytes of one AttributeValue such as {'S': 'abc'} (boto3 gives B as bytes)."""
    (kind, v), = av.items()
    return SIZES[kind](v)


def item_size(item):
    """Bytes of an item: sum of UTF-8 attribute name length + value size."""
    return sum(len(k.encode()) + value_size(v) for k, v in (item or {}).items())


def units(size):
    """WCU of one write of `size` bytes: one per started KB, at least 1."""
    return max(1, math.ceil(size / 1024))


def arm(ddb, names):
    """Enable a NEW_AND_OLD_IMAGES stream on each table that has none yet."""
    for name in names:
        spec = ddb.describe_table(TableName=name)["Table"].get("StreamSpecification") or {}
        if spec.get("StreamEnabled"):
            note = "" if spec.get("StreamViewType") == "NEW_AND_OLD_IMAGES" else \
                f" but view type is {spec.get('StreamViewType')}; report needs NEW_AND_OLD_IMAGES"
            print(f"{name}: stream already enabled{note}", file=sys.stderr)
            continue
        ddb.update_table(TableName=name, StreamSpecification={
            "StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
        print(f"{name}: stream enabled", file=sys.stderr)


def read_stream(streams, arn):
    """Every record of every shard of the stream `arn`, from TRIM_HORIZON."""
    shards, start = [], None
    while True:
        kw = {"ExclusiveStartShardId": start} if start else {}
        desc = streams.describe_stream(StreamArn=arn, **kw)["StreamDescription"]
        shards += desc["Shards"]
        start = desc.get("LastEvaluatedShardId")
        if not start:
            break
    records = []
    for shard in shards:  # parents are listed before their children
        it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            page = streams.get_records(ShardIterator=it)
            if not page["Records"]:
                break  # moto always returns a NextShardIterator; stop at the end
            records += page["Records"]
            it = page.get("NextShardIterator")
    return records


def merge_moto_upserts(records, key_names):
    """Drop moto's key-only INSERT that precedes a second INSERT of the same key.

    Two INSERTs of one key without a REMOVE between cannot happen on AWS; moto
    emits them for an UpdateItem that creates the item. Returns (records, dropped).
    """
    last, drop = {}, set()
    for i, rec in enumerate(records):
        key = json.dumps(rec["dynamodb"]["Keys"], sort_keys=True, default=repr)
        prev = last.get(key)
        if (prev is not None and rec["eventName"] == "INSERT"
                and records[prev]["eventName"] == "INSERT"
                and set(records[prev]["dynamodb"].get("NewImage", {})) <= key_names):
            drop.add(prev)
        last[key] = i
    return [r for i, r in enumerate(records) if i not in drop], len(drop)


def index_cost(old, new, table_keys, index):
    """(writes, WCU) in one index for a change of an item from `old` to `new`."""
    keys = index["keys"]

    def project(img):
        """The index entry of `img`, or None when the item is not in the index."""
        if img is None or not all(k in img for k in keys):
            return None
        kept = table_keys | set(keys) | index["include"]
        return {k: v for k, v in img.items() if index["all"] or k in kept}

    po, pn = project(old), project(new)
    if po is None and pn is None:
        return 0, 0
    if po is None:
        return 1, units(item_size(pn))
    if pn is None:
        return 1, units(item_size(po))
    if any(po[k] != pn[k] for k in keys):  # key change: delete + put
        return 2, units(item_size(po)) + units(item_size(pn))
    if po != pn:
        return 1, units(max(item_size(po), item_size(pn)))
    return 0, 0


def describe(ddb, name):
    """Key names, index (GSI, LSI) definitions and NEW_AND_OLD_IMAGES stream ARN of `name`."""
    t = ddb.describe_table(TableName=name)["Table"]
    indexes = {}
    for g in t.get("GlobalSecondaryIndexes", []) + t.get("LocalSecondaryIndexes", []):
        p = g["Projection"]
        indexes[g["IndexName"]] = {"keys": [k["AttributeName"] for k in g["KeySchema"]],
                                   "all": p["ProjectionType"] == "ALL",
                                   "include": set(p.get("NonKeyAttributes", []))}
    spec = t.get("StreamSpecification") or {}
    arn = t.get("LatestStreamArn") if spec.get("StreamViewType") == "NEW_AND_OLD_IMAGES" else None
    return {k["AttributeName"] for k in t["KeySchema"]}, indexes, arn


def measure(ddb, streams, names):
    """Compute writes and WCU per table, per index and per write shape."""
    out = {"tables": {}, "total": {"writes": 0, "wcu": 0}, "skipped": [],
           "moto_upserts_merged": 0}
    shapes = defaultdict(lambda: [0, 0, 0])  # (table, event, attrs) -> count, base, index

    def add(counts, writes, wcu):
        """Add writes and WCU to `counts` and to the grand total."""
        for acc in (counts, out["total"]):
            acc["writes"], acc["wcu"] = acc["writes"] + writes, acc["wcu"] + wcu

    for name in names:
        table_keys, indexes, arn = describe(ddb, name)
        if not arn:
            out["skipped"].append(name)  # not armed: no usable stream
            continue
        records, merged = merge_moto_upserts(read_stream(streams, arn), table_keys)
        out["moto_upserts_merged"] += merged
        t = out["tables"][name] = {"writes": 0, "wcu": 0,
                                   "indexes": {i: {"writes": 0, "wcu": 0} for i in indexes}}
        for rec in records:
            old, new = rec["dynamodb"].get("OldImage"), rec["dynamodb"].get("NewImage")
            base = units(max(item_size(old), item_size(new)))
            add(t, 1, base)
            idx = 0
            for iname, index in indexes.items():
                w, c = index_cost(old, new, table_keys, index)
                add(t["indexes"][iname], w, c)
                idx += c
            if old and new:  # MODIFY: names whose values differ
                attrs = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
            else:  # INSERT / REMOVE: every attribute of the item
                attrs = set(old or new)
            s = shapes[(name, rec["eventName"], tuple(sorted(attrs)))]
            s[0], s[1], s[2] = s[0] + 1, s[1] + base, s[2] + idx
    out["shapes"] = sorted(({"table": k[0], "event": k[1], "attributes": list(k[2]),
                             "count": v[0], "base_wcu": v[1], "index_wcu": v[2]}
                            for k, v in shapes.items()),
                           key=lambda s: -(s["base_wcu"] + s["index_wcu"]))
    return out


def print_report(r, per):
    """Print the result of measure() as text tables."""
    print(f"{'table / index (writes: index puts+deletes+updates)':<52} {'writes':>9} {'WCU':>9}")
    for name, t in r["tables"].items():
        print(f"{name:<52} {t['writes']:>9} {t['wcu']:>9}")
        for iname, i in t["indexes"].items():
            print(f"  {name + '.' + iname:<50} {i['writes']:>9} {i['wcu']:>9}")
    print(f"{'TOTAL (tables + indexes)':<52} {r['total']['writes']:>9} {r['total']['wcu']:>9}")
    if per:
        print(f"WCU per delivery (/{per}): {r['wcu_per']:.2f}")
    if r["skipped"]:
        print(f"no NEW_AND_OLD_IMAGES stream (run `arm` first): {', '.join(r['skipped'])}")
    print(f"\n{'count':>7} {'base':>7} {'index':>7}  table  event  attributes written/changed")
    for s in r["shapes"]:
        print(f"{s['count']:>7} {s['base_wcu']:>7} {s['index_wcu']:>7}  {s['table']}  "
              f"{s['event']}  {','.join(s['attributes']) or '(no change)'}")


def selftest(ddb, streams):
    """Run a known workload on a fresh table; assert hand-computed WCU."""
    S = lambda s: {"S": s}
    m = {"M": {"a": S("xy"), "b": {"BOOL": True}}}          # 3 + (1+2+1) + (1+1+1)
    l = {"L": [{"N": "1"}, {"NULL": True}]}                   # 3 + (2+1) + (1+1)
    inc = {"keys": ["g"], "all": False, "include": {"x"}}  # INCLUDE x: y is not projected
    xy = lambda x, y: {"pk": S("a"), "g": S("b"), "x": S(x), "y": S(y)}
    sizes = [item_size({"m": m, "l": l, "ss": {"SS": ["ab", "c"]}}),  # 1+10 + 1+8 + 2+3
             [number_size(n) for n in ("0", "100", "-0.00120", "12345", "1.5E+10")],
             [index_cost(xy("1", "0"), xy("1", "1"), {"pk"}, inc),   # y changed: 0
              index_cost(xy("0", "1"), xy("1", "1"), {"pk"}, inc)]]  # x changed: update 1
    name = f"wcu_selftest_{os.getpid()}"
    attrs = [{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "pending", "team")]
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", AttributeDefinitions=attrs,
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     GlobalSecondaryIndexes=[
                         {"IndexName": "sparse", "Projection": {"ProjectionType": "KEYS_ONLY"},
                          "KeySchema": [{"AttributeName": "pending", "KeyType": "HASH"}]},
                         {"IndexName": "by_team", "Projection": {"ProjectionType": "ALL"},
                          "KeySchema": [{"AttributeName": "team", "KeyType": "HASH"}]}])

    def upd(pk, expr, **values):
        """UpdateItem on `pk` with `expr`; values are strings bound to :name."""
        kw = {"ExpressionAttributeValues": {f":{k}": S(v) for k, v in values.items()}}
        ddb.update_item(TableName=name, Key={"pk": S(pk)}, UpdateExpression=expr,
                        **(kw if values else {}))
    try:
        arm(ddb, [name])
        # workload                                           base  sparse   by_team
        ddb.put_item(TableName=name, Item={"pk": S("item1"), "team": S("alice"),
                                           "pending": S("p01"), "n": {"N": "12345"}})
        #                                                      1   put 1    put 1
        upd("item1", "SET team = :t", t="bob")               # 1   -        del+put 2
        upd("item1", "SET note = :n", n="hello")             # 1   -        update 1
        upd("item1", "REMOVE pending")                       # 1   del 1    update 1
        ddb.delete_item(TableName=name, Key={"pk": S("item1")})  # 1  -     del 1
        ddb.put_item(TableName=name, Item={"pk": S("item2"), "team": S("carol"),
                                           "blob": S("x" * 3000)})
        #                                  7 + 9 + 3004 = 3020 B: 3   -     put 3
        upd("item3", "SET pending = :p, note = :n", p="p03", n="new")  # upsert: 1  put 1  -
        upd("item3", "SET note = :n", n="new")               # no-op: 1  -   -
        r = measure(ddb, streams, [name])
    finally:
        ddb.delete_table(TableName=name)
    t = r["tables"][name]
    got = {"base": (t["writes"], t["wcu"]), "sparse": tuple(t["indexes"]["sparse"].values()),
           "by_team": tuple(t["indexes"]["by_team"].values()),
           "total": (r["total"]["writes"], r["total"]["wcu"]), "merged": r["moto_upserts_merged"],
           "sizes": sizes}
    want = {"base": (8, 10), "sparse": (3, 3), "by_team": (7, 9), "total": (18, 22), "merged": 1,
            "sizes": [25, [1, 2, 2, 4, 2], [(0, 0), (1, 1)]]}
    shapes = {(s["event"], tuple(s["attributes"])): (s["count"], s["base_wcu"], s["index_wcu"])
              for s in r["shapes"]}
    want_shapes = {("MODIFY", ("team",)): (1, 1, 2), ("MODIFY", ("pending",)): (1, 1, 2),
                   ("MODIFY", ()): (1, 1, 0), ("INSERT", ("blob", "pk", "team")): (1, 3, 3),
                   ("INSERT", ("note", "pending", "pk")): (1, 1, 1)}
    bad = {k: (got[k], v) for k, v in want.items() if got[k] != v}
    bad.update({k: (shapes.get(k), v) for k, v in want_shapes.items() if shapes.get(k) != v})
    print_report(r, None)
    if bad:
        sys.exit(f"selftest FAILED (got, want): {bad}")
    print("selftest ok")


def main():
    """Parse the command line and run arm, report or selftest."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["arm", "report", "selftest"])
    p.add_argument("--endpoint", required=True, help="e.g. http://127.0.0.1:4566")
    p.add_argument("--table", action="append", help="only this table (repeatable)")
    p.add_argument("--per", type=int, help="number of deliveries, to print WCU per delivery")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    a = p.parse_args()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head
    ddb = boto3.client("dynamodb", endpoint_url=a.endpoint)
    streams = boto3.client("dynamodbstreams", endpoint_url=a.endpoint)
    names = a.table or [n for page in ddb.get_paginator("list_tables").paginate()
                        for n in page["TableNames"]]
    if a.command == "arm":
        arm(ddb, names)
    elif a.command == "selftest":
        selftest(ddb, streams)
    else:
        r = measure(ddb, streams, names)
        r["per"] = a.per
        r["wcu_per"] = r["total"]["wcu"] / a.per if a.per else None
        print(json.dumps(r, indent=2)) if a.json else print_report(r, a.per)


if __name__ == "__main__":
    main()
