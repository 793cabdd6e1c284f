"""One end of the live tests' two-way UDP probe (topology.UdpProbe), run inside a namespace.

    udp_probe.py server|client ADDR PORT END_MONOTONIC INTERVAL_S

The client connects to ADDR:PORT and sends a datagram every INTERVAL_S; the server binds ADDR:PORT,
waits for the client's first datagram and from then on sends every INTERVAL_S to where it came from.
Both stop at END_MONOTONIC (CLOCK_MONOTONIC, shared by all namespaces) and print
{"sent": N, "recv": [receive times]} as JSON.
"""

import json
import select
import socket
import sys
import time


def main(role: str, addr: str, port: str, end: str, interval: str) -> None:
    end_t, interval_s = float(end), float(interval)
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setblocking(False)
    peer = None
    if role == "server":
        s.bind((addr, int(port)))
    else:
        peer = (addr, int(port))
        s.connect(peer)
    recv, sent, next_tx = [], 0, time.monotonic()
    while (now := time.monotonic()) < end_t:
        if peer is not None and now >= next_tx:
            try:
                s.sendto(sent.to_bytes(8, "big"), peer)
                sent += 1
            except OSError:  # e.g. an ICMP error queued on the socket: keep sending
                pass
            next_tx += interval_s
        wait = max(0.0, min(next_tx, end_t) - time.monotonic()) if peer is not None else end_t - now
        if select.select([s], [], [], wait)[0]:
            try:
                _, src = s.recvfrom(2048)
            except OSError:
                continue
            recv.append(time.monotonic())
            if peer is None:
                peer = src
                next_tx = time.monotonic()
    print(json.dumps({"sent": sent, "recv": recv}))


if __name__ == "__main__":
    main(*sys.argv[1:])
