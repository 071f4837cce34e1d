"""Whole conversations as training rows (``data.multi_turn``): each reply trained once, in
exactly the context it is decoded in."""

import jax
import numpy as np
import pytest

from memgpt_jax import config as config_lib
from memgpt_jax import model as model_lib
from memgpt_jax import run_config
from memgpt_jax.apps.chat import ChatSession
from memgpt_jax.apps.generate import Generator
from memgpt_jax.data import specials
from memgpt_jax.data.dialogue import dialogue_prompt
from memgpt_jax.data.pairs_pipeline import (PackedPairsIterator, chat_pieces, encode_prompt, last_turns,
                                            multi_turn_tokens)
from memgpt_jax.data.tokenizers import ByteTokenizer

KB = "KB navigate: poi ; distance | Valero ; 2 miles"
CHATS = [
    [("user", "gas?"), ("system", "Valero, 2 miles."), ("user", "thanks"), ("system", "Bye!")],
    [("user", "hi"), ("system", "Hello."), ("user", "route?"), ("system", "Take 101."), ("user", "ok"),
     ("system", "Drive safe.")],
    [("user", "where"), ("system", "Here.")],
]


def _records():
    """One prompt -> target pair per system turn, as the dialogue builder writes them."""
    out = []
    for chat in CHATS:
        for i, (speaker, text) in enumerate(chat):
            if speaker == "system":
                out.append({"prompt": dialogue_prompt(KB, chat[:i]), "target": text})
    return out


def test_pieces_and_last_turns():
    records = _records()
    assert chat_pieces(records[1]["prompt"]) == [
        (f"{KB}\nUser: gas?\nAssistant:", False), ("Valero, 2 miles.", True), ("\nUser: thanks\nAssistant:", False)]
    assert chat_pieces("no chat here") == [("no chat here", False)]
    assert last_turns(records) == [1, 4, 5]  # each conversation's last turn holds all of its replies


@pytest.mark.slow
def test_every_reply_is_trained_once_in_the_context_it_is_decoded_in():
    tok = ByteTokenizer()
    records = _records()
    it = PackedPairsIterator(records, tok, batch_size=3, seq_len=192, shuffle=False, num_epochs=1,
                             drop_remainder=False, pack=False, multi_turn=True)
    batch = next(it)
    assert it.stats["turns_in_longer_pairs"] == 3 and it.stats["pairs"] == 3
    for row, chat in enumerate(CHATS):
        replies = [t for s, t in chat if s == "system"]
        labels = batch["targets"][row][batch["loss_mask"][row]]
        # the loss sees every reply's tokens and its EOS, nothing else
        assert tok.decode([t for t in labels if t != specials.EOS_ID]) == "".join(replies)
        assert (labels == specials.EOS_ID).sum() == len(replies)
    # The tokens before each reply are exactly what decoding reads for that turn (encode_prompt),
    # so a causal model scores each reply alike in the long row and as its own pair.
    tokens, labelled = multi_turn_tokens(tok, records[4]["prompt"], records[4]["target"], 192)
    for record in records[2:5]:
        prompt = encode_prompt(tok, record["prompt"], multi_turn=True)
        reply = tok.encode(record["target"]).tolist() + [specials.EOS_ID]
        assert tokens[:len(prompt) + len(reply)].tolist() == prompt + reply
        assert labelled[len(prompt):len(prompt) + len(reply)].all() and not labelled[len(prompt) - 1]

    mc = config_lib.tiny(vocab_size=264, max_len=192)
    model = model_lib.build(mc)
    params, _ = model_lib.init(model, jax.random.key(0))

    def reply_logprobs(ids, first, n):
        row = np.full((1, 192), specials.PAD_ID, np.int32)
        row[0, :len(ids)] = ids
        logp = jax.nn.log_softmax(model.apply({"params": params}, row).logits[0])
        return np.asarray([logp[p - 1, ids[p]] for p in range(first, first + n)])

    record = records[3]  # the middle reply of the second chat
    prompt = encode_prompt(tok, record["prompt"], multi_turn=True)
    alone = prompt + tok.encode(record["target"]).tolist() + [specials.EOS_ID]
    n = len(alone) - len(prompt)
    np.testing.assert_allclose(reply_logprobs(tokens.tolist(), len(prompt), n),
                               reply_logprobs(alone, len(prompt), n), rtol=1e-5, atol=1e-5)


def test_long_conversations_lose_their_oldest_tokens_and_bad_settings_are_refused():
    tok = ByteTokenizer()
    record = _records()[4]
    tokens, labelled = multi_turn_tokens(tok, record["prompt"], record["target"], 48)
    assert len(tokens) == 49 and tokens[0] == specials.BOS_ID
    assert tokens[-1] == specials.EOS_ID and tok.decode(tokens[-12:-1]) == "Drive safe."  # the target stays
    assert tok.decode([t for t, keep in zip(tokens, labelled) if keep and t != specials.EOS_ID]).endswith(
        "Drive safe.")
    with pytest.raises(ValueError, match="prompt_loss"):
        PackedPairsIterator(_records(), tok, batch_size=1, seq_len=64, multi_turn=True, prompt_loss=True)
    with pytest.raises(run_config.ConfigError, match="data.multi_turn"):
        run_config.DataConfig(dataset="pairs", multi_turn=True, prompt_loss=True)


def test_chat_reads_history_replies_as_a_multi_turn_run_was_trained():
    tok = ByteTokenizer()
    mc = config_lib.tiny(vocab_size=264, max_len=192)
    model = model_lib.build(mc)
    params, _ = model_lib.init(model, jax.random.key(0))
    history = [("user", "gas?"), ("bot", "Valero, 2 miles."), ("user", "thanks")]
    ids = {}
    for multi_turn in (False, True):
        session = ChatSession(Generator(model, params, eos_id=specials.EOS_ID, pad_id=specials.PAD_ID), tok,
                              max_new_tokens=16, pair_prompt=lambda turns: dialogue_prompt(KB, turns),
                              multi_turn=multi_turn)
        session.history = list(history)
        ids[multi_turn], dropped = session.build_prompt()
        assert dropped == 0 and ids[multi_turn][-1] == specials.SEP_ID
    assert specials.EOS_ID not in ids[False]
    prompt = dialogue_prompt(KB, [("user", "gas?"), ("system", "Valero, 2 miles."), ("user", "thanks")])
    assert ids[True] == encode_prompt(tok, prompt, multi_turn=True)
    assert ids[True].count(specials.SEP_ID) == 2 and ids[True].count(specials.EOS_ID) == 1
