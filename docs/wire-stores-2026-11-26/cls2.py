import re,collections,sys
d=collections.defaultdict(list)
for l in open(sys.argv[1]):
    f=l.split()
    if len(f)<10 or f[1]!='rtt': continue
    rtt=float(f[2]); mode=f[3]; med=float(f[5]); r=float(f[9]); w=float(f[11])
    st='smt' if rtt<0.08 else ('near' if rtt<0.2 else 'far')
    d[(st,mode)].append((med,r,w))
for k in sorted(d):
    v=d[k]; m=lambda i: sorted(x[i] for x in v)[len(v)//2]
    print(k, len(v), 'rt %.1f read %.1f write %.1f'%(m(0),m(1),m(2)))
