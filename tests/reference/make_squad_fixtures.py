"""Writes the extractive-QA fixtures the Rust data tests compare against (see README.md).

Run from anywhere:
    /root/.cache/polyadapt-baseline/venv/bin/python tests/reference/make_squad_fixtures.py

Outputs (under tests/fixtures/squad/):
    qa_small.json            a SQuAD v1.1 file written here: en, hi, ar, zh, non-BMP characters,
                             two long contexts (en, zh) that need several windows
    windows_reference.json   Hugging Face's windows of qa_small.json for both real tokenizers and
                             two window sizes (ids, type ids, context char offsets, labels), and
                             (me5 windows) postprocess_qa_predictions' answers for seeded random logits
    metric_vectors.json      EM / F1 of the official SQuAD v1.1 evaluation functions (verbatim
                             below) on hand-made and random (prediction, ground truths) cases
"""

import argparse
import collections
import json
import random
import re
import string
import struct
import sys
from collections import Counter
from pathlib import Path

sys.dont_write_bytecode = True  # keep tests/reference free of __pycache__

import numpy as np
import tokenizers
import transformers
from transformers import AutoTokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS = Path("/root/.cache/polyadapt-baseline/models")
SEED = 20240917

# (max_len, stride): run_qa.py's defaults, and a small window that splits every long context.
WINDOW_CONFIGS = [(384, 128), (80, 24)]
# (n_best, max_answer_length): run_qa.py's defaults, and a tight one that exercises the limits
# (including examples with no valid span).
SPAN_CONFIGS = [(20, 30), (3, 2)]


# --- The input fixture -------------------------------------------------------------------------

def long_english():
    things = ["a wooden mill on the north bank", "a school for forty children", "a stone bridge over the Wend river",
              "a covered market beside the church", "a library with two reading rooms", "a brewery near the old gate",
              "a railway station for the coast line", "a hospital with sixty beds", "a public bath in the lower town",
              "a football ground behind the mill"]
    sentences = []
    for i in range(40):
        year = 1801 + 7 * i
        thing = things[i % len(things)] if i < len(things) else f"the {i}th house on Baker Lane"
        sentences.append(f"In {year}, the people of Lindenbrook built {thing}.")
    sentences.append("The town was renamed Lindenburg in 2001, after a vote of the council.")
    return " ".join(sentences)


def long_chinese():
    things = ["一座石桥", "一所小学", "一座图书馆", "一条铁路", "一家医院", "一个市场", "一座水塔", "一个公园"]
    sentences = []
    for i in range(48):
        year = 1801 + 5 * i
        thing = things[i] if i < len(things) else f"第{i}号房子"
        sentences.append(f"{year}年，镇上的居民修建了{thing}。")
    sentences.append("这个镇在2001年改名为林登堡。")
    return "".join(sentences)


def paragraphs():
    """(title or None, context, [(id, question, [answer texts]), ...]); each answer text occurs
    once in its context (checked), so its offset is context.index(text)."""
    return [
        ("Amazon", "The Amazon River flows through Brazil, Peru and Colombia before it reaches the Atlantic Ocean. "
         "It carries more water than any other river, and its basin covers about seven million square kilometres. "
         "The first European to travel its whole length was Francisco de Orellana, in 1542.",
         [("en-1", "Who was the first European to travel the whole length of the Amazon?", ["Francisco de Orellana"]),
          ("en-2", "   How large is the Amazon basin?", ["about seven million square kilometres", "seven million square kilometres"]),
          ("en-3", "Which river carries more water than any other?", ["The Amazon River"]),
          ("en-4", "When did Orellana travel the river?", ["1542"])]),
        (None, "The treble clef 𝄞 and the emoji 🎵 both appear in this sentence, which was printed in Venice in 1501 by Ottaviano Petrucci.",
         [("nonbmp-1", "Who printed the sentence?", ["Ottaviano Petrucci"]),
          ("nonbmp-2", "Where was it printed?", ["Venice"])]),
        ("गंगा", "गंगा नदी भारत की सबसे पवित्र नदी मानी जाती है। यह हिमालय में गंगोत्री हिमनद से निकलती है और बंगाल की खाड़ी में गिरती है। "
         "इसकी लंबाई लगभग 2525 किलोमीटर है।",
         [("hi-1", "गंगा नदी कहाँ से निकलती है?", ["गंगोत्री हिमनद"]),
          ("hi-2", "गंगा नदी की लंबाई कितनी है?", ["लगभग 2525 किलोमीटर"])]),
        ("النيل", "يقع نهر النيل في شمال شرق أفريقيا، ويعد أطول نهر في العالم. يبلغ طوله حوالي 6650 كيلومترا، ويصب في البحر الأبيض المتوسط.",
         [("ar-1", "أين يصب نهر النيل؟", ["البحر الأبيض المتوسط"]),
          ("ar-2", "كم يبلغ طول نهر النيل؟", ["حوالي 6650 كيلومترا"])]),
        ("长江", "长江是中国最长的河流，全长约6300公里。它发源于青藏高原，最后流入东海。三峡大坝位于湖北省宜昌市。",
         [("zh-1", "长江最后流入哪里？", ["东海"]),
          ("zh-2", "三峡大坝在哪个城市？", ["宜昌市"])]),
        ("Lindenbrook", long_english(),
         [("long-en-1", "What did the people of Lindenbrook build in 1815?", ["a stone bridge over the Wend river", "stone bridge"]),
          ("long-en-2", "What was Lindenbrook called after 2001?", ["Lindenburg"]),
          ("long-en-3", "What was built on Baker Lane in 1976?", ["the 25th house on Baker Lane"])]),
        ("林登堡", long_chinese(),
         [("long-zh-1", "镇上的居民在1806年修建了什么？", ["一所小学"]),
          ("long-zh-2", "这个镇在2001年改名为什么？", ["林登堡"]),
          ("long-zh-3", "2011年修建了什么？", ["第42号房子"])]),
    ]


