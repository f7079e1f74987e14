/*
 * airlock-jail: the root supervisor of one sandboxed run.
 *
 * It creates the run's own cgroup (memory with swap equal to it, pids, cpu; cgroup v1
 * controllers where they are mounted, else the v2 hierarchy), starts bubblewrap in it as the
 * unprivileged sandbox user, enforces the wall clock by killing the whole cgroup, and, once
 * nothing of the run is left alive, writes what happened (exit status, the cgroup's own
 * oom_kill counter and peak memory) as one JSON document, then removes the cgroup.
 *
 * It is a separate program, not part of the executor, so that:
 *  - the deadline holds with no executor alive (it runs in its own session; an executor
 *    killed with SIGKILL leaves it running to the deadline);
 *  - it starts in about a millisecond (no interpreter start-up on every run);
 *  - it can run from a read-only bundle with its own loader, or statically linked, inside a
 *    privileged container whose image is untrusted: it uses nothing but libc and the kernel.
 *
 * The agent cannot signal it: the agent runs as another user (65534) in its own user and pid
 * namespaces, where this process has no pid at all.
 *
 * Usage: airlock-jail [options] -- BWRAP [bwrap arguments...]
 *   --name NAME            the run's cgroup, created under --cgroup-parent (required)
 *   --cgroup-parent PATH   default "airlock-jail"
 *   --memory BYTES         memory limit; swap limited to the same total (v1) or to 0 (v2)
 *   --pids N               pids limit of the whole cgroup
 *   --cpu-quota-us Q --cpu-period-us P
 *   --timeout-ms MS        wall clock, from this program's start
 *   --status PATH          where to write the JSON status (atomically, PATH.tmp then rename)
 *   --pidfile PATH         write this program's pid there
 *   --uid UID --gid GID    the unprivileged user bubblewrap is started as (default 65534)
 *   --slirp4netns PATH     give the sandbox user-mode networking (egress) in its own netns
 *   --fd N:PATH            open PATH read-only, as root, as descriptor N of bubblewrap
 *   --warm                 prepare (cgroup created, child already in it) and wait: the run's
 *                          own options (from --name on, same syntax) arrive NUL-separated on
 *                          stdin; the cgroup is renamed to the run's --name and the wall clock
 *                          starts then. Moving a process into a cgroup waits for an RCU grace
 *                          period (milliseconds); a warm supervisor has done it before the run.
 *
 * Inside a privileged container whose image is untrusted (the Dagger exec; see
 * docs/security.md), everything privileged comes from a read-only bundle, and:
 *   --loader PATH --library-path DIR
 *                          run bubblewrap and slirp4netns (dynamic programs) as
 *                          "PATH --inhibit-cache --library-path DIR PROGRAM ...": the bundle's own
 *                          loader and libraries, never the image's
 *   --shield DIR           before either runs, enter a private mount namespace where an empty
 *                          read-only tmpfs covers /etc (no /etc/ld.so.preload, ld.so.cache or
 *                          selinux config of the image is read); "/" is bound at DIR/root first
 *   --image-root DIR       the jail's root: every top-level entry of DIR (of DIR/root under
 *                          --shield) bound read-only, symlinks recreated, except proc, dev, sys,
 *                          tmp, run, airlock and each --hide NAME; added to bubblewrap's options
 *   --out-dir PATH         create PATH (0700) for the agent's output, owned by --uid
 *   --log-file PATH --log-cap BYTES
 *                          capture bubblewrap's stdout and stderr (one pipe) into PATH, keeping
 *                          the first BYTES; the rest is counted and dropped
 *   --result PATH --output-file PATH --output-cap BYTES
 *                          also write one JSON document: the status, the log and the output
 *                          file (at most BYTES, a regular file only), both base64
 *   --cgroup-nest          create --cgroup-parent under this process's own cgroup (a container's),
 *                          not at the hierarchy's root; on v2 the processes of that cgroup move
 *                          to a leaf first (no internal processes)
 *
 * Exit status: 0 when the status file was written (the agent's outcome is in it), 125 when it
 * could not be. SIGTERM, SIGINT or SIGHUP cancel the run (the cgroup is killed first).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

#define MAX_DIRS 8
#define PATH_LEN 4096

/* cpuacct (cgroup v1 only) is optional: it measures the run's CPU time and limits nothing.
   On cgroup v2 the same figure is cpu.stat's usage_usec, present in every cgroup. */
enum { C_MEMORY, C_PIDS, C_CPU, C_CPUACCT, N_CONTROLLERS };
static const char *controller_names[N_CONTROLLERS] = {"memory", "pids", "cpu", "cpuacct"};

struct cgdir {
    char path[PATH_LEN];  /* the run's cgroup directory */
    int v2;
    int controllers[N_CONTROLLERS];  /* which controllers this directory carries */
};

static struct cgdir dirs[MAX_DIRS];
static int ndirs;
static char status_path[PATH_LEN];
static char cg_own[N_CONTROLLERS][PATH_LEN];  /* --cgroup-nest: our own cgroup, per controller */
static char error_text[1024];
static struct timespec t_start;

static double elapsed_s(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t_start.tv_sec) + (double)(now.tv_nsec - t_start.tv_nsec) / 1e9;
}

static void set_error(const char *fmt, ...) {
    if (error_text[0]) return;  /* keep the first cause */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_text, sizeof error_text, fmt, ap);
    va_end(ap);
}

static int write_file(const char *dir, const char *name, const char *value) {
    char p[PATH_LEN];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, value, strlen(value));
    int saved = errno;
    close(fd);
    errno = saved;
    return n == (ssize_t)strlen(value) ? 0 : -1;
}

