"""Reference outputs of the tiny model from Hugging Face transformers in fp32: the independent oracle the C#
engine must reproduce.

    python3 make_fixtures.py --model models/tiny-mixtral --heldout heldout.txt --out tests/fixtures/tiny-mixtral

Writes prompts.json (token ids; plain and chat-template prompts), reference.json (top-20 logits at every
position, greedy continuations, router choices, perplexities) and last_logits.safetensors (the full
last-position logits of four prompts, F32).

Perplexity windowing (the same as train.py and `mixtral perplexity`): the held-out file is encoded whole
(no BOS), split into chunks of 1023 tokens; each window is [BOS] + chunk; every chunk token is predicted once;
perplexity = exp(mean NLL).
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoTokenizer, MixtralForCausalLM

CTX = 1024
BOS = 1

PLAIN = [
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time, in a small village by the sea,",
    "The committee said on Friday that the",
    "Naïve café owners in Zürich sell crème brûlée — 日本語 and emoji 🦙 too.",
    "  Leading spaces, tabs\tand\nnewlines\n\nmatter.",
    "1234 + 5678 = ",
    "He said, \"I don't know what you mean.\"",
    "",
]
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help you today?"},
     {"role": "user", "content": "Tell me a story."}],
    [{"role": "user", "content": "Ünïcödé ✓ test: 北京 → Paris"}],
]
FULL_LOGITS = [0, 1, 8, 10]   # prompt indices whose whole last-position logits are stored
GREEDY = [1, 2, 8, 9]         # prompt indices continued greedily for 32 tokens
ROUTER = 6                    # prompt index whose per-layer router choices are stored


def chat_ids(tok, messages):
    ids = tok.apply_chat_template(messages, tokenize=True)
    if hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
        ids = ids["input_ids"]
    return [int(i) for i in ids]


@torch.no_grad()
def perplexity(model, stream, device, max_windows=None):
    nll, count, windows = 0.0, 0, 0
    for start in range(0, len(stream), CTX - 1):
        if max_windows and windows == max_windows:
            break
        w = torch.tensor([[BOS] + stream[start:start + CTX - 1]], device=device)
        logits = model(input_ids=w).logits.double()
        nll += F.cross_entropy(logits[0, :-1], w[0, 1:], reduction="sum").item()
        count += w.shape[1] - 1
        windows += 1
    return {"perplexity": math.exp(nll / count), "tokens": count, "windows": windows, "nll_sum": nll}


def fake_quant_int8_(model):
    """Symmetric per-output-channel int8 weight-only (round half away from zero), all linear layers except
    the router gate and lm_head/embeddings - the scheme the C# engine implements."""
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and not name.endswith("gate") and "lm_head" not in name:
            w = mod.weight.data
            scale = w.abs().amax(dim=1, keepdim=True) / 127.0
            q = torch.where(scale > 0, w / scale.clamp_min(1e-30), torch.zeros_like(w))
            q = torch.sign(q) * torch.floor(q.abs() + 0.5)
            mod.weight.data = q.clamp(-127, 127) * scale
    cfg = model.config
    for name, p in model.named_parameters():  # fused expert tensors (transformers 5 layout), if any
        if "experts" in name and p.dim() == 3:
            w = p.data
            out_dim = 2 * cfg.intermediate_size if "gate_up" in name else cfg.hidden_size
            red = 2 if w.shape[1] == out_dim else 1  # reduce over the input dimension: one scale per output row
            scale = w.abs().amax(dim=red, keepdim=True) / 127.0
            q = torch.where(scale > 0, w / scale.clamp_min(1e-30), torch.zeros_like(w))
            q = torch.sign(q) * torch.floor(q.abs() + 0.5)
            p.data = q.clamp(-127, 127) * scale


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    device = "cuda"
    os.makedirs(args.out, exist_ok=True)

    tok = AutoTokenizer.from_pretrained(args.model)
    model = MixtralForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager").to(device).eval()

    prompts = [{"kind": "plain", "text": t, "ids": tok(t)["input_ids"]} for t in PLAIN]
    for m in CHATS:
        prompts.append({"kind": "chat", "messages": m, "text": tok.apply_chat_template(m, tokenize=False),
                        "ids": chat_ids(tok, m)})
    with open(os.path.join(args.out, "prompts.json"), "w", encoding="utf-8") as f:
        json.dump({"source": "transformers " + __import__("transformers").__version__, "prompts": prompts},
                  f, indent=1, ensure_ascii=False)

    ref = {"top20": [], "greedy": [], "router": None, "perplexity": {}}
    last = {}
    with torch.no_grad():
        for i, p in enumerate(prompts):
            ids = torch.tensor([p["ids"]], device=device)
            out = model(input_ids=ids, output_router_logits=(i == ROUTER))
            logits = out.logits[0].float()
            top = torch.topk(logits, 20, dim=-1)
            ref["top20"].append({"prompt": i, "ids": top.indices.tolist(), "logits": top.values.tolist()})
            if i in FULL_LOGITS:
                last[f"prompt_{i}"] = logits[-1].contiguous().cpu()
            if i == ROUTER:
                layers = []
                for rl in out.router_logits:
                    rl = rl.float().reshape(-1, rl.shape[-1])
                    w = torch.softmax(rl, dim=-1)
                    tw, te = torch.topk(w, 2, dim=-1)
                    layers.append({"experts": te.tolist(), "weights": (tw / tw.sum(-1, keepdim=True)).tolist(),
                                   "router_logits": rl.tolist()})
                ref["router"] = {"prompt": i, "layers": layers}
        for i in GREEDY:
            seq = list(prompts[i]["ids"])
            for _ in range(32):  # no KV cache, no EOS stop: the plainest possible greedy oracle
                logits = model(input_ids=torch.tensor([seq], device=device)).logits[0, -1]
                seq.append(int(torch.argmax(logits)))
            new = seq[len(prompts[i]["ids"]):]
            ref["greedy"].append({"prompt": i, "ids": new, "text": tok.decode(new)})

        with open(args.heldout, encoding="utf-8") as f:
            stream = tok(f.read(), add_special_tokens=False)["input_ids"]
        t0 = time.time()
        ref["perplexity"]["heldout_fp32"] = perplexity(model, stream, device)
        ref["perplexity"]["heldout_fp32_first16"] = perplexity(model, stream, device, max_windows=16)
        fake_quant_int8_(model)
        ref["perplexity"]["heldout_int8_weight_only"] = perplexity(model, stream, device)
        ref["perplexity"]["heldout_int8_weight_only_first16"] = perplexity(model, stream, device, max_windows=16)
        ref["perplexity"]["seconds"] = round(time.time() - t0, 1)
    ref["windowing"] = "encode file whole without BOS; chunks of 1023 tokens; window = [BOS] + chunk; every chunk token predicted once"
    ref["card"] = torch.cuda.get_device_name()
    save_file(last, os.path.join(args.out, "last_logits.safetensors"), metadata={"prompts": json.dumps(FULL_LOGITS)})
    with open(os.path.join(args.out, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False)
    print(json.dumps(ref["perplexity"]), flush=True)
    for g in ref["greedy"]:
        print("greedy", g["prompt"], repr(g["text"]), flush=True)


if __name__ == "__main__":
    main()
