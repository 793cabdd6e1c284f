"""The live steering program: classic BPF computing packet/steer.py's flow hash for PACKET_FANOUT_CBPF.

Linux: net/packet/af_packet.c › packet_rcv_fanout, fanout_demux_bpf, fanout_set_data_cbpf, fanout_add;
net/core/filter.c › bpf_check_classic, bpf_convert_filter; include/uapi/linux/filter.h, bpf_common.h.
`steer_program(nr_cpus)` returns struct sock_filter instructions that compute exactly
`flow_hash_frame(frame) % nr_cpus` (0 for non-IP and cut-short headers) for the frame the port will
deliver; `sock_fprog(prog)` packs them for setsockopt(PACKET_FANOUT_DATA). AfPacketPort joins the group.

Where the program runs, and why its offsets are what they are:
- __netif_receive_skb_core: eth_type_trans has pulled the 14-byte Ethernet header (skb->data is at
  the byte after the ethertype, skb->protocol holds it); if that is 802.1Q/802.1ad, skb_vlan_untag
  moves the outer tag into skb->vlan_tci (where a device that strips tags, or a veth peer sending
  with VLAN offload, has already put it) and data moves past it. Then the ptype_all taps run:
  packet_rcv_fanout -> fanout_demux_bpf runs the program on that skb, before tpacket_rcv pushes the
  MAC header back. So absolute offset 0 is the first byte after the ethertype left in skb->protocol,
  read with SKF_AD_PROTOCOL (host order); `ld #len` (skb->len) counts from offset 0.
- The port delivers Ethernet header + the stripped tag put back (ports/tpacket.py) + those bytes. A
  tag still in the data starts at 0 (TCI at 0, the next ethertype at 2); steer.py skips two tags,
  and SKF_AD_VLAN_TAG_PRESENT says whether the kernel has already taken the first one.
- Outgoing frames (dev_queue_xmit_nit) reach taps with data at the MAC header: the group is made
  with PACKET_FANOUT_FLAG_IGNORE_OUTGOING (Linux 6.2), so the program never sees one. The fanout's
  own hook replaces the socket's, so the socket's PACKET_IGNORE_OUTGOING no longer applies.
- A load past the data's end ends a classic program with 0 (bpf_skb_load_helper_*). steer.py still
  hashes (on the addresses) when an L4 header is cut short, so every L4 load is preceded by a length check
  against skb->len; cut-short L2/L3 headers steer to 0 in both.
- Arithmetic: classic ALU operations are 32-bit (bpf_convert_filter emits BPF_ALU, not BPF_ALU64),
  so BPF_MUL wraps mod 2^32 as flow_mix's `& 0xFFFFFFFF` does; BPF_RSH is logical and BPF_MOD
  unsigned. fanout_demux_bpf then takes the result % num_members, the identity once all nr_cpus
  sockets have joined.
- The socket index is the join order: __fanout_link appends to f->arr. __fanout_unlink moves the
  last member into a leaver's place, so a member that leaves reorders the group.
- IP-in-IP (steer.py hashes the inner header, one level deep): classic BPF has no backward jump, so
  the L3 blocks are laid out twice, outer then inner; the L4 blocks (ports, echo id, ESP SPI) serve
  both. About 250 instructions in all.
Jumps are to labels, resolved to jt/jf by `Asm.assemble`; classic jumps go forward only, by at most
255 instructions (jt/jf are u8: returns are placed near the jumps to them), and bpf_check_classic
rejects a read of M[] not written on every path (tests/ports/test_fanout_program.py checks both).
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass, field

from flowpath.packet.layout import (
    ETH_P_8021AD,
    ETH_P_8021Q,
    ETH_P_IP,
    ETH_P_IPV6,
    ICMP_ECHO,
    ICMP_ECHOREPLY,
    ICMPH,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    IP6H,
    IP_MF,
    IP_OFFSET,
    IPH,
    IPPROTO_ESP,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_IPIP,
    IPPROTO_IPV6,
    UDPH,
    VLAN,
)
from flowpath.packet.steer import _PORTS_PROTOS, FLOW_MIX_MUL  # one list of port-carrying protocols

# include/uapi/linux/bpf_common.h: class, size, mode, op, source
BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_RET, BPF_MISC = range(8)
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM, BPF_LEN, BPF_MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH = range(0x00, 0x80, 0x10)
BPF_MOD, BPF_XOR = 0x90, 0xA0
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x20, 0x30, 0x40
BPF_K, BPF_X, BPF_A = 0x00, 0x08, 0x10
BPF_TAX, BPF_TXA = 0x00, 0x80
BPF_MEMWORDS = 16
BPF_MAXINSNS = 4096
# include/uapi/linux/filter.h: ancillary data, loaded at negative absolute offsets
SKF_AD_OFF = -0x1000
SKF_AD_PROTOCOL = 0
SKF_AD_VLAN_TAG_PRESENT = 48
SOCK_FILTER = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k
PACKET_FANOUT_MAX = 256  # the legacy group size, what the int form of PACKET_FANOUT allows

_SIZES = {4: BPF_W, 2: BPF_H, 1: BPF_B}
_ECHO = {ETH_P_IP: (ICMP_ECHOREPLY, ICMP_ECHO), ETH_P_IPV6: (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY)}

# scratch words M[]
M_SD = 0  # fold(saddr) ^ fold(daddr)
M_PROTO = 1  # the L4 protocol (nexthdr)
M_L4 = 2  # the L4 header's offset from skb->data
M_FRAG = 3  # IPv4 frag_off & (MF | offset)
M_T = 4  # a temporary
M_W = 5  # the first of the eight IPv6 address words (5..12)


@dataclass
class Asm:
    """A classic BPF assembler: one method per instruction form, in bpf_asm's vocabulary, and jump
    targets given as label names (None: the next instruction). No Linux counterpart (tools/bpf/bpf_asm
    reads text; this builds the same instructions from Python)."""

    insns: list[tuple[int, str | None, str | None, int]] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)

    def label(self, name: str) -> None:
        if name in self.labels:
            raise ValueError(f"label {name!r} defined twice")
        self.labels[name] = len(self.insns)

    def _op(self, code: int, k: int = 0) -> None:
        self.insns.append((code, None, None, k & 0xFFFFFFFF))

    def _jmp(self, op: int, k: int, jt: str | None, jf: str | None, src: int = BPF_K) -> None:
        self.insns.append((BPF_JMP | op | src, jt, jf, k & 0xFFFFFFFF))

    # loads into A: ld [k], ld [x + k], ld #len, ld M[i], ld #k, and the ancillary words
    def ld(self, k: int, size: int = 4) -> None:
        self._op(BPF_LD | _SIZES[size] | BPF_ABS, k)

    def ld_ind(self, k: int, size: int = 4) -> None:
        self._op(BPF_LD | _SIZES[size] | BPF_IND, k)

    def ld_len(self) -> None:
        self._op(BPF_LD | BPF_W | BPF_LEN)

    def ld_mem(self, i: int) -> None:
        self._op(BPF_LD | BPF_MEM, i)

    def ld_imm(self, k: int) -> None:
        self._op(BPF_LD | BPF_IMM, k)

    def ld_anc(self, what: int) -> None:
        self._op(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + what)

    # X: ldx M[i], ldx #k; moves; stores
    def ldx_mem(self, i: int) -> None:
        self._op(BPF_LDX | BPF_MEM, i)

    def ldx_imm(self, k: int) -> None:
        self._op(BPF_LDX | BPF_IMM, k)

    def tax(self) -> None:
        self._op(BPF_MISC | BPF_TAX)

    def txa(self) -> None:
        self._op(BPF_MISC | BPF_TXA)

    def st(self, i: int) -> None:
        self._op(BPF_ST, i)

    # ALU on A with #k or with X
    def alu(self, op: int, k: int) -> None:
        self._op(BPF_ALU | op | BPF_K, k)

    def alu_x(self, op: int) -> None:
        self._op(BPF_ALU | op | BPF_X)

    # jumps; jlt is jge with the targets swapped, as bpf_asm writes it
    def jeq(self, k: int, jt: str | None, jf: str | None = None) -> None:
        self._jmp(BPF_JEQ, k, jt, jf)

    def jge(self, k: int, jt: str | None, jf: str | None = None) -> None:
        self._jmp(BPF_JGE, k, jt, jf)

    def jlt(self, k: int, jt: str) -> None:
        self._jmp(BPF_JGE, k, None, jt)

    def jge_x(self, jt: str | None, jf: str | None) -> None:
        self._jmp(BPF_JGE, 0, jt, jf, BPF_X)

    def jset(self, k: int, jt: str | None, jf: str | None = None) -> None:
        self._jmp(BPF_JSET, k, jt, jf)

    def ja(self, target: str) -> None:
        self.insns.append((BPF_JMP | BPF_JA, target, None, 0))

    def ret_a(self) -> None:
        self._op(BPF_RET | BPF_A)

    def ret(self, k: int) -> None:
        self._op(BPF_RET | BPF_K, k)

    def assemble(self) -> list[tuple[int, int, int, int]]:
        """(code, jt, jf, k) per instruction, labels resolved to forward offsets."""
        out = []
        for pc, (code, jt, jf, k) in enumerate(self.insns):
            if code == BPF_JMP | BPF_JA:
                out.append((code, 0, 0, self._offset(pc, jt, 1 << 32)))
            elif code & 0x07 == BPF_JMP:
                out.append((code, self._offset(pc, jt, 256), self._offset(pc, jf, 256), k))
            else:
                out.append((code, 0, 0, k))
        if not out or out[-1][0] & 0x07 != BPF_RET or len(out) > BPF_MAXINSNS:
            raise ValueError("a classic BPF program ends with a return and has at most 4096 instructions")
        return out

    def _offset(self, pc: int, target: str | None, limit: int) -> int:
        if target is None:
            return 0
        if target not in self.labels:
            raise ValueError(f"jump to undefined label {target!r}")
        off = self.labels[target] - pc - 1
        if not 0 <= off < limit:
            raise ValueError(f"jump from {pc} to {target!r} is {off}: classic jumps go forward, < {limit}")
        return off


def _need(a: Asm, n: int, short: str) -> None:
    """Go to `short` unless n bytes from offset X are in the data (X may lie past the end: steer.py
    checks no ihl, so an inner header or L4 header may start beyond the frame)."""
    a.ld_len()
    a.jge_x(None, short)
    a.alu_x(BPF_SUB)
    a.jlt(n, short)


def _need_l4(a: Asm, n: int, short: str) -> None:
    """_need for the L4 header; X = its offset afterwards."""
    a.ldx_mem(M_L4)
    _need(a, n, short)


def _xor_words(a: Asm, offsets: tuple[int, ...], tmp: int) -> None:
    """A = the XOR of the 32-bit words at [x + off]; X is lost (the words go through M[tmp...])."""
    for i, off in enumerate(offsets):
        a.ld_ind(off)
        a.st(tmp + i)
    a.ld_mem(tmp)
    for i in range(1, len(offsets)):
        a.ldx_mem(tmp + i)
        a.alu_x(BPF_XOR)


def _vlan(a: Asm) -> None:
    """Skip the tags steer.py skips (two in all, the one the kernel stripped included); leave the
    ethertype in A and the L3 offset in X."""
    tags = (ETH_P_8021Q, ETH_P_8021AD)
    a.ld_anc(SKF_AD_PROTOCOL)
    a.ldx_imm(0)
    a.jeq(tags[0], "tag1")
    a.jeq(tags[1], "tag1", "l3")
    a.label("tag1")  # a tag in the data, at 0
    a.ld_len()
    a.jlt(VLAN.size, "zero_l2")  # steer.py leaves a cut-short tag unskipped: not IP
    a.ld(VLAN.h_vlan_encapsulated_proto, 2)
    a.ldx_imm(VLAN.size)
    a.jeq(tags[0], "tag2")
    a.jeq(tags[1], "tag2", "l3")
    a.label("tag2")  # a second tag in the data: the third in all if the kernel stripped one
    a.ld_anc(SKF_AD_VLAN_TAG_PRESENT)
    a.jeq(0, None, "zero_l2")
    a.ld_len()
    a.jlt(2 * VLAN.size, "zero_l2")
    a.ld(VLAN.size + VLAN.h_vlan_encapsulated_proto, 2)
    a.ldx_imm(2 * VLAN.size)
    a.label("l3")
    a.jeq(ETH_P_IP, "ipv4_0")
    a.jeq(ETH_P_IPV6, "ipv6_0", "zero_l2")
    a.label("zero_l2")  # a return near the jumps to it: jt/jf reach 255 instructions only
    a.ret(0)


def _ipv4(a: Asm, level: int) -> None:
    """X = the L3 offset: M_SD, M_PROTO, M_L4; a fragment to "no_ports", then _tunnel or L4."""
    a.label(f"ipv4_{level}")
    _need(a, IPH.size, "zero")
    a.ld_ind(IPH.protocol, 1)
    a.st(M_PROTO)
    a.ld_ind(IPH.version_ihl, 1)
    a.alu(BPF_AND, 0x0F)
    a.alu(BPF_LSH, 2)
    a.alu_x(BPF_ADD)
    a.st(M_L4)
    a.ld_ind(IPH.frag_off, 2)
    a.alu(BPF_AND, IP_MF | IP_OFFSET)
    a.st(M_FRAG)
    _xor_words(a, (IPH.saddr, IPH.daddr), M_T)
    a.st(M_SD)
    a.ld_mem(M_FRAG)
    a.jeq(0, None, "no_ports")  # fragments carry no ports (nor an inner header)
    if level == 0:
        _tunnel(a, "l4_v4")
    else:
        a.ja("l4_v4")


def _ipv6(a: Asm, level: int) -> None:
    """X = the L3 offset: M_SD (all eight address words), M_PROTO, M_L4 (no extension headers)."""
    a.label(f"ipv6_{level}")
    _need(a, IP6H.size, "zero")
    a.ld_ind(IP6H.nexthdr, 1)
    a.st(M_PROTO)
    a.txa()
    a.alu(BPF_ADD, IP6H.size)
    a.st(M_L4)
    _xor_words(a, tuple(range(IP6H.saddr, IP6H.size, 4)), M_W)
    a.st(M_SD)
    if level == 0:
        _tunnel(a, "l4_v6")
    else:
        a.ja("l4_v6")


def _tunnel(a: Asm, l4: str) -> None:
    """IPIP and IPv6-in-IP: the inner header (one level), at the outer's L4 offset; else to `l4`."""
    a.ldx_mem(M_L4)
    a.ld_mem(M_PROTO)
    a.jeq(IPPROTO_IPIP, "ipv4_1")
    a.jeq(IPPROTO_IPV6, "ipv6_1")
    a.ja(l4)


