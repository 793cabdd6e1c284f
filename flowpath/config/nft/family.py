"""Families, their hooks, chain types and standard priorities, as nft and the kernel allow them.

Linux: nftables src/rule.c (chain_hookname_lookup, std_prios, bridge_std_prios,
std_prio_family_hook_compat), src/evaluate.c › chain_evaluate ("The %s family does not support this
hook", the device checks), and the kernel's chain types: net/netfilter/nft_chain_filter.c (filter in
every family; arp's hook_mask is NF_ARP_IN | NF_ARP_OUT), nft_chain_nat.c and nft_chain_route.c (ip,
ip6 and inet only: another family has no such type, ENOENT).
"""

from __future__ import annotations

FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
_INET_HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
# the hook names nft knows at all (parser_bison.y › chain_hookname_lookup)
HOOK_NAMES = (*_INET_HOOKS, "ingress", "egress")
# the hooks each family's chains may name (src/rule.c › str2hooknum); the kernel may still refuse one
HOOKS = {
    "ip": _INET_HOOKS,
    "ip6": _INET_HOOKS,
    "inet": (*_INET_HOOKS, "ingress"),
    "arp": ("input", "forward", "output"),
    "bridge": _INET_HOOKS,
    "netdev": ("ingress", "egress"),
}
CHAIN_TYPES = ("filter", "nat", "route")
# Linux: the families each chain type is registered for (nft_chain_nat.c, nft_chain_route.c)
CHAIN_TYPE_FAMILIES = {"nat": ("ip", "ip6", "inet"), "route": ("ip", "ip6", "inet")}
# Linux: nft_chain_filter.c › nft_chain_filter_arp: hook_mask (1 << NF_ARP_IN) | (1 << NF_ARP_OUT)
FILTER_HOOKS = {"arp": ("input", "output")}
# Linux: src/rule.c › std_prios (NF_IP_PRI_*) and bridge_std_prios (NF_BR_PRI_*)
STD_PRIO = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
BRIDGE_STD_PRIO = {"dstnat": -300, "filter": -200, "out": 100, "srcnat": 300}
# the one hook a standard priority is valid for, where there is one
_PRIO_HOOK = {"dstnat": "prerouting", "srcnat": "postrouting", "out": "output"}


def std_prios(family: str) -> dict[str, int]:
    return BRIDGE_STD_PRIO if family == "bridge" else STD_PRIO


def prio_name_ok(family: str, hook: str, name: str) -> bool:
    """Linux: src/rule.c › std_prio_family_hook_compat: netdev and arp have `filter` only."""
    if name not in std_prios(family):
        return False
    if family in ("netdev", "arp"):
        return name == "filter"
    return _PRIO_HOOK.get(name, hook) == hook


def needs_device(family: str, hook: str) -> bool:
    """Whether a base chain is bound to devices (evaluate.c › chain_evaluate): netdev, inet ingress."""
    return family == "netdev" or (family == "inet" and hook == "ingress")


def chain_type_ok(family: str, ctype: str) -> bool:
    return family in CHAIN_TYPE_FAMILIES.get(ctype, FAMILIES)


def filter_hook_ok(family: str, hook: str) -> bool:
    return hook in FILTER_HOOKS.get(family, (hook,))
