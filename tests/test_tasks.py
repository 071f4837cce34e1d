"""Summarization (AESLC), task dialogue (KVRET) and QA data and metrics (issue 18):
the builders on small generated data, the knowledge-base serialization and entity
matching, the SQuAD split by article, ROUGE (rouge-score), entity F1 and the official
SQuAD v1.1 scoring's edge cases."""

from __future__ import annotations

import gzip
import json
import tarfile

import pytest

from memgpt_jax import data as data_lib
from memgpt_jax.apps import text_metrics
from memgpt_jax.apps.qa import exact_match, normalize_answer, squad_scores, token_f1
from memgpt_jax.data.aeslc import aeslc_builder, parse_subject_file
from memgpt_jax.data.dialogue import EntityMatcher, dialogue_builder, dialogue_prompt, serialize_kb
from memgpt_jax.data.prepared import DataError
from memgpt_jax.data.squad import holdout_articles, squad_builder

QUIET = dict(echo=lambda _: None)


def _email(body, subject, anns=()):
    return body + "\n\n@subject\n" + subject + "\n" + "".join(f"\n@ann{i}\n{a}\n" for i, a in enumerate(anns))


def test_aeslc_builder_reads_the_official_layout_from_a_tarball(tmp_path):
    files = {
        "train/a_1.subject": _email("Please  review\nthe attached  deal.", "Deal review"),
        "train/a_2.subject": _email("No subject here", ""),  # empty subject: skipped
        "train/a_3.subject": "a body without the marker",  # no @subject: skipped
        "dev/b_1.subject": _email("Meeting moved to 3pm.", "Meeting", ["meeting time change", "new time", "3pm"]),
    }
    src = tmp_path / "enron_subject_line"
    for name, text in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    archive = tmp_path / "aeslc.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="enron_subject_line")
    d = str(tmp_path / "tfds")
    counts = data_lib.prepare(aeslc_builder(str(archive), data_dir=d), **QUIET)
    assert counts == {"dev": 1, "train": 1}
    train = data_lib.load_split("memgpt_aeslc/aeslc", "train", d)[0]
    assert data_lib.as_text(train["prompt"]) == "Please review the attached deal."
    assert data_lib.as_text(train["target"]) == "Deal review"
    dev = data_lib.load_split("memgpt_aeslc/aeslc", "dev", d)[0]
    assert [data_lib.as_text(r) for r in dev["references"]] == ["Meeting", "meeting time change", "new time", "3pm"]
    report = data_lib.dataset_report("memgpt_aeslc/aeslc", d)["report"]
    assert report["empty_skipped"] == {"train": 1} and report["no_subject_skipped"] == {"train": 1}
    with pytest.raises(DataError, match="does not exist"):
        data_lib.prepare(aeslc_builder(str(tmp_path / "nope.tar.gz"), data_dir=str(tmp_path / "t2")), **QUIET)


def test_parse_subject_file_keeps_multi_line_fields():
    email = parse_subject_file(_email("Body line 1\nline 2", "Re: plans", ["plans", "weekend plans"]))
    assert email == {"body": "Body line 1 line 2", "subject": "Re: plans", "annotations": ["plans", "weekend plans"]}


KB = {"weather": [{"location": "boston", "monday": "stormy, low of 50F, high of 70F", "today": "monday"}],
      "navigate": [{"poi": "Dish Parking", "poi_type": "parking garage", "address": "550 Alester Ave"},
                   {"poi": "Valero", "poi_type": "gas station", "address": "200 Alester Ave"}]}


def test_kb_serialization_is_compact_and_ordered():
    text = serialize_kb(KB)
    assert text.splitlines() == [
        "KB weather: location ; monday ; today | boston ; stormy 50F-70F ; monday",
        "KB navigate: poi ; poi_type ; address | Dish Parking ; parking garage ; 550 Alester Ave | "
        "Valero ; gas station ; 200 Alester Ave",
    ]
    assert serialize_kb([{"a": 1}]) == "KB: a | 1" and serialize_kb({"x": []}) == ""
    assert dialogue_prompt("KB: a | 1", [("user", "hi"), ("system", "hello"), ("user", "where?")]) == \
        "KB: a | 1\nUser: hi\nAssistant: hello\nUser: where?\nAssistant:"


