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


def _whole_word_merges(words: list[str], alphabet: set[str]) -> list[tuple[str, str]]:
    """BPE merges learned on `words` (each counted once) until every word is one symbol.

    Encoding replays merges by rank, and a training word meets them in the order they
    were learned, so each word of the list comes out as one token. (Chaining each word's
    merges left to right does not: "and" ranks (a, n) before the chain of "orange" needs
    (o, r) then (or, a), and "orange" came out as three tokens.) Ties go to the pair seen
    first, so the merges are deterministic.
    """
    spelled = {}
    for word in dict.fromkeys(words):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        if word and all(p in alphabet for p in pieces):
            spelled[word] = pieces  # non-ASCII letters: left as bytes
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for pieces in spelled.values():
            for pair in zip(pieces, pieces[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = max(counts, key=counts.get)  # max() keeps the first of equal counts
        merges.append(best)
        for word, pieces in spelled.items():
            out, i = [], 0
            while i < len(pieces):
                if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == best:
                    out.append(pieces[i] + pieces[i + 1])
                    i += 2
                else:
                    out.append(pieces[i])
                    i += 1
            spelled[word] = out


def clip_tokenizer(words: list[str], max_length: int = 77):
    """A CLIP BPE tokenizer: every byte (alone and word-final) plus merges learned on
    `words`, so each of those words is one token and any text still encodes."""
    from transformers import CLIPTokenizer

    alphabet = _byte_alphabet()
    vocab: dict[str, int] = {}
    for symbol in alphabet + [a + "</w>" for a in alphabet]:
        vocab.setdefault(symbol, len(vocab))
    merges = _whole_word_merges(words, set(vocab))
    for first, second in merges:
        vocab.setdefault(first + second, len(vocab))
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


def wordpiece_tokenizer(words: list[str]):
    """An MPNet (WordPiece) tokenizer, as sentence-transformers' all-mpnet-base-v2 uses: `words`
    whole, plus every single character alone and as a continuation (##c), so any text encodes."""
    from transformers import MPNetTokenizer

    vocab: dict[str, int] = {}
    for token in ("<s>", "<pad>", "</s>", "<unk>", "[UNK]", "<mask>", *words):
        vocab.setdefault(token, len(vocab))
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789.,?!'\"-:;()/&":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(f"##{ch}", len(vocab))
    return MPNetTokenizer(vocab=vocab)
