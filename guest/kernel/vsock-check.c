/*
 * vsock smoke test, run as /init by guest/kernel/vsock-check.sh: connect to
 * the host (CID 2) on port 1234 over virtio-vsock, send "ping", expect "pong",
 * print the result and power off.
 */
#include <stdio.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

int main(void)
{
	struct sockaddr_vm addr = {
		.svm_family = AF_VSOCK,
		.svm_cid = VMADDR_CID_HOST,
		.svm_port = 1234,
	};
	char buf[16] = { 0 };
	int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
	int ok = fd >= 0 &&
		 connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
		 write(fd, "ping", 4) == 4 &&
		 read(fd, buf, sizeof(buf) - 1) == 4 && strcmp(buf, "pong") == 0;

	if (!ok)
		perror("vsock-check");
	printf("vsock-check: %s\n", ok ? "pong received" : "FAILED");
	fflush(stdout);
	reboot(RB_AUTOBOOT);
	return 1;
}