def squad_json():
    data = []
    for title, context, qas in paragraphs():
        out_qas = []
        for qid, question, texts in qas:
            answers = []
            for t in texts:
                assert context.count(t) == 1, (qid, t)
                answers.append({"text": t, "answer_start": context.index(t)})
            out_qas.append({"id": qid, "question": question, "answers": answers})
        article = {"paragraphs": [{"context": context, "qas": out_qas}]}
        if title is not None:
            article["title"] = title
        data.append(article)
    return {"version": "1.1", "data": data}


def flat_examples(squad):
    out = []
    for article in squad["data"]:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                out.append({"id": qa["id"], "question": qa["question"], "context": p["context"], "answers": qa["answers"]})
    return out


# --- Windows: run_qa.py's prepare_train_features / prepare_validation_features -------------------

def hf_windows(tok, examples, max_len, stride):
    """The features of run_qa.py for `examples`, without padding. Labels as
    prepare_train_features, with one change: its start scan
    `while token_start_index < len(offsets) and offsets[token_start_index][0] <= start_char`
    runs into the special tokens after the context (offsets (0, 0)) when the answer starts in
    the window's last context token; here it stops at the last context token. Counted."""
    questions = [e["question"].lstrip() for e in examples]
    contexts = [e["context"] for e in examples]
    enc = tok(questions, contexts, truncation="only_second", max_length=max_len, stride=stride,
              return_overflowing_tokens=True, return_offsets_mapping=True, padding=False)
    feats, scan_fixes = [], 0
    for i in range(len(enc["input_ids"])):
        ids = enc["input_ids"][i]
        seq = enc.sequence_ids(i)
        offsets = enc["offset_mapping"][i]
        ex = enc["overflow_to_sample_mapping"][i]
        cls_index = ids.index(tok.cls_token_id)
        answer = examples[ex]["answers"][0]
        start_char = answer["answer_start"]
        end_char = start_char + len(answer["text"])
        ts = 0
        while seq[ts] != 1:
            ts += 1
        te = len(ids) - 1
        while seq[te] != 1:
            te -= 1
        last_context = te
        if not (offsets[ts][0] <= start_char and offsets[te][1] >= end_char):
            start, end = cls_index, cls_index
        else:
            while ts < len(offsets) and offsets[ts][0] <= start_char:
                ts += 1
                if ts > last_context:
                    scan_fixes += 1
                    break
            start = ts - 1
            while offsets[te][1] >= end_char:
                te -= 1
            end = te + 1
        type_ids = enc["token_type_ids"][i] if "token_type_ids" in enc else None
        feats.append({
            "example": ex,
            "ids": ids,
            "type_ids": type_ids,
            # prepare_validation_features: offsets only for context tokens.
            "offsets": [list(o) if seq[k] == 1 else None for k, o in enumerate(offsets)],
            "start": start,
            "end": end,
        })
    return feats, scan_fixes


# --- utils_qa.postprocess_qa_predictions, SQuAD v1 (no null answer) ------------------------------

