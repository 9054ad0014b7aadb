using System.Text.Json;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Gateway;

/// <summary>
/// The logprobs of one reply in OpenAI's shape for its endpoint: chat's <c>{"content": [{token, logprob, bytes,
/// top_logprobs}], "refusal": null}</c>, completions' <c>{tokens, token_logprobs, top_logprobs, text_offset}</c> (with echo
/// the prompt's tokens first, the first one's logprob null). Tokens are written as <see cref="MistralTokenizer.TokenText"/>
/// (" is"), their values are the engine's. Entries are added as a reply's updates arrive; a streamed reply writes those
/// added since its last event, a whole one all of them.
/// </summary>
public sealed class ReplyLogprobs
{
    readonly record struct Entry(int TokenId, float? Logprob, int[]? TopIds, float[]? TopLogprobs, int TextOffset);

    readonly MistralTokenizer _tokenizer;
    readonly bool _chat;
    readonly List<Entry> _entries = [];
    readonly int[] _prompt;
    readonly StreamingDetokenizer? _text; // completions: the reply's text as the engine writes it, for the tokens' offsets
    int _textLength;
    int _written;

    ReplyLogprobs(MistralTokenizer tokenizer, bool chat, int[] prompt, int textStart)
    {
        _tokenizer = tokenizer;
        _chat = chat;
        _prompt = prompt;
        _textLength = textStart;
        if (!chat) _text = tokenizer.CreateContinuationDetokenizer(prompt);
    }

    public static ReplyLogprobs ForChat(MistralTokenizer tokenizer) => new(tokenizer, chat: true, [], 0);

    /// <summary>A completion of <paramref name="prompt"/>; its text starts at <paramref name="textStart"/> (after an echoed prompt).</summary>
    public static ReplyLogprobs ForCompletion(MistralTokenizer tokenizer, int[] prompt, int textStart) => new(tokenizer, chat: false, prompt, textStart);

    /// <summary>Echo, before the generated tokens: the prompt's, at the offsets of their text in the decoded prompt; [0] has no logprob.</summary>
    public void AddPrompt(IReadOnlyList<TokenLogprobs?> scores)
    {
        var text = _tokenizer.CreateStreamingDetokenizer();
        var offset = 0;
        for (var i = 0; i < _prompt.Length; i++)
        {
            var s = i < scores.Count ? scores[i] : null;
            _entries.Add(new Entry(_prompt[i], s?.Logprob, s?.TopTokenIds, s?.TopLogprobs, offset));
            offset += text.Push(_prompt[i]).Length;
        }
    }

    /// <summary>Generated tokens, in order.</summary>
    public void Add(IReadOnlyList<TokenLogprobs> tokens)
    {
        foreach (var t in tokens)
        {
            _entries.Add(new Entry(t.TokenId, t.Logprob, t.TopTokenIds, t.TopLogprobs, _textLength));
            if (_text is not null) _textLength += _text.Push(t.TokenId).Length;
        }
    }

    public bool HasNew => _written < _entries.Count;

    /// <summary>The entries added since the last call (a streamed event's), or null when there are none.</summary>
    public void WriteNew(Utf8JsonWriter w, string name)
    {
        if (!HasNew)
        {
            w.WriteNull(name);
            return;
        }
        Write(w, name, _written, _entries.Count);
        _written = _entries.Count;
    }

    /// <summary>Every entry (a whole reply's).</summary>
    public void WriteAll(Utf8JsonWriter w, string name) => Write(w, name, 0, _entries.Count);

    void Write(Utf8JsonWriter w, string name, int from, int to)
    {
        w.WriteStartObject(name);
        if (_chat)
        {
            w.WriteStartArray("content");
            for (var i = from; i < to; i++)
            {
                var e = _entries[i];
                w.WriteStartObject();
                WriteToken(w, e.TokenId, e.Logprob ?? 0f);
                w.WriteStartArray("top_logprobs");
                for (var k = 0; k < (e.TopIds?.Length ?? 0); k++)
                {
                    w.WriteStartObject();
                    WriteToken(w, e.TopIds![k], e.TopLogprobs![k]);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteNull("refusal");
        }
        else
        {
            w.WriteStartArray("tokens");
            for (var i = from; i < to; i++) w.WriteStringValue(_tokenizer.TokenText(_entries[i].TokenId));
            w.WriteEndArray();
            w.WriteStartArray("token_logprobs");
            for (var i = from; i < to; i++)
                if (_entries[i].Logprob is { } lp) w.WriteNumberValue(lp); else w.WriteNullValue();
            w.WriteEndArray();
            w.WriteStartArray("top_logprobs");
            for (var i = from; i < to; i++)
            {
                var e = _entries[i];
                if (e.TopIds is null)
                {
                    w.WriteNullValue();
                    continue;
                }
                // an object keyed by token text: two ids of one text (rare) keep the likelier's value
                var seen = new HashSet<string>(StringComparer.Ordinal);
                w.WriteStartObject();
                for (var k = 0; k < e.TopIds.Length; k++)
                {
                    var token = _tokenizer.TokenText(e.TopIds[k]);
                    if (seen.Add(token)) w.WriteNumber(token, e.TopLogprobs![k]);
                }
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("text_offset");
            for (var i = from; i < to; i++) w.WriteNumberValue(_entries[i].TextOffset);
            w.WriteEndArray();
        }
        w.WriteEndObject();
    }

    void WriteToken(Utf8JsonWriter w, int id, float logprob)
    {
        w.WriteString("token", _tokenizer.TokenText(id));
        w.WriteNumber("logprob", logprob);
        w.WriteStartArray("bytes");
        foreach (var b in _tokenizer.TokenBytes(id)) w.WriteNumberValue(b);
        w.WriteEndArray();
    }
}
