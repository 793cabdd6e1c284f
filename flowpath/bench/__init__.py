"""The experiments of the flowtable bulk-forwarding test notes (Antony Antony, Oct 2025) and of the
flowtable workshop slides (Pablo Neira Ayuso, "Fastpath for IPSec gateways using the flowtable
infrastructure", IPsec Workshop Prague) as benchmark scenarios: results as JSON, tables and plots.

No Linux counterpart (those runs used pktgen and TRex). Figures are packets per second measured in
memory on one core, side by side in one run, so ratios survive a noisy machine.
"""