def hf_best_answer(context, feats, start_logits, end_logits, n_best_size, max_answer_length):
    prelim_predictions = []
    for fi, f in enumerate(feats):
        sl, el = start_logits[fi], end_logits[fi]
        offset_mapping = f["offsets"]
        start_indexes = np.argsort(sl)[-1: -n_best_size - 1: -1].tolist()
        end_indexes = np.argsort(el)[-1: -n_best_size - 1: -1].tolist()
        for start_index in start_indexes:
            for end_index in end_indexes:
                if (start_index >= len(offset_mapping) or end_index >= len(offset_mapping)
                        or offset_mapping[start_index] is None or len(offset_mapping[start_index]) < 2
                        or offset_mapping[end_index] is None or len(offset_mapping[end_index]) < 2):
                    continue
                if end_index < start_index or end_index - start_index + 1 > max_answer_length:
                    continue
                prelim_predictions.append({
                    "offsets": (offset_mapping[start_index][0], offset_mapping[end_index][1]),
                    "score": sl[start_index] + el[end_index],
                    "window": fi, "start_token": start_index, "end_token": end_index,
                })
    predictions = sorted(prelim_predictions, key=lambda x: x["score"], reverse=True)[:n_best_size]
    if not predictions:
        return None  # HF answers the placeholder "empty"
    best = predictions[0]
    text = context[best["offsets"][0]: best["offsets"][1]]
    assert text != "" or len(predictions) > 1, "HF's 'empty' rule for a lone empty span: not in these fixtures"
    return {"text": text, "start_char": best["offsets"][0], "end_char": best["offsets"][1],
            "score": float(best["score"]), "window": best["window"],
            "start_token": best["start_token"], "end_token": best["end_token"]}


def window_reference(examples):
    rng = np.random.default_rng(SEED)
    out = {"tokenizers_version": tokenizers.__version__, "transformers_version": transformers.__version__, "models": []}
    for name, dirname in [("multilingual-e5-small", "me5-small"), ("all-minilm-l6-v2", "all-MiniLM-L6-v2")]:
        tok = AutoTokenizer.from_pretrained(MODELS / dirname)
        for max_len, stride in WINDOW_CONFIGS:
            feats, scan_fixes = hf_windows(tok, examples, max_len, stride)
            entry = {"model": name, "max_len": max_len, "stride": stride, "windows": feats}
            out["models"].append(entry)
            print(f"{name} max_len {max_len} stride {stride}: {len(feats)} windows "
                  f"(most per example {max(collections.Counter(f['example'] for f in feats).values())}), "
                  f"{sum(f['start'] != 0 for f in feats)} labelled with the answer, start-scan fixes {scan_fixes}")
            if name != "multilingual-e5-small":
                continue  # post-processing does not depend on the tokenizer: logits for one model
            # Random logits per window (float32, seeded): no ties, and the winner may sit in
            # any window of an example.
            logits = [(rng.standard_normal(len(f["ids"])).astype(np.float32),
                       rng.standard_normal(len(f["ids"])).astype(np.float32)) for f in feats]
            answers = []
            for n_best, max_answer in SPAN_CONFIGS:
                per_ex = []
                for ei, ex in enumerate(examples):
                    idx = [k for k, f in enumerate(feats) if f["example"] == ei]
                    per_ex.append(hf_best_answer(ex["context"], [feats[k] for k in idx],
                                                 [logits[k][0] for k in idx], [logits[k][1] for k in idx], n_best, max_answer))
                answers.append({"n_best": n_best, "max_answer_tokens": max_answer, "best": per_ex})
            for f, (s, e) in zip(feats, logits):
                # Shortest decimals that read back as the same float32 (numpy's str).
                f["start_logits"] = [float(str(x)) for x in s]
                f["end_logits"] = [float(str(x)) for x in e]
            entry["answers"] = answers
            print(f"  no valid span under (n_best, max_answer_tokens): "
                  f"{[(a['n_best'], a['max_answer_tokens'], sum(b is None for b in a['best'])) for a in answers]}")
    return out


# --- Official evaluation script for v1.1 of the SQuAD dataset (functions verbatim) --------------

def normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""
    def remove_articles(text):
        return re.sub(r'\b(a|an|the)\b', ' ', text)

    def white_space_fix(text):
        return ' '.join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return ''.join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def f1_score(prediction, ground_truth):
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def exact_match_score(prediction, ground_truth):
    return (normalize_answer(prediction) == normalize_answer(ground_truth))


def metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    scores_for_ground_truths = []
    for ground_truth in ground_truths:
        score = metric_fn(prediction, ground_truth)
        scores_for_ground_truths.append(score)
    return max(scores_for_ground_truths)


def evaluate(dataset, predictions):
    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article['paragraphs']:
            for qa in paragraph['qas']:
                total += 1
                if qa['id'] not in predictions:
                    message = 'Unanswered question ' + qa['id'] + \
                              ' will receive score 0.'
                    print(message, file=sys.stderr)
                    continue
                ground_truths = list(map(lambda x: x['text'], qa['answers']))
                prediction = predictions[qa['id']]
                exact_match += metric_max_over_ground_truths(
                    exact_match_score, prediction, ground_truths)
                f1 += metric_max_over_ground_truths(
                    f1_score, prediction, ground_truths)

    exact_match = 100.0 * exact_match / total
    f1 = 100.0 * f1 / total

    return {'exact_match': exact_match, 'f1': f1}

