"""Tokenizers for tiny models, built from a word list with no download: a CLIP BPE
tokenizer and a T5 Unigram tokenizer, in the real checkpoints' formats (the demo's
random models and the world's trained models use them)."""

from __future__ import annotations


def _byte_alphabet() -> list[str]:
    """GPT-2/CLIP byte-to-unicode table: 256 printable stand-ins for the 256 byte values."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def clip_tokenizer(words: list[str], max_length: int = 77):
    """A CLIP BPE tokenizer: every byte (alone and word-final) plus whole-word merges for
    `words`, so those words are one token each and any text still encodes."""
    from transformers import CLIPTokenizer

    alphabet = _byte_alphabet()
    vocab: dict[str, int] = {}
    for symbol in alphabet + [a + "</w>" for a in alphabet]:
        vocab.setdefault(symbol, len(vocab))
    merges: list[tuple[str, str]] = []
    seen = set()
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        if any(p not in vocab for p in pieces):
            continue  # non-ASCII letters: left as bytes
        current = pieces[0]
        for piece in pieces[1:]:
            merged = current + piece
            if (current, piece) not in seen:
                seen.add((current, piece))
                merges.append((current, piece))
                vocab.setdefault(merged, len(vocab))
            current = merged
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    tokenizer.model_max_length = max_length
    return tokenizer


def t5_tokenizer(words: list[str]):
    """A T5 (Unigram) tokenizer: `words` whole with the '▁' prefix, plus single characters."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    known = {p for p, _ in pieces}
    for word in words:
        if f"▁{word}" not in known:
            pieces.append((f"▁{word}", -5.0))
            known.add(f"▁{word}")
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789.,?!'\"-:;()/&":
        for piece in (ch, f"▁{ch}"):
            if piece not in known:
                pieces.append((piece, -12.0))
                known.add(piece)
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
    tokenizer.model_max_length = 512
    return tokenizer
