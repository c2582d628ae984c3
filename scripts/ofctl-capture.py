#!/usr/bin/env python3
# Capture what ovs-ofctl sends to an OpenFlow switch (the seeds in fuzz/seeds/openflow/):
# python3 scripts/ofctl-capture.py CMDS, one ovs-ofctl command per line, arguments separated by
# tabs, SOCK standing for the socket. Prints each command and the messages received, in hex.
import socket, os, sys, struct, threading, subprocess
path = os.environ.get("OFCAP_SOCK", "/tmp/ofcap.sock")
def serve(ver, out):
    if os.path.exists(path): os.unlink(path)
    s = socket.socket(socket.AF_UNIX); s.bind(path); s.listen(1)
    def run():
        c, _ = s.accept(); c.settimeout(2)
        c.sendall(bytes.fromhex("04000010000000000001000800000012"))
        buf = b""
        try:
            while True:
                d = c.recv(65536)
                if not d: break
                buf += d
                while len(buf) >= 8:
                    v, t, l, x = struct.unpack("!BBHI", buf[:8])
                    if len(buf) < l: break
                    m, buf = buf[:l], buf[l:]
                    out.append(m.hex())
                    if (v, t) in ((4, 20), (1, 18)):
                        c.sendall(struct.pack("!BBHI", v, t + 1, 8, x))
                    elif (v, t) == (4, 18):
                        typ = struct.unpack("!H", m[8:10])[0]
                        c.sendall(struct.pack("!BBHIHH4x", v, 19, 16, x, typ, 0))
                    elif (v, t) == (1, 16):
                        typ = struct.unpack("!H", m[8:10])[0]
                        c.sendall(struct.pack("!BBHIHH", v, 17, 12, x, typ, 0))
                    elif t == 5:
                        c.sendall(struct.pack("!BBHIQIBBHII", v, 6, 32, x, 1, 0, 255, 0, 0, 0, 0))
        except Exception as e:
            pass
        c.close()
    th = threading.Thread(target=run); th.start(); return s, th
cmds = [l.strip() for l in open(sys.argv[1]) if l.strip()]
for cmd in cmds:
    out = []
    s, th = serve(None, out)
    args = ["ovs-ofctl"] + cmd.split("\t")
    args = [a.replace("SOCK", "unix:" + path) for a in args]
    subprocess.run(args, capture_output=True, timeout=10)
    th.join(); s.close()
    print("#", " ".join(args[1:]))
    for m in out: print(m)
