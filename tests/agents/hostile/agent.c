/* A static agent for an image with no shell, no Python and no usable libc: it writes who it
   runs as and whether the root filesystem refused a write to a path it owns. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(void) {
    const char *out = getenv("AIRLOCK_OUTPUT");
    if (!out) return 2;
    int fd = open("/srv/sandbox-owned/x", O_WRONLY | O_CREAT, 0644);
    int erofs = fd < 0 && errno == EROFS;
    FILE *f = fopen(out, "w");
    if (!f) return 3;
    fprintf(f, "{\"output\": {\"uid\": %d, \"euid\": %d, \"erofs\": %s, \"preload\": \"%s\"}}\n",
            (int)getuid(), (int)geteuid(), erofs ? "true" : "false",
            getenv("LD_PRELOAD") ? getenv("LD_PRELOAD") : "");
    return fclose(f) == 0 ? 0 : 4;
}
