#!/usr/bin/env python3
"""Test vectors for METEOR as nltk 3.x computes it (`data/metrics/meteor.rs`,
`data/metrics/porter.rs`, `data/wordnet.rs`).

    apt-get install wordnet-base wordnet-sense-index      # WordNet 3.0 in /usr/share/wordnet
    python3 -m venv /tmp/nl && /tmp/nl/bin/pip install nltk==3.9.1
    /tmp/nl/bin/python tests/reference/make_meteor_vectors.py

`nltk.translate.meteor_score.meteor_score([reference.split()], hypothesis.split())` with its
defaults (`str.lower`, `PorterStemmer()` in NLTK_EXTENSIONS mode, WordNet, alpha 0.9, beta 3,
gamma 0.5), one reference per hypothesis.

WordNet: nltk's own download is not used. `WordNetCorpusReader` reads the database files of
Debian's `wordnet-base` package once it also finds a `lexnames` file (lexicographer file
number, name, syntactic category; only `synset.lexname()` uses it), which Debian ships only as
the table of the `lexnames(5WN)` man page: `nltk_wordnet_dir` rebuilds it from that page into a
temporary directory that links the package's files. The reader's constructor also maps the
loaded WordNet to nltk's own copy for the Open Multilingual WordNet (`map_wn`), which needs
nltk_data; that map plays no part in English synsets, so it is skipped.

Pairs (hypothesis, reference): English generation targets of Super-NaturalInstructions v2
(`../shared/data/niv2`: XSum summaries, WebNLG and E2E descriptions, Romanian->English
translations), XQuAD English questions and PAWS-X English pairs, each with seeded
perturbations that exercise one stage or another (case changes; inflections that only the
Porter stage pairs; WordNet synonyms that only the synonym stage pairs; reorderings that change
the chunk count; dropped and inserted words; punctuation attached to or split from words),
untranslated Romanian against its English translation, PAWS-X pairs in de, es, fr, ja, ko and
zh, XQuAD questions in ar, hi and ru, and hand-made corners (empty lines, nltk's doctest
examples, non-ASCII case mappings). For every pair: nltk's score and alignment (hypothesis and
reference positions, sorted) and the number of pairs each stage made. Also nltk's Porter stem
of every distinct lower-cased token and of a list of words for the stemmer's rules, and the
synonym set the synonym stage uses for a list of words (exception lists, detachment rules,
adjective markers). Writes `tests/fixtures/meteor_vectors.json`; reruns are byte-identical.
"""
import gzip
import json
import os
import random
import re
import shutil
import tempfile
import warnings

import nltk
from nltk.corpus.reader.wordnet import WordNetCorpusReader
from nltk.stem.porter import PorterStemmer
from nltk.translate import meteor_score as ms

from pawsx_pairs import ROOT, pawsx

OUT = os.path.join(ROOT, 'tests', 'fixtures', 'meteor_vectors.json')
DATA = os.path.join(ROOT, '..', 'shared', 'data')
WORDNET = '/usr/share/wordnet'
LEXNAMES_MAN = '/usr/share/man/man5/lexnames.5WN.gz'
CATEGORY = {'noun': 1, 'verb': 2, 'adj': 3, 'adv': 4}


class DebianWordNet(WordNetCorpusReader):
    def map_wn(self, version='wordnet'):
        # The mapping to nltk_data's WordNet, used only by the multilingual functions.
        return None


def nltk_wordnet_dir(tmp):
    """A directory nltk's reader accepts: the package's files plus `lexnames` from its man page."""
    for name in os.listdir(WORDNET):
        if os.path.isfile(os.path.join(WORDNET, name)):
            os.symlink(os.path.join(WORDNET, name), os.path.join(tmp, name))
    rows = []
    with gzip.open(LEXNAMES_MAN, 'rt', encoding='utf-8') as f:
        for line in f:
            m = re.match(r'^(\d\d)\t(\w+)\.(\w+)\s*\t', line)
            if m:
                rows.append('%s\t%s.%s\t%d\n' % (m.group(1), m.group(2), m.group(3), CATEGORY[m.group(2)]))
    assert len(rows) == 45 and rows[0].startswith('00\tadj.all\t3') and rows[44].startswith('44\tadj.ppl'), rows
    with open(os.path.join(tmp, 'lexnames'), 'w', encoding='utf-8') as f:
        f.writelines(rows)
    return tmp


def niv2(task, n):
    with open(os.path.join(DATA, 'niv2', 'tasks', task + '.json'), encoding='utf-8') as f:
        return json.load(f)['Instances'][:n]


def xquad_questions(lang, n):
    with open(os.path.join(DATA, 'xquad', 'xquad.%s.json' % lang), encoding='utf-8') as f:
        data = json.load(f)['data']
    qs = [qa['question'] for a in data for p in a['paragraphs'] for qa in p['qas']]
    return qs[:n]


