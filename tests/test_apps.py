"""Applications (issue 8): KV-cache generation, classify/eval, extractive QA, chat,
attention maps and saliency."""

import io
import json
import os
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memgpt_jax import config as config_lib
from memgpt_jax import data as data_lib
from memgpt_jax import model as model_lib
from memgpt_jax.apps import qa as qa_lib
from memgpt_jax.apps.chat import ChatSession, run_repl
from memgpt_jax.apps.generate import Generator, Sampling, banned_tokens, filter_logits, stop_cut
from memgpt_jax.cli import main as cli_main
from memgpt_jax.data.qa_pipeline import QAIterator, make_features, token_spans
from memgpt_jax.data.tokenizers import ByteTokenizer
from memgpt_jax.training.checkpoint import save_params
from memgpt_jax.training.run import open_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "listops_tiny.py")
SPARSE = dict(pattern="window_global", block_size=8, window=2, n_global=1)


def _save_run(path, task, mc, tokenizer, data=None, seed=0):
    model = model_lib.build(mc, task)
    params, _ = model_lib.init(model, jax.random.key(seed))
    config = {"task": task, "model": mc.to_dict(), "data": data or {"seq_len": mc.max_len}}
    save_params(str(path), params, {"config": config, "tokenizer": json.dumps(tokenizer.to_config()).encode()})
    return params


# the sparse model's generation runs in the full suite; the fast loop keeps the dense one (the sparse
# KV-cache decode is also in tests/test_attention_model_fn.py's fast tests)
@pytest.fixture(scope="module", params=["dense", pytest.param("sparse", marks=pytest.mark.slow)])
def lm(request):
    att = dict(pattern="dense") if request.param == "dense" else SPARSE
    mc = config_lib.tiny(vocab_size=264, max_len=64, attention=att)
    model = model_lib.build(mc)
    params, _ = model_lib.init(model, jax.random.key(1))
    return request.param, model, params, Generator(model, params, eos_id=10**6, chunk=8)


def _recompute_greedy(model, params, prompt, n, width=32):
    """Greedy decoding by the full forward pass (right-padded to one shape: causal)."""
    fwd = jax.jit(lambda p, x, t: model.apply({"params": p}, x).logits[0, t])
    seq = list(prompt)
    for _ in range(n):
        buf = np.zeros((1, width), np.int32)
        buf[0, :len(seq)] = seq
        seq.append(int(jnp.argmax(fwd(params, buf, len(seq) - 1))))
    return seq[len(prompt):]


@pytest.mark.slow  # the fast loop keeps the CLI paths (generate, classify) and export's decoding
def test_kv_cache_greedy_equals_recomputing_the_full_forward(lm):
    kind, model, params, gen = lm
    prompts = [[1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49], [1, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69]]
    ids, reasons = gen.generate_ids(prompts, max_new_tokens=20)  # 3 chunks of 8, the last cut to 4
    assert reasons == ["length", "length"] and [len(x) for x in ids] == [20, 20]
    for p, out in zip(prompts, ids):
        assert out == _recompute_greedy(model, params, p, 20), kind
    if kind == "dense":  # left padding does not change a dense model's continuation
        short, _ = gen.generate_ids([prompts[0][:4], prompts[1]], max_new_tokens=12)
        alone, _ = gen.generate_ids([prompts[0][:4]], max_new_tokens=12)
        assert short[0] == alone[0]


def test_banned_tokens_rule():
    assert banned_tokens([5, 6, 5], 2) == {6}  # "5 6" seen: after 5, 6 would repeat it
    assert banned_tokens([5, 6, 7], 2) == set()
    assert banned_tokens([1, 2, 3], 1) == {1, 2, 3}  # n = 1: no token twice
    assert banned_tokens([1, 2, 1, 2], 3) == {1}  # "1 2 1" seen
    assert banned_tokens([], 2) == banned_tokens([4], 3) == banned_tokens([1, 1], 0) == set()


def _recompute_constrained(model, params, prompt, n, eos, no_repeat, min_new, width=40):
    """Greedy decoding by the full forward pass, the constraints applied on the host."""
    fwd = jax.jit(lambda p, x, t: model.apply({"params": p}, x).logits[0, t])
    seq, out = list(prompt), []
    for k in range(n):
        buf = np.zeros((1, width), np.int32)
        buf[0, :len(seq)] = seq
        logits = np.array(fwd(params, buf, len(seq) - 1), np.float32)
        if k < min_new:
            logits[eos] = -np.inf
        logits[sorted(banned_tokens(out, no_repeat))] = -np.inf
        t = int(np.argmax(logits))
        if t == eos:
            break
        out.append(t)
        seq.append(t)
    return out