def _l4(a: Asm, family: int) -> None:
    """The port word (sport ^ dport, an echo id) into A, then to "mixp"; none to "no_ports"; ESP to
    "mix" with its SPI.
    Echo types are the family's; ICMP and ICMPv6 are both looked at, as steer.py does."""
    v = "4" if family == ETH_P_IP else "6"
    a.label("l4_v" + v)
    a.ld_mem(M_PROTO)
    a.jeq(IPPROTO_ESP, "esp" + v)
    for proto in _PORTS_PROTOS:
        a.jeq(proto, "ports" + v)
    a.jeq(IPPROTO_ICMP, "icmp" + v)
    a.jeq(IPPROTO_ICMPV6, "icmp" + v, "no_ports")
    a.label("ports" + v)
    _need_l4(a, 4, "no_ports")
    a.ld_ind(UDPH.source, 2)
    a.st(M_T)
    a.ld_ind(UDPH.dest, 2)
    a.ldx_mem(M_T)
    a.alu_x(BPF_XOR)
    a.ja("mixp")
    a.label("icmp" + v)
    _need_l4(a, ICMPH.sequence, "no_ports")
    a.ld_ind(ICMPH.type, 1)
    echo = _ECHO[family]
    a.jeq(echo[0], "echo" + v)
    a.jeq(echo[1], "echo" + v, "no_ports")
    a.label("echo" + v)
    a.ld_ind(ICMPH.id, 2)
    a.ja("mixp")
    a.label("esp" + v)
    _need_l4(a, 4, "zero")
    a.ld_ind(0)
    a.ja("mix")


