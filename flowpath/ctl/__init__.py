"""`flowpath ctl`: the running gateway's control socket (server.py), its commands (commands.py), the
client the CLI uses (client.py) and `ctl top`'s live view (top.py).

No Linux counterpart as a whole: `conntrack`, `nft`, `ip` talk to the kernel over netlink; here the
same words go to the gateway over one Unix socket per network namespace, and come back printed as
those tools print.
"""
