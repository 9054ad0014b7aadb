using System.Text;

namespace OrleansMixtral.Tokenization.Tests;

public sealed class DecodeTests
{
    static MistralTokenizer Tokenizer => TestTokenizer.Instance;

    // Byte-fallback pieces are <0x00>..<0xFF> at ids 3..258.
    static int ByteId(int b) => 3 + b;

    [Fact]
    public void DecodeOfReferenceIds_GivesTheTextBack()
    {
        // Text is unchanged by normalisation unless it holds "▁" (read back as a space).
        var lines = JsReference.GeneratedLines.Where(l => !l.Text.Contains('\u2581')).ToList();
        var wrong = lines.Where(l => Tokenizer.Decode(l.Ids) != l.Text).Select(l => l.Text).ToList();
        Assert.True(wrong.Count == 0, $"{wrong.Count} of {lines.Count} lines do not round-trip, e.g. {string.Join(" | ", wrong.Take(3))}");
        Assert.All(lines, l => Assert.Equal(l.Text, Tokenizer.Decode(Tokenizer.Encode(l.Text))));
    }

    [Fact]
    public void OnlyTheDummyPrefixSpaceIsStripped()
    {
        foreach (string text in new[] { " leading", "   three", "\tx", " ", "  " })
            Assert.Equal(text, Tokenizer.Decode(Tokenizer.Encode(text)));
        // Without the dummy prefix's "▁" the first piece's own space is still the one stripped (Hugging Face's Strip).
        Assert.Equal("Hello", Tokenizer.Decode([22557]));
    }

    [Fact]
    public void SpecialTokens_AreSkippedOrWrittenOut()
    {
        int[] ids = [1, .. Tokenizer.Encode("Hi there", addBos: false), 2];
        Assert.Equal("Hi there", Tokenizer.Decode(ids));
        Assert.Equal("<s> Hi there</s>", Tokenizer.Decode(ids, skipSpecial: false));
    }

    [Fact]
    public void ByteRunsDecodeAsUtf8_AndAnInvalidRunAsOneReplacementPerByte()
    {
        int a = Tokenizer.Encode("a", addBos: false)[^1];   // "▁a"
        Assert.Equal("🦙 a", Tokenizer.Decode([ByteId(0xF0), ByteId(0x9F), ByteId(0xA6), ByteId(0x99), a]));
        // Hugging Face's ByteFallback decodes a run as a whole: one bad byte spoils the valid emoji before it.
        Assert.Equal("\uFFFD\uFFFD\uFFFD\uFFFD\uFFFD a", Tokenizer.Decode([ByteId(0xF0), ByteId(0x9F), ByteId(0xA6), ByteId(0x99), ByteId(0xFF), a]));
        Assert.Equal("\uFFFD\uFFFD", Tokenizer.Decode([ByteId(0xE9), ByteId(0x95)]));
    }

    [Fact]
    public void IdToPiece_NamesVocabularyPieces()
    {
        Assert.Equal("<unk>", Tokenizer.IdToPiece(0));
        Assert.Equal("<s>", Tokenizer.IdToPiece(Tokenizer.BosId));
        Assert.Equal("</s>", Tokenizer.IdToPiece(Tokenizer.EosId));
        Assert.Equal("<0x0A>", Tokenizer.IdToPiece(13));
        Assert.Equal("▁Hello", Tokenizer.IdToPiece(22557));
        Assert.Equal(32000, Tokenizer.VocabSize);
        Assert.Throws<ArgumentOutOfRangeException>(() => Tokenizer.IdToPiece(32000));
        Assert.Throws<ArgumentOutOfRangeException>(() => Tokenizer.Decode([-1]));
    }
}

public sealed class StreamingDetokenizerTests
{
    static MistralTokenizer Tokenizer => TestTokenizer.Instance;

    static string Stream(IEnumerable<int> ids, bool skipSpecial, List<string>? chunks = null)
    {
        var detokenizer = new StreamingDetokenizer(Tokenizer, skipSpecial);
        var text = new StringBuilder();
        foreach (int id in ids)
        {
            string chunk = detokenizer.Push(id);
            chunks?.Add(chunk);
            text.Append(chunk);
        }
        string rest = detokenizer.Flush();
        chunks?.Add(rest);
        return text.Append(rest).ToString();
    }

    [Theory]
    [InlineData("🦙 llama 🦙🦙")]
    [InlineData("镇镇 日本語のテキストです。 中文文本测试")]
    [InlineData("emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇺🇸")]
    [InlineData("  two leading spaces, tabs\t\tand\nnewlines\r\n")]
    [InlineData("\u0301 combining first")]
    [InlineData(" ")]
    public void StreamedText_EqualsDecode_AndNeverHalfACharacter(string text)
    {
        int[] ids = [.. Tokenizer.Encode(text), Tokenizer.EosId];
        foreach (bool skipSpecial in new[] { true, false })
        {
            var chunks = new List<string>();
            Assert.Equal(Tokenizer.Decode(ids, skipSpecial), Stream(ids, skipSpecial, chunks));
            Assert.All(chunks, chunk => Assert.True(IsWholeUtf16(chunk), $"chunk with half a character: {chunk}"));
            Assert.DoesNotContain(chunks, chunk => chunk.Contains('\uFFFD'));
        }
        Assert.Equal(text, Stream(ids, skipSpecial: true));
    }

    [Fact]
    public void EmojiBytesArrivingOneByOne_AreHeldBackUntilTheRunEnds()
    {
        var detokenizer = new StreamingDetokenizer(Tokenizer);
        int[] ids = Tokenizer.Encode("🦙!", addBos: false);   // ▁, four byte tokens, !
        Assert.Equal(6, ids.Length);
        Assert.Equal("", detokenizer.Push(ids[0]));   // the dummy prefix's space is stripped
        for (int i = 1; i < 5; i++) Assert.Equal("", detokenizer.Push(ids[i]));
        Assert.Equal("🦙!", detokenizer.Push(ids[5]));
        Assert.Equal("", detokenizer.Flush());
    }

    [Fact]
    public void AllReferenceLines_StreamLikeDecode()
    {
        foreach (ParityLine line in JsReference.GeneratedLines)
            Assert.Equal(Tokenizer.Decode(line.Ids), Stream(line.Ids, skipSpecial: true));
    }

    /// <summary>Arbitrary id sequences, heavy in byte pieces (invalid UTF-8 included) and special tokens.</summary>
    [Fact]
    public void RandomIdSequences_StreamLikeDecode()
    {
        var random = new Random(3);
        for (int n = 0; n < 3000; n++)
        {
            int[] ids = Enumerable.Range(0, random.Next(1, 30)).Select(_ => random.Next(4) switch
            {
                0 => random.Next(3, 259),                 // a byte
                1 => random.Next(0x80, 0xC0) + 3,         // a continuation byte
                2 => random.Next(0, 3),                   // <unk>, <s>, </s>
                _ => random.Next(259, Tokenizer.VocabSize),
            }).ToArray();
            foreach (bool skipSpecial in new[] { true, false })
                Assert.Equal(Tokenizer.Decode(ids, skipSpecial), Stream(ids, skipSpecial));
        }
    }

    static bool IsWholeUtf16(string s)
    {
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) i++;
            else if (char.IsSurrogate(s[i])) return false;
        }
        return true;
    }
}
