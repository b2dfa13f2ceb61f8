import sys,glob,os
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "auto-2026-11-26b"))
from autocheck import chk
for tag in sys.argv[1:]:
    T=N=0
    for f in sorted(glob.glob(f'{os.path.dirname(os.path.abspath(__file__))}/{tag}-*.json')):
        ok,n,m=chk(f); T+=ok; N+=n
        print(f.split('/')[-1], ok,'of',n,' '.join(m))
    print(tag,'total',T,'of',N)