static ssize_t read_file(const char *dir, const char *name, char *buf, size_t cap) {
    char p[PATH_LEN];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t got = 0;
    while (got + 1 < cap) {
        ssize_t n = read(fd, buf + got, cap - 1 - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = 0;
    return (ssize_t)got;
}

static int exists(const char *dir, const char *name) {
    char p[PATH_LEN];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

/* mkdir -p for the parent chain; v2 parents also get the controllers enabled for children. */
static int make_parents(const char *root, const char *parent, int v2) {
    char p[PATH_LEN];
    snprintf(p, sizeof p, "%s", root);
    const char *s = parent;
    for (;;) {
        while (*s == '/') s++;
        if (!*s) break;
        const char *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (v2) write_file(p, "cgroup.subtree_control", "+memory +pids +cpu");
        size_t cur = strlen(p);
        if (cur + 1 + len + 1 >= sizeof p) return -1;
        p[cur] = '/';
        memcpy(p + cur + 1, s, len);
        p[cur + 1 + len] = 0;
        if (mkdir(p, 0755) < 0 && errno != EEXIST) return -1;
        s += len;
    }
    if (v2) write_file(p, "cgroup.subtree_control", "+memory +pids +cpu");
    return 0;
}

/* Find where memory, pids and cpu are mounted: a v1 hierarchy for each when there is one,
   else the v2 hierarchy if it offers the controller. */
/* Our own cgroup of each controller (and of v2, under index N_CONTROLLERS), from
   /proc/self/cgroup, for --cgroup-nest. */
static char own_v2[PATH_LEN];
static void read_own_cgroups(void) {
    char buf[8192];
    if (read_file("/proc/self", "cgroup", buf, sizeof buf) < 0) return;
    for (char *l = buf, *nl; l && *l; l = nl) {
        nl = strchr(l, '\n');
        if (nl) *nl++ = 0;
        char *c1 = strchr(l, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c2 = 0;
        const char *path = c2 + 1;
        if (c1[1] == 0) { snprintf(own_v2, sizeof own_v2, "%s", path); continue; }
        char *save = NULL;
        for (char *o = strtok_r(c1 + 1, ",", &save); o; o = strtok_r(NULL, ",", &save))
            for (int c = 0; c < N_CONTROLLERS; c++)
                if (strcmp(o, controller_names[c]) == 0) snprintf(cg_own[c], PATH_LEN, "%s", path);
    }
}

/* mount point + (own cgroup path relative to the mount's root) */
static int nest_base(char *out, size_t size, const char *mnt, const char *mroot, const char *own) {
    size_t rl = strlen(mroot);
    const char *rest = own;
    if (strcmp(mroot, "/") != 0) {
        if (strncmp(own, mroot, rl) != 0 || (own[rl] != 0 && own[rl] != '/')) return -1;
        rest = own + rl;
    }
    if (snprintf(out, size, "%s%s", mnt, strcmp(rest, "/") == 0 ? "" : rest) >= (int)size) return -1;
    return 0;
}

/* cgroup v2 allows no processes in a cgroup that delegates controllers: move every process of
   ours (the container's init, this supervisor) into a leaf first. */
static int v2_vacate(const char *base) {
    char leaf[PATH_LEN], buf[65536];
    if (snprintf(leaf, sizeof leaf, "%s/airlock-supervisor", base) >= (int)sizeof leaf) return -1;
    if (mkdir(leaf, 0755) < 0 && errno != EEXIST) return -1;
    for (int round = 0; round < 100; round++) {
        if (read_file(base, "cgroup.procs", buf, sizeof buf) < 0) return -1;
        if (!buf[0]) return 0;
        for (char *q = buf, *nl; *q; q = nl) {
            nl = strchr(q, '\n');
            if (nl) *nl++ = 0; else nl = q + strlen(q);
            if (*q) write_file(leaf, "cgroup.procs", q);  /* a process that exited meanwhile: fine */
        }
    }
    return -1;
}

static int discover(const char *parent, const char *name, int nest) {
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f) { set_error("cannot read /proc/self/mountinfo: %s", strerror(errno)); return -1; }
    if (nest) read_own_cgroups();
    char line[8192];
    char v1[N_CONTROLLERS][PATH_LEN] = {{0}};
    char v1root[N_CONTROLLERS][PATH_LEN] = {{0}};
    char v2root[PATH_LEN] = {0}, v2mroot[PATH_LEN] = {0};
    while (fgets(line, sizeof line, f)) {
        char *sep = strstr(line, " - ");
        if (!sep) continue;
        char fstype[64], source[256], opts[4096];
        if (sscanf(sep + 3, "%63s %255s %4095s", fstype, source, opts) != 3) continue;
        char mnt[PATH_LEN], mroot[PATH_LEN];
        /* fields: id parent major:minor root mountpoint ... */
        if (sscanf(line, "%*s %*s %*s %4095s %4095s", mroot, mnt) != 2) continue;
        if (strcmp(fstype, "cgroup2") == 0) {
            if (!v2root[0]) {
                snprintf(v2root, sizeof v2root, "%s", mnt);
                snprintf(v2mroot, sizeof v2mroot, "%s", mroot);
            }
        } else if (strcmp(fstype, "cgroup") == 0) {
            char *save = NULL;
            for (char *o = strtok_r(opts, ",", &save); o; o = strtok_r(NULL, ",", &save))
                for (int c = 0; c < N_CONTROLLERS; c++)
                    if (strcmp(o, controller_names[c]) == 0 && !v1[c][0]) {
                        snprintf(v1[c], PATH_LEN, "%s", mnt);
                        snprintf(v1root[c], PATH_LEN, "%s", mroot);
                    }
        }
    }
    fclose(f);
    char v2controllers[1024] = {0};
    if (v2root[0]) read_file(v2root, "cgroup.controllers", v2controllers, sizeof v2controllers);
    for (int c = 0; c < N_CONTROLLERS; c++) {
        const char *root = NULL;
        int is_v2 = 0;
        if (v1[c][0]) {
            root = v1[c];
        } else if (c == C_CPUACCT) {
            continue;  /* no v1 cpuacct: v2's cpu.stat (or nothing) measures CPU time */
        } else if (v2root[0]) {
            char padded[1100];
            snprintf(padded, sizeof padded, " %s ", v2controllers);
            for (char *q = padded; *q; q++) if (*q == '\n') *q = ' ';
            char want[32];
            snprintf(want, sizeof want, " %s ", controller_names[c]);
            if (strstr(padded, want)) { root = v2root; is_v2 = 1; }
        }
        if (!root) {
            set_error("no cgroup hierarchy offers the %s controller", controller_names[c]);
            return -1;
        }
        char base[PATH_LEN];
        if (nest) {
            const char *own = is_v2 ? own_v2 : cg_own[c];
            if (!own[0] || nest_base(base, sizeof base, root, is_v2 ? v2mroot : v1root[c], own) < 0) {
                set_error("cannot find this process's own %s cgroup under %s", controller_names[c], root);
                return -1;
            }
            if (is_v2 && v2_vacate(base) < 0) {
                set_error("cannot move the processes of %s into a leaf: %s", base, strerror(errno));
                return -1;
            }
            root = base;
        }
        char path[PATH_LEN];
        if (snprintf(path, sizeof path, "%s/%s/%s", root, parent, name) >= (int)sizeof path) {
            set_error("cgroup path too long under %s", root);
            return -1;
        }
        int found = -1;
        for (int i = 0; i < ndirs; i++) if (strcmp(dirs[i].path, path) == 0) found = i;
        if (found < 0) {
            found = ndirs++;
            snprintf(dirs[found].path, PATH_LEN, "%s", path);
            dirs[found].v2 = is_v2;
            if (make_parents(root, parent, is_v2) < 0) {
                set_error("cannot create cgroup parent %s/%s: %s", root, parent, strerror(errno));
                return -1;
            }
        }
        dirs[found].controllers[c] = 1;
    }
    return 0;
}

/* Is pid in a cgroup whose path ends with rel ("/<parent>/<name>", under our own cgroup with
   --cgroup-nest)? */
static int in_our_cgroup(pid_t pid, const struct cgdir *d, const char *rel) {
    (void)d;
    char p[64], buf[8192];
    snprintf(p, sizeof p, "/proc/%d", (int)pid);
    if (read_file(p, "cgroup", buf, sizeof buf) < 0) return 0;
    size_t rl = strlen(rel);
    for (char *l = buf, *nl; *l; l = nl) {
        nl = strchr(l, '\n');
        if (nl) *nl++ = 0; else nl = l + strlen(l);
        size_t ll = strlen(l);
        if (ll >= rl && strcmp(l + ll - rl, rel) == 0) return 1;
    }
    return 0;
}

/* SIGKILL everything in the run's cgroups until they are empty (or ~10 s have passed).
   Each pid is pinned with a pidfd and checked to still be ours before it is signalled, so a
   recycled pid of an unrelated process is never hit. */
static int kill_cgroups(const char *rel) {
    for (int i = 0; i < ndirs; i++)
        if (dirs[i].v2) write_file(dirs[i].path, "cgroup.kill", "1");
    for (int round = 0; round < 10000; round++) {
        int alive = 0;
        for (int i = 0; i < ndirs; i++) {
            char buf[65536];
            if (read_file(dirs[i].path, "cgroup.procs", buf, sizeof buf) < 0) continue;
            for (char *s = buf; *s;) {
                char *end;
                long pid = strtol(s, &end, 10);
                if (end == s) break;
                s = end;
                while (*s == '\n') s++;
                alive++;
                int pfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
                if (pfd < 0) continue;
                if (in_our_cgroup((pid_t)pid, &dirs[i], rel))
                    syscall(SYS_pidfd_send_signal, pfd, SIGKILL, NULL, 0);
                close(pfd);
            }
        }
        if (!alive) return 0;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static long long read_counter(const char *dir, const char *file, const char *key) {
    char buf[8192];
    if (read_file(dir, file, buf, sizeof buf) < 0) return -1;
    if (!key) return strtoll(buf, NULL, 10);
    size_t klen = strlen(key);
    for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, key, klen) == 0 && l[klen] == ' ') return strtoll(l + klen + 1, NULL, 10);
    return -1;
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

/* Write data to path atomically (path.tmp, then rename; never through a link). */
static int write_atomic(const char *path, const char *data, size_t len, mode_t mode) {
    char tmp[PATH_LEN + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) return -1;
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { close(fd); return -1; }
        off += (size_t)n;
    }
    if (close(fd) < 0) return -1;
    return rename(tmp, path);
}

/* The run's status as one JSON object (malloc'd), or NULL. */
static char *status_json(int have_status, int wstatus, int timed_out, int cancelled,
                         long long oom_kill, long long peak, long long failcnt, int v2,
                         long long cpu_ns) {
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    if (!f) return NULL;
    fprintf(f, "{\"version\": 1, \"exit_code\": ");
    if (have_status && WIFEXITED(wstatus)) fprintf(f, "%d", WEXITSTATUS(wstatus));
    else if (have_status && WIFSIGNALED(wstatus)) fprintf(f, "%d", 128 + WTERMSIG(wstatus));
    else fprintf(f, "null");
    fprintf(f, ", \"signal\": %d", have_status && WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0);
    fprintf(f, ", \"timed_out\": %s, \"cancelled\": %s", timed_out ? "true" : "false",
            cancelled ? "true" : "false");
    fprintf(f, ", \"oom_kill\": %lld, \"peak_memory_bytes\": ", oom_kill < 0 ? 0 : oom_kill);
    if (peak >= 0) fprintf(f, "%lld", peak); else fprintf(f, "null");
    fprintf(f, ", \"failcnt\": %lld, \"cgroup_v2\": %s", failcnt, v2 ? "true" : "false");
    fprintf(f, ", \"cpu_seconds\": ");
    if (cpu_ns >= 0) fprintf(f, "%.6f", (double)cpu_ns / 1e9); else fprintf(f, "null");
    fprintf(f, ", \"duration_seconds\": %.6f, \"error\": ", elapsed_s());
    json_string(f, error_text);
    fprintf(f, "}");
    if (fclose(f) != 0) { free(text); return NULL; }
    return text;
}

#define MAX_FDS 64
#define MAX_HIDE 16

struct config {
    const char *name, *parent, *pidfile, *slirp;
    const char *loader, *libpath, *shield, *image_root, *out_dir, *log_file, *result, *output_file;
    const char *hide[MAX_HIDE];
    int nhide, nest;
    long long log_cap, output_cap;
    long long memory, pids, quota, period, timeout_ms;
    uid_t uid;
    gid_t gid;
    int warm;
    int nfds;
    int fd_num[MAX_FDS];
    const char *fd_path[MAX_FDS];
    char **cmd;
    int ncmd;
};

static int bad_config(const char *fmt, const char *arg) {
    fprintf(stderr, "airlock-jail: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    return -1;
}

static int parse_number(const char *opt, const char *v, long long *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end || x < 0 || end == v) return bad_config("%s: not a non-negative integer", opt);
    *out = x;
    return 0;
}

/* Options, then "--" and the command (bubblewrap and its arguments). */
static int parse_config(int argc, char **argv, struct config *c) {
    memset(c, 0, sizeof *c);
    c->parent = "airlock-jail";
    c->memory = c->pids = c->quota = c->timeout_ms = -1;
    c->log_cap = 1 << 20;
    c->output_cap = 1 << 20;
    c->period = 100000;
    c->uid = 65534;
    c->gid = 65534;
    int i = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) { i++; break; }
        if (strcmp(a, "--warm") == 0) { c->warm = 1; continue; }
        if (strcmp(a, "--cgroup-nest") == 0) { c->nest = 1; continue; }
        if (i + 1 >= argc) return bad_config("%s needs a value", a);
        const char *v = argv[++i];
        long long x = 0;
        if (strcmp(a, "--name") == 0) c->name = v;
        else if (strcmp(a, "--cgroup-parent") == 0) c->parent = v;
        else if (strcmp(a, "--status") == 0) snprintf(status_path, sizeof status_path, "%s", v);
        else if (strcmp(a, "--pidfile") == 0) c->pidfile = v;
        else if (strcmp(a, "--slirp4netns") == 0) c->slirp = v;
        else if (strcmp(a, "--loader") == 0) c->loader = v;
        else if (strcmp(a, "--library-path") == 0) c->libpath = v;
        else if (strcmp(a, "--shield") == 0) c->shield = v;
        else if (strcmp(a, "--image-root") == 0) c->image_root = v;
        else if (strcmp(a, "--out-dir") == 0) c->out_dir = v;
        else if (strcmp(a, "--log-file") == 0) c->log_file = v;
        else if (strcmp(a, "--result") == 0) c->result = v;
        else if (strcmp(a, "--output-file") == 0) c->output_file = v;
        else if (strcmp(a, "--hide") == 0) {
            if (c->nhide >= MAX_HIDE || strchr(v, '/')) return bad_config("--hide %s: a plain name", v);
            c->hide[c->nhide++] = v;
        }
        else if (strcmp(a, "--fd") == 0) {
            /* N:PATH: PATH opened read-only (as root, before privileges are dropped) as fd N */
            char *colon = strchr(v, ':');
            if (!colon || c->nfds >= MAX_FDS) return bad_config("--fd %s: want N:PATH", v);
            char num[16];
            size_t len = (size_t)(colon - v);
            if (len == 0 || len >= sizeof num) return bad_config("--fd %s: want N:PATH", v);
            memcpy(num, v, len);
            num[len] = 0;
            if (parse_number("--fd", num, &x) < 0 || x < 3 || x > 1000) return bad_config("--fd %s: N from 3", v);
            c->fd_num[c->nfds] = (int)x;
            c->fd_path[c->nfds++] = colon + 1;
        } else {
            if (parse_number(a, v, &x) < 0) return -1;
            if (strcmp(a, "--memory") == 0) c->memory = x;
            else if (strcmp(a, "--pids") == 0) c->pids = x;
            else if (strcmp(a, "--cpu-quota-us") == 0) c->quota = x;
            else if (strcmp(a, "--cpu-period-us") == 0) c->period = x;
            else if (strcmp(a, "--timeout-ms") == 0) c->timeout_ms = x;
            else if (strcmp(a, "--log-cap") == 0) c->log_cap = x;
            else if (strcmp(a, "--output-cap") == 0) c->output_cap = x;
            else if (strcmp(a, "--uid") == 0) c->uid = (uid_t)x;
            else if (strcmp(a, "--gid") == 0) c->gid = (gid_t)x;
            else return bad_config("unknown option %s", a);
        }
    }
    c->cmd = argv + i;
    c->ncmd = argc - i;
    if (!c->name || strchr(c->name, '/') || c->name[0] == '.' || !c->name[0])
        return bad_config("%s", "need --name (a plain cgroup name)");
    return 0;
}

static int complete_config(const struct config *c) {
    if (!status_path[0] || c->ncmd < 1 || c->timeout_ms < 0 || c->memory <= 0 || c->pids <= 0 || c->uid == 0)
        return bad_config("%s", "need --status, --memory, --pids, --timeout-ms, a non-root --uid and a "
                                "command after --");
    if (!c->loader != !c->libpath) return bad_config("%s", "--loader and --library-path go together");
    if (c->warm && (c->log_file || c->shield)) return bad_config("%s", "--log-file and --shield are not for --warm");
    return 0;
}

/* Split a NUL-separated buffer into an argv (the configuration a warm supervisor receives). */
static char **split_nul(char *buf, size_t len, int *argc) {
    int n = 0;
    for (size_t i = 0; i < len; i++) if (buf[i] == 0) n++;
    char **v = calloc((size_t)n + 1, sizeof *v);
    if (!v) return NULL;
    size_t start = 0;
    int k = 0;
    for (size_t i = 0; i < len; i++)
        if (buf[i] == 0) { v[k++] = buf + start; start = i + 1; }
    v[k] = NULL;
    *argc = k;
    return v;
}

/* Read everything from fd until EOF (or a signal on sfd, or nothing at all when sfd < 0). */
static char *read_all(int fd, int sfd, size_t *len) {
    size_t cap = 65536, got = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    for (;;) {
        struct pollfd p[2] = {{fd, POLLIN, 0}, {sfd, POLLIN, 0}};
        if (poll(p, sfd >= 0 ? 2 : 1, -1) < 0) { if (errno == EINTR) continue; free(buf); return NULL; }
        if (sfd >= 0 && (p[1].revents & POLLIN)) { free(buf); return NULL; }
        if (got == cap) {
            if (cap >= (16 << 20)) { free(buf); return NULL; }
            char *more = realloc(buf, cap *= 2);
            if (!more) { free(buf); return NULL; }
            buf = more;
        }
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { free(buf); return NULL; }
        if (n == 0) break;
        got += (size_t)n;
    }
    *len = got;
    return buf;
}

static void join_cgroups(void) {
    char pid_text[32];
    snprintf(pid_text, sizeof pid_text, "%d", (int)getpid());
    for (int d = 0; d < ndirs; d++)
        if (write_file(dirs[d].path, "cgroup.procs", pid_text) < 0) {
            fprintf(stderr, "airlock-jail: cannot join cgroup %s: %s\n", dirs[d].path, strerror(errno));
            _exit(125);
        }
}

/* --shield: a private mount namespace where the image's /etc is covered by an empty read-only
   tmpfs, so the dynamic loader run next reads no /etc/ld.so.preload or ld.so.cache from the
   image. With keep_root, "/" (the image) is first bound at DIR/root, the jail's source. */
static int shield_mounts(const char *dir, int keep_root) {
    if (unshare(CLONE_NEWNS) < 0) return -1;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) return -1;
    if (mkdir(dir, 0711) < 0 && errno != EEXIST) return -1;
    if (keep_root) {
        char root[PATH_LEN];
        if (snprintf(root, sizeof root, "%s/root", dir) >= (int)sizeof root) { errno = ENAMETOOLONG; return -1; }
        if (mkdir(root, 0711) < 0 && errno != EEXIST) return -1;
        if (mount("/", root, NULL, MS_BIND | MS_REC, NULL) < 0) return -1;
    }
    /* An /etc that does not exist (or dangles) holds no ld.so.preload either. */
    if (mount("tmpfs", "/etc", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=755") < 0 &&
        errno != ENOENT)
        return -1;
    if (keep_root) {
        /* bubblewrap mounts its new root's tmpfs on /tmp: give it a fresh one here, whatever the
           image has there (nothing, in a scratch image); never through a link of the image. */
        struct stat st;
        if (lstat("/tmp", &st) < 0) {
            if (errno != ENOENT || mkdir("/tmp", 01777) < 0) return -1;
        } else if (!S_ISDIR(st.st_mode)) {
            errno = ENOTDIR;
            return -1;
        }
        if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,mode=1777") < 0) return -1;
    }
    return 0;
}

struct argv_buf { char **v; int n, cap; };

static void argv_push(struct argv_buf *a, const char *s) {
    if (a->n + 2 > a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = realloc(a->v, (size_t)a->cap * sizeof *a->v);
        if (!a->v) _exit(125);
    }
    a->v[a->n++] = (char *)s;
    a->v[a->n] = NULL;
}

static const char *const provided[] = {"proc", "dev", "sys", "tmp", "run", "airlock", NULL};

/* --image-root: bubblewrap options binding each top-level entry of dir read-only at /NAME. */
static int root_entries(struct argv_buf *a, const char *dir, const struct config *c) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        if (!strcmp(n, ".") || !strcmp(n, "..")) continue;
        int skip = 0;
        for (int i = 0; provided[i]; i++) skip |= !strcmp(n, provided[i]);
        for (int i = 0; i < c->nhide; i++) skip |= !strcmp(n, c->hide[i]);
        if (skip) continue;
        struct stat st;
        if (fstatat(dirfd(d), n, &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
        char *dest = malloc(strlen(n) + 2);
        if (!dest) _exit(125);
        sprintf(dest, "/%s", n);
        if (S_ISLNK(st.st_mode)) {
            char *target = calloc(1, PATH_LEN);
            if (!target || readlinkat(dirfd(d), n, target, PATH_LEN - 1) < 0) { free(dest); continue; }
            argv_push(a, "--symlink"); argv_push(a, target); argv_push(a, dest);
        } else if (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)) {
            char *src = malloc(strlen(dir) + strlen(n) + 2);
            if (!src) _exit(125);
            sprintf(src, "%s/%s", dir, n);
            argv_push(a, "--ro-bind"); argv_push(a, src); argv_push(a, dest);
        } else {
            free(dest);
        }
    }
    closedir(d);
    return 0;
}

