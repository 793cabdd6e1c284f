"""Ports: where batches of frames come from and go to (capture files, in-memory rings, live interfaces).

No Linux counterpart (the closest is a net_device's rx/tx queues).
"""
