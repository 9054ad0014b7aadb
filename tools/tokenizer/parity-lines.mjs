// Writes varied test lines with the token ids mistral-tokenizer-js gives them, one JSON object per line:
//   {"text": "...", "ids": [1, ...]}        (ids include BOS, as Hugging Face encodes with special tokens)
//
//   node parity-lines.mjs [--count N] [--seed S] [--corpus FILE]
//
// Deterministic for a given seed. Lines mix: hand-picked traps, English-like text assembled from vocabulary
// pieces, unicode (Latin, Greek, Cyrillic, CJK, emoji, combining marks), code, runs of spaces/tabs/newlines,
// digits and punctuation, and (with --corpus) lines sampled from a text file.
import fs from 'node:fs'
import mistral from 'mistral-tokenizer-js'

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name)
  return i >= 0 ? process.argv[i + 1] : dflt
}
const count = Number(arg('--count', '3000'))
let seed = Number(arg('--seed', '1')) >>> 0
const corpusFile = arg('--corpus', null)

// mulberry32: a small seeded PRNG so that the line set is reproducible everywhere.
const rand = () => {
  seed = (seed + 0x6D2B79F5) >>> 0
  let t = seed
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const int = n => Math.floor(rand() * n)
const pick = a => a[int(a.length)]

const fixed = [
  'Hello world!', 'grabbed', ' grabbed', '           grabbed', '\n', ' \n', '\ttabs\t\t\t\tout here',
  'ax\n####\nboo', '镇', '🦙', '🦙Ꙋ', 'Ꙋ🦙', 'The quick brown fox jumps over the lazy dog.',
  '  leading spaces', 'trailing spaces   ', 'a  b   c    d     e', '1234567890 3.14159 -42 1e10 0x1F',
  'naïve café façade coöperate résumé', 'Ελληνικά κείμενα', 'Русский текст здесь', '日本語のテキストです。',
  '中文文本测试', '한국어 텍스트', 'emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇺🇸', 'e\u0301 combining', '[INST] hi [/INST]',
  'def f(x):\n    return x * 2\n', 'for (int i = 0; i < n; ++i) { a[i] += b[i]; }',
  '{"json": [1, 2, 3], "ok": true}', 'https://example.com/path?q=1&r=2#frag', 'C:\\Windows\\System32',
  '!!!???...,,,;;;:::', '\u00a0non-breaking\u00a0space', 'zero\u200bwidth', 'tab\tand\nnewline\r\nmix',
]

const pieces = mistral.vocabById.filter((p, id) => id >= 259 && p.length > 0)
const words = pieces.filter(p => /^▁[a-zA-Z]{2,}$/.test(p)).map(p => p.slice(1))
const ranges = [[0x20, 0x7e], [0xa0, 0x24f], [0x370, 0x3ff], [0x400, 0x4ff], [0x4e00, 0x9fff], [0x3040, 0x30ff],
  [0xac00, 0xd7a3], [0x1f300, 0x1f6ff], [0x2000, 0x206f], [0x0300, 0x036f], [0x0600, 0x06ff], [0x0900, 0x097f]]
const codeBits = ['if (x) {', '}', 'return', 'x += 1;', '#include <stdio.h>', 'def ', 'lambda x: x', '=>', '&&', '||',
  '    ', '\t', '\n', '// comment', '/* */', 'std::vector<int>', 'SELECT * FROM t WHERE a = 1;', '<div class="a">']
const corpus = corpusFile ? fs.readFileSync(corpusFile, 'utf8').split('\n').filter(l => l.length > 0) : []

const generators = [
  () => Array.from({ length: 1 + int(20) }, () => pick(words)).join(pick([' ', ' ', ' ', '  ', ', '])) + pick(['.', '!', '?', '']),
  () => Array.from({ length: 1 + int(30) }, () => pick(pieces).replace(/▁/g, ' ')).join(''),
  () => {
    const [lo, hi] = pick(ranges)
    return Array.from({ length: 1 + int(25) }, () => String.fromCodePoint(lo + int(hi - lo + 1))).join(rand() < 0.3 ? ' ' : '')
  },
  () => Array.from({ length: 1 + int(12) }, () => pick(codeBits)).join(pick(['', ' ', '\n'])),
  () => pick(words) + ' '.repeat(1 + int(20)) + pick(words) + '\t'.repeat(int(4)) + '\n'.repeat(int(3)) + pick(words),
  () => Array.from({ length: 1 + int(8) }, () => String(int(10 ** (1 + int(9))))).join(pick([' ', ',', '.', '-', ''])),
  () => corpus.length ? pick(corpus) : pick(words),
]

const lines = [...fixed]
while (lines.length < count) {
  const parts = Array.from({ length: 1 + int(3) }, () => pick(generators)())
  const s = parts.join(pick([' ', '', '\n', ' - ']))
  if (s.length > 0) lines.push(s)
}
for (const text of lines.slice(0, count)) {
  process.stdout.write(JSON.stringify({ text, ids: mistral.encode(text) }) + '\n')
}