/* The argv that runs program: through the bundle's loader when one is given. */
static void program_argv(struct argv_buf *a, const struct config *c, const char *program) {
    if (c->loader) {
        argv_push(a, c->loader);
        argv_push(a, "--inhibit-cache");
        argv_push(a, "--library-path");
        argv_push(a, c->libpath);
    }
    argv_push(a, program);
}

/* The child: in the run's cgroups, it opens the run's files as root, becomes the sandbox user
   and runs bubblewrap. In warm mode it waits (already in its cgroups) for the configuration. */
static void child_main(struct config *c, int go_fd, int joined_fd, int info[2], int block[2], int logw, sigset_t *oldmask) {
    join_cgroups();
    if (joined_fd >= 0) {  /* the parent renames the cgroups only once we are in them */
        if (write(joined_fd, "j", 1) != 1) _exit(125);
        close(joined_fd);
    }
    if (go_fd >= 0) {
        size_t len = 0;
        char *buf = read_all(go_fd, -1, &len);
        close(go_fd);
        int argc2 = 0;
        char **argv2 = buf && len ? split_nul(buf, len, &argc2) : NULL;
        if (!argv2) _exit(0);  /* never configured: nothing to run */
        if (parse_config(argc2, argv2, c) < 0) _exit(125);
    }
    if (logw >= 0) {  /* stdout and stderr: one pipe, read (and capped) by the parent */
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) { dup2(devnull, 0); close(devnull); }
        if (dup2(logw, 1) < 0 || dup2(logw, 2) < 0) _exit(125);
        close(logw);
    }
    char shielded_root[PATH_LEN];
    const char *image_root = c->image_root;
    if (c->shield) {
        if (shield_mounts(c->shield, image_root != NULL) < 0) {
            fprintf(stderr, "airlock-jail: cannot shield the loader from the image: %s\n", strerror(errno));
            _exit(125);
        }
        if (image_root) {
            snprintf(shielded_root, sizeof shielded_root, "%s/root%s", c->shield,
                     strcmp(image_root, "/") == 0 ? "" : image_root);
            image_root = shielded_root;
        }
    }
    for (int f = 0; f < c->nfds; f++) {
        int fd = open(c->fd_path[f], O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
            fprintf(stderr, "airlock-jail: cannot open %s: %s\n", c->fd_path[f], strerror(errno));
            _exit(125);
        }
        if (fd == c->fd_num[f]) fcntl(fd, F_SETFD, 0);
        else if (dup2(fd, c->fd_num[f]) < 0) _exit(125);  /* dup2 clears close-on-exec */
        else close(fd);
    }
    char info_arg[16], block_arg[16];
    struct argv_buf full = {0};
    program_argv(&full, c, c->cmd[0]);
    if (c->slirp) {  /* bubblewrap reports its sandbox's pid, then waits for the network */
        fcntl(info[1], F_SETFD, 0);
        fcntl(block[0], F_SETFD, 0);
        snprintf(info_arg, sizeof info_arg, "%d", info[1]);
        snprintf(block_arg, sizeof block_arg, "%d", block[0]);
        argv_push(&full, "--info-fd");
        argv_push(&full, info_arg);
        argv_push(&full, "--block-fd");
        argv_push(&full, block_arg);
    }
    if (image_root && root_entries(&full, image_root, c) < 0) {
        fprintf(stderr, "airlock-jail: cannot list the image root %s: %s\n", image_root, strerror(errno));
        _exit(125);
    }
    for (int j = 1; j < c->ncmd; j++) argv_push(&full, c->cmd[j]);
    struct rlimit core = {0, 0};
    setrlimit(RLIMIT_CORE, &core);
    signal(SIGPIPE, SIG_DFL);
    sigprocmask(SIG_SETMASK, oldmask, NULL);
    if (setgroups(0, NULL) < 0 || setresgid(c->gid, c->gid, c->gid) < 0 || setresuid(c->uid, c->uid, c->uid) < 0) {
        fprintf(stderr, "airlock-jail: cannot become %d:%d: %s\n", (int)c->uid, (int)c->gid, strerror(errno));
        _exit(125);
    }
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    char *envp[] = {NULL};
    execve(full.v[0], full.v, envp);
    fprintf(stderr, "airlock-jail: cannot run %s: %s\n", full.v[0], strerror(errno));
    _exit(125);
}

