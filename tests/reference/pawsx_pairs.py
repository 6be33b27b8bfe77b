"""PAWS-X dev pairs for the metric vector scripts (`make_bleu_vectors.py`,
`make_rouge_vectors.py`): (second sentence, first sentence) of the first `n` rows of
`../shared/data/pawsx/dev-<lang>.tsv`, header skipped. No third-party imports."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, '..', 'shared', 'data', 'pawsx')


def pawsx(lang, n):
    rows = []
    with open(os.path.join(DATA, 'dev-%s.tsv' % lang), encoding='utf-8') as f:
        for line in f:
            parts = line.rstrip('\n').split('\t')
            if len(parts) >= 2 and parts[0] != 'sentence1':
                rows.append((parts[1], parts[0]))
            if len(rows) >= n:
                break
    return rows
