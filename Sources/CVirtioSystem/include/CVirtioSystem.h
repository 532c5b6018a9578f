// The C calls Swift cannot import as they are: ioctl is variadic, eventfd's flags are
// macros and accept4 is declared only for _GNU_SOURCE. VirtioSystem is the only Swift module that calls these.
#ifndef VIRTIOADMIN_CVIRTIOSYSTEM_H
#define VIRTIOADMIN_CVIRTIOSYSTEM_H

#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

// A spin-wait hint: lets a sibling hardware thread run and saves power while polling.
static inline void csystem_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}
/* Whether this thread is due to give its executor away: `period` nanoseconds since it last
 * was, a clock that went back, or `turns` calls (for a clock that stands still). Counts a call. */
int csystem_turn_due(unsigned long long now, unsigned long long period, unsigned int turns);
static inline int csystem_eventfd(void) { return eventfd(0, EFD_CLOEXEC); }
static inline int csystem_ioctl_value(int fd, unsigned long request, unsigned long value) { return ioctl(fd, request, value); }
static inline int csystem_ioctl_pointer(int fd, unsigned long request, void *argument) { return ioctl(fd, request, argument); }
int accept4(int fd, struct sockaddr *address, socklen_t *length, int flags);
static inline int csystem_accept_cloexec(int fd) { return accept4(fd, 0, 0, SOCK_CLOEXEC); }
static inline int csystem_ioctl_string(int fd, unsigned long request, const char *argument) { return ioctl(fd, request, argument); }

#endif