static int set_limits(const struct config *c) {
    for (int d = 0; d < ndirs; d++) {
        struct cgdir *cg = &dirs[d];
        char v[64];
        int bad = 0;
        if (cg->controllers[C_MEMORY]) {
            snprintf(v, sizeof v, "%lld", c->memory);
            if (cg->v2) {
                bad |= write_file(cg->path, "memory.max", v);
                if (exists(cg->path, "memory.swap.max")) bad |= write_file(cg->path, "memory.swap.max", "0");
            } else {
                bad |= write_file(cg->path, "memory.limit_in_bytes", v);
                if (exists(cg->path, "memory.memsw.limit_in_bytes"))
                    bad |= write_file(cg->path, "memory.memsw.limit_in_bytes", v);
            }
        }
        if (!bad && cg->controllers[C_PIDS]) {
            snprintf(v, sizeof v, "%lld", c->pids);
            bad |= write_file(cg->path, "pids.max", v);
        }
        if (!bad && cg->controllers[C_CPU] && c->quota > 0) {
            if (cg->v2) {
                snprintf(v, sizeof v, "%lld %lld", c->quota, c->period);
                bad |= write_file(cg->path, "cpu.max", v);
            } else {
                snprintf(v, sizeof v, "%lld", c->period);
                bad |= write_file(cg->path, "cpu.cfs_period_us", v);
                snprintf(v, sizeof v, "%lld", c->quota);
                bad |= write_file(cg->path, "cpu.cfs_quota_us", v);
            }
        }
        if (bad) { set_error("cannot set the limits of cgroup %s: %s", cg->path, strerror(errno)); return -1; }
        if (cg->controllers[C_MEMORY] && !cg->v2 && !exists(cg->path, "memory.memsw.limit_in_bytes")) {
            /* Without swap accounting a v1 memory limit does not bound swap: refuse, unless
               this host has no swap at all. */
            char mi[8192];
            long long swap = -1;
            if (read_file("/proc", "meminfo", mi, sizeof mi) > 0) {
                char *s = strstr(mi, "SwapTotal:");
                if (s) swap = strtoll(s + 10, NULL, 10);
            }
            if (swap != 0) { set_error("swap is not accounted (no memory.memsw.*) and this host has swap"); return -1; }
        }
    }
    return 0;
}

