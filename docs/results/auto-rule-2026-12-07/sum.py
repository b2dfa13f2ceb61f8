"""Sizes where the auto row is within 1.10 of the best fixed row, per run,
for the rule (default) and the probe (RINGFUSE_TUNING=probe); misses as
size:auto's algorithm/best:ratio. Rows come 5 per size: ring, doubling,
tree, hd, then auto.   python3 sum.py"""
import glob, json, os

# The runs are in runs.tar.gz: unpack it here first (tar xzf runs.tar.gz).
here = os.path.dirname(os.path.abspath(__file__))


def chk(f):
    rows = json.load(open(f))["rows"]
    ok = n = 0
    miss = []
    for i in range(0, len(rows), 5):
        rs = rows[i:i + 5]
        auto, fixed = rs[-1], rs[:-1]
        best = min(fixed, key=lambda r: r["time_us"])
        ratio = auto["time_us"] / best["time_us"]
        n += 1
        ok += ratio <= 1.10
        if ratio > 1.10:
            miss.append(f"{auto['bytes']}:{auto['algo']}/{best['algo']}:{ratio:.2f}")
    return ok, n, miss


for np in (2, 3, 4):
    for tag in ("rule", "probe"):
        tot = num = 0
        for f in sorted(glob.glob(f"{here}/{tag}-np{np}-*.json")):
            ok, n, miss = chk(f)
            tot += ok
            num += n
            print(f"{os.path.basename(f)} {ok} of {n} {' '.join(miss)}")
        if num:
            print(f"np {np} {tag}: {tot} of {num}")
