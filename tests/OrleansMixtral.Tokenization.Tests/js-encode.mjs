// Encodes texts with mistral-tokenizer-js: the independent reference for the C# tokenizer tests.
//
//   node js-encode.mjs PATH/TO/mistral-tokenizer.js < requests.jsonl > ids.jsonl
//
// Each request line is {"text": "...", "bos": true|false, "space": true|false}; each answer line is the JSON array
// of ids. "space" (default true) adds the dummy-prefix space as SentencePiece does. The package gives [] for "".
import fs from 'node:fs'
import { pathToFileURL } from 'node:url'

const { default: mistral } = await import(pathToFileURL(process.argv[2]).href)
const requests = fs.readFileSync(0, 'utf8').split('\n').filter(line => line.length > 0).map(line => JSON.parse(line))
process.stdout.write(requests.map(r => JSON.stringify(mistral.encode(r.text, r.bos, r.space ?? true))).join('\n') + '\n')