static void set_rel(char *rel, size_t size, const char *parent, const char *name) {
    snprintf(rel, size, "/%s/%s", parent, name);
    while (rel[1] == '/') memmove(rel, rel + 1, strlen(rel));
}

/* Warm mode: the pool cgroups become the run's (renamed on v1; v2 cannot rename, so the
   child is moved into a new cgroup there). */
static int adopt_cgroups(const char *parent, const char *name, pid_t child) {
    for (int d = 0; d < ndirs; d++) {
        char path[PATH_LEN];
        char *slash = strrchr(dirs[d].path, '/');
        if (!slash) return -1;
        snprintf(path, sizeof path, "%.*s/%s", (int)(slash - dirs[d].path), dirs[d].path, name);
        (void)parent;
        if (rename(dirs[d].path, path) == 0) {
            snprintf(dirs[d].path, PATH_LEN, "%s", path);
            continue;
        }
        char pid_text[32];
        snprintf(pid_text, sizeof pid_text, "%d", (int)child);
        if ((mkdir(path, 0755) < 0 && errno != EEXIST) || write_file(path, "cgroup.procs", pid_text) < 0) {
            set_error("cannot move the sandbox into cgroup %s: %s", path, strerror(errno));
            return -1;
        }
        rmdir(dirs[d].path);
        snprintf(dirs[d].path, PATH_LEN, "%s", path);
    }
    return 0;
}

