"""A Xenstore caching proxy for dom0.

Listens where Xenstore clients connect, forwards to the real xenstored on a
relocated socket, and answers the reads that guest creation repeats from a
cache kept valid by a watch on xenstored (see ``core`` for the rules).
"""