@pytest.mark.slow  # the fast loop keeps the CLI paths (generate, classify) and export's decoding
def test_no_repeat_ngram_and_min_new_tokens_equal_the_host_rule(lm):
    """The on-device constraints (carried across chunks of 8) pick what the host rule picks."""
    kind, model, params, gen = lm
    # prompts of the bucket's length: a sparse layout then sees the positions the full forward does
    prompts = [[1, *range(40, 55)], [1, *range(60, 75)]]
    free, _ = gen.generate_ids(prompts, max_new_tokens=20)
    assert any(len(set(zip(o, o[1:]))) < len(o) - 1 for o in free)  # a random model repeats itself
    ids, _ = gen.generate_ids(prompts, max_new_tokens=20, sampling=Sampling(no_repeat_ngram=2))
    for p, out in zip(prompts, ids):
        assert len(set(zip(out, out[1:]))) == len(out) - 1, kind
        assert out == _recompute_constrained(model, params, p, 20, -1, 2, 0), kind
    eos = free[0][1]  # a token the free output reaches early: it ends there unless held off
    eos_gen = Generator(model, params, eos_id=eos, chunk=8)
    plain, reasons = eos_gen.generate_ids(prompts[:1], max_new_tokens=20)
    assert reasons == ["eos"] and plain[0] == free[0][:free[0].index(eos)] and len(plain[0]) <= 1
    held, _ = eos_gen.generate_ids(prompts[:1], max_new_tokens=20,
                                   sampling=Sampling(no_repeat_ngram=3, min_new_tokens=10))
    assert len(held[0]) >= 10
    assert held[0] == _recompute_constrained(model, params, prompts[0], 20, eos, 3, 10), kind
    with pytest.raises(ValueError, match="no_repeat_ngram"):
        Sampling(no_repeat_ngram=-1)
    with pytest.raises(ValueError, match="min_new_tokens"):
        gen.beam_search(prompts, beam=2, max_new_tokens=4, min_new_tokens=-2)


@pytest.mark.slow  # the fast loop keeps the CLI paths (generate, classify) and export's decoding
def test_sampling_filters_and_seeds(lm):
    _, _, _, gen = lm
    logits = jnp.asarray([[0.0, 3.0, 1.0, 2.0, -1.0]])
    kept = np.isfinite(np.asarray(filter_logits(logits, Sampling(1.0, top_k=2))))
    assert kept.tolist() == [[False, True, False, True, False]]
    probs = jax.nn.softmax(logits)[0]  # 0.64, 0.24, ...: top_p 0.7 keeps the two most likely
    assert float(probs[1]) < 0.7 < float(probs[1] + probs[3])
    kept = np.isfinite(np.asarray(filter_logits(logits, Sampling(1.0, top_p=0.7))))
    assert kept.tolist() == [[False, True, False, True, False]]
    prompt = [[1, 50, 51, 52]]
    greedy, _ = gen.generate_ids(prompt, max_new_tokens=8)
    assert gen.generate_ids(prompt, max_new_tokens=8, sampling=Sampling(1.5, top_k=1))[0] == greedy
    a = gen.generate_ids(prompt, max_new_tokens=8, sampling=Sampling(1.0), seed=3)[0]
    b = gen.generate_ids(prompt, max_new_tokens=8, sampling=Sampling(1.0), seed=3)[0]
    assert a == b
    # the same seed gives the same text whatever the chunk (--stream decodes one token at a time)
    one_by_one = Generator(gen.model, gen.params, eos_id=gen.eos_id, chunk=1)
    assert one_by_one.generate_ids(prompt, max_new_tokens=8, sampling=Sampling(1.0), seed=3)[0] == a
    with pytest.raises(ValueError, match="top_p"):
        Sampling(1.0, top_p=0.0)
    with pytest.raises(ValueError, match="context"):
        gen.generate_ids(prompt, max_new_tokens=64)


