namespace OrleansMixtral.Tokenization.Tests;

/// <summary>Encoding against mistral-tokenizer-js (SentencePiece semantics), line by line.</summary>
public sealed class EncodeParityTests(ITestOutputHelper output)
{
    static MistralTokenizer Tokenizer => TestTokenizer.Instance;

    [Fact]
    public void HelloWorld_HasMixtralsIds() =>
        Assert.Equal([1, 22557, 1526, 28808], Tokenizer.Encode("Hello world!"));

    [Fact]
    public void EmptyText_IsBosOnly()
    {
        Assert.Equal([1], Tokenizer.Encode(""));
        Assert.Empty(Tokenizer.Encode("", addBos: false));
    }

    [Fact]
    public void GeneratedLines_MatchJsReferenceExactly() => AssertParity(JsReference.GeneratedLines);

    [Fact]
    public void HeldoutCorpusLines_MatchJsReferenceExactly()
    {
        AssertParity(JsReference.ParityLines("--count", "3000", "--seed", "12", "--corpus", JsReference.HeldoutText));
    }

    /// <summary>Long texts that merges could join anywhere are encoded in windows: check they still match.</summary>
    [Fact]
    public void LongUnbrokenText_MatchesJsReference()
    {
        var random = new Random(5);
        string Letters(int n, string alphabet) => new(Enumerable.Range(0, n).Select(_ => alphabet[random.Next(alphabet.Length)]).ToArray());
        string[] texts =
        [
            new string('a', 5000), new string('=', 3001), new string(' ', 2500), new string('\u2581', 1100),
            Letters(20_000, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"),
            string.Concat(Enumerable.Range(0, 1500).Select(_ => new[] { "the", "quick", "brown", "fox", "ing", "tion", "ab" }[random.Next(7)])),
            string.Concat(Enumerable.Repeat("😂🙂", 700)), string.Concat(Enumerable.Repeat("的是", 900)),
            string.Concat(Enumerable.Repeat("ab", 2000)) + "c", "x" + string.Concat(Enumerable.Repeat("aab", 1500)),
            "<s>", "</s>", "<unk>", "[INST] hi [/INST]", "\u2581", "\u2581\u2581 x",
        ];
        int[][] reference = JsReference.Encode(texts.Select(t => (t, true)).ToList());
        var mismatches = texts.Zip(reference)
            .Select(p => (Text: p.First, Ours: Tokenizer.Encode(p.First), Reference: p.Second))
            .Where(m => !m.Ours.AsSpan().SequenceEqual(m.Reference))
            .ToList();
        Assert.True(mismatches.Count == 0, TestTokenizer.DescribeMismatches(mismatches, texts.Length));
    }

    [Fact]
    public void LoneSurrogate_FallsBackToTheBytesOfTheReplacementCharacter() =>
        Assert.Equal(Tokenizer.Encode("a\uFFFDb"), Tokenizer.Encode("a\uD800b"));

    [Fact]
    public void Encode_IsThreadSafe()
    {
        IReadOnlyList<ParityLine> lines = JsReference.GeneratedLines;
        int[][] sequential = lines.Select(l => Tokenizer.Encode(l.Text)).ToArray();
        var parallel = new int[lines.Count][];
        Parallel.For(0, lines.Count, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i => parallel[i] = Tokenizer.Encode(lines[i].Text));
        for (int i = 0; i < lines.Count; i++) Assert.Equal(sequential[i], parallel[i]);
    }

    /// <summary>
    /// The whole heldout file as one text (no BOS) against the reference encoding it line by line: the dummy prefix on
    /// the first line only and "\n" as its byte piece &lt;0x0A&gt;, which is the same since no merge crosses a newline.
    /// </summary>
    [Fact]
    public void HeldoutCorpusFile_EncodesAsOneText()
    {
        string text = File.ReadAllText(JsReference.HeldoutText);
        string[] lines = text.Split('\n');
        int[][] lineIds = JsReference.Encode(lines.Select((line, i) => (line, false, i == 0)).ToList());
        int newline = Tokenizer.Encode("\n", addBos: false)[^1];
        int[] reference = lineIds.SelectMany((ids, i) => i == 0 ? ids : [newline, .. ids]).ToArray();

        int[] ours = Tokenizer.Encode(text, addBos: false);
        int firstDifference = Enumerable.Range(0, Math.Min(ours.Length, reference.Length)).FirstOrDefault(i => ours[i] != reference[i], -1);
        Assert.True(ours.AsSpan().SequenceEqual(reference),
            $"{ours.Length} ids vs {reference.Length} from the reference; first difference at {firstDifference}");
        output.WriteLine($"{text.Length:N0} chars, {ours.Length:N0} ids identical");
    }

    void AssertParity(IReadOnlyList<ParityLine> lines)
    {
        // The JS package gives [] for ""; SentencePiece and Hugging Face give [BOS].
        var mismatches = lines
            .Select(l => (l.Text, Ours: Tokenizer.Encode(l.Text), Reference: l.Text.Length == 0 ? [1] : l.Ids))
            .Where(m => !m.Ours.AsSpan().SequenceEqual(m.Reference))
            .ToList();
        output.WriteLine($"{lines.Count - mismatches.Count} of {lines.Count} lines identical");
        Assert.True(mismatches.Count == 0, TestTokenizer.DescribeMismatches(mismatches, lines.Count));
    }
}
