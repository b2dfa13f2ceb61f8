import re,collections,sys
d=collections.defaultdict(list)
for l in open(sys.argv[1]):
    f=l.split()
    if len(f)<6 or f[1]!='rtt': continue
    rtt=float(f[2]); mode=f[3]; med=float(f[5])
    st='smt' if rtt<0.08 else ('near' if rtt<0.2 else 'far')
    d[(st,mode)].append(med)
for k in sorted(d): v=sorted(d[k]); print(k, len(v), 'median %.1f'%v[len(v)//2], 'min %.1f max %.1f'%(v[0],v[-1]))
