"""The jail: one supervisor (``supervisor.c``) that runs one agent command under hard limits
with bubblewrap and the kernel's cgroups, its seccomp filter, and how both are built."""
