/* The processes whose CRIU images seed the image gate's fuzz target and its
 * unit tests (make_image_seeds): one kind of process per argument. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void* wait_forever(void* unused) {
    (void)unused;
    for (;;) pause();
    return NULL;
}

int main(int argc, char** argv) {
    const char* kind = argc > 1 ? argv[1] : "single";
    if (!strcmp(kind, "threads")) {
        pthread_t t;
        for (int i = 0; i < 2; ++i) pthread_create(&t, NULL, wait_forever, NULL);
    } else if (!strcmp(kind, "pipe")) {
        int p[2];
        if (pipe(p) || write(p[1], "seed", 4) != 4) return 1;
    } else if (!strcmp(kind, "pty")) {
        int m = posix_openpt(O_RDWR | O_NOCTTY);
        if (m < 0 || grantpt(m) || unlockpt(m) || open(ptsname(m), O_RDWR | O_NOCTTY) < 0) return 1;
    } else if (!strcmp(kind, "tcp")) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t n = sizeof a;
        int l = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0);
        if (bind(l, (struct sockaddr*)&a, n) || listen(l, 1) || getsockname(l, (struct sockaddr*)&a, &n) ||
            connect(c, (struct sockaddr*)&a, n) || accept(l, NULL, NULL) < 0)
            return 1;
    } else if (!strcmp(kind, "ghost")) {
        /* A deleted file (a ghost file in the image), a unix socket pair and a child. */
        int sp[2];
        char path[] = "/tmp/rfork-seed-XXXXXX";
        int g = mkstemp(path);
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) || g < 0 || write(g, "seed", 4) != 4 || unlink(path)) return 1;
        if (fork() == 0) wait_forever(NULL);
    }
    printf("ready\n");
    fflush(stdout);
    wait_forever(NULL);
}