static pid_t read_child_pid(int fd, int timeout_ms) {
    char buf[4096];
    size_t got = 0;
    struct pollfd p = {fd, POLLIN, 0};
    while (got + 1 < sizeof buf) {
        if (poll(&p, 1, timeout_ms) <= 0) return -1;
        ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
        if (n <= 0) return -1;
        got += (size_t)n;
        buf[got] = 0;
        char *k = strstr(buf, "\"child-pid\"");
        if (k) {
            char *colon = strchr(k, ':');
            if (colon) {
                char *end;
                long pid = strtol(colon + 1, &end, 10);
                if (end != colon + 1 && (*end == ',' || *end == '\n' || *end == ' ' || *end == '}'))
                    return (pid_t)pid;
            }
        }
    }
    return -1;
}

/* The captured log (--log-file / --result): the first log_cap bytes, and how many were dropped. */
static char *log_buf;
static long long log_len, log_dropped;

static int pump_log(int fd, long long cap) {  /* -1 at EOF */
    char chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) return -1;
        if (n < 0) return 0;
        long long room = cap - log_len;
        long long keep = room > 0 ? (n < room ? n : room) : 0;
        if (keep > 0) { memcpy(log_buf + log_len, chunk, (size_t)keep); log_len += keep; }
        log_dropped += n - keep;
        if (n < (ssize_t)sizeof chunk) return 0;  /* nonblocking: drained for now */
    }
}

/* Read what is left once every writer is dead (EOF), or give up after timeout_ms. */
static void drain_log(int fd, long long cap, int timeout_ms) {
    struct pollfd p = {fd, POLLIN, 0};
    while (poll(&p, 1, timeout_ms) > 0)
        if (pump_log(fd, cap) < 0 || (p.revents & POLLERR)) return;
}

static void base64(FILE *f, const unsigned char *b, size_t n) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    fputc('"', f);
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)b[i] << 16 | (i + 1 < n ? (unsigned)b[i + 1] << 8 : 0) | (i + 2 < n ? b[i + 2] : 0);
        fputc(t[v >> 18 & 63], f);
        fputc(t[v >> 12 & 63], f);
        fputc(i + 1 < n ? t[v >> 6 & 63] : '=', f);
        fputc(i + 2 < n ? t[v & 63] : '=', f);
    }
    fputc('"', f);
}

/* --result: the status, the log and the agent's output file in one JSON document (written
   after every process of the run is dead, so the agent cannot forge it). The output is read
   only if it is a regular file (O_NOFOLLOW: the agent controls its directory). */
static int write_result(const char *path, const char *status_json, const struct config *c) {
    unsigned char *out = NULL;
    long long out_len = -1;
    int out_trunc = 0;
    if (c->output_file) {
        int fd = open(c->output_file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
            out = malloc((size_t)c->output_cap + 1);
            out_len = 0;
            while (out && out_len < c->output_cap + 1) {
                ssize_t n = read(fd, out + out_len, (size_t)(c->output_cap + 1 - out_len));
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) break;
                out_len += n;
            }
            if (out_len > c->output_cap) { out_len = c->output_cap; out_trunc = 1; }
        }
        if (fd >= 0) close(fd);
    }
    char tmp[PATH_LEN + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) { free(out); return -1; }
    FILE *f = fdopen(fd, "w");
    if (!f) { close(fd); free(out); return -1; }
    fprintf(f, "{\"status\": %s, \"logs_b64\": ", status_json);
    base64(f, (const unsigned char *)(log_buf ? log_buf : ""), (size_t)log_len);
    fprintf(f, ", \"logs_truncated\": %s, \"output_b64\": ", log_dropped ? "true" : "false");
    if (out && out_len >= 0) base64(f, out, (size_t)out_len); else fprintf(f, "null");
    fprintf(f, ", \"output_truncated\": %s}\n", out_trunc ? "true" : "false");
    free(out);
    if (fflush(f) != 0) { fclose(f); return -1; }
    fclose(f);
    return rename(tmp, path);
}

/* --out-dir: the agent's output directory, owned by the sandbox user (never through a link). */
static int make_out_dir(const char *path, uid_t uid, gid_t gid) {
    if (mkdir(path, 0700) < 0 && errno != EEXIST) return -1;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fchown(fd, uid, gid) < 0 || fchmod(fd, 0700) < 0 ? -1 : 0;
    close(fd);
    return rc;
}

