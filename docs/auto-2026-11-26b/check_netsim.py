import json,sys
for f in sys.argv[1:]:
    d=json.load(open(f)); rows=d['rows']; k=5; ok=0; ok2=0; n=0; out=[]
    for i in range(0,len(rows),k):
        rs=rows[i:i+k]; auto=rs[-1]; fixed=rs[:-1]
        b=min(fixed,key=lambda r:r['time_us']); same=[r for r in fixed if r['algo']==auto['algo']]
        r1=auto['time_us']/b['time_us']; r2=(same[0]['time_us']/b['time_us']) if same else float('nan')
        ok+=r1<=1.10; ok2+=r2<=1.10; n+=1; out.append(f"{auto['bytes']}:{auto['algo']}/{b['algo']} {r1:.2f} ({r2:.2f})")
    print(f, "auto row within 1.10:",ok,"of",n,"; its choice's fixed row within 1.10:",ok2,"of",n); print("  "+"  ".join(out))
