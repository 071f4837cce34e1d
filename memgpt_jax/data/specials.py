"""Special token ids, defined once for every tokenizer in memgpt-jax.

All tokenizers (byte-level, ListOps, sentencepiece) reserve the same low ids,
so batches, losses and models never need to know which tokenizer produced them:

====  =======  ===========================================================
 id   piece    meaning
====  =======  ===========================================================
 0    <pad>    padding; never a prediction target (``loss_mask`` is False)
 1    <bos>    beginning of a document / example
 2    <eos>    end of a document; the document separator in packed LM rows
 3    <sep>    separator inside one example (e.g. question | context)
 4    <unk>    unknown piece (sentencepiece, ListOps); unused by bytes
====  =======  ===========================================================

Real pieces start at ``NUM_SPECIAL``. The byte tokenizer maps byte ``b`` to
``b + NUM_SPECIAL``, which is also where sentencepiece's byte-fallback pieces
``<0x00>..<0xFF>`` land, so the two agree on raw bytes.
"""

from __future__ import annotations

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
SEP_ID = 3
UNK_ID = 4
NUM_SPECIAL = 5

PAD_PIECE = "<pad>"
BOS_PIECE = "<bos>"
EOS_PIECE = "<eos>"
SEP_PIECE = "<sep>"
UNK_PIECE = "<unk>"

SPECIAL_PIECES = (PAD_PIECE, BOS_PIECE, EOS_PIECE, SEP_PIECE, UNK_PIECE)
SPECIAL_IDS = frozenset(range(NUM_SPECIAL))