int main(int argc, char **argv) {
    clock_gettime(CLOCK_MONOTONIC, &t_start);
    struct config cfg;
    if (parse_config(argc - 1, argv + 1, &cfg) < 0) return 125;
    if (!cfg.warm && complete_config(&cfg) < 0) return 125;
    const char *parent = cfg.parent;

    /* Signals: cancellation arrives as SIGTERM/SIGINT/SIGHUP, read from a signalfd. */
    sigset_t mask, oldmask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, &oldmask);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    signal(SIGPIPE, SIG_IGN);

    char rel[PATH_LEN];
    set_rel(rel, sizeof rel, parent, cfg.name);
    int have_status = 0, wstatus = 0, timed_out = 0, cancelled = 0, v2 = 0;
    pid_t child = -1, slirp_pid = -1;
    int pidfd = -1, go[2] = {-1, -1}, joined[2] = {-1, -1};
    int info[2] = {-1, -1}, block[2] = {-1, -1}, logp[2] = {-1, -1};
    int capture = !cfg.warm && (cfg.log_file || cfg.result);

    if (cfg.out_dir && make_out_dir(cfg.out_dir, cfg.uid, cfg.gid) < 0) {
        set_error("cannot create the output directory %s: %s", cfg.out_dir, strerror(errno));
        goto finish;
    }
    if (capture) {
        log_buf = malloc((size_t)cfg.log_cap + 1);
        if (!log_buf || pipe2(logp, O_CLOEXEC) < 0) {
            set_error("log capture: %s", strerror(errno));
            goto finish;
        }
        fcntl(logp[0], F_SETFL, O_NONBLOCK);
    }
    if (discover(parent, cfg.name, cfg.nest) < 0) goto finish;
    for (int d = 0; d < ndirs; d++) {
        struct cgdir *cg = &dirs[d];
        v2 |= cg->v2;
        if (mkdir(cg->path, 0755) < 0) {
            if (errno != EEXIST) { set_error("cannot create cgroup %s: %s", cg->path, strerror(errno)); goto finish; }
            /* left by a crashed run of the same name: empty and recreate it (fresh counters) */
            kill_cgroups(rel);
            if (rmdir(cg->path) < 0 || mkdir(cg->path, 0755) < 0) {
                set_error("cannot recreate stale cgroup %s: %s", cg->path, strerror(errno));
                goto finish;
            }
        }
    }
    if (!cfg.warm && set_limits(&cfg) < 0) goto finish;
    if (pipe2(info, O_CLOEXEC) < 0 || pipe2(block, O_CLOEXEC) < 0 ||
        (cfg.warm && (pipe2(go, O_CLOEXEC) < 0 || pipe2(joined, O_CLOEXEC) < 0))) {
        set_error("pipe: %s", strerror(errno));
        goto finish;
    }

    child = fork();
    if (child < 0) { set_error("fork: %s", strerror(errno)); goto finish; }
    if (child == 0) {
        if (go[1] >= 0) close(go[1]);
        if (joined[0] >= 0) close(joined[0]);
        if (logp[0] >= 0) close(logp[0]);
        child_main(&cfg, go[0], joined[1], info, block, logp[1], &oldmask);
    }
    if (logp[1] >= 0) { close(logp[1]); logp[1] = -1; }
    if (go[0] >= 0) close(go[0]);
    if (joined[1] >= 0) close(joined[1]);
    pidfd = (int)syscall(SYS_pidfd_open, child, 0);

    if (cfg.warm) {
        /* Wait for the run: its configuration arrives on stdin, NUL-separated, up to EOF. An
           empty one (the executor went away or shut down) ends this supervisor. */
        char j;
        ssize_t got;
        do got = read(joined[0], &j, 1); while (got < 0 && errno == EINTR);
        close(joined[0]);
        size_t len = 0;
        char *buf = got == 1 ? read_all(0, sfd, &len) : NULL;  /* got != 1: the child failed */
        int argc2 = 0;
        char **argv2 = buf && len ? split_nul(buf, len, &argc2) : NULL;
        struct config run;
        if (!argv2 || parse_config(argc2, argv2, &run) < 0 || complete_config(&run) < 0 ||
            strcmp(run.parent, parent) != 0) {
            kill(child, SIGKILL);
            waitpid(child, NULL, 0);
            for (int d = 0; d < ndirs; d++) rmdir(dirs[d].path);
            return argv2 ? 125 : 0;
        }
        clock_gettime(CLOCK_MONOTONIC, &t_start);  /* the run's clock starts now */
        if (adopt_cgroups(parent, run.name, child) < 0) { kill(child, SIGKILL); goto reap; }
        set_rel(rel, sizeof rel, parent, run.name);
        cfg = run;
        if (set_limits(&cfg) < 0) { kill(child, SIGKILL); goto reap; }
        /* the child parses the same configuration */
        size_t off = 0;
        while (off < len) {
            ssize_t n = write(go[1], buf + off, len - off);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            off += (size_t)n;
        }
        close(go[1]);
        go[1] = -1;
    }
    if (cfg.pidfile) {
        FILE *pf = fopen(cfg.pidfile, "we");
        if (pf) { fprintf(pf, "%d\n", (int)getpid()); fclose(pf); }
    }
    close(info[1]);
    close(block[0]);
    info[1] = block[0] = -1;

    struct timespec deadline = t_start;
    deadline.tv_sec += cfg.timeout_ms / 1000;
    deadline.tv_nsec += (cfg.timeout_ms % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) { deadline.tv_sec++; deadline.tv_nsec -= 1000000000; }

    if (cfg.slirp) {
        pid_t sandbox = read_child_pid(info[0], (int)(cfg.timeout_ms > 10000 ? 10000 : cfg.timeout_ms));
        int ready[2];
        if (sandbox <= 0 || pipe2(ready, O_CLOEXEC) < 0) {
            set_error("could not learn the sandbox's pid for its network");
        } else {
            slirp_pid = fork();
            if (slirp_pid == 0) {
                /* The sandbox's network namespace by path, joined as root (not through the
                   sandbox's user namespace, whose uid map may not be written yet). */
                char ns_arg[64], ready_arg[32], net_log[PATH_LEN + 16];
                snprintf(ns_arg, sizeof ns_arg, "/proc/%d/ns/net", (int)sandbox);
                fcntl(ready[1], F_SETFD, 0);
                snprintf(ready_arg, sizeof ready_arg, "--ready-fd=%d", ready[1]);
                snprintf(net_log, sizeof net_log, "%s.net.log", status_path);
                int devnull = open("/dev/null", O_RDWR);
                int logfd = open(net_log, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600);
                if (devnull >= 0) { dup2(devnull, 0); dup2(devnull, 1); }
                if (logfd >= 0) dup2(logfd, 2); else if (devnull >= 0) dup2(devnull, 2);
                signal(SIGPIPE, SIG_DFL);
                sigprocmask(SIG_SETMASK, &oldmask, NULL);
                prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
                if (cfg.shield && shield_mounts(cfg.shield, 0) < 0) {
                    fprintf(stderr, "airlock-jail: cannot shield slirp4netns from the image: %s\n", strerror(errno));
                    _exit(125);
                }
                struct argv_buf sargv = {0};
                program_argv(&sargv, &cfg, cfg.slirp);
                const char *sopts[] = {"--configure", "--mtu=65520", "--disable-host-loopback",
                                       "--enable-sandbox", "--enable-seccomp", "--netns-type=path", ready_arg,
                                       ns_arg, "tap0", NULL};
                for (int i = 0; sopts[i]; i++) argv_push(&sargv, sopts[i]);
                char *senv[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
                execve(sargv.v[0], sargv.v, senv);
                fprintf(stderr, "airlock-jail: cannot run %s: %s\n", cfg.slirp, strerror(errno));
                _exit(125);
            }
            close(ready[1]);
            struct pollfd p = {ready[0], POLLIN, 0};
            char c;
            if (slirp_pid < 0 || poll(&p, 1, 10000) <= 0 || read(ready[0], &c, 1) != 1) {
                char net_log[PATH_LEN + 16], why[512] = "";
                snprintf(net_log, sizeof net_log, "%s.net.log", status_path);
                char *slash = strrchr(net_log, '/');
                if (slash) {
                    *slash = 0;
                    read_file(net_log, slash + 1, why, sizeof why);
                }
                for (char *q = why; *q; q++) if (*q == '\n') *q = ' ';
                set_error("slirp4netns did not set up the sandbox's network: %s", why);
            }
            close(ready[0]);
        }
        if (error_text[0]) {
            kill(child, SIGKILL);
        } else if (write(block[1], "1", 1) != 1) {
            set_error("cannot release the sandbox: %s", strerror(errno));
            kill(child, SIGKILL);
        }
    }
    close(block[1]);
    block[1] = -1;
    /* info[0] stays open until the end: bubblewrap may still write to its --info-fd after the
       pid we read, and a closed reader would kill it with SIGPIPE. */

    /* Wait for bubblewrap to end, for the deadline, or for a cancellation. */
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long left_ms = (long long)(deadline.tv_sec - now.tv_sec) * 1000 +
                            (deadline.tv_nsec - now.tv_nsec) / 1000000;
        if (left_ms <= 0) { timed_out = 1; break; }
        struct pollfd p[3] = {{pidfd, POLLIN, 0}, {sfd, POLLIN, 0}, {logp[0], POLLIN, 0}};
        int n = poll(p, logp[0] >= 0 ? 3 : 2, (int)(left_ms > 1000 ? 1000 : left_ms + 1));
        if (n < 0 && errno != EINTR) { set_error("poll: %s", strerror(errno)); break; }
        if (n > 0 && (p[1].revents & POLLIN)) { cancelled = 1; break; }
        if (n > 0 && logp[0] >= 0 && (p[2].revents & (POLLIN | POLLHUP)) && pump_log(logp[0], cfg.log_cap) < 0) {
            close(logp[0]);  /* every writer is gone */
            logp[0] = -1;
        }
        pid_t w = waitpid(child, &wstatus, WNOHANG);
        if (w == child) { have_status = 1; break; }
    }
