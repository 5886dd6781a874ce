"""100 idle socket clients become ready at once (xenstored stopped while they
send), so that wait_fds() gets a full batch; every reply must be right."""
import os, signal, socket, struct, subprocess, time
N = 100
path = next(p for p in ("/run/xenstored/socket", "/var/run/xenstored/socket") if os.path.exists(p))
pid = int(subprocess.check_output(["pidof", "xenstored"]).split()[0])
subprocess.check_call(["xenstore-write", "/pyxen-burst/v", "burst-ok"])
socks = []
for _ in range(N):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(path); socks.append(s)
time.sleep(2)                      # all accepted, idle
msg = b"/pyxen-burst/v\0"
for rnd in range(3):
    os.kill(pid, signal.SIGSTOP)
    for i, s in enumerate(socks):
        s.sendall(struct.pack("<IIII", 2, i, 0, len(msg)) + msg)
    time.sleep(0.5)
    os.kill(pid, signal.SIGCONT)
    ok = 0
    for i, s in enumerate(socks):
        hdr = b""
        while len(hdr) < 16:
            hdr += s.recv(16 - len(hdr))
        typ, rid, tx, ln = struct.unpack("<IIII", hdr)
        body = b""
        while len(body) < ln:
            body += s.recv(ln - len(body))
        ok += (typ == 2 and rid == i and body == b"burst-ok")
    print(f"round {rnd}: {ok} of {N} replies right")
subprocess.check_call(["xenstore-rm", "/pyxen-burst"])
print("xenstored alive:", subprocess.check_output(["pidof", "xenstored"]).decode().strip())
