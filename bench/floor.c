/* The floor of connection hand-off: the least a supervisor can do per connection,
 * accept4 + sendmsg(SCM_RIGHTS) + close, round-robin over N workers, nothing else (no
 * credit, no readiness, no recovery). The workers are the same corral-fixture that
 * corral runs, spoken to in corral's channel protocol, so bench/dispatch.sh can set the
 * supervisor CPU it spends per connection beside corral's.
 *
 *   floor PORT N WORKER [ARGS...]      (bench/dispatch.sh builds and runs it)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

static const char WELCOME[] = "{\"cmd\":\"CORRAL_WELCOME\",\"version\":1,\"dispatch\":true,\"window\":1000000}\n";
static const char CONN[] = "{\"cmd\":\"CORRAL_CONN\",\"listener\":0,\"fds\":1}\n";

static int send_fd(int channel, int fd) {
    struct iovec iov = {.iov_base = (void *)CONN, .iov_len = sizeof CONN - 1};
    char control[CMSG_SPACE(sizeof(int))];
    memset(control, 0, sizeof control);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    return sendmsg(channel, &msg, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: floor PORT N WORKER [ARGS...]\n");
        return 2;
    }
    int port = atoi(argv[1]), n = atoi(argv[2]);
    if (n < 1 || n > 64) return 2;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 4096)) {
        perror("floor: listen");
        return 1;
    }
    int channels[64];
    for (int i = 0; i < n; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) return 1;
        pid_t pid = fork();
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            dup2(sv[1], 3); /* dup2 clears CLOEXEC on fd 3 */
            char id[16];
            snprintf(id, sizeof id, "%d", i);
            setenv("CORRAL_CHANNEL_FD", "3", 1);
            setenv("CORRAL_WORKER_ID", id, 1);
            execvp(argv[3], argv + 3);
            _exit(127);
        }
        close(sv[1]);
        channels[i] = sv[0];
        if (write(channels[i], WELCOME, sizeof WELCOME - 1) < 0) return 1;
    }
    char sink[65536];
    for (unsigned long k = 0;; k++) {
        int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) continue;
        int ch = channels[k % n];
        send_fd(ch, fd);
        close(fd);
        /* The workers' acks and heartbeats, read now and then so their sends never block. */
        if ((k & 255) == 0)
            for (int i = 0; i < n; i++)
                while (recv(channels[i], sink, sizeof sink, MSG_DONTWAIT) > 0) {}
    }
}
