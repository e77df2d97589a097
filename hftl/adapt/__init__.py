"""Domain adaptation: what `adapt.method` adds to a run (AdaBN, CORAL, DANN, self-training, continued
pretraining) and how far two domains are apart (the proxy A-distance). Modules are imported by name.
"""
