#!/usr/bin/env python3
"""Test vectors for MLQA's answer normalisation, exact match and F1 (`data/metrics/mlqa.rs`).

The functions below are those of MLQA's official evaluation script, `mlqa_evaluation_v1.py`
(github.com/facebookresearch/MLQA), transcribed: `normalize_answer(s, lang)` with its
`remove_articles`, `white_space_fix` (whitespace or mixed segmentation), `remove_punc`, `lower`;
`f1_score`, `exact_match_score`, `metric_max_over_ground_truths`.

Cases, per language (en es hi vi de ar zh): every answer of the first 60 questions of
`../shared/data/mlqa/dev/dev-context-L-question-L.json` as prediction against the question's
answers, then seeded perturbations of each answer (an article or `ال` added, punctuation of
several scripts around it, case changes, extra whitespace of several kinds, a word dropped, CJK
and Latin mixed) against the original answers. Writes `tests/fixtures/mlqa_metric_vectors.json`:
for each case the language, prediction, ground truths, the normalised prediction, EM (0/1) and
F1 with its IEEE bits. Reruns are byte-identical.

    python3 tests/reference/make_mlqa_vectors.py
"""
import json
import os
import random
import re
import string
import struct
import sys
import unicodedata
from collections import Counter

PUNCT = {chr(i) for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith('P')}.union(string.punctuation)
WHITESPACE_LANGS = ['en', 'es', 'hi', 'vi', 'de', 'ar']
MIXED_SEGMENTATION_LANGS = ['zh']


def whitespace_tokenize(text):
    return text.split()


def mixed_segmentation(text):
    segs_out = []
    temp_str = ""
    for char in text:
        if re.search(r'[\u4e00-\u9fa5]', char) or char in PUNCT:
            if temp_str != "":
                ss = whitespace_tokenize(temp_str)
                segs_out.extend(ss)
                temp_str = ""
            segs_out.append(char)
        else:
            temp_str += char
    if temp_str != "":
        ss = whitespace_tokenize(temp_str)
        segs_out.extend(ss)
    return segs_out


def normalize_answer(s, lang):
    def remove_articles(text, lang):
        if lang == 'en':
            return re.sub(r'\b(a|an|the)\b', ' ', text)
        elif lang == 'es':
            return re.sub(r'\b(un|una|unos|unas|el|la|los|las)\b', ' ', text)
        elif lang == 'hi':
            return text
        elif lang == 'vi':
            return re.sub(r'\b(của|là|cái|chiếc|những)\b', ' ', text)
        elif lang == 'de':
            return re.sub(r'\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b', ' ', text)
        elif lang == 'ar':
            return re.sub(r'\sال^|ال', ' ', text)
        elif lang == 'zh':
            return text
        else:
            raise Exception('Unknown Language {}'.format(lang))

    def white_space_fix(text, lang):
        if lang in WHITESPACE_LANGS:
            tokens = whitespace_tokenize(text)
        elif lang in MIXED_SEGMENTATION_LANGS:
            tokens = mixed_segmentation(text)
        else:
            raise Exception('Unknown Language {}'.format(lang))
        return ' '.join([t for t in tokens if t.strip() != ''])

    def remove_punc(text):
        return ''.join(ch for ch in text if ch not in PUNCT)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s)), lang), lang)


def f1_score(prediction, ground_truth, lang):
    prediction_tokens = normalize_answer(prediction, lang).split()
    ground_truth_tokens = normalize_answer(ground_truth, lang).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def exact_match_score(prediction, ground_truth, lang):
    return normalize_answer(prediction, lang) == normalize_answer(ground_truth, lang)


def metric_max_over_ground_truths(metric_fn, prediction, ground_truths, lang):
    return max(metric_fn(prediction, gt, lang) for gt in ground_truths)


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, '..', 'shared', 'data', 'mlqa', 'dev')
OUT = os.path.join(ROOT, 'tests', 'fixtures', 'mlqa_metric_vectors.json')
LANGS = ['en', 'es', 'hi', 'vi', 'de', 'ar', 'zh']
ARTICLES = {'en': ['a', 'an', 'the'], 'es': ['el', 'la', 'unos'], 'de': ['der', 'eines', 'das'],
            'vi': ['của', 'những', 'cái'], 'ar': ['ال'], 'hi': ['एक'], 'zh': ['的']}
PUNCTS = ['.', ',', '"', '«', '»', '„', '“', '”', '¿', '؟', '،', '।', '。', '，', '、', '《', '》',
          '$', '+', '~', '|', '(', ')', '-', '—', '_', "'", '’']
SPACES = [' ', '  ', '\t', '\u00a0', '\u3000', '\u2009', '\n']


def perturb(rng, text, lang):
    words = text.split()
    op = rng.randrange(8)
    if op == 0:
        return rng.choice(ARTICLES[lang]) + rng.choice(SPACES) + text
    if op == 1:
        return rng.choice(PUNCTS) + text + rng.choice(PUNCTS)
    if op == 2:
        return text.upper() if rng.random() < 0.5 else text.title()
    if op == 3:
        return rng.choice(SPACES).join(words) + rng.choice(SPACES)
    if op == 4 and len(words) > 1:
        del words[rng.randrange(len(words))]
        return ' '.join(words)
    if op == 5:
        return text + ' 北京' + rng.choice(PUNCTS) + 'abc'
    if op == 6:
        return text + ' ' + rng.choice(ARTICLES[lang]) + ' ' + (words[0] if words else '')
    return text.replace(' ', rng.choice(PUNCTS) + ' ', 1)


def bits(x):
    return struct.unpack('<Q', struct.pack('<d', float(x)))[0]


def main():
    rng = random.Random(20261123)
    cases = []
    for lang in LANGS:
        path = os.path.join(DATA, 'dev-context-{0}-question-{0}.json'.format(lang))
        data = json.load(open(path, encoding='utf-8'))['data']
        qas = [qa for art in data for p in art['paragraphs'] for qa in p['qas']][:60]
        for qa in qas:
            truths = [a['text'] for a in qa['answers']]
            preds = list(truths) + [perturb(rng, t, lang) for t in truths for _ in range(3)]
            for pred in preds:
                f1 = metric_max_over_ground_truths(f1_score, pred, truths, lang)
                cases.append({
                    'lang': lang, 'prediction': pred, 'ground_truths': truths,
                    'normalized': normalize_answer(pred, lang),
                    'exact_match': int(metric_max_over_ground_truths(exact_match_score, pred, truths, lang)),
                    'f1': float(f1), 'f1_bits': bits(f1),
                })
    with open(OUT, 'w', encoding='utf-8') as f:
        json.dump({'source': 'mlqa_evaluation_v1.py functions, transcribed', 'python': sys.version.split()[0],
                   'unicode': unicodedata.unidata_version, 'cases': cases}, f, ensure_ascii=False, indent=0)
        f.write('\n')
    print(len(cases), 'cases ->', OUT)


if __name__ == '__main__':
    main()
