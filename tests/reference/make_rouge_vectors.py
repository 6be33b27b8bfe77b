#!/usr/bin/env python3
"""Test vectors for ROUGE-L as Google's rouge-score 0.1.2 computes it by default
(`data/metrics/rouge.rs`).

    python3 -m venv /tmp/sb && /tmp/sb/bin/pip install rouge-score==0.1.2
    /tmp/sb/bin/python tests/reference/make_rouge_vectors.py

`rouge_scorer.RougeScorer(['rougeL'])` (its tokenizer, no stemmer): `score(reference,
prediction)['rougeL']` per pair (precision, recall, F-measure), and the mean F-measure over a
set of pairs. Data: PAWS-X dev pairs in de, en, es, fr and zh (`../shared/data/pawsx`; second
sentence as prediction, first as reference), seeded perturbations, and hand-made corners
(punctuation only, non-ASCII letters the tokenizer drops, digits, empty lines). Also the default
tokenizer's tokens of every line. Writes `tests/fixtures/rouge_vectors.json`; reruns are
byte-identical.
"""
import json
import os
import random

import rouge_score
from rouge_score import rouge_scorer, tokenize

from pawsx_pairs import ROOT, pawsx

OUT = os.path.join(ROOT, 'tests', 'fixtures', 'rouge_vectors.json')
CORNERS = [('...', 'a b c'), ('', 'x'), ('x', ''), ('Straße 3.5 İstanbul ÉCOLE', 'strasse 3 5 istanbul ecole'),
           ('北京 上海', '北京 上海'), ('The CAT, the cat!', 'the cat the cat'), ('a_b c-d e.f', 'a b c d e f'),
           ('1,000 2000s x2', '1 000 2000s x 2')]


def perturb(rng, s):
    words = s.split()
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(3)
        if op == 0 and len(words) > 1:
            del words[rng.randrange(len(words))]
        elif op == 1 and len(words) > 1:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        elif op == 2:
            words.insert(rng.randrange(len(words) + 1), rng.choice(['the', 'Der', 'la', 'x1', '—']))
    return ' '.join(words)


def main():
    rng = random.Random(20261123)
    scorer = rouge_scorer.RougeScorer(['rougeL'])
    pairs = list(CORNERS)
    for lang in ['de', 'en', 'es', 'fr', 'zh']:
        for pred, ref in pawsx(lang, 40):
            pairs.append((pred, ref))
            pairs.append((perturb(rng, pred), ref))
    cases = []
    for pred, ref in pairs:
        s = scorer.score(ref, pred)['rougeL']
        cases.append({'prediction': pred, 'reference': ref, 'precision': s.precision, 'recall': s.recall,
                      'fmeasure': s.fmeasure})
    mean = 100.0 * sum(c['fmeasure'] for c in cases) / len(cases)
    lines = sorted({t for p in pairs for t in p})
    tokens = [{'line': l, 'tokens': tokenize.tokenize(l, None)} for l in lines]
    with open(OUT, 'w', encoding='utf-8') as f:
        json.dump({'rouge_score': '0.1.2', 'cases': cases, 'mean_fmeasure_points': mean, 'tokens': tokens}, f,
                  ensure_ascii=False, indent=0)
        f.write('\n')
    print(len(cases), 'pairs,', len(tokens), 'lines ->', OUT)


if __name__ == '__main__':
    main()