def test_entity_matcher_longest_first_word_bounded():
    match = EntityMatcher(["Valero", "200 Alester Ave", "alester ave", "50f", "ok", "x"])
    assert match("Valero is at 200 Alester Ave, low of 50F.") == ["valero", "200 alester ave", "50f"]
    assert match("okay, Valeros") == []  # word boundaries; "x" is too short to be an entity
    assert match("alester ave then Alester Ave") == ["alester ave", "alester ave"]


def _dialogue(i, split, domain="navigate"):
    return {
        "dialogue_id": f"kvret-{split}-{i}", "data_split": split, "domains": [domain],
        "turns": [
            {"speaker": "user", "utterance": "where is the nearest gas station",
             "dialogue_acts": {"non-categorical": [{"slot": "poi_type", "value": "gas station"}]}},
            {"speaker": "system", "utterance": "Valero is  at 200 Alester Ave.", "db_results": {"navigate": KB["navigate"]}},
            {"speaker": "user", "utterance": "thanks"},
            {"speaker": "system", "utterance": "You're welcome!", "db_results": {"navigate": KB["navigate"]}},
        ],
    }


def test_dialogue_builder_one_example_per_system_turn(tmp_path):
    source = tmp_path / "dialogues.json.gz"
    with gzip.open(source, "wt") as f:
        json.dump([_dialogue(0, "train"), _dialogue(1, "train"), _dialogue(0, "validation")], f)
    d = str(tmp_path / "tfds")
    assert data_lib.prepare(dialogue_builder(str(source), name="unit", data_dir=d), **QUIET) == \
        {"train": 4, "validation": 2}
    val = data_lib.load_split("memgpt_dialogue/unit", "validation", d)
    rows = sorted(({k: data_lib.as_text(v) if not isinstance(v, list) and k != "entities" else v
                    for k, v in val[i].items()} for i in range(2)), key=lambda r: r["id"])
    first = rows[0]
    assert first["target"] == "Valero is at 200 Alester Ave."
    assert first["prompt"] == serialize_kb({"navigate": KB["navigate"]}) + \
        "\nUser: where is the nearest gas station\nAssistant:"
    assert [data_lib.as_text(e) for e in first["entities"]] == ["valero", "200 alester ave"]
    assert rows[1]["prompt"].endswith("User: thanks\nAssistant:") and list(rows[1]["entities"]) == []
    vocabulary = data_lib.dataset_metadata("memgpt_dialogue/unit", d)["entities"]
    assert "gas station" in vocabulary and "550 alester ave" in vocabulary  # KB values and annotated values
    with pytest.raises(DataError, match="unified-format"):
        (tmp_path / "bad.json").write_text('{"not": "a list"}')
        data_lib.prepare(dialogue_builder(str(tmp_path / "bad.json"), name="bad", data_dir=d), **QUIET)


def _squad(n_articles):
    return {"data": [{"title": f"article_{a}", "paragraphs": [{"context": f"Alpha beta {a} gamma.", "qas": [
        {"id": f"{a}-{q}", "question": f"q{q}?", "answers": [{"text": f"beta {a}", "answer_start": 6}]}
        for q in range(3)]}]} for a in range(n_articles)]}


def test_squad_validation_split_by_article(tmp_path):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(_squad(10)))
    held = holdout_articles(str(path), 3, seed=7)
    assert len(held) == 3 and held == holdout_articles(str(path), 3, seed=7) != holdout_articles(str(path), 3, seed=8)
    d = str(tmp_path / "tfds")
    counts = data_lib.prepare(squad_builder(files={"train": str(path)}, name="unit", data_dir=d,
                                            holdout_articles=3, seed=7), **QUIET)
    assert counts == {"train": 21, "validation": 9}
    titles = {s: {data_lib.as_text(r["title"]) for r in data_lib.load_split("memgpt_squad/unit", s, d)}
              for s in ("train", "validation")}
    assert titles["validation"] == held and not titles["train"] & titles["validation"]
    assert data_lib.dataset_report("memgpt_squad/unit", d)["report"]["holdout_seed"] == 7  # recorded
    with pytest.raises(DataError, match="between 1 and 9"):
        holdout_articles(str(path), 10, seed=0)


