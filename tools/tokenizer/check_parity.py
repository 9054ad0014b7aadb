"""Checks that tokenizer.json, loaded by Hugging Face `tokenizers` and `transformers`, encodes exactly like the
JS package mistral-tokenizer-js.

    python3 check_parity.py --model-dir models/tiny-mixtral --lines parity.jsonl [--corpus DIR] --report OUT.json

--lines: JSONL from parity-lines.mjs ({"text", "ids"} with the JS ids). --corpus: the folder written by
tools/tiny-model/prepare_corpus.mjs; each NAME.txt is encoded whole (no BOS) and compared with NAME.bin.
"""
import argparse
import json
import os
import time

import numpy as np
from tokenizers import Tokenizer
from transformers import AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("--model-dir", required=True)
ap.add_argument("--lines", required=True)
ap.add_argument("--corpus")
ap.add_argument("--report", required=True)
args = ap.parse_args()

raw = Tokenizer.from_file(os.path.join(args.model_dir, "tokenizer.json"))
auto = AutoTokenizer.from_pretrained(args.model_dir)
report = {"tokenizer_class": type(auto).__name__, "lines": 0, "raw_equal_js": 0, "auto_equal_js": 0,
          "decode_roundtrip": 0, "mismatches": []}

with open(args.lines, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
for row in rows:
    text, js = row["text"], row["ids"]
    want = js if text else [1]  # the JS package returns [] for "", SentencePiece gives [BOS]
    got_raw = raw.encode(text, add_special_tokens=True).ids
    got_auto = auto(text, add_special_tokens=True)["input_ids"]
    report["lines"] += 1
    report["raw_equal_js"] += got_raw == want
    report["auto_equal_js"] += got_auto == want
    report["decode_roundtrip"] += raw.decode(got_raw, skip_special_tokens=True) == text
    if (got_raw != want or got_auto != want) and len(report["mismatches"]) < 20:
        report["mismatches"].append({"text": text, "js": want, "hf": got_raw, "auto": got_auto})

report["hello_world"] = raw.encode("Hello world!").ids
report["empty"] = raw.encode("").ids

if args.corpus:
    report["corpus"] = {}
    for name in ("heldout", "valid"):
        with open(os.path.join(args.corpus, f"{name}.txt"), encoding="utf-8") as f:
            text = f.read()
        t0 = time.time()
        got = np.array(raw.encode(text, add_special_tokens=False).ids, dtype=np.uint16)
        js = np.fromfile(os.path.join(args.corpus, f"{name}.bin"), dtype="<u2")
        same = got.shape == js.shape and bool((got == js).all())
        first_diff = None
        if not same:
            n = min(len(got), len(js))
            d = np.nonzero(got[:n] != js[:n])[0]
            first_diff = int(d[0]) if len(d) else n
        report["corpus"][name] = {"tokens_js": int(len(js)), "tokens_hf": int(len(got)), "identical": same,
                                  "first_difference": first_diff, "seconds": round(time.time() - t0, 2)}

with open(args.report, "w") as f:
    json.dump(report, f, indent=1, ensure_ascii=False)
print(f"tokenizer parity: {report['raw_equal_js']}/{report['lines']} lines identical (tokenizers), "
      f"{report['auto_equal_js']}/{report['lines']} ({report['tokenizer_class']}), "
      f"decode round trip {report['decode_roundtrip']}/{report['lines']}; corpus: {report.get('corpus')}")
