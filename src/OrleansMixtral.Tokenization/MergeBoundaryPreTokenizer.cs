using Microsoft.ML.Tokenizers;

namespace OrleansMixtral.Tokenization;

/// <summary>
/// Splits normalised text between two characters that no merge can ever join: no merge has a left piece ending
/// with the first and a right piece starting with the second. BPE never crosses such a boundary, so encoding the
/// parts one by one gives exactly the ids of encoding the whole, and keeps BPE words short (BpeTokenizer's cost per
/// word grows quadratically with its length). Every run of "▁" starts a new part this way (no Mistral piece has
/// "▁" after another character), and so does every byte-fallback character (bytes are in no merge).
/// </summary>
internal sealed class MergeBoundaryPreTokenizer : PreTokenizer
{
    readonly HashSet<int> _joinablePairs = [];   // (last char of a merge's left piece << 16) | first char of its right piece

    public MergeBoundaryPreTokenizer(IEnumerable<string> merges)
    {
        foreach (string merge in merges)
        {
            int space = merge.IndexOf(' ');
            _joinablePairs.Add(merge[space - 1] << 16 | merge[space + 1]);
        }
    }

    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text) => Split(text.AsSpan());

    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) => Split(text);

    List<(int Offset, int Length)> Split(ReadOnlySpan<char> text)
    {
        var parts = new List<(int Offset, int Length)>();
        for (int start = 0, end; start < text.Length; start = end)
        {
            end = EndOfPart(text, start);
            parts.Add((start, end - start));
        }
        return parts;
    }

    /// <summary>The end of the part that begins at <paramref name="start"/>: the next boundary no merge crosses.</summary>
    public int EndOfPart(ReadOnlySpan<char> text, int start)
    {
        int i = start + 1;
        while (i < text.Length &&
               (char.IsLowSurrogate(text[i]) && char.IsHighSurrogate(text[i - 1]) || _joinablePairs.Contains(text[i - 1] << 16 | text[i])))
        {
            i++;
        }
        return i;
    }
}
