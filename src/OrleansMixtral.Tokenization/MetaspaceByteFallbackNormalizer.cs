using System.Text;
using Microsoft.ML.Tokenizers;

namespace OrleansMixtral.Tokenization;

/// <summary>
/// SentencePiece's view of the text, written so that a plain <see cref="BpeTokenizer"/> encodes it exactly:
/// the dummy prefix "▁" is prepended, every " " becomes "▁", and every character that has no vocabulary piece of
/// its own is replaced by its UTF-8 bytes, each written as the private-use character U+E000+byte. Those characters
/// are BPE pieces standing for the &lt;0xXX&gt; pieces, which gives byte fallback (BpeTokenizer has none) and keeps
/// the bytes out of every merge, as in SentencePiece.
/// </summary>
internal sealed class MetaspaceByteFallbackNormalizer : Normalizer
{
    public const char Metaspace = '\u2581';
    public const char ByteAliasBase = '\uE000';

    readonly bool[] _bmpHasPiece = new bool[char.MaxValue + 1];
    readonly HashSet<int> _astralHasPiece = [];

    public MetaspaceByteFallbackNormalizer(IEnumerable<string> vocabularyPieces)
    {
        foreach (string piece in vocabularyPieces)
        {
            if (piece.Length == 1) _bmpHasPiece[piece[0]] = true;
            else if (piece.Length == 2 && char.IsSurrogatePair(piece[0], piece[1])) _astralHasPiece.Add(char.ConvertToUtf32(piece[0], piece[1]));
        }
    }

    /// <summary>The characters that stand for raw bytes in normalised text (U+E000 + byte).</summary>
    public static string ByteAlias(int b) => ((char)(ByteAliasBase + b)).ToString();

    public override string Normalize(string original) => Normalize(original.AsSpan());

    public override string Normalize(ReadOnlySpan<char> original)
    {
        // Like Hugging Face's Prepend normaliser (and SentencePiece), the empty string stays empty: no dummy prefix.
        if (original.IsEmpty) return string.Empty;

        var normalized = new StringBuilder(original.Length + original.Length / 4 + 1);
        normalized.Append(Metaspace);
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < original.Length;)
        {
            char c = original[i];
            if (c == ' ')
            {
                normalized.Append(Metaspace);
                i++;
            }
            else if (i + 1 < original.Length && char.IsSurrogatePair(c, original[i + 1]))
            {
                int codePoint = char.ConvertToUtf32(c, original[i + 1]);
                if (_astralHasPiece.Contains(codePoint)) normalized.Append(c).Append(original[i + 1]);
                else AppendBytes(normalized, new Rune(codePoint), utf8);
                i += 2;
            }
            else
            {
                // A lone surrogate is no character: read it as U+FFFD, as converting the text to UTF-8 would.
                if (char.IsSurrogate(c)) c = '\uFFFD';
                if (_bmpHasPiece[c]) normalized.Append(c);
                else AppendBytes(normalized, new Rune(c), utf8);
                i++;
            }
        }
        return normalized.ToString();
    }

    static void AppendBytes(StringBuilder normalized, Rune rune, Span<byte> utf8)
    {
        int count = rune.EncodeToUtf8(utf8);
        for (int k = 0; k < count; k++) normalized.Append((char)(ByteAliasBase + utf8[k]));
    }
}
