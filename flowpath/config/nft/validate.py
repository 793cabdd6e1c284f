"""The kernel's checks on what `nft -f` sends it: names, chain types per hook, policies, jumps, hooks.

Linux: net/netfilter/nf_tables_api.c (the NFT_NAME_MAXLEN netlink policies; nf_tables_newchain, which
refuses a policy on a regular chain; nft_chain_parse_hook with each chain type's hook_mask from
nft_chain_filter.c, nft_chain_nat.c and nft_chain_route.c; nft_table_validate and nft_chain_validate,
which walk every base chain's jumps up to NFT_JUMP_STACK_SIZE deep and run each expression's ->validate:
nft_reject_validate, nft_reject_inet_validate, nft_reject_netdev_validate, nft_nat_validate,
nft_masq_validate, nft_redir_validate, nft_flow_offload_validate, nft_rt_validate, nft_fib_validate,
nft_xfrm_validate).

nft sends a file as one batch, in the order of src/cmd.c › nft_cmd_expand (a table block's chains, then
its sets and flowtables, then its rules), and marks each error the kernel returns on the object or rule
it came from. Since Linux 6.x the kernel validates the table after each rule it adds, so the first
error is on the first rule after which a base chain reaches something it may not: a jump too deep (a
loop is one), or a statement its hook does not allow.
"""

from __future__ import annotations

from typing import Any

from flowpath.config.nft.commit import ENOENT, Batch
from flowpath.config.nft.family import chain_type_ok, filter_hook_ok
from flowpath.config.nft.ir import Chain, Rule, Ruleset, Table

NFT_NAME_MAXLEN = 256  # include/uapi/linux/netfilter/nf_tables.h: names hold at most 255 bytes and a NUL
NFT_JUMP_STACK_SIZE = 16  # include/net/netfilter/nf_tables.h
EOPNOTSUPP = "Could not process rule: Operation not supported"
ERANGE = "Could not process rule: Numerical result out of range"
EMLINK = "Could not process rule: Too many links"
ELOOP = "Could not process rule: Too many levels of symbolic links"

# Linux: nft_chain_nat.c and nft_chain_route.c › hook_mask (filter chains take every hook)
CHAIN_TYPE_HOOKS = {"nat": ("prerouting", "input", "output", "postrouting"), "route": ("output",)}
# Linux: the ->validate of each expression: the hooks it may run at, and the chain type it needs
_REJECT_HOOKS = {
    "ip": ("prerouting", "input", "forward", "output"),  # nft_reject.c › nft_reject_validate
    "ip6": ("prerouting", "input", "forward", "output"),
    "inet": ("prerouting", "input", "forward", "output", "ingress"),  # nft_reject_inet_validate
    "netdev": ("ingress", "egress"),  # nft_reject_netdev.c › nft_reject_netdev_validate
    "bridge": ("prerouting", "input"),  # nft_reject_bridge.c › nft_reject_bridge_validate
    "arp": (),  # no reject expression is registered for NFPROTO_ARP
}
_NAT_HOOKS = {  # nft_nat.c › nft_nat_validate, nft_masq.c, nft_redir.c: in a nat chain only
    "snat": ("postrouting", "input"),
    "dnat": ("prerouting", "output"),
    "masquerade": ("postrouting",),
    "redirect": ("prerouting", "output"),
}
_IN = ("prerouting", "input", "forward")
_OUT = ("forward", "output", "postrouting")


def expr_hooks(left: Any) -> tuple[str, ...] | None:
    """The hooks an expression's ->validate allows (None: any), by the hook names of ip/ip6/inet.

    Linux: nft_fib.c › nft_fib_validate (6.x: an oif/oifname result in prerouting, input and forward;
    a type with iif there too, with oif in forward, output and postrouting, with neither anywhere) and
    nft_xfrm.c › nft_xfrm_validate (in: prerouting, input, forward; out: forward, output, postrouting).
    """
    if not isinstance(left, dict):
        return None
    if "fib" in left:
        f = left["fib"]
        if f["result"] in ("oif", "oifname") or "iif" in f["flags"]:
            return _IN
        return _OUT if "oif" in f["flags"] else None
    if "ipsec" in left:
        return _IN if left["ipsec"]["dir"] == "in" else _OUT
    return None


