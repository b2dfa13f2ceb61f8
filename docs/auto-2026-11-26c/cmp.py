import json,glob,os,statistics as st,sys
def load(tag):
    out={}
    for f in sorted(glob.glob(f'{os.path.dirname(os.path.abspath(__file__))}/{tag}-*.json')):
        d=json.load(open(f))
        for r in d['rows']:
            out.setdefault((r['bytes'],r['algo']),[]).append(r['time_us'])
            out.setdefault((r['bytes'],'mpi'),[]).append(r['mpi_time_us'])
    return out
o=load(sys.argv[1]); n=load(sys.argv[2])
sizes=sorted(set(b for b,a in n))
print("medians over runs, us: old / new (each MPI_Allreduce in its own runs)")
for b in sizes:
    line=[f"{b:>8}"]
    for a in ['ring','doubling','tree','hd','mpi']:
        line.append(f"{a} {st.median(o[(b,a)]):.1f}/{st.median(n[(b,a)]):.1f}")
    print('  '.join(line))
