"""Fit the scale model's --link-latency L, --overhead O and (with
--call) --call-latency C to one measured netsim JSON: least squares of
log(predicted/measured) over the rows of 4 KiB and less, on a grid
(coarse, then fine around the best); print the comparison at the fit.
usage: fit3.py FILE.json [--call]"""
import subprocess,sys,math,re,itertools
f=sys.argv[1]; with_call='--call' in sys.argv
perf='target/release/ringfuse-perf'
def run(L,O,C):
    out=subprocess.run([perf,'--simulate','--compare',f,'--link-burst','256K','--cpus','2',
        '--link-latency',f'{L}us','--overhead',f'{O}us','--call-latency',f'{C}us'],capture_output=True,text=True).stdout
    rows=[]
    for l in out.splitlines():
        m=re.match(r'\s+(\d+)\s+\S+\s+(\S+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)',l)
        if m: rows.append((int(m.group(1)),m.group(2),float(m.group(3)),float(m.group(4))))
    return rows,out
def cost(p):
    rows,_=run(*p)
    return sum(math.log(q/m)**2 for b,a,m,q in rows if b<=4096)
Cs=(0,10,20,40,80,160) if with_call else (0,)
best=min((cost(p),p) for p in itertools.product(range(5,300,10),(0,2,5,10,20,40),Cs))
L0,O0,C0=best[1]
near=lambda v,ds: sorted(set(max(0,v+d) for d in ds))
fine=itertools.product(near(L0,range(-10,11,2)),near(O0,(-4,-2,-1,0,1,2,4)),near(C0,(-8,-4,-2,0,2,4,8)) if with_call else (0,))
best=min((cost(p),p) for p in fine)
rows,out=run(*best[1])
print('fit L=%sus O=%sus C=%sus cost=%.3f'%(*best[1],best[0]))
print(out)
