#!/usr/bin/env python3
"""Send an 802.1Q-tagged ARP request on IFACE and wait for a tagged ARP reply.

usage: vlan_arp_probe.py IFACE VID SENDER_IP TARGET_IP [TIMEOUT]
Prints "reply vid=N from MAC" and exits 0 when a reply for TARGET_IP arrives tagged with VID,
exits 1 otherwise. The kernel strips VLAN tags on receive into packet metadata, so the tag is
read from PACKET_AUXDATA (works without the 8021q module).
"""
import socket
import struct
import sys
import time

SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 1 << 4


def main():
    iface, vid, sip, tip = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 3.0
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((iface, 0))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    src = bytes([0x02, 0x00, 0x00, 0xAA, vid >> 8, vid & 0xFF])
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, src, socket.inet_aton(sip),
                      b"\x00" * 6, socket.inet_aton(tip))
    frame = b"\xff" * 6 + src + struct.pack("!HH", 0x8100, vid) + b"\x08\x06" + arp
    s.send(frame.ljust(64, b"\x00"))
    deadline = time.time() + timeout
    while time.time() < deadline:
        s.settimeout(max(0.01, deadline - time.time()))
        try:
            data, anc, _, _ = s.recvmsg(2048, socket.CMSG_SPACE(64))
        except socket.timeout:
            break
        tci = None
        for level, typ, cdata in anc:
            if level == SOL_PACKET and typ == PACKET_AUXDATA:
                status, _, _, _, _, vlan_tci = struct.unpack("IIIHHH", cdata[:18])
                if status & TP_STATUS_VLAN_VALID:
                    tci = vlan_tci
        if len(data) < 42 or data[12:14] != b"\x08\x06":
            continue
        op = struct.unpack("!H", data[20:22])[0]
        if op == 2 and data[28:32] == socket.inet_aton(tip) and tci is not None \
                and tci & 0xFFF == vid:
            print("reply vid=%d from %s" % (vid, data[22:28].hex(":")))
            return 0
    print("no tagged reply for %s on vid %d" % (tip, vid))
    return 1


if __name__ == "__main__":
    sys.exit(main())