def steer_program(nr_cpus: int) -> list[tuple[int, int, int, int]]:
    """The instructions (code, jt, jf, k) returning flow_hash_frame(frame) % nr_cpus, 0 where it is -1.
    Classic BPF has no backward jump, so the L3 blocks are laid out twice, outer (level 0) then inner
    (level 1, reached only from an outer IPIP or IPv6-in-IP header); the L4 blocks serve both."""
    if not 1 <= nr_cpus <= PACKET_FANOUT_MAX:
        raise ValueError(f"nr_cpus {nr_cpus}: a fanout group has 1..{PACKET_FANOUT_MAX} members")
    a = Asm()
    _vlan(a)
    _ipv4(a, 0)
    _ipv6(a, 0)
    _ipv4(a, 1)
    _l4(a, ETH_P_IP)
    _ipv6(a, 1)
    _l4(a, ETH_P_IPV6)
    a.label("no_ports")  # no port word: the folded addresses stand in for it
    a.ld_mem(M_SD)
    a.label("mixp")  # A = the port word or the addresses: h = A ^ (l4proto << 16)
    a.st(M_T)
    a.ld_mem(M_PROTO)
    a.alu(BPF_LSH, 16)
    a.ldx_mem(M_T)
    a.alu_x(BPF_XOR)
    a.label("mix")  # steer.py › flow_mix, then % nr_cpus
    a.alu(BPF_MUL, FLOW_MIX_MUL)
    a.st(M_T)
    a.alu(BPF_RSH, 16)
    a.ldx_mem(M_T)
    a.alu_x(BPF_XOR)
    a.alu(BPF_MOD, nr_cpus)
    a.ret_a()
    a.label("zero")
    a.ret(0)
    return a.assemble()


def sock_filter_bytes(prog: list[tuple[int, int, int, int]]) -> bytes:
    """The program as an array of struct sock_filter."""
    return b"".join(SOCK_FILTER.pack(*insn) for insn in prog)


def sock_fprog(prog: list[tuple[int, int, int, int]]) -> tuple[bytes, ctypes.Array]:
    """struct sock_fprog {unsigned short len; struct sock_filter *filter;} for setsockopt, and the
    buffer it points to (keep it alive until setsockopt returns: the kernel copies the program)."""
    buf = ctypes.create_string_buffer(sock_filter_bytes(prog))
    return struct.pack("@HP", len(prog), ctypes.addressof(buf)), buf
