"""Access-token verification, keys, proof of possession."""
