/* Stands in for an image's libc.so.6 and the library its /etc/ld.so.preload names: loaded into
   a process running with privileges (euid 0), its constructor leaves a marker in /markers.
   No libc of its own (raw system calls), so it loads into any process. */
static long sys3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}

__attribute__((constructor)) static void hostile(void) {
    if (sys3(107 /* geteuid */, 0, 0, 0) == 0) {
        long fd = sys3(2 /* open */, (long)MARKER, 0101 /* O_WRONLY|O_CREAT */, 0644);
        if (fd >= 0) sys3(1 /* write */, fd, (long)"x", 1);
    }
}