def test_rouge_matches_rouge_score_and_hand_counts():
    # rouge-score's README example: ROUGE-1 P 0.75, R 0.6667; ROUGE-L P 0.625, R 0.5556
    target, prediction = "The quick brown fox jumps over the lazy dog", "The quick brown dog jumps on the log."
    scores = text_metrics.rouge([prediction], [target])
    assert scores["rouge1"] == pytest.approx(100 * 2 * 0.75 * (2 / 3) / (0.75 + 2 / 3))
    assert scores["rougeL"] == pytest.approx(100 * 2 * 0.625 * (5 / 9) / (0.625 + 5 / 9))
    # by hand: bigrams of "a b c d" vs "a c d e": {cd} common of 3 each -> 1/3; stemming: "meetings" ~ "meeting"
    assert text_metrics.rouge(["a b c d"], ["a c d e"])["rouge2"] == pytest.approx(100 / 3)
    assert text_metrics.rouge(["meetings moved"], ["meeting moved"])["rouge1"] == pytest.approx(100.0)
    # several references: each sentence scores its best one
    multi = text_metrics.rouge(["budget meeting", "gas prices"], [["budget meeting", "x"], ["nothing", "gas"]])
    assert multi["rouge1"] == pytest.approx((100 + 100 * 2 * 0.5 / 1.5) / 2)
    assert text_metrics.rouge_l(["a b c d"], ["a c d e"]) == pytest.approx(75.0)


def test_entity_f1_is_micro_over_the_corpus():
    match = EntityMatcher(["valero", "200 alester ave", "dish parking", "2 miles"])
    hyps = ["Valero is at 200 Alester Ave", "Dish Parking is 5 miles away", "you're welcome"]
    gold = [["valero", "200 alester ave"], ["dish parking", "2 miles"], []]
    scores = text_metrics.entity_f1(hyps, gold, match)
    # TP 3 (valero, address, dish parking), FP 0, FN 1 (2 miles): P 100, R 75
    assert (scores["entity_tp"], scores["entity_fp"], scores["entity_fn"]) == (3, 0, 1)
    assert scores["entity_f1"] == pytest.approx(100 * 2 * 0.75 / 1.75)
    assert text_metrics.entity_f1(["Valero Valero"], [["valero"]], match)["entity_fp"] == 1  # a multiset


def test_squad_metrics_follow_the_official_v1_1_script():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert exact_match("the Normans", "Normans") == 1.0
    assert token_f1("Normans of France", "the Normans") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    # an answer that normalizes to nothing: EM 1 but F1 0, as the v1.1 script scores it
    assert exact_match("the", "a") == 1.0 and token_f1("the", "a") == 0.0
    scores = squad_scores({"q1": "Normans", "q2": "wrong"}, {"q1": ["Norman", "the Normans"], "q2": ["x"], "q3": ["y"]})
    # best gold answer per question; q3 unanswered scores 0 but counts
    assert scores == {"exact_match": pytest.approx(100 / 3), "f1": pytest.approx(100 / 3), "questions": 3}