def hook_allowed(family: str, hook: str | None, allowed: tuple[str, ...]) -> bool:
    """nft_chain_validate_hooks: netdev's ingress is hook 0, the bit prerouting has in the inet families."""
    if family == "netdev":
        hook = "prerouting" if hook == "ingress" else hook
    return hook in allowed



def kernel_check(rs: Ruleset, batch: Batch, upto: int | None = None) -> None:
    """Raise the ConfigError nft prints first for the kernel's answer to `batch` (its first `upto`
    items), if any. The batch is committed (commit.py): chains hold their rules in their final order."""
    items = batch.items[:upto]
    added: set[int] = set()  # id(rule) of the rules the kernel has so far
    edges: dict[int, dict[int, Chain]] = {}  # id(chain) -> the chains those rules jump or go to, by id
    levels: dict[int, dict[int, int]] = {}  # id(base chain) -> _levels, until edges change
    for kind, table, obj, rule in items:
        if kind not in ("table", "chain", "set", "flowtable", "rule"):
            continue
        if kind == "table":
            if len(table.name) >= NFT_NAME_MAXLEN:
                raise rs.error(table.loc, ERANGE)
            continue
        if len(obj.name) >= NFT_NAME_MAXLEN:
            raise rs.error(obj.loc, ERANGE)
        if kind == "chain":
            _chain_check(rs, table.family, obj)
        elif kind == "rule":
            added.add(id(rule))
            msg = rule_validate(table, obj, rule, added, edges, levels)
            if msg is not None:
                raise rs.error(rule.loc, msg)
            if _add_edges(edges, obj, table, rule):
                levels.clear()
    _loop_check(rs, items)


def _chain_check(rs: Ruleset, family: str, chain: Chain) -> None:
    if chain.hook is None:
        if chain.policy is not None:  # nf_tables_newchain: NFTA_CHAIN_POLICY on a regular chain
            raise rs.error(chain.policy_loc, EOPNOTSUPP)
    elif not chain_type_ok(family, chain.type or "filter"):  # nft_chain_parse_hook: no such type
        raise rs.error(chain.type_loc or chain.loc, ENOENT)
    elif chain.hook not in CHAIN_TYPE_HOOKS.get(chain.type or "filter", (chain.hook,)):
        raise rs.error(chain.loc, EOPNOTSUPP)
    elif not filter_hook_ok(family, chain.hook):
        raise rs.error(chain.loc, EOPNOTSUPP)


def rule_validate(
    table: Table, chain: Chain, rule: Rule, added: set[int], edges: dict, levels: dict
) -> str | None:
    """Linux: nf_tables_api.c › nft_table_validate once `rule` is added to `chain`, reduced to what it adds.

    The table was valid before: what each base chain reaches holds no loop and lies less than
    NFT_JUMP_STACK_SIZE deep, so only the new rule can fail, on every base chain that reaches `chain`:
    its statements against that base chain's hook, and the chains it jumps to, walked from the deepest
    level `chain` is reached at. Returns the error message, or None.
    """
    for base in table.chains.values():
        if not base.is_base:
            continue
        if id(base) not in levels:
            levels[id(base)] = _levels(base, edges)
        level = levels[id(base)].get(id(chain))
        if level is None:
            continue
        for stmt in rule.expr:
            if not stmt_allowed(table.family, base, stmt):
                return EOPNOTSUPP
            for target in stmt_targets(table, stmt):
                msg = _chain_validate(table, base, target, level + 1, added, {})
                if msg is not None:
                    return msg
    return None


def _add_edges(edges: dict[int, dict[int, Chain]], chain: Chain, table: Table, rule: Rule) -> bool:
    """Note the chains `rule` jumps to as edges from `chain`; True if one is new."""
    out = edges.setdefault(id(chain), {})
    n = len(out)
    for stmt in rule.expr:
        for t in stmt_targets(table, stmt):
            out.setdefault(id(t), t)
    return len(out) > n


