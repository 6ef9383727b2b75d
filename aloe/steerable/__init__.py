"""Few-shot steerable alignment: reward models (BTL, DPL, NP-BTL) and policies (NP-DPO) that adapt to a user from k choices.

data (records, splits, what the data allows) -> sources (the data kinds) -> episodes (tasks) ->
models -> train -> evaluate; policy holds NP-DPO. See docs/steerable.md.
"""