@pytest.mark.slow
def test_dialogue_recipe_chain_on_tiny_settings(tmp_path, monkeypatch):
    """configs/kvret.py:tiny through the commands of train/kvret_recipe.sh (finetune,
    quantize) and the recipe benchmark's rows (greedy + beam, BLEU and entity F1)."""
    import os

    from benchmarks import task_recipes
    from memgpt_jax.cli import main as cli_main

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = tmp_path / "dialogues.json"
    source.write_text(json.dumps([_dialogue(i, s) for s in ("train", "validation") for i in range(6)]))
    monkeypatch.setenv("MEMGPT_DATA_DIR", str(tmp_path / "tfds"))
    import benchmarks.common

    monkeypatch.setattr(benchmarks.common, "RESULTS_DIR", tmp_path / "results")
    assert cli_main(["data", "prepare", "dialogue", "--source", str(source), "--name", "kvret"]) == 0
    runs = tmp_path / "runs"
    assert cli_main(["finetune", "--config", os.path.join(root, "configs", "kvret.py:tiny"), "--workdir",
                     str(runs / "teacher"), "--no-progress", "--config.train.steps=2"]) == 0
    os.symlink(runs / "teacher", runs / "student")  # the chain, without a second training run
    # the copy-head lever (model.copy_dim) on the whole-dialogues lever (data.multi_turn): trained from
    # whole dialogues, decoded as it was trained; its log-probabilities decode greedy and with beams
    assert cli_main(["finetune", "--config", os.path.join(root, "configs", "kvret.py:tiny"), "--workdir",
                     str(runs / "teacher_copy"), "--no-progress", "--config.train.steps=2",
                     "--config.data.multi_turn=True", "--config.model.copy_dim=8"]) == 0
    os.symlink(runs / "teacher_copy", runs / "teacher_dialogues")  # its row: whole dialogues, one run less
    assert cli_main(["quantize", "--checkpoint", str(runs / "student"), "--out", str(runs / "student_int8"),
                     "--eval-batches", "1"]) == 0
    assert task_recipes.main("kvret", ["--runs", str(runs), "--beam", "2", "--max-examples", "3",
                                       "--no-results-md"]) == 0
    payload = json.loads((tmp_path / "results" / "kvret_recipe.json").read_text())
    assert [(r["model"], r["decoding"]) for r in payload["rows"]] == [
        (m, d) for m in ("teacher", "teacher, whole dialogues", "teacher, copy head", "student", "student int8")
        for d in ("greedy", "beam 2 (lp 1.0)")]
    assert all({"BLEU", "entity F1", "train_wall_min", "examples_per_s"} <= set(r) for r in payload["rows"])
    assert {r["init"] for r in payload["rows"]} == {"random"}  # no LM under the tiny config
    assert {r["source"] for r in payload["rows"]} == {"this run"}
    assert "## KVRET" in task_recipes.section_for("kvret")(payload)
    # Decoding constraints: rows of their own next to the committed ones of the same runs; runs
    # that are not on this machine (moved aside) keep their committed rows and gain none
    aside = tmp_path / "aside"
    aside.mkdir()
    for sub in ("teacher_dialogues", "teacher_copy", "student_int8"):
        os.rename(runs / sub, aside / sub)
    assert task_recipes.main("kvret", ["--runs", str(runs), "--beam", "2", "--max-examples", "3",
                                       "--no-results-md", "--no-repeat-ngram", "1"]) == 0
    first, payload = payload, json.loads((tmp_path / "results" / "kvret_recipe.json").read_text())
    labels = ("greedy", "beam 2 (lp 1.0)", "greedy, no repeated 1-gram", "beam 2 (lp 1.0), no repeated 1-gram")
    assert [(r["model"], r["decoding"]) for r in payload["rows"]] == [
        (m, d) for m in ("teacher", "teacher, whole dialogues", "teacher, copy head", "student", "student int8")
        for d in (labels if m in ("teacher", "student") else labels[:2])]
    assert [r["BLEU"] for r in payload["rows"] if "," not in r["decoding"]] == [r["BLEU"] for r in first["rows"]]
    assert {r["source"] for r in payload["rows"] if "," in r["decoding"]} == {"this run"}
    assert {"teacher/validation/beam1", "teacher/validation/beam2/nr1"} <= set(payload["meta"]["reports"])
    assert payload["meta"]["reports"]["teacher/validation/beam2/nr1"]["no_repeat_ngram"] == 1

    # Rerun: the committed rows of the same runs are kept, not measured again; a run that is
    # gone (a fresh machine) keeps its rows; --fresh measures again.
    def no_evaluation(*args, **kwargs):
        raise AssertionError("a row was measured twice")

    monkeypatch.setattr(task_recipes, "_evaluate", no_evaluation)
    os.unlink(runs / "student")
    assert task_recipes.main("kvret", ["--runs", str(runs), "--beam", "2", "--max-examples", "3",
                                       "--no-results-md"]) == 0
    again = json.loads((tmp_path / "results" / "kvret_recipe.json").read_text())
    assert [(r["model"], r["decoding"], r["BLEU"]) for r in again["rows"]] == [
        (r["model"], r["decoding"], r["BLEU"]) for r in payload["rows"]]
    assert all(r["source"].startswith("commit ") for r in again["rows"])
    assert again["meta"]["reports"].keys() == payload["meta"]["reports"].keys()  # kept rows keep their reports
    with pytest.raises(AssertionError, match="measured twice"):  # other settings: measured
        task_recipes.main("kvret", ["--runs", str(runs), "--beam", "2", "--max-examples", "2", "--no-results-md"])
    with pytest.raises(AssertionError, match="measured twice"):
        task_recipes.main("kvret", ["--runs", str(runs), "--beam", "2", "--max-examples", "3", "--fresh",
                                    "--no-results-md"])