# --- end of the official functions ---------------------------------------------------------------


def f64_bits(x):
    """The IEEE bits of a float, so that JSON parsing cannot round it."""
    return struct.unpack("<Q", struct.pack("<d", float(x)))[0]


HAND_CASES = [
    ("Denver Broncos", ["Denver Broncos", "The Denver Broncos"]),
    ("the Denver Broncos!", ["Denver Broncos"]),
    ("Broncos", ["Denver Broncos"]),
    ("Denver Broncos won", ["Broncos"]),
    ("a an the", ["the"]),
    ("", ["the"]),
    ("", [""]),
    ("The", ["an"]),
    ("theater", ["the ater"]),
    ("the_cat", ["cat"]),
    ("a-cat", ["cat"]),
    ("3.14", ["314"]),
    ("rock 'n' roll", ["rock n roll"]),
    ("cat cat cat dog", ["cat dog dog"]),
    ("New  York\tCity\n", ["new york city"]),
    ("x\x1cy", ["x y"]),
    ("x\u00a0y\u3000z", ["x y z"]),
    ("ΟΔΟΣ", ["οδος"]),
    ("ΟΔΟΣ", ["οδοσ"]),
    ("İstanbul", ["istanbul"]),
    ("Straße", ["STRASSE"]),
    ("«Paris»", ["Paris"]),
    ("巴黎。", ["巴黎"]),
    ("गंगोत्री हिमनद", ["गंगोत्री हिमनद।"]),
    ("البحر الأبيض المتوسط", ["البحر المتوسط"]),
    ("thé", ["th"]),
    ("the\u00e9", ["é"]),
    ("a1 a 1a", ["1"]),
    ("The the THE tHe", ["the"]),
    ("Ⅻ a", ["ⅻ"]),
    ("über a", ["Über"]),
    ("1,000,000", ["1000000"]),
    ("Sept. 11, 2001", ["September 11, 2001", "11 September 2001", "2001"]),
]


def random_cases(rng, n):
    vocab = ["a", "an", "the", "The", "A", "cat", "Cat", "dog", "dogs", "river", "1542", "3.5", "New", "York", "U.S.",
             "o'clock", "well-known", "(born", "1900)", "Nile", "नदी", "النيل", "长江", "é", "über", ",", ".", "!", "--", "_"]
    seps = [" ", " ", " ", "  ", "\t", "\n", ""]
    out = []
    for _ in range(n):
        def phrase():
            k = rng.randint(0, 6)
            return "".join(rng.choice(vocab) + rng.choice(seps) for _ in range(k))
        out.append((phrase(), [phrase() for _ in range(rng.randint(1, 3))]))
    return out


def metric_vectors():
    rng = random.Random(SEED)
    cases = HAND_CASES + random_cases(rng, 300)
    out_cases = []
    for pred, truths in cases:
        em = metric_max_over_ground_truths(exact_match_score, pred, truths)
        f1 = metric_max_over_ground_truths(f1_score, pred, truths)
        out_cases.append({"prediction": pred, "ground_truths": truths, "normalized": normalize_answer(pred),
                          "exact_match": bool(em), "f1": float(f1), "f1_bits": f64_bits(f1)})
    # The whole set through evaluate(), as one dataset with ids q0, q1, ...
    dataset = [{"paragraphs": [{"qas": [{"id": f"q{i}", "answers": [{"text": t} for t in truths]}
                                         for i, (_, truths) in enumerate(cases)]}]}]
    scores = evaluate(dataset, {f"q{i}": pred for i, (pred, _) in enumerate(cases)})
    return {
        "script": "official SQuAD v1.1 evaluate functions, verbatim in make_squad_fixtures.py",
        "python_version": sys.version.split()[0],
        "cases": out_cases,
        "evaluate": {"exact_match": scores["exact_match"], "exact_match_bits": f64_bits(scores["exact_match"]),
                     "f1": scores["f1"], "f1_bits": f64_bits(scores["f1"]), "count": len(cases)},
    }


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, ensure_ascii=False, indent=None, separators=(",", ":"))
    path.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "tests/fixtures/squad")
    args = ap.parse_args()
    squad = squad_json()
    small = args.out / "qa_small.json"
    small.parent.mkdir(parents=True, exist_ok=True)
    small.write_text(json.dumps(squad, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {small}")
    write_json(args.out / "windows_reference.json", window_reference(flat_examples(squad)))
    mv = metric_vectors()
    print(f"metric vectors: {len(mv['cases'])} cases, EM {mv['evaluate']['exact_match']:.4f}, F1 {mv['evaluate']['f1']:.4f}")
    write_json(args.out / "metric_vectors.json", mv)


if __name__ == "__main__":
    main()