class Perturber:
    def __init__(self, rng, wn, stemmer):
        self.rng, self.wn, self.stemmer = rng, wn, stemmer

    def syns(self, word):
        """What the synonym stage compares a reference stem with, for a hypothesis word."""
        s = self.stemmer.stem(word.lower())
        return {l.name() for ss in self.wn.synsets(s) for l in ss.lemmas() if '_' not in l.name()} | {s}

    def inflect(self, w):
        """A different word with the same Porter stem (the stem stage pairs it)."""
        low = w.lower()
        cands = [low + 's', low + 'es', low + 'ed', low + 'ing', low + 'ly', low + 'er', low + 'd', low[:-1],
                 low[:-2], low[:-3], low[:-1] + 'ies', low[:-1] + 'ied', low[:-1] + 'ing']
        stem = self.stemmer.stem(low)
        good = sorted({c for c in cands if c and c != low and self.stemmer.stem(c) == stem})
        return self.rng.choice(good) if good else None

    def synonym(self, w):
        """A WordNet synonym that the synonym stage pairs with `w` (not by stem or case)."""
        low = w.lower()
        names = sorted({l.name() for ss in self.wn.synsets(low) for l in ss.lemmas() if '_' not in l.name()})
        stem = self.stemmer.stem(low)
        good = [n for n in names if n.lower() != low and self.stemmer.stem(n.lower()) != stem
                and stem in self.syns(n)]
        return self.rng.choice(good) if good else None

    def apply(self, s, ops):
        words = s.split()
        for _ in range(self.rng.randrange(1, 4)):
            if not words:
                break
            op = self.rng.choice(ops)
            i = self.rng.randrange(len(words))
            if op == 'case':
                words[i] = self.rng.choice([str.upper, str.title, str.lower, str.swapcase])(words[i])
            elif op in ('inflect', 'synonym'):
                # Try a few words: many have no inflection or synonym.
                for j in self.rng.sample(range(len(words)), min(len(words), 6)):
                    new = self.inflect(words[j]) if op == 'inflect' else self.synonym(words[j])
                    if new:
                        words[j] = new
                        break
            elif op == 'move' and len(words) > 3:
                k = self.rng.randrange(1, min(4, len(words)))
                span, rest = words[i:i + k], words[:i] + words[i + k:]
                at = self.rng.randrange(len(rest) + 1)
                words = rest[:at] + span + rest[at:]
            elif op == 'swap' and len(words) > 1:
                i = min(i, len(words) - 2)
                words[i], words[i + 1] = words[i + 1], words[i]
            elif op == 'drop' and len(words) > 1:
                del words[i]
            elif op == 'insert':
                words.insert(i, self.rng.choice(['the', 'a', 'very', 'also', 'Der', 'la', '的', '—', '3.5']))
            elif op == 'punct':
                w = words[i]
                if w[-1:] in ',.!?;:':
                    words[i:i + 1] = [w[:-1], w[-1]] if len(w) > 1 else [w]
                else:
                    words[i] = w + self.rng.choice(',.!?;:')
        return ' '.join(words)


CORNERS = [
    ('', ''), ('', 'a reference'), ('a hypothesis', ''), ('   ', 'x'), ('same words here', 'same words here'),
    ('It is a guide to action which ensures that the military always obeys the commands of the party',
     'It is a guide to action that ensures that the military will forever heed Party commands'),
    ('It is a guide to action which ensures that the military always obeys the commands of the party',
     'It is the guiding principle which guarantees the military forces always being under the command of the Party'),
    ('It is to insure the troops forever hearing the activity guidebook that party direct',
     'It is the practical guide for the army always to heed the directions of the party'),
    ('non matching hypothesis', 'this is a cat'), ('THE CAT SAT', 'the cat sat'), ('the cat sat.', 'the cat sat'),
    ('cats sitting', 'cat sat'), ('the dogs went home', 'a dog goes house'), ('a b c d', 'd c b a'),
    ('a a a', 'a'), ('a', 'a a a'), ('the the cat the', 'the cat the the'), ('İstanbul ΣΊΣΥΦΟΣ Straße', 'i̇stanbul σίσυφος straße'),
    ('北京 上海 广州', '上海 北京'), ('नई दिल्ली भारत की राजधानी है', 'भारत की राजधानी नई दिल्ली है'),
    ('big large little', 'large small big'), ('he ran quickly', 'he runs fast'), ('tabs\tand\x1cseparators', 'tabs and separators'),
]

STEM_WORDS = """a*ded ies ied dies tied spied skies sky dying lying tying news innings inning outings canning howe
proceed exceed succeed succeeded agreed feed bled hopping hissing fizzed failing filing conflated troubled sized
happy enjoy spy fly relational conditional rational valenci hesitanci digitizer conformabli radicalli differentli
vileli analogousli vietnamization predication operator feudalism decisiveness hopefulness callousness formaliti
sensitiviti sensibiliti hopefulli archaeologi geologi triplicate formative formalize electriciti electrical hopeful
goodness revival allowance inference airliner gyroscopic adjustable defensible irritant replacement adjustment
dependent adoption homologou communism activate angulariti homologous effective bowdlerize probate rate cease
controll roll generously yyyy syzygy toy ay by y oed ing sing ling eed ed ying ies's caresses ponies ties cats
agreement generalizations oscillators Running CONNECTED İstanbul σίσυφος ﬁnally naïve café straße running. don't
u.s. 3.14 1990s x-rays children's analysis analyses mice geese went""".split()

