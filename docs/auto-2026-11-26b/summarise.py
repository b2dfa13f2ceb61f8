import json,sys,os
from autocheck import chk
D=os.path.dirname(os.path.abspath(__file__))
# usage: summarise.py NP TAG...: per placement (flag round trip before/after < 0.2 us: together), how many sizes
# have the auto row within 1.10 of the best fixed row; each miss as size:auto's algo/best algo:ratio(ratio of auto's algo's own fixed row)
np=sys.argv[1]
place={}
for l in open(f'{D}/place-np{np}.txt'):
    i,b,a=l.split(); place[int(i)]=(float(b),float(a))
def cls(b,a):
    if b<0.2 and a<0.2: return 'together'
    if b>0.2 and a>0.2: return 'apart'
    return 'moved'
for tag in sys.argv[2:]:
    res={}
    for i,(b,a) in sorted(place.items()):
        ok,n,miss=chk(f'{D}/{tag}-np{np}-{i}.json'); c=cls(b,a)
        res.setdefault(c,[]).append((ok,n,miss))
    for c,v in res.items():
        print(tag,c,'runs',len(v),'within:',' '.join(str(o) for o,_,_ in v),'of',v[0][1])
        for o,n,m in v:
            if m: print('   ',' '.join(m))
print('--- totals')
for tag in sys.argv[2:]:
    tot=ok=wrong=0
    for i in sorted(place):
        d=json.load(open(f'{D}/{tag}-np{np}-{i}.json')); rows=d['rows']
        for j in range(0,len(rows),5):
            rs=rows[j:j+5]; auto=rs[-1]; fixed=rs[:-1]
            b=min(fixed,key=lambda r:r['time_us']); same=[r for r in fixed if r['algo']==auto['algo']][0]
            tot+=1; ok+=auto['time_us']<=1.10*b['time_us']; wrong+=same['time_us']>1.10*b['time_us']
    print(tag,'sizes within 1.10:',ok,'of',tot,'; picks whose fixed row is >1.10 the best:',wrong)