def test_stop_strings_and_eos(lm):
    _, model, params, gen = lm
    tok = ByteTokenizer()
    ids = tok.encode("hello world\n\nmore").tolist()
    assert stop_cut(ids, tok, ["\n\n"]) == len("hello world")
    assert stop_cut(ids, tok, ["absent"]) is None
    sample = Sampling(1.0)  # a random model repeats itself when greedy; a seeded sample does not
    free = gen.generate(["ab"], tok, max_new_tokens=16, sampling=sample, seed=5)[0]
    text = free.text
    fresh = [k for k in range(2, len(text)) if text[k] not in text[:k]]  # a character not seen before
    if not fresh:
        pytest.skip("random model produced text unsuitable for this check")
    stop = text[fresh[0]]
    cut = gen.generate(["ab"], tok, max_new_tokens=16, stop=[stop], sampling=sample, seed=5)[0]
    assert cut.finish_reason == "stop" and cut.text == text[: text.find(stop)]
    eos_gen = Generator(model, params, eos_id=free.token_ids[3], chunk=8)
    out, reasons = eos_gen.generate_ids([free.prompt_ids], max_new_tokens=16, sampling=sample, seed=5)
    assert reasons == ["eos"] and out[0] == free.token_ids[: free.token_ids.index(free.token_ids[3])]
    pieces = []
    streamed = gen.generate(["ab"], tok, max_new_tokens=16, on_text=lambda i, s: pieces.append(s), sampling=sample,
                            seed=5)[0]
    assert "".join(pieces) == streamed.text == text


