#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int c,char**v){MPI_Init(&c,&v);int r,n;MPI_Comm_rank(MPI_COMM_WORLD,&r);MPI_Comm_size(MPI_COMM_WORLD,&n);
int N=200; double t[200]; float in[1024],out[1024]; for(int i=0;i<1024;i++)in[i]=i;
int sizes[]={2,1024};
for(int s=0;s<2;s++){
 for(int it=0;it<N;it++){MPI_Barrier(MPI_COMM_WORLD);double t0=MPI_Wtime();MPI_Allreduce(in,out,sizes[s],MPI_FLOAT,MPI_SUM,MPI_COMM_WORLD);t[it]=MPI_Wtime()-t0;}
 qsort(t,N,sizeof(double),cmp); if(r==0)printf("allreduce %d floats: median %.1f us min %.1f\n",sizes[s],t[N/2]*1e6,t[0]*1e6);
 for(int it=0;it<N;it++){MPI_Barrier(MPI_COMM_WORLD);double t0=MPI_Wtime();
   if(r==0){MPI_Send(in,sizes[s],MPI_FLOAT,1,0,MPI_COMM_WORLD);MPI_Recv(out,sizes[s],MPI_FLOAT,1,0,MPI_COMM_WORLD,MPI_STATUS_IGNORE);}
   else if(r==1){MPI_Recv(out,sizes[s],MPI_FLOAT,0,0,MPI_COMM_WORLD,MPI_STATUS_IGNORE);MPI_Send(in,sizes[s],MPI_FLOAT,0,0,MPI_COMM_WORLD);}
   t[it]=MPI_Wtime()-t0;}
 qsort(t,N,sizeof(double),cmp); if(r==0)printf("pingpong %d floats: median %.1f us\n",sizes[s],t[N/2]*1e6);
 for(int it=0;it<N;it++){double t0=MPI_Wtime();MPI_Allreduce(in,out,sizes[s],MPI_FLOAT,MPI_SUM,MPI_COMM_WORLD);t[it]=MPI_Wtime()-t0;}
 qsort(t,N,sizeof(double),cmp); if(r==0)printf("allreduce back-to-back %d floats: median %.1f us\n",sizes[s],t[N/2]*1e6);
}
MPI_Finalize();}
