"""Tokenizers: images <-> code grids (k-means or neural VQ) and the text BPE with layout tokens."""
