"""Configuration front ends: nft rulesets (nft/) and the ip-batch network description."""
