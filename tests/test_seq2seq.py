"""Prompt -> target fine-tuning (issue 10): pair datasets, target-only loss, packing
boundaries, beam search, text metrics, and a tiny model that learns to reverse digits."""

import gzip
import json
import os
import random
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memgpt_jax import config as config_lib
from memgpt_jax import data as data_lib
from memgpt_jax import model as model_lib
from memgpt_jax.apps import text_metrics
from memgpt_jax.apps.generate import Generator, Sampling
from memgpt_jax.cli import main as cli_main
from memgpt_jax.data import specials
from memgpt_jax.data.prepared import DataError
from memgpt_jax.data.pairs import chat_examples, pairs_builder, parse_split_spec
from memgpt_jax.data.pairs_pipeline import PackedPairsIterator, encode_prompt, pair_tokens
from memgpt_jax.data.tokenizers import ByteTokenizer
from memgpt_jax.training.run import open_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "multi30k.py")


def _digit_pairs(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        digits = [rng.choice("0123456789") for _ in range(rng.randint(3, 6))]
        out.append({"prompt": " ".join(digits), "target": " ".join(digits[::-1])})
    return out


def test_pairs_builder_reads_jsonl_chat_and_parallel_files(tmp_path):
    jl = tmp_path / "a.jsonl"
    jl.write_text("\n".join([json.dumps({"prompt": "hi", "target": "ho"}),
                             json.dumps({"turns": ["hello", "hi! how can I help?", "my order is late", "sorry!"]}),
                             json.dumps({"prompt": " ", "target": "x"})]) + "\n")
    with gzip.open(tmp_path / "s.gz", "wt") as f:
        f.write("one\ntwo\nthree\n")
    with gzip.open(tmp_path / "t.gz", "wt") as f:
        f.write("eins\nzwei\ndrei\n")
    (tmp_path / "short.txt").write_text("eins\n")
    d = str(tmp_path / "tfds")
    splits = dict([parse_split_spec(f"train={jl}"), parse_split_spec(f"val={tmp_path / 's.gz'},{tmp_path / 't.gz'}")])
    data_lib.prepare(pairs_builder("unit", splits, data_dir=d), echo=lambda _: None)
    train = data_lib.load_split("memgpt_pairs/unit", "train", d)
    rows = sorted((data_lib.as_text(train[i]["prompt"]), data_lib.as_text(train[i]["target"])) for i in range(len(train)))
    assert len(rows) == 3  # 1 pair + 2 assistant turns; the blank prompt is skipped
    assert ("User: hello\nAssistant: hi! how can I help?\nUser: my order is late\nAssistant:", "sorry!") in rows
    val = data_lib.load_split("memgpt_pairs/unit", "val", d)
    assert sorted(data_lib.as_text(val[i]["target"]) for i in range(3)) == ["drei", "eins", "zwei"]
    with pytest.raises(DataError, match="lines"):
        data_lib.prepare(pairs_builder("bad", {"train": [str(tmp_path / "s.gz"), str(tmp_path / "short.txt")]},
                                       data_dir=d), echo=lambda _: None)
    with pytest.raises(ValueError, match="NAME="):
        parse_split_spec("train")
    assert chat_examples({"messages": [{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": "hi"},
                                       {"role": "assistant", "content": "hello"}]}) == [
        ("Be brief.\nUser: hi\nAssistant:", "hello")]


def test_loss_mask_covers_targets_only_and_packing_keeps_pairs_apart():
    tok = ByteTokenizer()
    source = [{"prompt": p, "target": t} for p, t in (("abc", "xy"), ("de", "uvw"), ("f", "z"), ("ghij", "k"))]
    it = PackedPairsIterator(source, tok, batch_size=2, seq_len=16, shuffle=False, num_epochs=1, drop_remainder=False)
    batch = next(it)
    for r in range(2):
        segs = batch["segment_ids"][r]
        for s in set(segs.tolist()) - {0}:
            cols = np.nonzero(segs == s)[0]
            assert (np.diff(cols) == 1).all() and (batch["positions"][r, cols] == np.arange(len(cols))).all()
            inputs, targets = batch["inputs"][r, cols], batch["targets"][r, cols]
            mask = batch["loss_mask"][r, cols]
            sep = int(np.nonzero(inputs == specials.SEP_ID)[0][0])
            assert not mask[:sep].any() and mask[sep:].all()  # from SEP on, the model predicts the target
            assert targets[-1] == specials.EOS_ID
            assert tok.decode(targets[mask][:-1]) in ("xy", "uvw", "z", "k")
    assert (batch["segment_ids"][0] > 0).sum() > len(pair_tokens(tok, "abc", "xy", 16)[0])  # two pairs in row 0
    assert not batch["loss_mask"][batch["segment_ids"] == 0].any()

    # data.prompt_loss: every real position counts (the prompt is LM training data too); same packing.
    full = next(PackedPairsIterator(source, tok, batch_size=2, seq_len=16, shuffle=False, num_epochs=1,
                                    drop_remainder=False, prompt_loss=True))
    np.testing.assert_array_equal(full["loss_mask"], full["segment_ids"] > 0)
    np.testing.assert_array_equal(full["inputs"], batch["inputs"])

    # A pair's logits inside a packed row equal its logits alone (dense and block-sparse).
    for att in (dict(pattern="dense"), dict(pattern="window_global", block_size=4, window=2, n_global=1)):
        mc = config_lib.tiny(vocab_size=264, max_len=16, attention=att)
        model = model_lib.build(mc)
        params, _ = model_lib.init(model, jax.random.key(0))
        apply = jax.jit(model.apply)  # compiled, not run op by op
        packed = apply({"params": params}, batch["inputs"], segment_ids=batch["segment_ids"],
                             positions=batch["positions"]).logits
        cols = np.nonzero(batch["segment_ids"][0] == 2)[0]
        alone = apply({"params": params}, batch["inputs"][:1, cols]).logits
        if att["pattern"] == "dense":
            np.testing.assert_allclose(packed[0, cols], alone[0], atol=1e-4)
        else:  # sparse layouts are fixed on row positions; the segment mask still blocks other pairs
            other = np.nonzero(batch["segment_ids"][0] == 1)[0]
            changed = batch["inputs"].copy()
            changed[0, other] = (changed[0, other] + 7) % 200 + 5
            packed2 = apply({"params": params}, changed, segment_ids=batch["segment_ids"],
                                  positions=batch["positions"]).logits
            np.testing.assert_allclose(packed[0, cols], packed2[0, cols], atol=1e-5)


def test_text_metrics_on_known_strings():
    assert text_metrics.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert text_metrics.chrf(["Haus"], ["Haus"]) == pytest.approx(100.0)
    assert text_metrics.bleu(["completely different words here"], ["the cat sat on the mat"]) < 5
    # LCS("a b c d", "a c d e") = 3: P = R = 3/4 -> F = 75
    assert text_metrics.rouge_l(["a b c d"], ["a c d e"]) == pytest.approx(75.0)
    assert text_metrics.exact_match(["Hello  World", "x"], ["hello world", "y"]) == 50.0
    with pytest.raises(ValueError, match="references"):
        text_metrics.bleu(["a"], [])


@pytest.fixture(scope="module")
def reverser(tmp_path_factory):
    """A tiny model trained to reverse digit strings, and its data dir. The skill appears
    abruptly, and when depends on the seed and on the CPU's rounding: at 800 steps one seed
    of nine reached 92.5% exact (an Intel Xeon 70%, under the 80 asserted); 1600 steps leave
    the slowest seeds measured at 100%."""
    tmp = tmp_path_factory.mktemp("seq2seq")
    for split, n, seed in (("train", 2000, 0), ("val", 40, 1)):
        with open(tmp / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in _digit_pairs(n, seed))
    d = str(tmp / "tfds")
    assert cli_main(["data", "prepare", "pairs", "--name", "digits", "--split", f"train={tmp / 'train.jsonl'}",
                     "--split", f"val={tmp / 'val.jsonl'}", "--data-dir", d]) == 0
    run = str(tmp / "run")
    # its own process, with XLA's optimisation back on (tests/conftest.py turns it off): 1,600 steps
    # of one program, where running costs more than compiling
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "optimization_level" not in f)
    done = subprocess.run([sys.executable, "-m", "memgpt_jax.cli", "pretrain", "--config", f"{CONFIG}:tiny",
                           "--workdir", run, "--no-progress", "--config.data.name=memgpt_pairs/digits",
                           f"--config.data.data_dir={d}", "--config.train.steps=1600", "--config.train.eval_every=1600",
                           "--config.train.checkpoint_every=1600", "--config.data.batch_size=32"],
                          env={**os.environ, "XLA_FLAGS": flags}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return run, d, tmp


def test_mbr_select_picks_the_consensus():
    # "a b c" and "a b d" share 2 of 3 words (F 2/3 each way), "x y z" shares none: a tie, the earliest wins
    assert text_metrics.mbr_select([["a b c", "a b d", "x y z"]]) == [0]
    assert text_metrics.mbr_select([["x", "a b", "a b c", "a b"], ["only"]]) == [1, 0]
    assert text_metrics.mbr_select([["running late", "run late", "late"]]) == [0]  # stemming: run == running
    with pytest.raises(ValueError, match="utility"):
        text_metrics.mbr_select([["a"]], utility="bleu")
    with pytest.raises(ValueError, match="candidate"):
        text_metrics.mbr_select([[]])


@pytest.mark.slow
def test_tiny_model_learns_to_reverse_and_eval_reports_metrics(reverser, capsys, tmp_path, monkeypatch):
    run, d, tmp = reverser
    out = str(tmp / "eval.json")
    assert cli_main(["eval", "--checkpoint", run, "--split", "val", "--no-progress", "--json", out,
                     "--max-new-tokens", "12"]) == 0
    report = json.load(open(out))
    assert report["sentences"] == 40
    assert report["exact_match"] >= 80.0, report  # learned: most reversals exact
    assert report["bleu"] > 50 and report["chrf"] > 80 and report["rouge_l"] >= report["exact_match"]
    # teacher-forced: the target perplexity through training.evaluate (the loop's evaluator)
    assert cli_main(["eval", "--checkpoint", run, "--split", "val", "--perplexity", "--max-examples", "16",
                     "--json", out]) == 0
    report = json.load(open(out))
    assert report["split"] == "val" and report["tokens"] > 0
    assert report["perplexity"] == pytest.approx(np.exp(report["loss"])) and report["perplexity"] < 4.0

    # sequence-level distillation data: the model's outputs become targets
    kd = str(tmp / "kd.jsonl")
    assert cli_main(["decode", "--checkpoint", run, "--split", "val", "--out", kd, "--no-progress",
                     "--max-new-tokens", "12"]) == 0
    rows = [json.loads(line) for line in open(kd)]
    assert len(rows) == 40 and sum(r["target"] == r["prompt"][::-1] for r in rows) >= 32
    # the output constraints from the command line: no digit twice
    assert cli_main(["eval", "--checkpoint", run, "--split", "val", "--no-progress", "--json", out,
                     "--max-new-tokens", "12", "--no-repeat-ngram", "1", "--max-examples", "8"]) == 0
    report = json.load(open(out))
    assert report["no_repeat_ngram"] == 1 and report["min_new_tokens"] == 0
    assert all(len(set(e["output"])) == len(e["output"]) for e in report["examples"])
    capsys.readouterr()
    assert cli_main(["decode", "--checkpoint", run, "--prompt", "123", "--min-new-tokens", "-1"]) != 0
    assert "min_new_tokens must be >= 0" in capsys.readouterr().err
    # minimum Bayes risk over the greedy output and 3 samples: a trained reverser still reverses
    assert cli_main(["eval", "--checkpoint", run, "--split", "val", "--no-progress", "--json", out,
                     "--max-new-tokens", "12", "--mbr", "3", "--max-examples", "8"]) == 0
    report = json.load(open(out))
    assert report["mbr"] == 3 and report["exact_match"] >= 75.0, report
    assert cli_main(["decode", "--checkpoint", run, "--prompt", "123", "--mbr", "2", "--beam", "2"]) != 0
    assert "beam 1" in capsys.readouterr().err
    # one test, one worker: the trained reverser (a minute of training) is built once, not once per
    # worker that happens to draw a test using it
    _decode_files_chat_with_a_kb_and_reference_metrics(reverser, tmp_path, capsys, monkeypatch)
    _beam_search_properties(reverser)


def _beam_search_properties(reverser):
    run, _, _ = reverser
    loaded = open_run(run)
    tok = loaded.tokenizer
    gen = Generator(loaded.model, loaded.params, eos_id=tok.eos_id, chunk=8)
    prompts = [encode_prompt(tok, r["prompt"]) for r in _digit_pairs(12, 7)]
    greedy, _ = gen.generate_ids(prompts, max_new_tokens=14)
    b1, _ = gen.beam_search(prompts, beam=1, max_new_tokens=14, length_penalty=0.0)
    assert b1 == greedy
    b4, s4 = gen.beam_search(prompts, beam=4, max_new_tokens=14, length_penalty=0.0)

    fwd = jax.jit(lambda x: jax.nn.log_softmax(loaded.model.apply({"params": loaded.params}, x).logits, -1))

    def score(prompt, ids):  # log p(ids + EOS | prompt) by the full forward pass
        seq = prompt + ids + [tok.eos_id]
        buf = np.zeros((1, 40), np.int32)
        buf[0, :len(seq)] = seq
        lp = np.asarray(fwd(jnp.asarray(buf)))[0]
        return float(sum(lp[len(prompt) - 1 + i, t] for i, t in enumerate(ids + [tok.eos_id])))

    for p, g, b, s in zip(prompts, greedy, b4, s4):
        assert s == pytest.approx(score(p, b), abs=1e-3)  # the reported score is the model's
        assert s >= score(p, g) - 1e-4  # never worse than greedy in model score
    # constraints: beam 1 is constrained greedy; every beam hypothesis obeys them
    g2, _ = gen.generate_ids(prompts, max_new_tokens=14, sampling=Sampling(no_repeat_ngram=1, min_new_tokens=3))
    assert gen.beam_search(prompts, beam=1, max_new_tokens=14, length_penalty=0.0, no_repeat_ngram=1,
                           min_new_tokens=3)[0] == g2
    assert g2 != greedy  # reversals of digit strings repeat digits: the constraint changes outputs
    b4c, _ = gen.beam_search(prompts, beam=4, max_new_tokens=14, no_repeat_ngram=1, min_new_tokens=3)
    for out in (*g2, *b4c):
        assert len(out) >= 3 and len(set(out)) == len(out)


def test_pairs_iterator_resumes_exactly():
    source = _digit_pairs(50, 3)
    make = lambda: PackedPairsIterator(source, ByteTokenizer(), batch_size=4, seq_len=32, seed=1)  # noqa: E731
    a = make()
    for _ in range(3):
        next(a)
    state = json.loads(json.dumps(a.get_state()))
    expected = [next(a) for _ in range(4)]  # crosses an epoch boundary
    b = make()
    b.set_state(state)
    for want in expected:
        got = next(b)
        assert all((got[k] == want[k]).all() for k in want)
    with pytest.raises(ValueError):
        PackedPairsIterator(source, ByteTokenizer(), batch_size=4, seq_len=16, seed=1).set_state(state)


@pytest.mark.slow
def test_beam_search_on_a_block_sparse_model():
    mc = config_lib.tiny(vocab_size=40, max_len=64, attention=dict(pattern="window_global", block_size=8, window=1,
                                                                   n_global=1))
    model = model_lib.build(mc)
    params, _ = model_lib.init(model, jax.random.key(2))
    gen = Generator(model, params, eos_id=7, chunk=8)
    prompts = [[1, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], [1, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]]
    greedy, _ = gen.generate_ids(prompts, max_new_tokens=20)
    assert gen.beam_search(prompts, beam=1, max_new_tokens=20, length_penalty=0.0)[0] == greedy
    _, s4 = gen.beam_search(prompts, beam=4, max_new_tokens=20, length_penalty=0.0)
    fwd = jax.jit(lambda x: jax.nn.log_softmax(model.apply({"params": params}, x).logits, -1))
    for p, g, s in zip(prompts, greedy, s4):
        seq = p + g + ([7] if len(g) < 20 else [])
        lp = np.asarray(fwd(jnp.asarray([seq + [0] * (40 - len(seq))])))[0]
        greedy_score = float(sum(lp[len(p) - 1 + i, t] for i, t in enumerate(seq[len(p):])))
        assert s >= greedy_score - 1e-4


def _decode_files_chat_with_a_kb_and_reference_metrics(reverser, tmp_path, capsys, monkeypatch):
    """The command-line paths of issue 18 on the digit reverser: a file per prompt
    (`decode --file`, as for emails), `chat --kb` on a prompt -> target model (the KB
    stays in every prompt), and the multi-reference / entity scores of `evaluate_pairs`."""
    import io

    from memgpt_jax.apps.chat import ChatSession
    from memgpt_jax.apps.seq2seq import _generator, evaluate_pairs
    from memgpt_jax.data.dialogue import dialogue_prompt

    run, _, _ = reverser
    email = tmp_path / "email.txt"
    email.write_text("1 2\n  3 4\n")
    capsys.readouterr()
    assert cli_main(["decode", "--checkpoint", run, "--file", str(email), "--no-progress", "--max-new-tokens", "12"]) == 0
    assert capsys.readouterr().out.strip() == "4 3 2 1"

    kb = tmp_path / "kb.json"
    kb.write_text(json.dumps({"navigate": [{"poi": "Valero", "distance": "2 miles"}]}))
    monkeypatch.setattr("sys.stdin", io.StringIO("5 6 7\n/quit\n"))
    assert cli_main(["chat", "--checkpoint", run, "--kb", str(kb), "--max-new-tokens", "8"]) == 0
    captured = capsys.readouterr()
    assert "knowledge base:" in captured.err and "bot> " in captured.out
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert cli_main(["chat", "--checkpoint", run, "--kb", str(tmp_path / "bad.json")]) == 2
    assert "expected" in capsys.readouterr().err

    loaded = open_run(run)
    session = ChatSession(_generator(loaded), loaded.tokenizer, max_new_tokens=4, system="KB: Valero",
                          pair_prompt=lambda turns: dialogue_prompt("KB: Valero", turns))  # 64-token context
    session.history = [("user", "1 2"), ("bot", "2 1"), ("user", "3 4")]
    ids, dropped = session.build_prompt()
    text = loaded.tokenizer.decode(ids[1:-1])
    assert dropped == 0 and ids[0] == specials.BOS_ID and ids[-1] == specials.SEP_ID
    assert text == "KB: Valero\nUser: 1 2\nAssistant: 2 1\nUser: 3 4\nAssistant:"
    session.history = [("user", "1 " * 20), ("bot", "x"), ("user", "9 8")]
    session.budget = len(loaded.tokenizer.encode(dialogue_prompt("KB: Valero", [("user", "9 8")]))) + 2
    ids, dropped = session.build_prompt()  # the oldest turns go first; the KB stays
    assert dropped == 2 and loaded.tokenizer.decode(ids[1:-1]).startswith("KB: Valero\nUser: 9 8")

    records = [{"prompt": "1 2 3", "target": "3 2 1", "references": ["3 2 1", "9"], "entities": ["3 2"]},
               {"prompt": "4 5", "target": "5 4", "references": ["0", "5 4"], "entities": []}]
    report = evaluate_pairs(loaded, records, max_new_tokens=8, progress=False, entities=["3 2", "5 4"])
    outputs = [ex["output"] for ex in report["examples"]]
    assert report["rouge1_multi"] >= report["rouge1"] > 0  # the best of the references counts
    assert report["entity_tp"] + report["entity_fn"] == 1  # one gold entity in all
    assert report["entity_fp"] == int("5 4" in outputs[1])  # "5 4" is not a gold entity of the second