def test_generate_cli_and_chat_history(tmp_path, capsys):
    mc = config_lib.tiny(vocab_size=264, max_len=64)
    _save_run(tmp_path / "lm", "lm", mc, ByteTokenizer())
    assert cli_main(["generate", "--checkpoint", str(tmp_path / "lm"), "--prompt", "ab", "--prompt", "xyz",
                     "--max-new-tokens", "5", "--json", "--temperature", "0.7", "--top-k", "20"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["prompt"] for r in rows] == ["ab", "xyz"] and all(r["tokens"] <= 5 for r in rows)
    assert cli_main(["classify", "--checkpoint", str(tmp_path / "lm"), "text"]) == 2
    assert "classification" in capsys.readouterr().err

    loaded = open_run(str(tmp_path / "lm"))
    session = ChatSession(Generator(loaded.model, loaded.params, eos_id=2, chunk=1), loaded.tokenizer,
                          max_new_tokens=8)
    replies = iter(["hello there", "/history", "a much longer message " * 2, "/quit"])
    out = io.StringIO()
    assert run_repl(session, read=lambda _: next(replies), out=out) == 0
    text = out.getvalue()
    assert text.count("bot> ") == 2 and "User: hello there" in text
    assert "oldest turn" in text  # 56 tokens of budget cannot hold the whole history
    prompt, dropped = session.build_prompt()
    assert len(prompt) <= session.budget and dropped >= 1


@pytest.fixture(scope="module")
def listops_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tfds_apps"))
    data_lib.prepare(data_lib.listops_builder("tiny", data_dir=d), echo=lambda _: None)
    return d


def test_classify_and_eval_report(tmp_path, listops_dir, capsys):
    from memgpt_jax.apps.classify import Classifier, evaluate_classifier
    from memgpt_jax.data.tokenizers import ListOpsTokenizer
    from memgpt_jax import run_config

    rc = run_config.load(TINY).replace(data={"data_dir": listops_dir})
    config, mc = rc.to_dict(), rc.model
    model = model_lib.build(mc, "classification")
    params, _ = model_lib.init(model, jax.random.key(0))
    run = str(tmp_path / "clf")
    save_params(run, params, {"config": config, "tokenizer": json.dumps(ListOpsTokenizer().to_config()).encode()})
    loaded = open_run(run)
    source = data_lib.load_split("memgpt_listops/tiny", "test", listops_dir)
    texts = [data_lib.as_text(source[i]["text"]) for i in range(10)]
    labels = np.asarray([source[i]["label"] for i in range(10)])
    probs = Classifier(loaded, batch_size=4).predict(texts)
    assert probs.shape == (10, 10) and np.allclose(probs.sum(-1), 1, atol=1e-5)

    report = evaluate_classifier(loaded, "test", batch_size=4, max_examples=10, progress=False)
    cm = np.asarray(report["confusion"])
    assert cm.sum() == report["examples"] == 10 == sum(report["support"])
    pred = probs.argmax(-1)
    assert report["accuracy"] == pytest.approx(float((pred == labels).mean()))
    expected = np.zeros((10, 10), int)
    np.add.at(expected, (labels, pred), 1)
    assert (cm == expected).all()
    assert "predictions" not in report  # per example only on request
    each = evaluate_classifier(loaded, "test", batch_size=4, max_examples=10, progress=False, per_example=True)
    np.testing.assert_array_equal(each["predictions"], pred)  # in the split's order, padding dropped
    np.testing.assert_array_equal(each["labels"], labels)

    assert cli_main(["classify", "--checkpoint", run, "--json", texts[0], texts[1]]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label_id"] for r in rows] == pred[:2].tolist()
    out_json = str(tmp_path / "eval.json")
    assert cli_main(["eval", "--checkpoint", run, "--split", "test", "--max-examples", "8", "--no-progress",
                     "--json", out_json]) == 0
    printed = capsys.readouterr().out
    assert "macro" in printed and "confusion" in printed
    assert json.load(open(out_json))["examples"] == 8


def _qa_records(n, seed):
    rng = random.Random(seed)
    names = ["alice", "bob", "carol", "dave", "erin", "frank"]
    places = ["paris", "rome", "oslo", "lima", "cairo", "delhi", "quito"]
    out = []
    for i in range(n):
        who = rng.sample(names, 3)
        where = rng.sample(places, 3)
        context = " ".join(f"{w} lives in {p}." for w, p in zip(who, where))
        k = rng.randrange(3)
        start = context.index(f"{who[k]} lives in ") + len(f"{who[k]} lives in ")
        out.append({"id": f"q{i}", "question": f"where does {who[k]} live?", "context": context,
                    "answers": [where[k]], "answer_starts": [start]})
    return out


def test_qa_features_map_back_to_answers_and_metrics():
    tok = ByteTokenizer()
    for rec in _qa_records(20, 0):
        for max_len, stride in ((128, 64), (40, 8)):  # whole context; overlapping windows
            train = make_features(rec, tok, max_len=max_len, doc_stride=stride, train=True)
            assert len(train) == 1
            f = train[0]
            assert tok.decode(f.inputs[f.start:f.end + 1]) == rec["answers"][0]
            a, b = f.start - f.context_offset, f.end - f.context_offset
            assert rec["context"][f.char_start[a]:f.char_end[b]] == rec["answers"][0]
            windows = make_features(rec, tok, max_len=max_len, doc_stride=stride, train=False)
            covered = set()
            for w in windows:
                assert len(w.inputs) <= max_len
                covered.update(w.char_start.tolist())
            assert covered == set(token_spans(tok, rec["context"])[1].tolist())  # every token in some window
    rec = _qa_records(1, 5)[0]  # the same question in tfds squad's layout gives the same features
    tfds_rec = {**rec, "answers": {"text": rec["answers"], "answer_start": rec["answer_starts"]}}
    del tfds_rec["answer_starts"]
    a = make_features(rec, tok, max_len=40, doc_stride=8, train=True)[0]
    b = make_features(tfds_rec, tok, max_len=40, doc_stride=8, train=True)[0]
    assert (a.start, a.end) == (b.start, b.end) and (a.inputs == b.inputs).all()
    assert qa_lib.exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert qa_lib.token_f1("in the city of paris", "paris city") == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert qa_lib.squad_scores({"a": "rome", "b": "x"}, {"a": ["Rome", "oslo"], "b": ["y"]})["exact_match"] == 50.0
    s = np.array([0, 5.0, 0, 0, 9.0, 0])
    e = np.array([0, 0, 4.0, 0, 0, 1.0])
    assert qa_lib.best_span(s, e, 1, 6, 3)[1:] == (4, 5)  # start 4 + end 5 (10) beats start 1 + end 2 (9)
    assert qa_lib.best_span(s, e, 1, 4, 3)[1:] == (1, 2)


def test_qa_sentencepiece_offsets(tmp_path):
    texts = [r["context"] + " " + r["question"] for r in _qa_records(200, 1)]
    tok = data_lib.train_sentencepiece(texts, vocab_size=300, hard_vocab_limit=False)
    for rec in _qa_records(20, 2):
        ids, cs, ce = token_spans(tok, rec["context"])
        assert ids.tolist() == tok.encode(rec["context"]).tolist()
        f = make_features(rec, tok, max_len=64, doc_stride=16, train=True)[0]
        a, b = f.start - f.context_offset, f.end - f.context_offset
        assert rec["context"][f.char_start[a]:f.char_end[b]] == rec["answers"][0]


@pytest.mark.slow
def test_qa_finetune_and_eval(tmp_path, capsys):
    records = {split: _qa_records(n, seed) for split, n, seed in (("train", 64, 3), ("validation", 12, 4))}
    files = {}
    for split, recs in records.items():
        squad = {"data": [{"title": "t", "paragraphs": [
            {"context": r["context"], "qas": [{"id": r["id"], "question": r["question"], "answers": [
                {"text": r["answers"][0], "answer_start": r["answer_starts"][0]}]}]} for r in recs]}]}
        files[split] = str(tmp_path / f"{split}.json")
        json.dump(squad, open(files[split], "w"))
    d = str(tmp_path / "tfds")
    assert cli_main(["data", "prepare", "squad", "--train", files["train"], "--validation", files["validation"],
                     "--name", "unit", "--data-dir", d]) == 0
    source = data_lib.load_split("memgpt_squad/unit", "train", d)
    assert len(source) == 64
    it = QAIterator(source, ByteTokenizer(), batch_size=8, max_len=96)
    batch = next(it)
    assert batch["inputs"].shape == (8, 96) and (batch["start"] > 0).all() and (batch["end"] >= batch["start"]).all()
    run = str(tmp_path / "qa")
    assert cli_main(["finetune", "--config", TINY, "--workdir", run, "--no-progress", "--config.task=qa",
                     "--config.data.dataset=squad", "--config.data.name=memgpt_squad/unit",
                     f"--config.data.data_dir={d}", "--config.data.tokenizer=bytes", "--config.model.vocab_size=264",
                     "--config.model.max_len=96", "--config.data.seq_len=96", "--config.train.steps=3",
                     "--config.train.eval_every=3"]) == 0
    capsys.readouterr()
    assert cli_main(["eval", "--checkpoint", run, "--split", "validation"]) == 0
    line = capsys.readouterr().out
    assert "12 questions" in line and "exact match" in line
    assert cli_main(["qa", "--checkpoint", run, "--question", "where does bob live?",
                     "--context", "bob lives in rome. carol lives in oslo."]) == 0
    answer = capsys.readouterr().out.strip()
    assert answer in "bob lives in rome. carol lives in oslo."


@pytest.mark.slow  # compiles the weights and gradient programs of a sparse classifier
def test_attention_maps_and_saliency(tmp_path, capsys):
    from memgpt_jax.apps import interpret

    mc = config_lib.tiny(vocab_size=264, max_len=64, num_labels=2, attention=SPARSE)
    _save_run(tmp_path / "clf", "classification", mc, ByteTokenizer())
    loaded = open_run(str(tmp_path / "clf"))
    text = "a sparse model's attention"  # the commands below take the same text: their programs are cached
    ids = interpret.encode_input(loaded, text)
    maps = interpret.attention_maps(loaded, ids)
    assert len(maps) == mc.n_layers and maps[0].shape == (mc.n_heads, len(ids), len(ids))
    kept, b = interpret.kept_blocks(loaded, len(ids))
    dense_mask = np.kron(kept[0][0], np.ones((b, b), bool))[: len(ids), : len(ids)]
    assert np.all(maps[0][:, ~dense_mask] == 0)  # no weight outside the kept blocks
    assert cli_main(["attention-map", "--checkpoint", str(tmp_path / "clf"), "--text", text,
                     "--out", str(tmp_path / "maps"), "--layers", "0"]) == 0
    png = tmp_path / "maps" / "layer_0.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    scores, label, probs = interpret.saliency(loaded, ids)
    assert scores.shape == (len(ids),) and np.isfinite(scores).all() and label == int(probs.argmax())
    # first order: moving one embedding along the gradient raises the explained logit
    params = loaded.params
    f = jax.jit(lambda d: loaded.model.apply({"params": params}, jnp.asarray(ids)[None], embed_delta=d).logits[0, label])
    zero = jnp.zeros((1, len(ids), mc.d_model))
    g = jax.grad(f)(zero)
    assert float(f(1e-2 * g)) > float(f(zero))
    assert cli_main(["saliency", "--checkpoint", str(tmp_path / "clf"), "--text", text,
                     "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
