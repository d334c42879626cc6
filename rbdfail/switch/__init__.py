"""Failover and failback: moving every replicated volume from one site to the other.

One module per step of a switch, in the order a volume goes through them:
usecase (the one entry point: request -> report), sites (connect, read what they say),
plan_failover / plan_failback (pure: what each volume will get), lock (one run at a time),
engine (carry the plan out, journaled), model (the values they pass each other).
"""
