/*
 * Guest-kernel feature check, run as /init (PID 1) in a throwaway VM by
 * guest/kernel/boot-check.sh. It proves that the clearbox kernel config has
 * what containers need by exercising each feature (mounting, unsharing,
 * opening sockets), not just by reading the config. Prints one line per
 * check and a closing "N passed, M failed" line, then powers the VM off.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>
#include <linux/vm_sockets.h>
#include <time.h>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

static int passed, failed;

static void check(int ok, const char *fmt, ...)
{
	va_list ap;

	printf("%s ", ok ? "ok  " : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	if (!ok && errno)
		printf(" (%s)", strerror(errno));
	printf("\n");
	ok ? passed++ : failed++;
	errno = 0;
}

static int read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n, total = 0;

	if (fd < 0)
		return -1;
	while ((size_t)total < len - 1 &&
	       (n = read(fd, buf + total, len - 1 - total)) > 0)
		total += n;
	buf[total] = '\0';
	close(fd);
	return (int)total;
}

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, s, strlen(s));
	close(fd);
	return n == (ssize_t)strlen(s) ? 0 : -1;
}

/* Does /proc/filesystems list `fs` (as a whole word)? */
static int has_fs(const char *filesystems, const char *fs)
{
	const char *p = filesystems;
	size_t len = strlen(fs);

	while ((p = strstr(p, fs)) != NULL) {
		if ((p == filesystems || p[-1] == '\t') &&
		    (p[len] == '\n' || p[len] == '\0'))
			return 1;
		p += len;
	}
	return 0;
}

