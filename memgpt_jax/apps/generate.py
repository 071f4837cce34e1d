"""Text generation with a KV cache: greedy, temperature, top-k, top-p, stop strings, and two
constraints on the output (no repeated n-gram, a minimum length).

The whole decode runs jitted: one compiled *prefill* writes the (left-padded)
prompts into the cache, then a compiled *chunk* of ``n`` steps (a ``lax.scan``)
samples a token, appends it to the cache and computes the next logits. Between
chunks the host checks end-of-sequence and stop strings and streams new text,
so ``chunk=1`` gives token-by-token streaming and a large chunk the least
dispatch overhead.

Block-sparse models decode through their attention function's decode regime:
each new token attends only to the kept key blocks of its layout row (see
``memgpt_jax.attention.decode``). Batched prompts are left-padded; positions
count real tokens only, so a dense model's continuation of a prompt does not
depend on the padding. Sparse layouts are defined on cache positions, so a
sparse model's batched output equals the batched full forward pass, and equals
unbatched generation when the prompts have equal lengths.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from memgpt_jax import model as model_lib
from memgpt_jax.compress.quantize import inference_params

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. ``temperature == 0`` is greedy (argmax);
    ``top_k == 0`` and ``top_p == 1`` switch those filters off.

    Two constraints apply before either: ``no_repeat_ngram = n`` forbids a token that
    would repeat an n-gram (of tokens) already in the output, the prompt not counted
    (a model that copies from its prompt may still copy); ``min_new_tokens = m`` forbids
    end-of-sequence before the m-th new token. 0 switches each off."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    no_repeat_ngram: int = 0
    min_new_tokens: int = 0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.no_repeat_ngram < 0:
            raise ValueError(f"no_repeat_ngram must be >= 0 (0: off), got {self.no_repeat_ngram}")
        if self.min_new_tokens < 0:
            raise ValueError(f"min_new_tokens must be >= 0 (0: off), got {self.min_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def filter_logits(logits_BV: Array, sampling: Sampling) -> Array:
    """Temperature-scaled logits with everything outside top-k / top-p set to -inf."""
    logits = logits_BV.astype(jnp.float32) / sampling.temperature
    if sampling.top_k:
        kth = jax.lax.top_k(logits, min(sampling.top_k, logits.shape[-1]))[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if sampling.top_p < 1.0:
        sorted_desc = -jnp.sort(-logits, axis=-1)
        probs = jax.nn.softmax(sorted_desc, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly more likely tokens
        kept = before < sampling.top_p  # the smallest prefix reaching top_p (at least one token)
        threshold = jnp.min(jnp.where(kept, sorted_desc, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def banned_tokens(ids: Sequence[int], n: int) -> set[int]:
    """The tokens that would repeat an ``n``-gram of ``ids`` if appended (host-side, for beam search;
    :func:`constrain_logits` is the same rule on device)."""
    if n < 1 or len(ids) < n - 1:
        return set()
    suffix = list(ids[len(ids) - n + 1:]) if n > 1 else []
    return {ids[i + n - 1] for i in range(len(ids) - n + 1) if list(ids[i:i + n - 1]) == suffix}


def constrain_logits(logits_BV: Array, hist_BL: Array, k: Array, sampling: Sampling, eos_id: int) -> Array:
    """``logits_BV`` with the tokens :class:`Sampling`'s constraints forbid for new token ``k``
    set to -inf; ``hist_BL[:, :k]`` holds the tokens generated so far."""
    B, L = hist_BL.shape
    neg = jnp.asarray(-jnp.inf, logits_BV.dtype)
    if sampling.min_new_tokens:
        logits_BV = logits_BV.at[:, eos_id].set(jnp.where(k < sampling.min_new_tokens, neg, logits_BV[:, eos_id]))
    n = sampling.no_repeat_ngram
    if n:
        i = jnp.arange(L)
        match_BL = jnp.broadcast_to(i + n - 1 < k, (B, L))  # the n-gram starting at i is complete
        for j in range(n - 1):  # and its first n-1 tokens equal the last n-1 generated
            last_B = jnp.take(hist_BL, jnp.clip(k - n + 1 + j, 0, L - 1), axis=1)
            match_BL = match_BL & (jnp.roll(hist_BL, -j, axis=1) == last_B[:, None])
        next_BL = jnp.roll(hist_BL, -(n - 1), axis=1)  # the token that completed it
        ban_BL = jnp.where(match_BL, neg, jnp.asarray(jnp.inf, logits_BV.dtype))
        logits_BV = logits_BV.at[jnp.arange(B)[:, None], next_BL].min(ban_BL)
    return logits_BV


def sample_logits(logits_BV: Array, rng: Array, sampling: Sampling) -> Array:
    """Next token ids ``[B]`` (int32)."""
    if sampling.greedy:
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    return jax.random.categorical(rng, filter_logits(logits_BV, sampling), axis=-1).astype(jnp.int32)


@dataclasses.dataclass
class Generation:
    prompt_ids: list[int]
    token_ids: list[int]  # generated ids (stop string / EOS excluded)
    text: str
    finish_reason: str  # "eos" | "stop" | "length"


def _round_up(x: int, m: int) -> int:
    return max(m, math.ceil(x / m) * m)


class Generator:
    """Compiled KV-cache generation for one LM and its parameters.

    ``chunk`` is the number of tokens decoded per compiled call (the last chunk of a
    request may be shorter). Compiled functions are cached per (batch, prompt
    bucket, cache length, chunk, sampling)."""

    def __init__(self, model: Any, params: Any, *, eos_id: int, pad_id: int = 0, chunk: int = 32,
                 prompt_bucket: int = 16) -> None:
        if not isinstance(model, model_lib.LMHeadModel):
            raise ValueError("generation needs a language model (an LMHeadModel)")
        self.model, self.params = model, params
        self.config = model.config
        self.eos_id, self.pad_id = int(eos_id), int(pad_id)
        self.chunk, self.prompt_bucket = int(chunk), int(prompt_bucket)
        if self.config.attention.block_size and not self.config.attention.is_dense:
            self.prompt_bucket = _round_up(self.prompt_bucket, self.config.attention.block_size)
        self._prefill = jax.jit(self._prefill_impl)
        self._decode = jax.jit(self._decode_impl, static_argnames=("n", "sampling"))
        self._step = jax.jit(self._step_impl)
        self._reorder = jax.jit(_reorder_cache)

    # -- compiled pieces -------------------------------------------------------------
    def _prefill_impl(self, params: Any, cache: Any, ids_BP: Array, valid_BP: Array) -> tuple[Array, Any]:
        params = inference_params(params)
        positions = jnp.maximum(jnp.cumsum(valid_BP.astype(jnp.int32), axis=1) - 1, 0)
        out, cache = model_lib.decode_step(self.model, params, cache, ids_BP, kv_valid=valid_BP,
                                           positions=positions)
        return out.logits[:, -1], cache

    def _decode_impl(self, params: Any, cache: Any, logits_BV: Array, pos_B: Array, done_B: Array, hist_BL: Array,
                     rng: Array, offset: Array, *, n: int,
                     sampling: Sampling) -> tuple[tuple[Any, Array, Array, Array, Array], Array]:
        """``n`` tokens; the key of new token ``k`` is ``fold_in(rng, k)``, so a seed gives the
        same text whatever the chunk size (streaming included). ``hist_BL`` holds every token
        generated so far (for the constraints), one column per new token."""
        params = inference_params(params)
        constrained = sampling.no_repeat_ngram or sampling.min_new_tokens

        def body(carry, k):
            cache, logits, pos, done, hist = carry
            if constrained:
                logits = constrain_logits(logits, hist, k, sampling, self.eos_id)
            tok = jnp.where(done, self.pad_id, sample_logits(logits, jax.random.fold_in(rng, k), sampling))
            hist = jax.lax.dynamic_update_slice_in_dim(hist, tok[:, None], k, axis=1)
            out, cache = model_lib.decode_step(self.model, params, cache, tok[:, None], positions=pos[:, None])
            done = done | (tok == self.eos_id)
            return (cache, out.logits[:, -1], pos + 1, done, hist), tok

        carry, toks_nB = jax.lax.scan(body, (cache, logits_BV, pos_B, done_B, hist_BL),
                                      offset + jnp.arange(n, dtype=jnp.int32))
        return carry, toks_nB.T

    def _step_impl(self, params: Any, cache: Any, tok_B: Array, pos_B: Array) -> tuple[Array, Any]:
        params = inference_params(params)
        out, cache = model_lib.decode_step(self.model, params, cache, tok_B[:, None], positions=pos_B[:, None])
        return jax.nn.log_softmax(out.logits[:, -1].astype(jnp.float32), axis=-1), cache

    # -- host loop --------------------------------------------------------------------
    def generate_ids(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        sampling: Sampling = Sampling(),
        seed: int = 0,
        should_stop: Callable[[int, list[int]], int | None] | None = None,
        on_chunk: Callable[[list[list[int]]], None] | None = None,
    ) -> tuple[list[list[int]], list[str]]:
        """Generated ids per prompt and why each ended ("eos", "stop", "length").

        ``should_stop(row, ids)`` may return a cut position (ids kept before it) to end
        a row early; ``on_chunk(ids_per_row)`` sees the ids so far after each chunk."""
        B = len(prompts)
        # prompts are bucketed (fewer compiles); the cache holds exactly prompt + new tokens
        logits, cache, _ = self._start(prompts, max_new_tokens)
        pos = jnp.asarray([len(p) for p in prompts], jnp.int32)
        done = jnp.zeros((B,), bool)
        hist = jnp.full((B, max_new_tokens), -1, jnp.int32)
        rng = jax.random.key(seed)
        out: list[list[int]] = [[] for _ in range(B)]
        reasons: list[str | None] = [None] * B
        produced = 0
        while produced < max_new_tokens and any(r is None for r in reasons):
            n = min(self.chunk, max_new_tokens - produced)  # the last chunk may be shorter
            (cache, logits, pos, done, hist), toks = self._decode(self.params, cache, logits, pos, done, hist, rng,
                                                                  jnp.int32(produced), n=n, sampling=sampling)
            toks = np.asarray(toks)
            produced += toks.shape[1]
            for i in range(B):
                if reasons[i] is not None:
                    continue
                row = toks[i].tolist()
                if self.eos_id in row:
                    out[i].extend(row[: row.index(self.eos_id)])
                    reasons[i] = "eos"
                else:
                    out[i].extend(row)
                if should_stop is not None:
                    cut = should_stop(i, out[i])
                    if cut is not None:
                        del out[i][cut:]
                        reasons[i] = "stop"
                if reasons[i] is None and produced >= max_new_tokens:
                    reasons[i] = "length"
            if on_chunk is not None:
                on_chunk(out)
            if any(r is not None for r in reasons):  # stop strings end rows the device still decodes
                done = done | jnp.asarray([r is not None for r in reasons])
        return out, [r or "length" for r in reasons]

    def _start(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> tuple[Array, Any, int]:
        """Prefills left-padded ``prompts``: ``(last logits [B, V], cache, P)``."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token (e.g. BOS)")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        longest = max(len(p) for p in prompts)
        if longest + max_new_tokens > self.config.max_len:
            raise ValueError(
                f"prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's context "
                f"of {self.config.max_len} tokens; shorten the prompt or lower max_new_tokens")
        P = min(_round_up(longest, self.prompt_bucket), self.config.max_len - max_new_tokens)
        ids = np.full((len(prompts), P), self.pad_id, np.int32)
        valid = np.zeros((len(prompts), P), bool)
        for i, p in enumerate(prompts):
            ids[i, P - len(p):] = p
            valid[i, P - len(p):] = True
        cache = model_lib.init_cache(self.model, len(prompts), P + max_new_tokens)
        logits, cache = self._prefill(self.params, cache, jnp.asarray(ids), jnp.asarray(valid))
        return logits, cache, P

    def beam_search(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        beam: int = 4,
        max_new_tokens: int,
        length_penalty: float = 1.0,
        no_repeat_ngram: int = 0,
        min_new_tokens: int = 0,
    ) -> tuple[list[list[int]], list[float]]:
        """Beam search per prompt: ``(best ids, their log-probability)`` (EOS excluded).

        Hypotheses are ranked by ``log p / length ** length_penalty`` (length counts the
        EOS); a prompt is done once ``beam`` hypotheses have ended (EOS) or at
        ``max_new_tokens``. ``beam=1`` is greedy decoding. All beams of all prompts
        decode together in one KV cache of ``len(prompts) * beam`` rows. ``no_repeat_ngram``
        and ``min_new_tokens`` constrain every hypothesis as :class:`Sampling`'s do."""
        if beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        Sampling(no_repeat_ngram=no_repeat_ngram, min_new_tokens=min_new_tokens)  # validates them
        B, K = len(prompts), beam
        logits, cache, _ = self._start(prompts, max_new_tokens)
        cache = self._reorder(cache, jnp.repeat(jnp.arange(B), K))
        logp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1))  # [B, V]
        V = logp.shape[-1]
        # live beams per prompt: (score, ids); the first step expands each prompt's single state
        live = [[(0.0, [])] for _ in range(B)]
        finished: list[list[tuple[float, float, list[int]]]] = [[] for _ in range(B)]  # (norm, raw, ids)
        done = [False] * B
        lp_rows = logp[:, None, :]  # [B, beams so far, V]
        pos = np.asarray([len(p) for p in prompts], np.int64)
        for t in range(max_new_tokens):
            tokens = np.full((B, K), self.pad_id, np.int64)
            parents = np.zeros((B, K), np.int64)
            for b in range(B):
                if done[b]:
                    continue
                n_live = len(live[b])
                scores = np.asarray([s for s, _ in live[b]])[:, None] + lp_rows[b, :n_live]  # [n_live, V]
                if t < min_new_tokens:
                    scores[:, self.eos_id] = -np.inf
                for k, (_, ids) in enumerate(live[b] if no_repeat_ngram else ()):
                    scores[k, list(banned_tokens(ids, no_repeat_ngram))] = -np.inf
                flat = scores.reshape(-1)
                top = np.argpartition(-flat, min(2 * K, flat.size) - 1)[: 2 * K]
                top = top[np.argsort(-flat[top], kind="stable")]
                new_live = []
                for rank, f in enumerate(top):
                    parent, tok = divmod(int(f), V)
                    score = float(flat[f])
                    ids = live[b][parent][1] + [tok]
                    if tok == self.eos_id:
                        if rank < K:
                            finished[b].append((score / len(ids) ** length_penalty, score, ids[:-1]))
                    else:
                        new_live.append((score, ids, parent))
                    if len(new_live) == K:
                        break
                if len(finished[b]) >= K or t == max_new_tokens - 1:
                    done[b] = True
                    if t == max_new_tokens - 1:
                        finished[b].extend((s / len(ids) ** length_penalty, s, ids) for s, ids, _ in new_live)
                    continue
                live[b] = [(s, ids) for s, ids, _ in new_live]
                for k, (_, ids, parent) in enumerate(new_live):
                    tokens[b, k], parents[b, k] = ids[-1], b * K + parent
            if all(done):
                break
            for b in range(B):  # rows of finished prompts keep decoding padding (ignored)
                if done[b]:
                    parents[b] = b * K + np.arange(K)
            cache = self._reorder(cache, jnp.asarray(parents.reshape(-1)))
            lp, cache = self._step(self.params, cache, jnp.asarray(tokens.reshape(-1), jnp.int32),
                                   jnp.asarray(np.repeat(pos + t, K), jnp.int32))
            lp_rows = np.asarray(lp).reshape(B, K, V)
        out_ids, out_scores = [], []
        for b in range(B):
            best = max(finished[b], key=lambda x: x[0]) if finished[b] else (0.0, 0.0, [])
            out_ids.append(best[2])
            out_scores.append(best[1])
        return out_ids, out_scores

    def generate(
        self,
        texts: Sequence[str],
        tokenizer: Any,
        *,
        max_new_tokens: int = 64,
        sampling: Sampling = Sampling(),
        seed: int = 0,
        stop: Sequence[str] = (),
        add_bos: bool = True,
        on_text: Callable[[int, str], None] | None = None,
    ) -> list[Generation]:
        """Continues each text; ``on_text(row, new_text)`` streams text as it is made."""
        prompts = [([tokenizer.bos_id] if add_bos else []) + tokenizer.encode(t).tolist() for t in texts]
        stop = [s for s in stop if s]

        stopped_text: dict[int, str] = {}

        def should_stop(i: int, ids: list[int]) -> int | None:
            if not stop:
                return None
            cut = stop_cut(ids, tokenizer, stop)
            if cut is not None:
                text = tokenizer.decode(ids)
                stopped_text[i] = text[: min(text.find(s) for s in stop if s in text)]
            return cut

        emitted = [""] * len(texts)

        def on_chunk(ids_rows: list[list[int]]) -> None:
            for i, ids in enumerate(ids_rows):
                text = tokenizer.decode(ids)
                if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for its bytes
                    text = text.rstrip("\ufffd")
                if len(text) > len(emitted[i]) and text.startswith(emitted[i]):
                    on_text(i, text[len(emitted[i]):])
                    emitted[i] = text

        ids, reasons = self.generate_ids(prompts, max_new_tokens=max_new_tokens, sampling=sampling, seed=seed,
                                         should_stop=should_stop, on_chunk=on_chunk if on_text else None)
        results = []
        for i, (p, g, r) in enumerate(zip(prompts, ids, reasons)):
            text = stopped_text.get(i, tokenizer.decode(g))
            if on_text and len(text) > len(emitted[i]) and text.startswith(emitted[i]):
                on_text(i, text[len(emitted[i]):])
            results.append(Generation(prompt_ids=p, token_ids=g, text=text, finish_reason=r))
        return results


def _reorder_cache(cache: Any, rows: Array) -> Any:
    """Gathers the batch rows ``rows`` of every per-row cache array (the write index is shared)."""
    return jax.tree.map(lambda x: x[rows] if x.ndim > 0 else x, cache)


def stop_cut(ids: list[int], tokenizer: Any, stop: Sequence[str]) -> int | None:
    """The number of tokens to keep so the text ends before the first stop string,
    or ``None`` when no stop string occurs."""
    text = tokenizer.decode(ids)
    hits = [text.find(s) for s in stop if s in text]
    if not hits:
        return None
    end = min(hits)
    keep = 0
    for k in range(len(ids) + 1):  # the longest prefix whose text stays before the stop string
        if len(tokenizer.decode(ids[:k]).rstrip("\ufffd")) <= end:
            keep = k
        else:
            break
    return keep
