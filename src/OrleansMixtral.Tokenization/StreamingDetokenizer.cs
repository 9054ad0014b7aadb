using System.Runtime.InteropServices;
using System.Text;
using System.Text.Unicode;

namespace OrleansMixtral.Tokenization;

/// <summary>
/// Turns token ids pushed one at a time into text as soon as it is final. The concatenation of everything
/// <see cref="Push"/> and <see cref="Flush"/> return equals <see cref="MistralTokenizer.Decode"/> of all the ids.
/// A run of byte-fallback tokens is held back until it ends, because the decoder turns the whole run into
/// U+FFFD if any of it is invalid UTF-8; so no half character is ever emitted. Not thread-safe: one per stream.
/// A detokenizer made with <see cref="MistralTokenizer.CreateContinuationDetokenizer"/> writes the text that continues
/// a prompt instead: see there.
/// </summary>
public sealed class StreamingDetokenizer
{
    readonly MistralTokenizer _tokenizer;
    readonly bool _skipSpecial;
    readonly List<byte> _byteRun = [];
    readonly StringBuilder _scratch = new();
    bool _emittedAny;   // the dummy prefix's space is stripped from the first text only

    public StreamingDetokenizer(MistralTokenizer tokenizer, bool skipSpecial = true)
    {
        _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        _skipSpecial = skipSpecial;
    }

    /// <summary>
    /// Starts the output after <paramref name="prompt"/>, as vLLM detokenizes against the prompt's tail: the output's
    /// first space is kept when the prompt has text before it (the dummy prefix's space is the text's first character
    /// only), and a run of bytes the prompt leaves unfinished (an id prompt cut inside a character) is finished by the
    /// output's bytes, the character counting as output. Reads the prompt from its end, only as far as it must.
    /// </summary>
    internal void ContinueAfter(ReadOnlySpan<int> prompt)
    {
        // the prompt's last run of bytes (skipped special tokens do not end a run, as in Decode)
        int runStart = prompt.Length;
        while (runStart > 0 && (_tokenizer.ByteOf(prompt[runStart - 1]) >= 0 || Skips(prompt[runStart - 1]))) runStart--;
        foreach (int id in prompt[runStart..])
            if (_tokenizer.ByteOf(id) >= 0) _byteRun.Add((byte)_tokenizer.ByteOf(id));
        if (_byteRun.Count > 0 && Utf8.IsValid(CollectionsMarshal.AsSpan(_byteRun)))
        {
            _byteRun.Clear(); // the prompt's own last characters
            _emittedAny = true;
            return;
        }
        // a token before the run that is not skipped has text: the output's first space is not the text's first character
        _emittedAny = runStart > 0;
    }

    bool Skips(int id)
    {
        _tokenizer.CheckId(id);
        return _skipSpecial && _tokenizer.IsSpecial(id);
    }

    /// <summary>Adds one token id; returns the text completed by it (often empty).</summary>
    public string Push(int id)
    {
        _tokenizer.CheckId(id);
        if (Skips(id)) return string.Empty;
        int b = _tokenizer.ByteOf(id);
        if (b >= 0)
        {
            _byteRun.Add((byte)b);
            return string.Empty;
        }
        MistralTokenizer.AppendByteRun(_scratch, _byteRun);
        _scratch.Append(_tokenizer.DecodedPiece(id));
        return Emit();
    }

    /// <summary>Ends the stream: returns the text still held back (a pending run of bytes).</summary>
    public string Flush()
    {
        MistralTokenizer.AppendByteRun(_scratch, _byteRun);
        return Emit();
    }

    string Emit()
    {
        if (_scratch.Length == 0) return string.Empty;
        int start = !_emittedAny && _scratch[0] == ' ' ? 1 : 0;
        _emittedAny = true;
        string text = _scratch.ToString(start, _scratch.Length - start);
        _scratch.Clear();
        return text;
    }
}
