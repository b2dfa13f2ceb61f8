import sys,collections
d=collections.defaultdict(list)
for l in open(sys.argv[1]):
    f=l.split()
    if len(f)<8: continue
    mode,r1,r2,size,codec,t,mpi,sp=f[:8]
    r1,r2=float(r1),float(r2)
    st='far' if min(r1,r2)>0.25 else ('near' if max(r1,r2)<0.2 else 'mixed')
    d[(st,size,codec,mode)].append((float(t),float(mpi)))
for k in sorted(d):
    v=d[k]; ts=sorted(x[0] for x in v); ms=sorted(x[1] for x in v)
    print('%-5s %9s %-6s %-9s n=%2d  ours med %8.1f [%8.1f..%8.1f]  mpi med %8.1f  speedup(med) %.2fx'%(k[0],k[1],k[2],k[3],len(v),ts[len(ts)//2],ts[0],ts[-1],ms[len(ms)//2],ms[len(ms)//2]/ts[len(ts)//2]))
