#!/usr/bin/env python3
"""Run a command under a fresh pseudo-terminal and relay its output.

usage: pty-run.py [--input TEXT] [--timeout SECS] -- ARGV...

Writes TEXT (with \\n escapes expanded) to the terminal after start, collects
everything the command prints until it exits and the terminal is drained,
prints it, and exits with the command's exit code (128+N if killed by
signal N, 124 on timeout). Unlike `script`, stdin EOF is never forwarded as
^D, so short-lived commands are not disturbed.
"""
import os
import pty
import select
import signal
import sys
import time


def main():
    args = sys.argv[1:]
    text = None
    timeout = 60.0
    while args and args[0] != "--":
        if args[0] == "--input":
            text = args[1].encode().decode("unicode_escape").encode()
            args = args[2:]
        elif args[0] == "--timeout":
            timeout = float(args[1])
            args = args[2:]
        else:
            sys.exit("pty-run: unknown option " + args[0])
    if not args or len(args) < 2:
        sys.exit("usage: pty-run.py [--input TEXT] [--timeout SECS] -- ARGV...")
    argv = args[1:]
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execvp(argv[0], argv)
        except OSError as e:
            os.write(2, ("pty-run: exec %s: %s\n" % (argv[0], e)).encode())
            os._exit(127)
    if text:
        os.write(fd, text)
    out = bytearray()
    deadline = time.monotonic() + timeout
    status = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            sys.stdout.write(out.decode(errors="replace"))
            sys.exit(124)
        r, _, _ = select.select([fd], [], [], min(left, 0.2))
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: all slave ends closed
                data = b""
            if data:
                out += data
                continue
            break
        if status is None:
            wpid, st = os.waitpid(pid, os.WNOHANG)
            if wpid:
                status = st
                # child is gone; drain what is still buffered, then stop
                deadline = min(deadline, time.monotonic() + 1.0)
    if status is None:
        _, status = os.waitpid(pid, 0)
    sys.stdout.write(out.decode(errors="replace"))
    sys.stdout.flush()
    sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status)
             else 128 + os.WTERMSIG(status))


if __name__ == "__main__":
    main()
