using System.Text;

namespace OrleansMixtral.Tokenization;

/// <summary>
/// Turns token ids pushed one at a time into text as soon as it is final. The concatenation of everything
/// <see cref="Push"/> and <see cref="Flush"/> return equals <see cref="MistralTokenizer.Decode"/> of all the ids.
/// A run of byte-fallback tokens is held back until it ends, because the decoder turns the whole run into
/// U+FFFD if any of it is invalid UTF-8; so no half character is ever emitted. Not thread-safe: one per stream.
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

    /// <summary>Adds one token id; returns the text completed by it (often empty).</summary>
    public string Push(int id)
    {
        _tokenizer.CheckId(id);
        if (_skipSpecial && _tokenizer.IsSpecial(id)) return string.Empty;
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
