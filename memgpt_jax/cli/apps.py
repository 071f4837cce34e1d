"""Commands for trained models: generate, classify, eval, decode, qa, chat, attention-map, saliency.

On the runs `memgpt-jax demo` trains (runs/demo), as they are:

    memgpt-jax classify --checkpoint runs/demo/student "[MAX 2 9 [MIN 4 7 ] 0 ]"
    memgpt-jax eval --checkpoint runs/demo/teacher --split test
    memgpt-jax attention-map --checkpoint runs/demo/student --text "[MAX 2 9 ]" --out runs/demo/maps

On the recipes' runs (docs/recipes.md trains them):

    memgpt-jax generate --checkpoint runs/shakespeare --prompt "ROMEO:" --max-new-tokens 200 --top-p 0.9
    memgpt-jax classify --checkpoint runs/imdb/student "A wonderful, moving film."
    memgpt-jax classify --checkpoint runs/imdb/student --file review1.txt review2.txt
    cat reviews.txt | memgpt-jax classify --checkpoint runs/imdb/student      (one text per line)
    memgpt-jax eval --checkpoint runs/imdb/student --split test
    memgpt-jax eval --checkpoint runs/multi30k/teacher --split test_2016_flickr --beam 4   (BLEU/chrF/ROUGE-L/EM)
    memgpt-jax decode --checkpoint runs/multi30k/teacher --split train --beam 4 --out distill.jsonl
    memgpt-jax qa --checkpoint runs/qa --question "Who?" --context "..."
    memgpt-jax chat --checkpoint runs/shakespeare
    memgpt-jax attention-map --checkpoint runs/imdb/student --text "..." --out maps/
    memgpt-jax saliency --checkpoint runs/imdb/student --text "..." --out saliency.png

Every command takes a run directory (its newest checkpoint; ``--step`` picks
another). Quantized runs (``memgpt-jax quantize``) work everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from memgpt_jax.training.run import Run


def _load(args: argparse.Namespace, command: str | None) -> Run:
    """The run of ``--checkpoint`` (``--step``), checked to be of a task that accepts ``command``
    (``None``: any task); problems exit with one line."""
    from memgpt_jax import tasks  # lazy: keeps --help fast
    from memgpt_jax.training.run import RunError, open_run

    try:
        run = open_run(args.checkpoint, step=args.step)
        if command is not None:
            tasks.require(run.task, command, run.path)
    except (FileNotFoundError, RunError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    if run.tokenizer is None:
        raise SystemExit(f"error: {args.checkpoint} carries no tokenizer and its config names none; "
                         "text commands need one")
    if getattr(args, "max_new_tokens", 0) is None:  # not given: a default that fits this model's context
        args.max_new_tokens = min(getattr(args, "default_new_tokens", 64), run.model_config.max_len // 2)
    return run


def _sampling(args: argparse.Namespace):
    from memgpt_jax.apps.generate import Sampling  # lazy: keeps --help fast

    try:
        return Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                        no_repeat_ngram=args.no_repeat_ngram, min_new_tokens=args.min_new_tokens)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


def _generator(run: Run, chunk: int):
    from memgpt_jax.apps.generate import Generator  # lazy: keeps --help fast

    return Generator(run.model, run.params, eos_id=run.tokenizer.eos_id, pad_id=run.tokenizer.pad_id, chunk=chunk)




def _decode_text(data: bytes, where: str) -> str:
    """UTF-8 text, or a one-line error naming ``where`` (binary data is refused, not guessed at)."""
    if b"\0" in data:
        raise SystemExit(f"error: {where} is binary (it holds NUL bytes), not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SystemExit(f"error: {where} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def _read_texts(args: argparse.Namespace) -> list[str]:
    texts = [(t, f"text {i + 1}") for i, t in enumerate(args.texts or [])]
    for path in args.file or []:
        try:
            with open(path, "rb") as f:
                texts.append((_decode_text(f.read(), path), path))
        except OSError as e:
            raise SystemExit(f"error: --file {path}: {e.strerror}") from None
    if not texts:
        if sys.stdin.isatty():
            raise SystemExit("error: give texts as arguments, --file FILES, or lines on stdin")
        data = _decode_text(sys.stdin.buffer.read(), "stdin")
        texts = [(data, "stdin")] if args.whole else [(line, f"stdin line {i + 1}")
                                                      for i, line in enumerate(data.splitlines()) if line.strip()]
    if not texts:
        raise SystemExit("error: no text to process")
    empty = [where for text, where in texts if not text.strip()]
    if empty:
        raise SystemExit(f"error: {empty[0]} is empty; there is nothing to classify")
    return [text for text, _ in texts]


def cmd_generate(args: argparse.Namespace) -> int:
    run = _load(args, "generate")
    prompts = list(args.prompt or [])
    if args.prompt_file:
        try:
            with open(args.prompt_file, "rb") as f:
                text = _decode_text(f.read(), args.prompt_file)
        except OSError as e:
            raise SystemExit(f"error: --prompt-file {args.prompt_file}: {e.strerror}") from None
        lines = [line.replace("\\n", "\n") for line in text.splitlines() if line.strip()]
        if not lines:
            raise SystemExit(f"error: --prompt-file {args.prompt_file} holds no prompt")
        prompts.extend(lines)
    if not prompts:
        print("no prompt given: generating from the start token", file=sys.stderr)
        prompts = [""]
    sampling = _sampling(args)
    gen = _generator(run, 1 if args.stream and len(prompts) == 1 else args.chunk)
    stream = args.stream and len(prompts) == 1

    shown = []  # the prompt is echoed with the first piece: nothing is printed for a refused prompt

    def on_text(_: int, piece: str) -> None:
        if not shown:
            shown.append(sys.stdout.write(prompts[0]))
        sys.stdout.write(piece)
        sys.stdout.flush()

    t0 = time.perf_counter()
    try:
        stops = [s.replace("\\n", "\n").replace("\\t", "\t") for s in args.stop or ()]  # "\n" as typed
        results = gen.generate(prompts, run.tokenizer, max_new_tokens=args.max_new_tokens, sampling=sampling,
                               seed=args.seed, stop=stops, on_text=on_text if stream else None)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    n_tokens = sum(len(r.token_ids) for r in results)
    if stream:
        sys.stdout.write(("" if shown else prompts[0]) + "\n")
    for prompt, r in zip(prompts, results):
        if args.json:
            print(json.dumps({"prompt": prompt, "completion": r.text, "tokens": len(r.token_ids),
                              "finish_reason": r.finish_reason}))
        elif not stream:
            print(prompt + r.text)
            print("-" * 40)
    print(f"{n_tokens} tokens in {dt:.2f} s ({n_tokens / max(dt, 1e-9):.1f} tokens/s, compile included); "
          f"finish: {', '.join(r.finish_reason for r in results)}", file=sys.stderr)
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from memgpt_jax.apps.classify import Classifier  # lazy: keeps --help fast

    from memgpt_jax.data.cls_pipeline import KEEP  # lazy: keeps --help fast

    run = _load(args, "classify")
    texts = _read_texts(args)
    args.truncate = args.truncate or run.config.data.kept()  # by default as the run was trained
    clf = Classifier(run, batch_size=args.batch_size, truncate=KEEP[args.truncate])
    probs = clf.predict(texts)
    dropped = clf.dropped_tokens(texts)
    names = run.label_names
    for text, p, cut in zip(texts, probs, dropped):
        k = int(p.argmax())
        if args.json:
            print(json.dumps({"label": names[k], "label_id": k, "probabilities": dict(zip(names, map(float, p))),
                              "text": text[:200], "truncated_tokens": cut,
                              "kept": args.truncate if cut else "all"}))
        else:
            snippet = " ".join(text.split())[:70]
            note = f"  [truncated: {cut:,} tokens beyond the {clf.max_len}-token context cut, kept the {args.truncate}]"
            print(f"{names[k]:>10}  p={p[k]:.3f}  {snippet}" + (note if cut else ""))
    return 0


def _with_data(run: Run, args: argparse.Namespace) -> Run:
    """``run`` reading its data from ``--data-dir`` / ``--dataset`` when given (default: its own)."""
    changes = {}
    if args.data_dir:
        changes["data_dir"] = args.data_dir
    if getattr(args, "dataset", None):  # the name wins over the run's ListOps settings; its pipeline with it
        from memgpt_jax import data as data_lib  # lazy: keeps --help fast

        changes.update(name=args.dataset, listops={})
        pipeline = data_lib.pipeline_of(args.dataset)
        if pipeline:
            changes["dataset"] = pipeline
    return dataclasses.replace(run, config=run.config.replace(data=changes)) if changes else run


def cmd_eval(args: argparse.Namespace) -> int:
    from memgpt_jax import tasks  # lazy: keeps --help fast

    run = _with_data(_load(args, None), args)
    args.split = args.split or run.config.data.eval_split
    print(f"evaluating {run.path} at step {run.step} on {args.split!r}", file=sys.stderr)  # a live run moves on
    batch_size = args.batch_size or 64
    report_kind = tasks.get(run.task).eval_report(run.config)  # the task's decoding evaluation, if any
    if report_kind == "classifier":
        from memgpt_jax.apps.classify import evaluate_classifier, format_report  # lazy: keeps --help fast

        report = evaluate_classifier(run, args.split, batch_size=batch_size, max_examples=args.max_examples,
                                     progress=not args.no_progress)
        print(format_report(report))
    elif report_kind == "spans":
        from memgpt_jax.apps.qa import evaluate_qa  # lazy: keeps --help fast
        from memgpt_jax.training.inputs import load_source  # lazy: keeps --help fast

        source = load_source(run.config.data, args.split)
        if args.max_examples:
            source = [source[i] for i in range(min(args.max_examples, len(source)))]
        report = evaluate_qa(run, source, batch_size=batch_size)
        report.pop("predictions")
        report["split"] = args.split
        print(f"{args.split}: {report['questions']} questions, exact match {report['exact_match']:.2f}, "
              f"F1 {report['f1']:.2f} ({report['questions_per_s']:.1f} questions/s)")
    elif report_kind == "pairs" and not args.perplexity:
        from memgpt_jax.apps.seq2seq import entity_vocabulary, evaluate_pairs, load_pairs  # lazy: fast --help

        records = load_pairs(run, args.split, max_examples=args.max_examples)
        try:
            report = evaluate_pairs(run, records, beam=args.beam, length_penalty=args.length_penalty,
                                    max_new_tokens=args.max_new_tokens, batch_size=batch_size,
                                    progress=not args.no_progress, entities=entity_vocabulary(run),
                                    no_repeat_ngram=args.no_repeat_ngram, min_new_tokens=args.min_new_tokens,
                                    mbr=args.mbr, mbr_temperature=args.mbr_temperature)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        report["split"] = args.split
        extra = ""
        if "rouge1_multi" in report:
            extra += (f"; against all references ROUGE-1/2/L {report['rouge1_multi']:.2f} / "
                      f"{report['rouge2_multi']:.2f} / {report['rouge_l_multi']:.2f}")
        if "entity_f1" in report:
            extra += f"; entity F1 {report['entity_f1']:.2f}"
        print(f"{args.split}: {report['sentences']} sentences, BLEU {report['bleu']:.2f}, chrF {report['chrf']:.2f}, "
              f"ROUGE-1/2/L {report['rouge1']:.2f} / {report['rouge2']:.2f} / {report['rouge_l']:.2f}, "
              f"exact match {report['exact_match']:.2f}{extra} "
              f"(beam {args.beam}, {report['sentences_per_s']:.1f} sentences/s)")
        for ex in report["examples"][:3]:
            print(f"  prompt:    {ex['prompt']}\n  reference: {ex['reference']}\n  output:    {ex['output']}")
    else:  # teacher-forced: loss and perplexity (language models, target perplexity of pairs)
        from memgpt_jax.training.evaluate import evaluate_run  # lazy: keeps --help fast

        eval_batch = args.batch_size or run.config.data.eval_batch_size
        max_batches = -(-args.max_examples // eval_batch) if args.max_examples else 0
        report = evaluate_run(run, args.split, max_batches=max_batches, batch_size=eval_batch)
        report["split"] = args.split
        print(f"{args.split}: " + ", ".join(f"{k}={v:.4g}" for k, v in report.items() if isinstance(v, float)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    # lazy: keeps --help fast
    from memgpt_jax.apps.seq2seq import decode, load_pairs, write_distillation_pairs
    from memgpt_jax.data.prepared import as_text

    run = _with_data(_load(args, "decode"), args)
    kwargs = dict(beam=args.beam, length_penalty=args.length_penalty, max_new_tokens=args.max_new_tokens,
                  batch_size=args.batch_size, progress=not args.no_progress, no_repeat_ngram=args.no_repeat_ngram,
                  min_new_tokens=args.min_new_tokens, mbr=args.mbr, mbr_temperature=args.mbr_temperature)
    try:
        if args.split:
            records = load_pairs(run, args.split, max_examples=args.max_examples)
            if args.out:
                n = write_distillation_pairs(run, records, args.out, **kwargs)
                print(f"wrote {n} prompt/target pairs (targets: this model's outputs) to {args.out}")
                return 0
            prompts = [as_text(r["prompt"]) for r in records]
        elif args.file:  # one prompt per file (an email), whitespace collapsed as the builders do
            prompts = []
            for path in args.file:
                try:
                    with open(path, "rb") as f:
                        prompts.append(" ".join(_decode_text(f.read(), path).split()))
                except OSError as e:
                    raise SystemExit(f"error: --file {path}: {e.strerror}") from None
                if not prompts[-1]:
                    raise SystemExit(f"error: --file {path} is empty")
        else:
            prompts = list(args.prompt or []) or [line for line in sys.stdin.read().splitlines() if line.strip()]
        for p, out in zip(prompts, decode(run, prompts, **kwargs)):
            print(json.dumps({"prompt": p, "output": out}, ensure_ascii=False) if args.json else out)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    return 0


def cmd_qa(args: argparse.Namespace) -> int:
    from memgpt_jax.apps.qa import QAPredictor  # lazy: keeps --help fast

    if not args.question.strip():
        raise SystemExit("error: --question is empty")
    run = _load(args, "qa")
    context = args.context
    if args.context_file:
        with open(args.context_file, encoding="utf-8") as f:
            context = f.read()
    if not (context or "").strip():
        raise SystemExit("error: give a non-empty --context TEXT or --context-file FILE")
    print(QAPredictor(run).answer(args.question, context))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from memgpt_jax.apps.chat import ChatSession, run_repl  # lazy: keeps --help fast

    run = _load(args, "chat")
    system = args.system
    if args.kb:
        system = "\n".join(t for t in (system, _read_kb(args.kb)) if t)
    pair_prompt = None
    if run.config.data.dataset == "pairs":  # fine-tuned on prompt -> target chats: its training prompt
        from memgpt_jax.data.dialogue import dialogue_prompt  # lazy: keeps --help fast

        pair_prompt = lambda turns: dialogue_prompt(system, turns)  # noqa: E731
        if args.kb:
            print(f"knowledge base: {args.kb} ({len(run.tokenizer.encode(system))} tokens of the "
                  f"{run.model_config.max_len}-token context)", file=sys.stderr)
    elif args.kb:
        print("warning: this model was not fine-tuned on prompt -> target dialogues; the knowledge base is "
              "placed before the conversation as plain text", file=sys.stderr)
    try:
        session = ChatSession(_generator(run, args.chunk), run.tokenizer, max_new_tokens=args.max_new_tokens,
                              sampling=_sampling(args), seed=args.seed, system=system, pair_prompt=pair_prompt,
                              multi_turn=run.config.data.multi_turn)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    return run_repl(session)


def _require_text(text: str) -> None:
    if not text.strip():
        raise SystemExit("error: --text is empty; there is nothing to look at")


def _read_kb(path: str) -> str:
    """A knowledge base file as the dialogue prompt writes it: JSON ``{domain: [rows]}``
    (KVRET's ``db_results``) or ``[rows]``, each row ``{column: value}``."""
    from memgpt_jax.data.dialogue import serialize_kb  # lazy: keeps --help fast

    try:
        with open(path, encoding="utf-8") as f:
            kb = json.load(f)
    except OSError as e:
        raise SystemExit(f"error: --kb {path}: {e.strerror}") from None
    except ValueError as e:
        raise SystemExit(f"error: --kb {path} is not JSON ({e})") from None
    tables = kb.values() if isinstance(kb, dict) else [kb]
    if not all(isinstance(t, list) and all(isinstance(r, dict) for r in t) for t in tables):
        raise SystemExit(f'error: --kb {path}: expected {{"domain": [{{"column": "value"}}, ...]}} or a list of rows')
    text = serialize_kb(kb)
    if not text:
        raise SystemExit(f"error: --kb {path} holds no rows")
    return text


def cmd_attention_map(args: argparse.Namespace) -> int:
    from memgpt_jax.apps import interpret  # lazy: keeps --help fast

    _require_text(args.text)
    run = _load(args, None)
    ids = interpret.encode_input(run, args.text, args.max_tokens)
    maps = interpret.attention_maps(run, ids)
    labels = interpret.token_labels(run.tokenizer, ids)
    try:
        blocks = interpret.layout_file_blocks(args.layout, len(ids)) if args.layout else \
            interpret.kept_blocks(run, len(ids))
        drawn = f", blocks of {args.layout}" if args.layout else ""
        paths = interpret.render_attention(maps, labels, args.out, layers=args.layers, heads=args.heads,
                                           blocks=blocks, title=f"{args.checkpoint} "
                                                                f"({run.model_config.attention.pattern}{drawn})")
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    for p in paths:
        print(p)
    return 0


def cmd_saliency(args: argparse.Namespace) -> int:
    from memgpt_jax.apps import interpret  # lazy: keeps --help fast

    _require_text(args.text)
    run = _load(args, "interpret")
    ids = interpret.encode_input(run, args.text, args.max_tokens)
    try:
        scores, label, probs = interpret.saliency(run, ids, args.label)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    labels = interpret.token_labels(run.tokenizer, ids)
    name = run.label_names[label]
    print(f"class {name} (p={probs[label]:.3f}); most influential tokens:")
    for i in sorted(range(len(ids)), key=lambda i: -abs(scores[i]))[: args.top]:
        print(f"  {labels[i]:>14}  {scores[i]:+.4f}")
    if args.out:
        print(interpret.render_saliency(scores, labels, args.out, title=f"gradient x input for class {name}"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    common = dict(formatter_class=argparse.RawDescriptionHelpFormatter)

    def run_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--checkpoint", required=True, help="run directory (newest checkpoint is used)")
        p.add_argument("--step", type=int, default=None, help="use this checkpoint step instead of the newest")

    def constraint_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--no-repeat-ngram", type=int, default=0, metavar="N",
                       help="never repeat an N-gram of tokens within the output (the prompt not counted; 0: off)")
        p.add_argument("--min-new-tokens", type=int, default=0, metavar="M",
                       help="no end of sequence before M new tokens (0: off)")

    def mbr_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--mbr", type=int, default=0, metavar="N",
                       help="minimum Bayes risk decoding: of the greedy output and N sampled ones, the one that "
                            "agrees best with the others (ROUGE-1); N + 1 decodes per prompt (0: off)")
        p.add_argument("--mbr-temperature", type=float, default=0.7, metavar="T",
                       help="sampling temperature of --mbr (default: %(default)s)")

    def sampling_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--max-new-tokens", type=int, default=None,
                       help="tokens to generate at most (default: 128, at most half the model's context)")
        p.set_defaults(default_new_tokens=128)
        p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
        p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: off)")
        p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--chunk", type=int, default=32, help="tokens decoded per compiled call")
        constraint_args(p)

    p = sub.add_parser("generate", help="generate text with a language model (KV cache)",
                       description=__doc__, **common)
    run_args(p)
    p.add_argument("--prompt", action="append", help="a prompt; repeat for a batch")
    p.add_argument("--prompt-file", help="one prompt per line (\\n for newlines)")
    sampling_args(p)
    p.add_argument("--stop", action="append", help="stop string (repeatable; \\n and \\t are newline and tab); not included in the output")
    p.add_argument("--stream", action="store_true", help="print tokens as they come (single prompt)")
    p.add_argument("--json", action="store_true", help="one JSON object per prompt")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("classify", help="classify texts, files or stdin lines", description=__doc__, **common)
    run_args(p)
    p.add_argument("texts", nargs="*", help="texts to classify")
    p.add_argument("--file", nargs="+", help="files, one text each")
    p.add_argument("--whole", action="store_true", help="stdin is one text (default: one text per line)")
    p.add_argument("--truncate", choices=("head", "tail", "head+tail"), default=None,
                   help="which part of a text longer than the context to keep (default: the run's data.truncate, "
                        "usually head; "
                        "head+tail keeps the first quarter and the last three quarters); truncation is reported")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="JSON lines with all class probabilities")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("eval", help="evaluate a run on a split: accuracy/P/R/F1/confusion, perplexity, or EM/F1",
                       description=__doc__, **common)
    run_args(p)
    p.add_argument("--split", default=None, help="prepared split to evaluate (default: the run's eval split)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: 64; the run's eval_batch_size for teacher-forced loss/perplexity")
    p.add_argument("--max-examples", type=int, default=0, help="evaluate only the first N examples (0: all)")
    p.add_argument("--data-dir", default=None, help="where prepared datasets live (default: the run's)")
    p.add_argument("--json", default=None, help="also write the report to this JSON file")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--beam", type=int, default=1, help="prompt->target runs: beam width (1: greedy)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam score = log p / length ** this")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="prompt->target runs: longest output (default: 64, at most half the model's context)")
    p.add_argument("--dataset", default=None, help="prepared dataset to score on, e.g. memgpt_listops/tiny "
                   "(default: the run's own; an imported model has none)")
    p.add_argument("--perplexity", action="store_true", help="prompt->target runs: report target perplexity "
                   "instead of decoding")
    constraint_args(p)
    mbr_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("decode", help="prompt -> target decoding (greedy/beam); writes sequence-level KD data",
                       description=__doc__ + """
Sequence-level distillation (Kim & Rush, 2016):
    memgpt-jax decode --checkpoint runs/mt/teacher --split train --beam 4 --out teacher_train.jsonl
    memgpt-jax data prepare pairs --name mt_distilled --split train=teacher_train.jsonl --split val=...
""", **common)
    run_args(p)
    p.add_argument("--prompt", action="append", help="a prompt (repeatable); default: stdin lines or --split")
    p.add_argument("--file", action="append", default=None,
                   help="a file whose whole text is one prompt, e.g. an email to write a subject for (repeatable)")
    p.add_argument("--split", default=None, help="decode the prompts of this prepared split")
    p.add_argument("--dataset", default=None, help="prepared pairs dataset (default: the run's)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--max-examples", type=int, default=0)
    p.add_argument("--out", default=None, help="write JSONL {prompt, target=output} for distillation")
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="longest output (default: 64, at most half the model's context)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    constraint_args(p)
    mbr_args(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("qa", help="answer a question from a context (extractive QA run)", description=__doc__,
                       **common)
    run_args(p)
    p.add_argument("--question", required=True)
    p.add_argument("--context", default=None)
    p.add_argument("--context-file", default=None)
    p.set_defaults(func=cmd_qa)

    p = sub.add_parser("chat", help="interactive chat REPL with streaming replies", description=__doc__, **common)
    run_args(p)
    sampling_args(p)
    p.set_defaults(chunk=1, default_new_tokens=96)
    p.add_argument("--system", default="", help="text placed before the conversation")
    p.add_argument("--kb", default=None, metavar="KB.json",
                   help='a knowledge base the replies draw on: JSON {"domain": [{"column": "value"}, ...]} '
                        "(KVRET's db_results) or a list of rows; kept in every prompt")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("attention-map", help="PNG heatmaps of attention weights per layer and head",
                       description=__doc__, **common)
    run_args(p)
    p.add_argument("--text", required=True)
    p.add_argument("--out", required=True, help="directory for layer_<i>.png")
    p.add_argument("--layers", type=int, nargs="+", default=None, help="layers to draw (default: all)")
    p.add_argument("--heads", type=int, nargs="+", default=None, help="heads to draw (default: all)")
    p.add_argument("--max-tokens", type=int, default=64, help="truncate the input to this many tokens")
    p.add_argument("--layout", default=None, metavar="FILE",
                   help="outline the blocks of this derived layout file (memgpt-jax layout derive) instead of the "
                        "run's own, e.g. over the teacher it was derived from")
    p.set_defaults(func=cmd_attention_map)

    p = sub.add_parser("saliency", help="gradient x input token saliency of a classification",
                       description=__doc__, **common)
    run_args(p)
    p.add_argument("--text", required=True)
    p.add_argument("--label", type=int, default=None, help="class to explain (default: the predicted one)")
    p.add_argument("--out", default=None, help="also write a bar chart PNG here")
    p.add_argument("--top", type=int, default=10, help="print this many tokens")
    p.add_argument("--max-tokens", type=int, default=None)
    p.set_defaults(func=cmd_saliency)
