"""The commands of the control socket, each answered as the Linux tool prints it.

No Linux counterpart as a whole; each command names the tool it speaks for: `conntrack -L`
(conntrack-tools), `nft list ruleset` / `nft -f` (nftables), `ip [-s] xfrm`, `ip xfrm monitor`,
`ip route`, `ip neigh` (iproute2), and flowpath's own `stats` and `flowtable list`.

A request is checked like a configuration line: its fields, then its words, each against what the
command takes; anything else is exit code 2 with a message naming the word. The server opens no file
for a client: `nft -f FILE` carries the file's text, read by the client. Commands run between two
polls on the gateway (`gw`: worker, ports, port_counters(), net_path, rules_path, started_ns) and change the datapath
only through the Worker (nft_replace, xfrm_modify).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from typing import Callable

from flowpath.config.ipargs import matches
from flowpath.config.nft import ruleset_from_json, ruleset_from_text
from flowpath.ctl.server import MAX_FILE_BYTES, reply
from flowpath.errors import ConfigError, UsageError
from flowpath.net.fib import RT_TABLE_MAIN, TABLE_NAMES
from flowpath.net.show import show_addr, show_link, show_neigh, show_route
from flowpath.netfilter.conntrack import ct_seq_show
from flowpath.netfilter.constants import NFPROTO_IPV4, NFPROTO_IPV6
from flowpath.xfrm.config import SHOW_VERBS, xfrm_config_line, xfrm_select, xfrm_verb
from flowpath.xfrm.listing import xfrm_monitor, xfrm_policy_print, xfrm_state_print

MAX_ARGS = 512
CTL_PATH = "<ctl>"  # the "file" of a request's words in file:line:col errors


class CtlUsage(Exception):
    """A request or command line the server does not take: exit code 2, the message on stderr."""


def ctl_dispatch(gw, request: object) -> dict:
    """Answer one request {"argv": [words], "file": {"name", "text"}?}: a reply dict (server.reply)."""
    try:
        argv, file = _request(request)
        name = argv[0]
        if name not in COMMANDS:
            raise CtlUsage(f'unknown command "{name}" (one of: {", ".join(COMMANDS)})')
        if file is not None and name != "nft":
            raise CtlUsage(f'"{name}" takes no file')
        # several workers: none runs while a command reads or changes them (no gateway: a test of the checks)
        with gw.worker.stopped() if gw is not None else contextlib.nullcontext():
            return COMMANDS[name](gw, argv[1:], file)
    except CtlUsage as e:
        return reply(2, err=f"flowpath ctl: {e}\n")
    except ConfigError as e:
        return reply(2, err=f"{e}\n")
    except UsageError as e:
        return reply(2, err=f"flowpath ctl: error: {e}\n")


def _request(request: object) -> tuple[list[str], dict | None]:
    if not isinstance(request, dict):
        raise CtlUsage("a request is a JSON object")
    extra = set(request) - {"argv", "file"}
    if extra:
        raise CtlUsage(f'unknown request field "{sorted(extra)[0]}" (argv, file)')
    argv = request.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise CtlUsage('"argv" must be a non-empty list of strings')
    if len(argv) > MAX_ARGS:
        raise CtlUsage(f"more than {MAX_ARGS} words")
    file = request.get("file")
    if file is not None:
        if not isinstance(file, dict) or set(file) != {"name", "text"}:
            raise CtlUsage('"file" must be {"name": ..., "text": ...}')
        if not isinstance(file["name"], str) or not isinstance(file["text"], str):
            raise CtlUsage('"file" name and text must be strings')
        if len(file["text"]) > MAX_FILE_BYTES:
            raise CtlUsage(f"{file['name']}: larger than {MAX_FILE_BYTES >> 20} MiB")
    return argv, file


def _options(args: list[str], known: dict[str, str], usage: str) -> tuple[dict[str, bool], list[str]]:
    """Split flags (known: spelling -> name) from the other words; an unknown flag is an error."""
    flags = dict.fromkeys(known.values(), False)
    words = []
    for a in args:
        if a in known:
            flags[known[a]] = True
        elif a.startswith("-"):
            raise CtlUsage(f'unknown option "{a}" ({usage})')
        else:
            words.append(a)
    return flags, words


# ---- stats ---------------------------------------------------------------------------------------
def stats_payload(gw) -> dict:
    """The counters `stats --json` sends: the Worker's (Stats.as_dict), each port's own, the
    ACQUIREs raised per CPU and the larval states pending (with xfrm), the uptime and the
    CLOCK_MONOTONIC time they were read at (`top` divides by its differences)."""
    w = gw.worker
    mono = time.monotonic_ns()
    xfrm, acq = w.xfrm, {}
    if xfrm is not None:
        acq = {"xfrm_acquire": {str(c): n for c, n in sorted(xfrm.acquire_count.items())},
               "xfrm_acquire_pending": len(xfrm.acq)}  # fmt: skip
    return {
        "stats": w.stats.as_dict(w.ifname),
        "ports": gw.port_counters(),
        "conntrack_entries": len(w.conntrack),
        "flowtables": {
            name: sum(len(c.flowtables[name][0]) for c in gw.cpus) for name in gw.cpus[0].flowtables
        },
        **acq,
        "uptime_ns": mono - gw.started_ns,
        **({"phases": gw.phases.as_dict()} if getattr(gw, "phases", None) is not None else {}),
        "mono_ns": mono,
        "net": str(gw.net_path),
        "rules": None if gw.rules_path is None else str(gw.rules_path),
    }


def format_stats(p: dict) -> str:
    """`stats` as text: the totals, then a line per interface (with its port's counters), then drops."""
    s = p["stats"]
    up = p["uptime_ns"] // 1_000_000_000
    lines = [
        f"uptime {up // 86400}d {up % 86400 // 3600:02}:{up % 3600 // 60:02}:{up % 60:02}   net {p['net']}   "
        f"rules {p['rules'] or '-'}",
        f"packets: rx {s['rx_packets']}  forwarded {s['forwarded_packets']}  dropped {s['dropped_packets']}  "
        f"local {s['local_packets']}  held {s['held_packets']}  generated {s['generated_packets']}  "
        f"tx {s['tx_packets']}",
        f"paths: fast {s['fastpath_packets']}  slow {s['slowpath_packets']}  tx bursts {s['tx_bursts']}",
        f"flows: offloaded {s['flows_offloaded']}  expired {s['flows_expired']}  in flowtables "
        + (", ".join(f"{k} {v}" for k, v in p["flowtables"].items()) or "-")
        + f"  conntrack entries {p['conntrack_entries']}",
    ]
    if p.get("xfrm_acquire") or p.get("xfrm_acquire_pending"):
        per_cpu = "  ".join(f"cpu{cpu} {n}" for cpu, n in p["xfrm_acquire"].items()) or "-"
        lines.append(f"xfrm acquires: {per_cpu}  pending {p['xfrm_acquire_pending']}")
    lines.append("")
    extra = sorted({k for c in p["ports"].values() for k in c})
    head = ["interface", "rx packets", "rx bytes", "tx packets", "tx bytes", *extra]
    rows = []
    for name in sorted(set(s["interfaces"]) | set(p["ports"])):
        c, pc = s["interfaces"].get(name, {}), p["ports"].get(name, {})
        rows.append([name] + [str(c.get(k, 0)) for k in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")]
                    + [str(pc.get(k, "-")) for k in extra])  # fmt: skip
    lines += _table(head, rows)
    for title, counts in (("drops", s["drops"]), ("generated, not sent", s["generated_dropped"])):
        if counts:
            lines += ["", f"{title}:"] + _table(
                ["reason", "packets"], [[k, str(v)] for k, v in counts.items()]
            )
    return "\n".join(lines) + "\n"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    """Columns two spaces apart: the first left-aligned, numbers right-aligned."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return [
        "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in [head, *rows]
    ]


def cmd_stats(gw, args: list[str], file) -> dict:
    flags, words = _options(args, {"--json": "json", "-j": "json"}, "stats [--json]")
    if words:
        raise CtlUsage(f'stats: unexpected "{words[0]}" (stats [--json])')
    p = stats_payload(gw)
    return reply(0, json.dumps(p, indent=2) + "\n" if flags["json"] else format_stats(p), payload=p)


# ---- conntrack -----------------------------------------------------------------------------------
CONNTRACK_USAGE = "conntrack -L [-f ipv4|ipv6] or conntrack -C"
_CT_FAMILY = {"ipv4": NFPROTO_IPV4, "ipv6": NFPROTO_IPV6}


def cmd_conntrack(gw, args: list[str], file) -> dict:
    """conntrack-tools' -L (ct_seq_show lines, [OFFLOAD] for offloaded entries) and -C."""
    cmd, family, k = None, None, 0
    while k < len(args):
        a = args[k]
        if a in ("-L", "--dump", "-C", "--count") and cmd is None:
            cmd = "count" if a in ("-C", "--count") else "list"
        elif a in ("-f", "--family") and k + 1 < len(args) and args[k + 1] in _CT_FAMILY:
            family = _CT_FAMILY[args[k + 1]]
            k += 1
        elif a in ("-f", "--family"):
            raise CtlUsage(f"conntrack: {a} takes ipv4 or ipv6 ({CONNTRACK_USAGE})")
        else:
            raise CtlUsage(f'conntrack: unknown or repeated option "{a}" ({CONNTRACK_USAGE})')
        k += 1
    if cmd is None:
        raise CtlUsage(f"conntrack: a command is needed ({CONNTRACK_USAGE})")
    w = gw.worker
    cts = [ct for ct in w.conntrack.peek() if family is None or ct.tuplehash[0].l3proto == family]
    if cmd == "count":
        return reply(0, f"{len(cts)}\n")
    out = "".join(ct_seq_show(ct, w.now_ns) + "\n" for ct in cts)
    return reply(0, out, f"flowpath ctl conntrack: {len(cts)} flow entries have been shown.\n")


# ---- flowtable -----------------------------------------------------------------------------------
def cmd_flowtable(gw, args: list[str], file) -> dict:
    """Every flowtable's entries (Flowtable.listing), or the one named."""
    if not args or args[0] not in ("list", "show") or len(args) > 2:
        raise CtlUsage("flowtable: flowtable list [NAME]")
    w = gw.cpus[0]
    names = list(w.flowtables) if len(args) == 1 else [args[1]]
    if len(args) == 2 and args[1] not in w.flowtables:
        return reply(1, err=f"flowtable {args[1]}: No such file or directory (flowtables: "
                            f"{', '.join(w.flowtables) or 'none'})\n")  # fmt: skip
    # with several workers each has its own entries (flowpath/workers.py): one listing each
    out = "\n".join((f"# worker {c}\n" if len(gw.cpus) > 1 else "") + wc.flowtables[n][0].listing(wc.now_ns, wc.ifname)
                    for c, wc in enumerate(gw.cpus) for n in names)  # fmt: skip
    return reply(0, out + "\n" if out else "")


# ---- nft -----------------------------------------------------------------------------------------
NFT_USAGE = "nft list ruleset, nft -j list ruleset, nft [-c] -f FILE"


def cmd_nft(gw, args: list[str], file) -> dict:
    """`nft list ruleset` (the live ruleset with its counters), `nft -f FILE` (replace it whole, from
    the text the client sent; the same loader as `-r`), `nft -c -f FILE` (check only)."""
    flags, k, path = {"check": False, "json": False}, 0, None
    while k < len(args) and args[k].startswith("-"):
        a = args[k]
        if a in ("-c", "--check"):
            flags["check"] = True
        elif a in ("-j", "--json"):
            flags["json"] = True
        elif a in ("-f", "--file") and k + 1 < len(args):
            path, k = args[k + 1], k + 1
        elif a.startswith("--file="):
            path = a[len("--file=") :]
        else:
            raise CtlUsage(f'nft: unknown option "{a}" ({NFT_USAGE})')
        k += 1
    words = args[k:]
    if path is not None:
        if words:
            raise CtlUsage(f'nft: unexpected "{words[0]}" after -f ({NFT_USAGE})')
        if file is None or file["name"] != path:
            raise CtlUsage("nft -f: the client sends the file's text (the gateway opens no file)")
        return _nft_load(gw, file, flags["check"])
    if words != ["list", "ruleset"] or flags["check"]:
        raise CtlUsage(f"nft: {' '.join(args) or 'a command'} is not supported ({NFT_USAGE})")
    nft = gw.worker.net.nft
    live = nft.list_ruleset_json() if nft is not None else {"nftables": []}
    if flags["json"]:
        return reply(0, json.dumps(live) + "\n", payload=live)
    return reply(0, ruleset_from_json(live, "<ruleset>").list())


def _nft_load(gw, file: dict, check: bool) -> dict:
    ruleset = ruleset_from_text(file["text"], file["name"])  # ConfigError: rc 2, the old ruleset stays
    if check:
        gw.worker.net.nft_build(ruleset)  # the checks of a load, nothing swapped in
    else:
        gw.worker.nft_replace(ruleset)
    return reply(0)


# ---- ip ------------------------------------------------------------------------------------------
IP_OBJECTS = ("address", "route", "neighbour", "neighbor", "link", "xfrm")  # iproute2's matches() order
IP_USAGE = "ip [-4|-6] [-s] [-d] route|neigh|addr|link show, ip [-s] xfrm state|policy ..., ip xfrm monitor"


def cmd_ip(gw, args: list[str], file) -> dict:
    family, stats, details, k = None, False, False, 0
    while k < len(args) and args[k].startswith("-"):
        a = args[k]
        if a in ("-4", "-6"):
            family = int(a[1])
        elif a in ("-s", "-stats", "-statistics"):
            stats = True
        elif a in ("-d", "-details"):
            details = True
        else:
            raise CtlUsage(f'ip: unknown option "{a}" ({IP_USAGE})')
        k += 1
    if k == len(args):
        raise CtlUsage(f"ip: an object is needed ({IP_USAGE})")
    obj = next((o for o in IP_OBJECTS if matches(args[k], o)), None)
    if obj is None:
        raise CtlUsage(f'ip: unknown object "{args[k]}" ({IP_USAGE})')
    if obj == "xfrm":
        return _ip_xfrm(gw, args, k + 1, stats)
    rest = args[k + 1 :]
    verb = rest[0] if rest else "show"
    if not any(matches(verb, v) for v in ("show", "list", "lst")):
        raise CtlUsage(f'ip {obj} {verb}: flowpath ctl shows the network ({IP_USAGE}); change it in the '
                       "network file")  # fmt: skip
    dev = gw.worker.net.dev
    if obj == "route":
        table = _route_table(rest[1:])
        return reply(0, show_route(dev, family or 4, table))
    if len(rest) > 1:
        raise CtlUsage(f'ip {obj} {verb}: unexpected "{rest[1]}"')
    if obj in ("neighbour", "neighbor"):
        return reply(0, show_neigh(dev, family))
    return reply(0, show_addr(dev) if obj == "address" else show_link(dev, details))


def _route_table(words: list[str]) -> int | str:
    if not words:
        return RT_TABLE_MAIN
    if words[0] != "table" or len(words) != 2:
        raise CtlUsage(f'ip route show: unexpected "{words[0]}" (ip route show [table ID|all])')
    if words[1] == "all":
        return "all"
    by_name = {v: k for k, v in TABLE_NAMES.items()}
    if words[1] in by_name:
        return by_name[words[1]]
    if not words[1].isdigit():
        raise CtlUsage(f'ip route show: "{words[1]}" is not a table (a number, a name or all)')
    return int(words[1])


def _ip_xfrm(gw, args: list[str], k: int, stats: bool) -> dict:
    """`ip xfrm state|policy ...`: the network file's parser (xfrm_config_line), errors at their
    column in the request's words; listings with flowpath.xfrm.listing."""
    words = args[k:]
    if words and matches(words[0], "monitor") and not matches(words[0], "policy"):
        return _ip_xfrm_monitor(gw, words[1:])
    if len(words) == 1:  # `ip xfrm state` lists, as iproute2 does
        words = [*words, "list"]
    source, cols = _source_line(["ip", *args[:k], *words])
    toks, cols = words, cols[k + 1 :]
    kind = xfrm_verb(toks)
    w = gw.worker
    if kind is not None and kind[1] in SHOW_VERBS:
        if w.xfrm is None:
            return reply(0)
        obj, items = xfrm_select(toks, CTL_PATH, 1, cols, w.xfrm, source)
        show = (lambda x: xfrm_state_print(w.xfrm, x, stats)) if obj == "state" else (
            lambda p: xfrm_policy_print(p, stats))  # fmt: skip
        return reply(0, "".join(show(i) + "\n" for i in items))
    w.xfrm_modify(lambda xfrm: xfrm_config_line(toks, CTL_PATH, 1, cols, xfrm, source))
    return reply(0)


MONITOR_USAGE = "ip xfrm monitor [nokeys] [all | acquire]"


def _ip_xfrm_monitor(gw, words: list[str]) -> dict:
    """`ip xfrm monitor`: the ACQUIREs raised since start (the last KM_LOG_MAX), as iproute2's
    xfrm_monitor prints them. Deviation: a reply, not a stream; the other objects (expire, SA,
    aevent, policy, report) are not recorded."""
    for word in words:
        if word not in ("nokeys", "all", "acquire"):
            raise CtlUsage(f'ip xfrm monitor: "{word}" is not recorded by flowpath ({MONITOR_USAGE})')
    xfrm = gw.worker.xfrm
    return reply(0, xfrm_monitor(xfrm) if xfrm is not None else "")


def _source_line(words: list[str]) -> tuple[str, list[int]]:
    """The words as one shell line (quoted where needed) and each word's 1-based column in it."""
    line, cols = "", []
    for word in words:
        if line:
            line += " "
        q = shlex.quote(word)
        cols.append(len(line) + 1 + (q != word))  # inside the quote
        line += q
    return line, cols


COMMANDS: dict[str, Callable[..., dict]] = {
    "stats": cmd_stats,
    "conntrack": cmd_conntrack,
    "flowtable": cmd_flowtable,
    "nft": cmd_nft,
    "ip": cmd_ip,
}
