#!/usr/bin/env python3
"""Test vectors for corpus BLEU as sacrebleu 2.x computes it by default (`data/metrics/bleu.rs`).

    python3 -m venv /tmp/sb && /tmp/sb/bin/pip install sacrebleu==2.4.3
    /tmp/sb/bin/python tests/reference/make_bleu_vectors.py

`sacrebleu.corpus_bleu(hyps, [refs])` with its defaults: 13a tokenisation, exponential
smoothing, case-sensitive, one reference per line. Data: PAWS-X dev pairs in de, en, es, fr and
zh (`../shared/data/pawsx`; the second sentence as hypothesis, the first as reference), seeded
perturbations of them, and hand-made lines for the tokenizer's corners (HTML entities,
`<skipped>`, numbers with points, commas and dashes, control whitespace) and for the score's
corners (empty hypotheses, short hypotheses, no matching 4-grams, nothing matching).

Writes `tests/fixtures/bleu_vectors.json`: `tokenize` (line -> 13a tokens) and `corpora`
(hypotheses, references, sacrebleu's score, its n-gram counts and lengths). Reruns are
byte-identical.
"""
import json
import os
import random

import sacrebleu
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from pawsx_pairs import ROOT, pawsx

OUT = os.path.join(ROOT, 'tests', 'fixtures', 'bleu_vectors.json')

CORNERS = [
    'He said &quot;yes&quot; &amp; left &lt;now&gt; &amp;lt;', 'a <skipped> b', 'line-\nbreak and\nnewline',
    'Pi is 3.14, not 3,14. Count: 1,000,000.', 'pages 5-6, well-known x-ray 1990s-era', 'end.', '.start ,x',
    'tabs\tand\x1cseparators\x1fhere', '  spaces   everywhere  ', '{curly} [square] `back` ~tilde~ |pipe|',
    'e-mail: a@b.c / path/to/file + 2*3=6 ^ $5 #1 %2 !?', "it's \"quoted\" (parens)", '', '...', ',,,', '9.-1',
    'Ünïcödé — dashes – and “quotes” «guillemets»', '北京。上海，广州、深圳', 'x.y,z 1.a a.1 1-a a-1 -1 1-',
]


def perturb(rng, s):
    words = s.split()
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(4)
        if op == 0 and len(words) > 1:
            del words[rng.randrange(len(words))]
        elif op == 1 and len(words) > 1:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        elif op == 2:
            words.insert(rng.randrange(len(words) + 1), rng.choice(['the', 'der', 'la', '的', '3.5', 'x-1', ',']))
        elif op == 3 and words:
            words[rng.randrange(len(words))] = words[rng.randrange(len(words))].upper()
    return ' '.join(words)


def score(hyps, refs):
    b = sacrebleu.corpus_bleu(hyps, [refs])
    return {'hypotheses': hyps, 'references': refs, 'score': b.score, 'counts': list(b.counts),
            'totals': list(b.totals), 'sys_len': b.sys_len, 'ref_len': b.ref_len}


def main():
    rng = random.Random(20261123)
    tok = Tokenizer13a()
    lines = list(CORNERS)
    corpora = []
    for lang in ['de', 'en', 'es', 'fr', 'zh']:
        pairs = pawsx(lang, 60)
        hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
        lines += hyps[:20] + refs[:20]
        corpora.append(score(hyps, refs))
        corpora.append(score([perturb(rng, h) for h in hyps], refs))
        for _ in range(3):
            k = rng.randrange(1, 6)
            idx = [rng.randrange(len(pairs)) for _ in range(k)]
            corpora.append(score([perturb(rng, hyps[i]) for i in idx], [refs[i] for i in idx]))
    corpora.append(score(['', 'a b'], ['a b c', 'a b']))                         # an empty hypothesis
    corpora.append(score(['the cat'], ['the cat sat on the mat']))               # brevity penalty
    corpora.append(score(['the cat sat down', 'on a mat'], ['the cat sat on the mat', 'on the mat']))
    corpora.append(score(['x y z'], ['a b c']))                                  # nothing matches
    corpora.append(score(CORNERS, list(reversed(CORNERS))))
    corpora.append(score(CORNERS, CORNERS))
    tokenize = [{'line': l, 'tokens': tok(l.rstrip())} for l in lines]
    with open(OUT, 'w', encoding='utf-8') as f:
        json.dump({'sacrebleu': sacrebleu.__version__, 'tokenize': tokenize, 'corpora': corpora}, f,
                  ensure_ascii=False, indent=0)
        f.write('\n')
    print(len(tokenize), 'lines,', len(corpora), 'corpora ->', OUT)


if __name__ == '__main__':
    main()
