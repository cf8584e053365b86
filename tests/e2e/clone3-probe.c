/* Runs in a container under a seccomp profile (conformance.bats) and prints what the calls
 * glibc makes to start threads and processes give:
 *   clone3=<errno name>  a raw clone3(NULL, 0) (EINVAL without a filter: the size is 0)
 *   sysinfo=<errno name> an old syscall the test profile leaves out (its default action)
 *   thread=ok|<error>    pthread_create (glibc 2.34+ tries clone3, falls back on ENOSYS)
 *   spawn=ok|<error>     posix_spawn (clone3 first as well)
 *   fork=ok|<error>      fork
 * Built static (gcc -static -pthread) so it runs in any rootfs. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif

static void *thread_main(void *arg) { return arg; }

static const char *name(int e) {
    const char *n = strerrorname_np(e);
    return n ? n : "?";
}

int main(void) {
    extern char **environ;
    long rc = syscall(SYS_clone3, NULL, 0);
    printf("clone3=%s\n", rc < 0 ? name(errno) : "ok");
    struct sysinfo si;
    rc = syscall(SYS_sysinfo, &si);
    printf("sysinfo=%s\n", rc < 0 ? name(errno) : "ok");

    pthread_t t;
    int e = pthread_create(&t, NULL, thread_main, NULL);
    if (e == 0)
        e = pthread_join(t, NULL);
    printf("thread=%s\n", e == 0 ? "ok" : name(e));

    pid_t pid;
    char *argv[] = {"true", NULL};
    e = posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ);
    int status = 0;
    if (e == 0 && waitpid(pid, &status, 0) < 0)
        e = errno;
    printf("spawn=%s\n", e == 0 ? "ok" : name(e));

    fflush(stdout);
    pid = fork();
    if (pid == 0)
        _exit(0);
    if (pid < 0 || waitpid(pid, &status, 0) < 0)
        printf("fork=%s\n", name(errno));
    else
        printf("fork=ok\n");
    return 0;
}
