# Paired after/before time ratios per row, median over the 12 pairs.
import json, statistics as st, collections, math
for np in ('np2', 'np3'):
    per, rows = [], collections.defaultdict(list)
    for r in range(1, 13):
        b = json.load(open(f'before-{np}-r{r}.json'))['rows']
        a = json.load(open(f'after-{np}-r{r}.json'))['rows']
        qs = []
        for x, y in zip(b, a):
            q = y['time_us'] / x['time_us']
            qs.append(q)
            rows[(x['bytes'], x['codec'], x['algo'])].append(q)
        per.append(math.exp(sum(map(math.log, qs)) / len(qs)))
    print(np, 'per-pair geomeans', [round(p, 2) for p in per], 'median', round(st.median(per), 3))
    for k, v in sorted(rows.items()):
        print('  ', k, 'median paired ratio', round(st.median(v), 3))
