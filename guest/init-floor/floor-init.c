/*
 * clearbox "boot floor" init: the least a guest /init can do.
 *
 * It writes one marker line to the console (fd 1 is /dev/console, opened by
 * the kernel for PID 1) and powers the VM off at once. The guest kernel runs
 * with `reboot=t` and QEMU with `-no-reboot`, so the reboot request makes
 * QEMU exit. Timing a boot of this init gives the fixed cost of
 * QEMU + kernel that every clearbox container start pays; the benchmarks
 * compare the real agent against it.
 */
#include <sys/reboot.h>
#include <unistd.h>

int main(void)
{
	static const char marker[] = "clearbox-floor: init reached\n";

	/* Best effort: the marker is informational, the poweroff is the point. */
	(void)!write(1, marker, sizeof(marker) - 1);
	reboot(RB_AUTOBOOT);
	/* Only reached if reboot(2) failed (e.g. run outside a VM as non-PID 1). */
	return 1;
}