SYNONYM_WORDS = """dog dogs went geese better best running ran churches aardwolves abaci bigger happiest quickli quickly
saw leaves axes fly flies data men women glasses boxes buzzes watches wishes studies tried making hoped hoping car
big large little small good well house home guid ensur obey command parti militari forev heed the of u.s. ice_cream
Dog 3 1000 x-ray its gas bus news people feet chose thought galore handy haus""".split()


def main():
    warnings.simplefilter('ignore')
    tmp = tempfile.mkdtemp(prefix='wordnet-nltk-')
    wn = DebianWordNet(nltk_wordnet_dir(tmp), None)
    stemmer = PorterStemmer()
    rng = random.Random(20261124)
    pert = Perturber(rng, wn, stemmer)
    every = ['case', 'inflect', 'synonym', 'move', 'swap', 'drop', 'insert', 'punct']

    pairs = list(CORNERS)
    refs = [i['output'][0] for i in niv2('testset_task1290_xsum_summarization', 40)]
    refs += [i['output'][0] for i in niv2('testset_task957_e2e_nlg_text_generation_generate', 30)]
    refs += xquad_questions('en', 40)
    refs += [r for _, r in pawsx('en', 30)]
    for r in refs:
        ops = rng.choice([every, ['inflect', 'synonym'], ['synonym'], ['inflect', 'case'], ['move', 'swap', 'punct']])
        pairs.append((pert.apply(r, ops), r))
    # Natural paraphrases: WebNLG's second reference against its first, PAWS-X's pairs.
    for i in niv2('testset_task1728_web_nlg_data_to_text', 60):
        if len(i['output']) > 1:
            pairs.append((i['output'][1], i['output'][0]))
    pairs += pawsx('en', 60)[30:]
    # Translations: a perturbed English target, and the untranslated Romanian source.
    for k, i in enumerate(niv2('testset_task1435_ro_sts_parallel_language_translation_ro_to_en', 40)):
        pairs.append((pert.apply(i['output'][0], every) if k % 2 else i['input'], i['output'][0]))
    for lang in ['de', 'es', 'fr', 'ja', 'ko', 'zh']:
        pairs += pawsx(lang, 8)
    for lang in ['ar', 'hi', 'ru']:
        for q in xquad_questions(lang, 8):
            pairs.append((pert.apply(q, ['case', 'move', 'drop', 'punct']), q))
    # Another line's reference: little in common.
    for k in range(10):
        pairs.append((refs[k], refs[-1 - k]))

    cases = []
    for hyp, ref in pairs:
        h, r = hyp.split(), ref.split()
        score = ms.meteor_score([r], h, wordnet=wn)
        # The stages of `_enum_align_words`, one by one, to count what each pairs.
        eh, er = ms._generate_enums(h, r)
        exact, eh, er = ms._match_enums(eh, er)
        stem, eh, er = ms._enum_stem_match(eh, er, stemmer=stemmer)
        syn, eh, er = ms._enum_wordnetsyn_match(eh, er, wordnet=wn)
        matches = sorted(exact + stem + syn, key=lambda p: p[0])
        assert matches == ms.align_words(h, r, wordnet=wn)[0]
        cases.append({'hypothesis': hyp, 'reference': ref, 'score': score, 'matches': [list(m) for m in matches],
                      'exact': len(exact), 'stem': len(stem), 'synonym': len(syn),
                      'chunks': ms._count_chunks(matches) if matches else 0})
    mean = 100.0 * sum(c['score'] for c in cases) / len(cases)

    words = sorted({t.lower() for p in pairs for s in p for t in s.split()} | set(STEM_WORDS))
    stems = {w: stemmer.stem(w) for w in words}
    synonyms = {w: sorted({l.name() for s in wn.synsets(w) for l in s.lemmas() if '_' not in l.name()})
                for w in SYNONYM_WORDS}

    with open(OUT, 'w', encoding='utf-8') as f:
        f.write('{"nltk": %s, "wordnet": "Debian wordnet-base 3.0", "mean_points": %s,\n' % (json.dumps(nltk.__version__), json.dumps(mean)))
        f.write('"pairs": [\n' + ',\n'.join(json.dumps(c, ensure_ascii=False) for c in cases) + '],\n')
        f.write('"stems": ' + json.dumps(stems, ensure_ascii=False) + ',\n')
        f.write('"synonyms": {\n' + ',\n'.join('%s: %s' % (json.dumps(w), json.dumps(v)) for w, v in synonyms.items()) + '}}\n')
    shutil.rmtree(tmp)
    n = {k: sum(1 for c in cases if c[k]) for k in ['exact', 'stem', 'synonym']}
    print('%d pairs (with exact %d, stem %d, synonym matches %d), mean %.4f points; %d stems, %d synonym sets -> %s (%d bytes)'
          % (len(cases), n['exact'], n['stem'], n['synonym'], mean, len(stems), len(synonyms), OUT, os.path.getsize(OUT)))


if __name__ == '__main__':
    main()
