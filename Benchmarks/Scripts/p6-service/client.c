/* One VF add event per thread to the service at argv[1], as `ratios p6` sends them:
   client SOCKET N sends VF 1..N from N threads at once and prints the wall time (N = 0:
   only VF 0, the event that opens the PF). TIMES=FILE writes each client's times. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
static const char *path;
static int okcount;
static double ts[2048][4];
static double now(){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec*1e3+t.tv_nsec/1e6;}
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static int send_event(int vf) {
  int rid = 0x3b00 + 1 + vf;
  char addr[32], line[512];
  snprintf(addr, sizeof addr, "0000:%02x:%02x.%x", rid >> 8, (rid >> 3) & 0x1f, rid & 7);
  snprintf(line, sizeof line, "ACTION=add SUBSYSTEM=pci DEVPATH=/devices/pci0000:00/%s PCI_SLOT_NAME=%s\n", addr, addr);
  ts[vf][0]=now();
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un a = {0}; a.sun_family = AF_UNIX; strcpy(a.sun_path, path);
  if (connect(fd, (struct sockaddr*)&a, sizeof a) != 0) { close(fd); return 0; }
  ts[vf][1]=now();
  send(fd, line, strlen(line), MSG_NOSIGNAL);
  char buf[4096]; int n = 0, r;
  while ((r = read(fd, buf + n, sizeof buf - 1 - n)) > 0) { n += r; if (buf[n-1] == '\n') break; }
  ts[vf][2]=now();
  close(fd); buf[n] = 0;
  return n > 3 && strncmp(buf, "ok ", 3) == 0;
}
static void *run(void *arg) { int ok = send_event((int)(long)arg); pthread_mutex_lock(&m); okcount += ok; pthread_mutex_unlock(&m); return 0; }
int main(int argc, char **argv) {
  path = argv[1]; int n = atoi(argv[2]);
  if (n == 0) { send_event(0); return 0; }
  if (0) { fprintf(stderr, "first event failed\n"); }
  struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
  pthread_t *t = malloc(sizeof(pthread_t) * n);
  pthread_attr_t at; pthread_attr_init(&at); pthread_attr_setstacksize(&at, 256 * 1024);
  for (int i = 0; i < n; i++) pthread_create(&t[i], &at, run, (void*)(long)(i + 1));
  for (int i = 0; i < n; i++) pthread_join(t[i], 0);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (getenv("TIMES")) { double b=t0.tv_sec*1e3+t0.tv_nsec/1e6; FILE*f=fopen(getenv("TIMES"),"w"); for(int i=1;i<=n;i++) fprintf(f,"%d %.2f %.2f %.2f\n",i,ts[i][0]-b,ts[i][1]-b,ts[i][2]-b); fclose(f);}
  printf("%.2f ms, %d ok of %d\n", (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6, okcount, n);
  return 0;
}
