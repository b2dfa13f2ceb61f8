"""The auto-against-best check both summaries use: per run, how many sizes
have the auto row within 1.10 of the best fixed row, and each miss as
size:auto's algo/best algo:ratio(ratio of auto's algo's own fixed row).
Rows come in groups of 5 per size: 4 fixed algorithms, then auto."""
import json


def chk(f):
    d=json.load(open(f)); rows=d['rows']; k=5; ok=0; n=0; miss=[]
    for i in range(0,len(rows),k):
        rs=rows[i:i+k]; auto=rs[-1]; fixed=rs[:-1]
        b=min(fixed,key=lambda r:r['time_us']); r1=auto['time_us']/b['time_us']
        same=[r for r in fixed if r['algo']==auto['algo']][0]
        n+=1; ok+=r1<=1.10
        if r1>1.10: miss.append(f"{auto['bytes']}:{auto['algo']}/{b['algo']}:{r1:.2f}({same['time_us']/b['time_us']:.2f})")
    return ok,n,miss