def _levels(base: Chain, edges: dict[int, dict[int, Chain]]) -> dict[int, int]:
    """id(chain) -> the deepest level `base` reaches it at (longest paths; capped, so a loop ends)."""
    best, todo = {id(base): 0}, [base]
    while todo:
        c = todo.pop()
        for t in edges.get(id(c), {}).values():
            if best.get(id(t), -1) < best[id(c)] + 1 <= NFT_JUMP_STACK_SIZE:
                best[id(t)] = best[id(c)] + 1
                todo.append(t)
    return best


def _chain_validate(
    table: Table, base: Chain, chain: Chain, level: int, added: set[int], seen: dict[int, int]
) -> str | None:
    """Linux: nf_tables_api.c › nft_chain_validate (the hooks checked are the base chain's).

    `seen` keeps the deepest level each chain was walked at: a walk at a smaller level finds nothing new.
    """
    if level == NFT_JUMP_STACK_SIZE:
        return EMLINK
    if seen.get(id(chain), -1) >= level:
        return None
    seen[id(chain)] = level
    for rule in (r for r in chain.rules if id(r) in added):
        for stmt in rule.expr:
            if not stmt_allowed(table.family, base, stmt):
                return EOPNOTSUPP
            for target in stmt_targets(table, stmt):
                msg = _chain_validate(table, base, target, level + 1, added, seen)
                if msg is not None:
                    return msg
    return None


def stmt_allowed(family: str, base: Chain, stmt: dict) -> bool:
    """Whether a statement's ->validate accepts the base chain it is reached from."""
    ((kind, arg),) = stmt.items()
    if kind == "reject":
        return base.hook in _REJECT_HOOKS[family]
    if kind in _NAT_HOOKS:
        return base.type == "nat" and base.hook in _NAT_HOOKS[kind]
    if kind == "flow":
        return base.hook == "forward"
    if kind == "mangle" and isinstance(arg["value"], dict) and "rt" in arg["value"]:
        return base.hook in ("forward", "output", "postrouting")  # nft_rt_validate: NFT_RT_TCPMSS
    if kind in ("match", "vmap"):
        allowed = expr_hooks(arg["left"] if kind == "match" else arg["key"])
        return allowed is None or hook_allowed(family, base.hook, allowed)
    return True


def stmt_targets(table: Table, stmt: dict) -> list[Chain]:
    """The chains a statement may jump or go to: a verdict, or the verdicts of a verdict map."""
    ((kind, arg),) = stmt.items()
    if kind in ("jump", "goto"):
        verdicts = [stmt]
    elif kind == "vmap":
        data = arg["data"]
        if isinstance(data, str):
            m = table.sets.get(data.lstrip("@"))
            elems = m.elem if m is not None else []
        else:
            elems = data["set"]
        verdicts = [e[1] for e in elems]
    else:
        return []
    out = []
    for v in verdicts:
        ((vk, va),) = v.items()
        if vk in ("jump", "goto") and va["target"] in table.chains:
            out.append(table.chains[va["target"]])
    return out


def _loop_check(rs: Ruleset, items: list) -> None:
    """A loop among chains no base chain reaches: the rule that closes it.

    Deviation: Linux 6.x accepts such a loop (it is never walked), and refuses it when a base chain
    jumps in ("Too many links"). Older kernels refused every loop when it closed
    (nf_tables_api.c › nf_tables_check_loops, ELOOP), and so does flowpath's runtime
    (netfilter/nf_tables.py › NftRuntime._validate): refused here, where the file can be marked.
    """
    edges: dict[int, dict[int, Chain]] = {}
    for kind, table, chain, rule in items:
        if kind != "rule":
            continue
        for stmt in rule.expr:
            for t in stmt_targets(table, stmt):
                if id(t) not in edges.get(id(chain), {}) and (t is chain or _reaches(t, chain, edges)):
                    raise rs.error(rule.loc, ELOOP)
        _add_edges(edges, chain, table, rule)


def _reaches(start: Chain, goal: Chain, edges: dict[int, dict[int, Chain]]) -> bool:
    todo, seen = [start], {id(start)}
    while todo:
        c = todo.pop()
        for n in edges.get(id(c), {}).values():
            if n is goal:
                return True
            if id(n) not in seen:
                seen.add(id(n))
                todo.append(n)
    return False