/* unshare() in a child so every namespace kind is tried from a clean state. */
static int try_unshare(int flag)
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		return 0;
	if (pid == 0)
		_exit(unshare(flag) == 0 ? 0 : 1);
	if (waitpid(pid, &status, 0) < 0)
		return 0;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int main(void)
{
	static char buf[8192];
	struct utsname u;
	static const char *filesystems[] = {
		"proc", "sysfs", "devtmpfs", "tmpfs", "devpts", "cgroup2",
		"overlay", "fuse", "virtiofs", "ext4", "mqueue", "bpf",
	};
	static const char *namespaces[] = {
		"cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts",
	};
	static const struct { const char *name; int flag; } unshares[] = {
		{ "mnt", CLONE_NEWNS }, { "uts", CLONE_NEWUTS },
		{ "ipc", CLONE_NEWIPC }, { "pid", CLONE_NEWPID },
		{ "net", CLONE_NEWNET }, { "cgroup", CLONE_NEWCGROUP },
		{ "user", CLONE_NEWUSER }, { "time", CLONE_NEWTIME },
	};
	size_t i;
	int fd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	errno = 0;

	check(uname(&u) == 0, "uname -r: %s", u.release);
	check(mount("proc", "/proc", "proc", 0, NULL) == 0, "mount proc");
	check(mount("sysfs", "/sys", "sysfs", 0, NULL) == 0, "mount sysfs");
	check(mount("devtmpfs", "/dev", "devtmpfs", 0, NULL) == 0, "mount devtmpfs");
	check(mount("tmpfs", "/tmp", "tmpfs", 0, "mode=1777") == 0, "mount tmpfs");

	if (read_file("/proc/filesystems", buf, sizeof(buf)) < 0)
		check(0, "read /proc/filesystems");
	else
		for (i = 0; i < sizeof(filesystems) / sizeof(*filesystems); i++)
			check(has_fs(buf, filesystems[i]), "filesystem %s", filesystems[i]);

	for (i = 0; i < sizeof(namespaces) / sizeof(*namespaces); i++) {
		char path[64];
		struct stat st;

		snprintf(path, sizeof(path), "/proc/self/ns/%s", namespaces[i]);
		check(lstat(path, &st) == 0, "%s present", path);
	}
	for (i = 0; i < sizeof(unshares) / sizeof(*unshares); i++)
		check(try_unshare(unshares[i].flag), "unshare %s namespace", unshares[i].name);

	check(mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, NULL) == 0, "mount cgroup2");
	if (read_file("/sys/fs/cgroup/cgroup.controllers", buf, sizeof(buf)) >= 0) {
		buf[strcspn(buf, "\n")] = '\0';
		printf("     cgroup.controllers: %s\n", buf);
		check(write_file("/sys/fs/cgroup/cgroup.subtree_control",
				 "+cpuset +cpu +io +memory +pids") == 0,
		      "enable cpuset cpu io memory pids controllers");
		check(mkdir("/sys/fs/cgroup/c1", 0755) == 0, "create child cgroup");
		check(access("/sys/fs/cgroup/c1/memory.max", F_OK) == 0 &&
		      access("/sys/fs/cgroup/c1/cpu.max", F_OK) == 0 &&
		      access("/sys/fs/cgroup/c1/pids.max", F_OK) == 0 &&
		      access("/sys/fs/cgroup/c1/cpuset.cpus", F_OK) == 0 &&
		      access("/sys/fs/cgroup/c1/cgroup.freeze", F_OK) == 0,
		      "child cgroup has memory.max cpu.max pids.max cpuset.cpus cgroup.freeze");
	} else {
		check(0, "read cgroup.controllers");
	}

	/* Overlay of tmpfs dirs: what a container rootfs with a writable layer uses. */
	mkdir("/tmp/l", 0755); mkdir("/tmp/u", 0755); mkdir("/tmp/w", 0755); mkdir("/tmp/m", 0755);
	check(mount("overlay", "/tmp/m", "overlay", 0,
		    "lowerdir=/tmp/l,upperdir=/tmp/u,workdir=/tmp/w") == 0, "mount overlay");
	check(mkdir("/dev/pts", 0755) == 0 || errno == EEXIST, "mkdir /dev/pts");
	check(mount("devpts", "/dev/pts", "devpts", 0, "newinstance,ptmxmode=0666") == 0,
	      "mount devpts (new instance)");
	fd = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY);
	check(fd >= 0, "open /dev/pts/ptmx");
	if (fd >= 0)
		close(fd);
	check(mkdir("/dev/mqueue", 0755) == 0 && mount("mqueue", "/dev/mqueue", "mqueue", 0, NULL) == 0,
	      "mount mqueue");
	check(access("/dev/fuse", F_OK) == 0, "/dev/fuse exists");

	fd = socket(AF_VSOCK, SOCK_STREAM, 0);
	check(fd >= 0, "socket(AF_VSOCK)");
	if (fd >= 0)
		close(fd);
	fd = socket(AF_INET6, SOCK_STREAM, 0);
	check(fd >= 0, "socket(AF_INET6)");
	if (fd >= 0)
		close(fd);
	fd = socket(AF_PACKET, SOCK_RAW, 0);
	check(fd >= 0, "socket(AF_PACKET)");
	if (fd >= 0)
		close(fd);

	check(prctl(PR_GET_SECCOMP) == 0, "seccomp available (PR_GET_SECCOMP)");
	check(access("/proc/sys/kernel/seccomp/actions_avail", F_OK) == 0,
	      "seccomp filter (/proc/sys/kernel/seccomp/actions_avail)");
	/* bpf(BPF_PROG_LOAD) with a NULL attr: EFAULT means the syscall exists. */
	check(syscall(SYS_bpf, 5, NULL, 0) < 0 && errno != ENOSYS, "bpf syscall present");
	errno = 0;
	check(syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0) >= 0,
	      "keyctl (session keyring)");
	/* Built without io_uring on purpose (it sidesteps seccomp): ENOSYS expected. */
	check(syscall(SYS_io_uring_setup, 0, NULL) < 0 && errno == ENOSYS,
	      "io_uring absent (ENOSYS)");
	errno = 0;

	if (read_file("/proc/self/status", buf, sizeof(buf)) >= 0) {
		char *s = strstr(buf, "Seccomp:");
		if (s)
			printf("     %.*s\n", (int)strcspn(s, "\n"), s);
	}
	{
		DIR *d = opendir("/sys/bus/virtio/devices");
		struct dirent *e;
		int n = 0;

		printf("     virtio devices:");
		while (d && (e = readdir(d)) != NULL) {
			char path[300], id[32];

			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/sys/bus/virtio/devices/%s/device", e->d_name);
			if (read_file(path, id, sizeof(id)) < 0)
				strcpy(id, "?\n");
			id[strcspn(id, "\n")] = '\0';
			printf(" %s(id %s)", e->d_name, id);
			n++;
		}
		printf("\n");
		if (d)
			closedir(d);
		check(n > 0, "virtio-mmio devices probed (%d)", n);
	}
	check(access("/dev/vda", F_OK) == 0, "virtio-blk /dev/vda");
	if (read_file("/proc/cpuinfo", buf, sizeof(buf)) >= 0) {
		int cpus = 0;
		char *p = buf;

		while ((p = strstr(p, "processor\t")) != NULL) {
			cpus++;
			p++;
		}
		printf("     cpus online: %d (sysconf %ld)\n", cpus, sysconf(_SC_NPROCESSORS_ONLN));
	}

	{
		/* Timers work (nanosleep wakes up, roughly on time) on every CPU. */
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN), c;

		for (c = 0; c < ncpu; c++) {
			struct timespec a, b, req = { 0, 50 * 1000 * 1000 };
			cpu_set_t set;
			long ms;

			CPU_ZERO(&set);
			CPU_SET(c, &set);
			if (sched_setaffinity(0, sizeof(set), &set) != 0) {
				check(0, "pin to cpu %ld", c);
				continue;
			}
			clock_gettime(CLOCK_MONOTONIC, &a);
			nanosleep(&req, NULL);
			clock_gettime(CLOCK_MONOTONIC, &b);
			ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
			check(sched_getcpu() == c && ms >= 50 && ms < 1000,
			      "cpu %ld: on cpu %d, 50 ms nanosleep took %ld ms", c, sched_getcpu(), ms);
		}
	}

	printf("feature-check: %d passed, %d failed\n", passed, failed);
	fflush(stdout);
	sync();
	reboot(RB_AUTOBOOT);
	return 1;
}
