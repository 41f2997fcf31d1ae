"""TinyBERT data augmentation for SQuAD 2.0 that keeps every answer locatable.

`words` finds the replaceable words of a context, `sources` proposes candidates for them (a masked
LM, GloVe vectors, or a model's input embeddings), `augment` draws the N augmented copies.
"""
