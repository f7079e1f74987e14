/* Stands in for an image's /bin/sh, python3, bwrap, slirp4netns and dynamic loader: when run
   with privileges (euid 0) it leaves a marker named after itself in /markers. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    (void)argc;
    const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    if (geteuid() == 0) {
        char path[512];
        snprintf(path, sizeof path, "/markers/%s", name);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) { dprintf(fd, "ran as root\n"); close(fd); }
    }
    return 0;
}