reap:
    if (!have_status && child > 0) {
        kill(child, SIGKILL);  /* our own unreaped child: no pid reuse possible */
        kill_cgroups(rel);
        if (waitpid(child, &wstatus, 0) == child) have_status = 1;
    }

finish:;
    /* Nothing of the run outlives it: orphans, daemons, stragglers. */
    if (ndirs && kill_cgroups(rel) < 0) set_error("processes of the run survived SIGKILL");
    if (info[0] >= 0) close(info[0]);
    if (slirp_pid > 0) { kill(slirp_pid, SIGKILL); waitpid(slirp_pid, NULL, 0); }
    long long oom_kill = -1, peak = -1, failcnt = -1, cpu_ns = -1;
    /* CPU time of every process the run had (the cgroup's counter includes the dead ones),
       read after they were all killed, so nothing is still adding to it. */
    for (int d = 0; d < ndirs; d++) {
        if (dirs[d].controllers[C_CPUACCT] && !dirs[d].v2) {
            cpu_ns = read_counter(dirs[d].path, "cpuacct.usage", NULL);
        } else if (dirs[d].v2 && cpu_ns < 0) {
            long long usec = read_counter(dirs[d].path, "cpu.stat", "usage_usec");
            if (usec >= 0) cpu_ns = usec * 1000;
        }
    }
    for (int d = 0; d < ndirs; d++) {
        if (!dirs[d].controllers[C_MEMORY]) continue;
        if (dirs[d].v2) {
            oom_kill = read_counter(dirs[d].path, "memory.events", "oom_kill");
            peak = read_counter(dirs[d].path, "memory.peak", NULL);
            failcnt = read_counter(dirs[d].path, "memory.events", "max");
        } else {
            oom_kill = read_counter(dirs[d].path, "memory.oom_control", "oom_kill");
            peak = read_counter(dirs[d].path, "memory.max_usage_in_bytes", NULL);
            failcnt = read_counter(dirs[d].path, "memory.failcnt", NULL);
        }
    }
    for (int d = 0; d < ndirs; d++)
        for (int tries = 0; rmdir(dirs[d].path) < 0 && errno == EBUSY && tries < 1000; tries++) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    if (logp[0] >= 0) drain_log(logp[0], cfg.log_cap, 1000);  /* the writers are dead: what is left */
    if (!status_path[0]) return 125;
    char *status = status_json(have_status, wstatus, timed_out, cancelled, oom_kill, peak, failcnt, v2,
                               cpu_ns);
    if (!status) return 125;
    char *line = malloc(strlen(status) + 2);
    if (!line) return 125;
    sprintf(line, "%s\n", status);
    if (write_atomic(status_path, line, strlen(line), 0600) < 0) {
        fprintf(stderr, "airlock-jail: cannot write %s: %s\n", status_path, strerror(errno));
        return 125;
    }
    if (cfg.log_file && log_buf && write_atomic(cfg.log_file, log_buf, (size_t)log_len, 0600) < 0) {
        fprintf(stderr, "airlock-jail: cannot write %s: %s\n", cfg.log_file, strerror(errno));
        return 125;
    }
    if (cfg.result && write_result(cfg.result, status, &cfg) < 0) {
        fprintf(stderr, "airlock-jail: cannot write %s: %s\n", cfg.result, strerror(errno));
        return 125;
    }
    return 0;
}
