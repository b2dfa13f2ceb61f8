// Ping-pong between two processes over shared memory: spin vs futex wait,
// with and without a 256 KiB payload, alternated in windows, to see what a
// "slow spell" of this VM does to each.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <linux/futex.h>
#include <stdatomic.h>

#define PAY (256*1024)
struct shm { _Alignas(64) _Atomic uint32_t turn; _Alignas(64) _Atomic uint32_t mode; _Alignas(64) _Atomic uint32_t stop; _Alignas(64) char buf[2][PAY]; };

static double now(){ struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+t.tv_nsec*1e-9; }
static void fwait(_Atomic uint32_t *a, uint32_t v){ syscall(SYS_futex, a, FUTEX_WAIT, v, NULL, NULL, 0); }
static void fwake(_Atomic uint32_t *a){ syscall(SYS_futex, a, FUTEX_WAKE, 1, NULL, NULL, 0); }

// wait until turn == want. mode&1: futex after 200 spins.
static void waitfor(struct shm *s, uint32_t want, int futex){
  int n=0;
  for(;;){ uint32_t t=atomic_load_explicit(&s->turn, memory_order_acquire); if(t==want) return;
    if(futex && ++n>200){ fwait(&s->turn,t); } else __builtin_ia32_pause(); }
}
static void pass(struct shm *s, uint32_t v, int futex){ atomic_store_explicit(&s->turn, v, memory_order_release); if(futex) fwake(&s->turn); }
static volatile uint64_t sink;
static void touch(char *dst, const char *src){ // read peer's payload, write own
  uint64_t acc=0; for(size_t i=0;i<PAY;i+=64) acc+=*(const uint64_t*)(src+i); sink=acc; memset(dst, (int)acc, PAY); }

static int cmp(const void*a,const void*b){ double x=*(double*)a,y=*(double*)b; return x<y?-1:x>y; }
int main(int argc,char**argv){
  int windows = argc>1? atoi(argv[1])*4 : 40;
  struct shm *s = mmap(NULL,sizeof *s,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_ANONYMOUS,-1,0);
  memset(s,0,sizeof *s);
  pid_t p=fork();
  int me = p==0;
  cpu_set_t cs; CPU_ZERO(&cs); CPU_SET(me,&cs); sched_setaffinity(0,sizeof cs,&cs);
  const char *names[4]={"spin","futex","spin+256K","futex+256K"};
  double t0=now();
  uint32_t turn=0;
  static double lat[100000];
  for(int win=0; ; win++){
    int mode = win%4; int futex=mode&1, pay=mode&2;
    // rank 0 decides stop; both do the same number of reps per window
    int reps = pay? 400 : 4000;
    // sync: barrier through turn
    for(int r=0;r<reps;r++){
      double a=now();
      if(me==0){ if(pay) touch(s->buf[0], s->buf[1]); pass(s,turn+1,futex); waitfor(s,turn+2,futex); }
      else { waitfor(s,turn+1,futex); if(pay) touch(s->buf[1], s->buf[0]); pass(s,turn+2,futex); }
      turn+=2;
      if(me==0) lat[r]=(now()-a)*1e6;
    }
    if(me==0){ qsort(lat,reps,sizeof(double),cmp);
      printf("%8.2f %-11s med %8.2f us p90 %8.2f max %8.1f\n", now()-t0, names[mode], lat[reps/2], lat[reps*9/10], lat[reps-1]); fflush(stdout);}
    // both check stop at the same point: rank 1 reads after the window's last pass
    if(win+1>=windows) break;
  }
  if(p) wait(NULL);
  return 0;
}
