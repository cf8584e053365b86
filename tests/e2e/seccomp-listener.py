#!/usr/bin/env python3
"""A seccomp notify listener (runtime-spec `linux.seccomp.listenerPath`).

usage: seccomp-listener.py SOCKET

Accepts one connection, receives the container's state JSON and the seccomp notify fd
(SCM_RIGHTS), prints what it got on one line, and closes the fd: the notifying system calls of
the container then fail with ENOSYS, which shows the fd was the real one.
"""
import json
import os
import socket
import sys

path = sys.argv[1]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(1)
srv.settimeout(60)
conn, _ = srv.accept()
msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 4)
state = json.loads(msg.decode() or "{}")
print(f"fds={len(fds)} names={','.join(state.get('fds', []))} pid={state.get('pid', 0)} "
      f"status={state.get('state', {}).get('status')}", flush=True)
for fd in fds:
    os.close(fd)
