"""The seeds' experiments as benchmark scenarios: results as JSON, tables and plots.

No Linux counterpart (the seeds used pktgen and TRex). Figures are packets per second measured in
memory on one core, side by side in one run, so ratios survive a noisy machine.
"""