def test_lead_baseline_row_takes_k_from_train_and_scores_like_the_models(monkeypatch):
    """AESLC's extractive anchor: the first k words, k = the median target length of train."""
    import memgpt_jax.apps.seq2seq as seq2seq
    from benchmarks import task_recipes

    splits = {"train": [{"prompt": "p", "target": t} for t in ("a b", "a b c", "x y z")],
              "dev": [{"prompt": "budget meeting moved to friday", "target": "budget meeting",
                       "references": ["budget meeting moved", "other words"]}]}
    monkeypatch.setattr(seq2seq, "load_pairs", lambda run, split, max_examples=0: splits[split])
    row, report = task_recipes.lead_row(task_recipes.TASKS["aeslc"], None, 0)
    assert row["model"] == "lead-3 baseline" and row["decoding"] == "the first 3 words"
    assert row["R-1"] == pytest.approx(80.0)  # "budget meeting moved" vs "budget meeting": P 2/3, R 1
    assert row["R-1 all refs"] == pytest.approx(100.0)  # its best reference matches exactly
    # the human anchor: each annotator (references[1:]) against the original and the others
    splits["dev"][0]["references"] = ["budget meeting", "budget meeting moved", "friday meeting"]
    row, report = task_recipes.human_row(task_recipes.TASKS["aeslc"], None, 0)
    assert row["model"] == "human (each of 2 annotators)" and row["params"] == 0
    # vs "budget meeting": "budget meeting moved" F 4/5, "friday meeting" F 1/2
    assert row["R-1"] == pytest.approx((80.0 + 50.0) / 2)
    # vs the best other: "budget meeting moved" -> "budget meeting" (4/5); "friday meeting" -> either (1/2)
    assert row["R-1 all refs"] == pytest.approx((80.0 + 50.0) / 2)
    splits["dev"][0]["references"] = ["budget meeting"]
    assert task_recipes.human_row(task_recipes.TASKS["aeslc"], None, 0) is None


def test_lead_baseline_row_is_kept_when_no_run_is_here(tmp_path, monkeypatch):
    """A fresh machine (no runs) keeps the committed lead row, after the teacher's rows."""
    import benchmarks.common
    from benchmarks import task_recipes

    monkeypatch.setattr(benchmarks.common, "RESULTS_DIR", tmp_path)
    teacher = {"model": "teacher", "params": 5, "decoding": "greedy", "R-1": 4.0, "source": "commit abc"}
    lead = {"model": "lead-3 baseline", "params": 0, "decoding": "the first 3 words", "R-1": 5.0}
    other = {"model": "teacher, copy head", "params": 6, "decoding": "greedy", "R-1": 18.0, "source": "commit abc"}
    (tmp_path / "aeslc_recipe.json").write_text(json.dumps(
        {"machine": {"commit": "def"}, "rows": [teacher, lead, other],
         "meta": {"reports": {"lead_baseline": {"rouge1": 5.0}}}}))
    rows, reports = task_recipes.run(task_recipes.TASKS["aeslc"], str(tmp_path / "no_runs"))
    assert [r["model"] for r in rows] == ["teacher", "lead-3 baseline", "teacher, copy head"]
    assert rows[1]["source"] == "commit def" and reports["lead_baseline"] == {"rouge1": 5.0}
    rows, _ = task_recipes.run(task_recipes.TASKS["aeslc"], str(tmp_path / "no_runs"), fresh=True)
    assert rows == []
