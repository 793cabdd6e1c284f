"""A raw frame blaster: the same prebuilt frames sent again and again through a PACKET_TX_RING, for
live benchmarks that need more packets per second than a socket sender (iperf3) gives.

Linux: net/packet/af_packet.c › tpacket_snd (TPACKET_V2 TX ring, PACKET_QDISC_BYPASS: straight to
the driver's ndo_start_xmit). Python marks the whole ring ready in one numpy store and one send()
has the kernel transmit every slot; no per-frame Python work. Run inside a namespace:

    python -m flowpath.testbed.blaster IFNAME SECONDS FRAMES.bin FRAME_LEN

FRAMES.bin holds frames of FRAME_LEN bytes back to back, cycled through the ring's slots; prints
{"sent": frames handed to the device, "wrong_format": frames the kernel refused} as JSON.
"""

from __future__ import annotations

import json
import mmap
import socket
import struct
import sys
import time

import numpy as np

SOL_PACKET = 263
PACKET_TX_RING, PACKET_VERSION, PACKET_QDISC_BYPASS = 13, 10, 20
TPACKET_V2 = 1
TP_STATUS_AVAILABLE, TP_STATUS_SEND_REQUEST, TP_STATUS_WRONG_FORMAT = 0, 1, 4
TPACKET2_HDR_ALIGNED = 32  # TPACKET_ALIGN(sizeof(struct tpacket2_hdr)): where a TX frame's data starts
FRAME_SIZE, FRAME_NR, BLOCK_SIZE = 2048, 2048, 1 << 16


def ip_csum(b: bytes) -> int:
    """RFC 1071 one's-complement sum, folded and inverted."""
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp4_frame(
    dst_mac: str, src_mac: str, saddr: str, daddr: str, sport: int, dport: int, size: int
) -> bytes:
    """Ethernet / IPv4 / UDP of `size` bytes without FCS, both checksums right (RFC 768, RFC 791)."""
    payload = bytes(size - 14 - 20 - 8)
    src, dst = socket.inet_aton(saddr), socket.inet_aton(daddr)
    ulen = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_UDP, ulen)
    check = ip_csum(pseudo + struct.pack("!HHHH", sport, dport, ulen, 0) + payload) or 0xFFFF
    udp = struct.pack("!HHHH", sport, dport, ulen, check) + payload
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0x4000, 64, socket.IPPROTO_UDP, 0, src, dst)
    iph = iph[:10] + struct.pack("!H", ip_csum(iph)) + iph[12:]
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
    return eth + iph + udp


def blast(ifname: str, frames: list[bytes], seconds: float) -> dict:
    """Send the frames cyclically through a TX ring on ifname for `seconds`."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: this socket receives nothing
    s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
    s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
    s.setsockopt(SOL_PACKET, PACKET_TX_RING,
                 struct.pack("IIII", BLOCK_SIZE, FRAME_SIZE * FRAME_NR // BLOCK_SIZE, FRAME_SIZE, FRAME_NR))  # fmt: skip
    s.bind((ifname, 0))
    ring = mmap.mmap(s.fileno(), FRAME_SIZE * FRAME_NR, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    slots = np.frombuffer(ring, np.uint8).reshape(FRAME_NR, FRAME_SIZE)
    status = np.ndarray((FRAME_NR,), np.uint32, ring, 0, (FRAME_SIZE,))
    tp_len = np.ndarray((FRAME_NR,), np.uint32, ring, 4, (FRAME_SIZE,))
    for i in range(FRAME_NR):
        f = frames[i % len(frames)]
        slots[i, TPACKET2_HDR_ALIGNED : TPACKET2_HDR_ALIGNED + len(f)] = np.frombuffer(f, np.uint8)
        tp_len[i] = len(f)
    sent = wrong = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status[:] = TP_STATUS_SEND_REQUEST
        s.send(b"")  # blocking: returns when every marked slot went to the device
        wrong += int(np.count_nonzero(status == TP_STATUS_WRONG_FORMAT))
        sent += FRAME_NR
    del slots, status, tp_len
    ring.close()
    s.close()
    return {"sent": sent - wrong, "wrong_format": wrong}


def main(argv: list[str]) -> int:
    ifname, seconds, path, frame_len = argv
    data, n = open(path, "rb").read(), int(frame_len)
    frames = [data[i : i + n] for i in range(0, len(data), n)]
    print(json.dumps(blast(ifname, frames, float(seconds))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
