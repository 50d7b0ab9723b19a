"""The methods das-ag names a run by: the aesthetic term's sign and the paper's names for it.

A module of its own, without torch, so that the config, the aesthetic term and the tables share
these words without importing one another.
"""

# guidance -> sign of the aesthetic term, and the method's name in the paper
GUIDANCE = {"reward": 1, "penalty": -1, "off": 0}
METHOD_NAMES = {"reward": "DAS-AG", "penalty": "DAS-rAG", "off": "DAS"}
METHOD_ORDER = ("off", "reward", "penalty")  # DAS, DAS-AG, DAS-rAG: the published table's order
