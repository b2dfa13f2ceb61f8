// Hand-off of a 256 KiB payload between two processes on different vCPUs,
// with cached stores vs non-temporal stores for the writer; each window
// first takes 200 spin round trips as a probe of where the vCPUs sit.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>
#include <immintrin.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <stdatomic.h>

#ifndef PAY
#define PAY (256*1024)
#endif
#define NSLOT 8
struct shm { _Alignas(64) _Atomic uint32_t turn; _Alignas(64) char buf[2][NSLOT][PAY]; };
static double now(){ struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+t.tv_nsec*1e-9; }
static void waitfor(struct shm *s, uint32_t want){ while(atomic_load_explicit(&s->turn, memory_order_acquire)!=want) _mm_pause(); }
static void pass(struct shm *s, uint32_t v){ atomic_store_explicit(&s->turn, v, memory_order_release); }
static volatile float sink;
// read peer's payload (sum as floats, like a reduce), write own (like an encode)
static double tr_sum, tw_sum;
static void work(char *dst, const char *src, int nt){
  double a=now();
  __m256 acc=_mm256_setzero_ps();
  for(size_t i=0;i<PAY;i+=32) acc=_mm256_add_ps(acc,_mm256_load_ps((const float*)(src+i)));
  __m256 v=_mm256_add_ps(acc,_mm256_set1_ps(1.0f));
  double b=now(); tr_sum+=b-a;
  if(nt){ for(size_t i=0;i<PAY;i+=32) _mm256_stream_ps((float*)(dst+i),v); _mm_sfence(); }
  else { for(size_t i=0;i<PAY;i+=32) _mm256_store_ps((float*)(dst+i),v); }
  float t[8]; _mm256_storeu_ps(t,acc); sink=t[0]; tw_sum+=now()-b;
}
static int cmp(const void*a,const void*b){ double x=*(double*)a,y=*(double*)b; return x<y?-1:x>y; }
int main(int argc,char**argv){
  int windows = argc>1? atoi(argv[1]) : 40;
  const char *names[]={"cached","nt"};
  int nmodes=2;
  struct shm *s = mmap(NULL,sizeof *s,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_ANONYMOUS,-1,0);
  memset(s,1,sizeof *s); s->turn=0;
  pid_t p=fork(); int me = p==0;
  cpu_set_t cs; CPU_ZERO(&cs); CPU_SET(me,&cs); sched_setaffinity(0,sizeof cs,&cs);
  uint32_t turn=0; static double lat[4000], rtt[400]; double t0=now(); int slot=0;
  for(int win=0; win<windows; win++){
    int mode=win%nmodes;
    for(int r=0;r<200;r++){ double a=now(); if(me==0){pass(s,turn+1);waitfor(s,turn+2);} else {waitfor(s,turn+1);pass(s,turn+2);} turn+=2; rtt[r]=(now()-a)*1e6; }
    int reps=200; tr_sum=tw_sum=0;
    for(int r=0;r<reps;r++){
      double a=now();
      // each side writes its next slot (a queue, as ringfuse's pool) and reads the peer's last
      if(me==0){ work(s->buf[0][slot], s->buf[1][(slot+NSLOT-1)%NSLOT], mode); pass(s,turn+1); waitfor(s,turn+2); }
      else { waitfor(s,turn+1); work(s->buf[1][slot], s->buf[0][slot], mode); pass(s,turn+2); }
      slot=(slot+1)%NSLOT; turn+=2;
      lat[r]=(now()-a)*1e6;
    }
    if(me==0){ qsort(lat,reps,sizeof(double),cmp); qsort(rtt,200,sizeof(double),cmp);
      printf("%7.2f rtt %5.2f %-7s med %8.2f p90 %8.2f read %6.2f write %6.2f\n", now()-t0, rtt[100], names[mode], lat[reps/2], lat[reps*9/10], tr_sum/reps*1e6, tw_sum/reps*1e6); fflush(stdout);}
  }
  if(p) wait(NULL);
  return 0;
}
