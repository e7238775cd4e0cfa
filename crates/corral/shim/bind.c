/* corral's bind shim, preloaded (LD_PRELOAD) into workers whose server insists on
 * binding its own socket (Bun, Deno, and others that can't take an inherited fd).
 *
 * A bind() to a TCP port that one of corral's listeners serves (the LISTEN_FDS sockets
 * from fd 3) becomes a dup of corral's socket onto the worker's fd, with the worker's
 * own fd flags; listen() on it is then a no-op, so corral's backlog stays. The socket
 * stays corral's: connections queued on it survive the worker's crash or reload, as
 * with any worker that takes its socket from corral. Everything else is untouched.
 *
 * In C, not Rust: the shim must be a tiny shared object with no runtime of its own,
 * loaded into any process; a Rust cdylib would carry std into every worker. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int listen_fds(void) {
    const char *n = getenv("LISTEN_FDS");
    int count = n ? atoi(n) : 0;
    return count > 0 && count < 1024 ? count : 0;
}

static int port_of(const struct sockaddr *addr, socklen_t len) {
    if (addr == NULL) return -1;
    if (addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in))
        return ntohs(((const struct sockaddr_in *)addr)->sin_port);
    if (addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6))
        return ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
    return -1;
}

/* corral's stream listener on `port`, or -1. */
static int ours_on(int port) {
    int count = listen_fds();
    for (int fd = 3; fd < 3 + count; fd++) {
        struct sockaddr_storage local;
        socklen_t len = sizeof local;
        int type = 0;
        socklen_t type_len = sizeof type;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) != 0 || type != SOCK_STREAM)
            continue;
        if (getsockname(fd, (struct sockaddr *)&local, &len) != 0) continue;
        if (port_of((struct sockaddr *)&local, len) == port) return fd;
    }
    return -1;
}

/* Whether `fd` is (a dup of) one of corral's listeners. */
static int is_ours(int fd) {
    struct stat it;
    if (fstat(fd, &it) != 0 || !S_ISSOCK(it.st_mode)) return 0;
    int count = listen_fds();
    for (int k = 3; k < 3 + count; k++) {
        struct stat ours;
        if (fstat(k, &ours) == 0 && ours.st_ino == it.st_ino && ours.st_dev == it.st_dev)
            return 1;
    }
    return 0;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_bind)(int, const struct sockaddr *, socklen_t);
    if (real_bind == NULL) real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    int port = port_of(addr, len);
    int ours = port > 0 && fd >= 3 + listen_fds() ? ours_on(port) : -1;
    if (ours < 0) return real_bind(fd, addr, len);
    int status = fcntl(fd, F_GETFL);
    int fd_flags = fcntl(fd, F_GETFD);
    if (status < 0 || fd_flags < 0) return real_bind(fd, addr, len);
    if (dup3(ours, fd, (fd_flags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) return -1;
    if (status & O_NONBLOCK) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return 0;
}

int listen(int fd, int backlog) {
    static int (*real_listen)(int, int);
    if (real_listen == NULL) real_listen = (int (*)(int, int))dlsym(RTLD_NEXT, "listen");
    if (fd >= 3 + listen_fds() && is_ours(fd)) return 0; /* listening already */
    return real_listen(fd, backlog);
}
