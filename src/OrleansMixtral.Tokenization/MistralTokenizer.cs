using System.Runtime.InteropServices;
using System.Text;
using System.Text.Unicode;
using Microsoft.ML.Tokenizers;

namespace OrleansMixtral.Tokenization;

/// <summary>
/// The Mistral / Mixtral SentencePiece-BPE tokenizer (Hugging Face tokenizer.json with byte fallback), encoding exactly
/// as SentencePiece does: dummy prefix, spaces as "▁", byte fallback for characters without a piece, merges by rank
/// with equal ranks taken leftmost first. Built on <see cref="BpeTokenizer"/> (whose ties are leftmost-first, unlike
/// LlamaTokenizer's). Immutable and thread-safe.
/// </summary>
public sealed class MistralTokenizer
{
    // A part of the text with no boundary that merges cannot cross (base64, a long run of one character, ...) would
    // cost BpeTokenizer quadratic time, so it is encoded in windows of this many chars: the tokens ending before the
    // window's last WindowMargin chars are kept and the next window starts after them. That is exact unless a merge
    // decision depends on text more than WindowMargin chars ahead, which takes a contrived chain of ever-better
    // merges; the tests compare long unbroken texts with the reference.
    const int Window = 1024;
    const int WindowMargin = 256;

    readonly BpeTokenizer _bpe;
    readonly MetaspaceByteFallbackNormalizer _normalizer;
    readonly MergeBoundaryPreTokenizer _preTokenizer;
    readonly string[] _pieces;
    readonly string[] _decodedPieces;   // pieces with "▁" as " ", as the decoder writes them
    readonly int[] _byteIds;            // byte → id of its <0xXX> piece
    readonly int[] _byteOfId;           // the byte a <0xXX> piece stands for, else -1
    readonly bool[] _isSpecial;
    readonly string? _chatTemplate;

    MistralTokenizer(TokenizerFiles files, BpeTokenizer bpe, MetaspaceByteFallbackNormalizer normalizer, MergeBoundaryPreTokenizer preTokenizer)
    {
        _bpe = bpe;
        _normalizer = normalizer;
        _preTokenizer = preTokenizer;
        _pieces = files.Pieces;
        _decodedPieces = Array.ConvertAll(_pieces, p => p.Replace(MetaspaceByteFallbackNormalizer.Metaspace, ' '));
        _byteIds = files.ByteIds;
        _byteOfId = new int[_pieces.Length];
        Array.Fill(_byteOfId, -1);
        for (int b = 0; b < 256; b++) _byteOfId[files.ByteIds[b]] = b;
        _isSpecial = new bool[_pieces.Length];
        foreach (int id in files.SpecialIds) _isSpecial[id] = true;
        _chatTemplate = files.ChatTemplate;
        BosId = files.BosId;
        EosId = files.EosId;
        UnkId = files.UnkId;
    }

    public int BosId { get; }
    public int EosId { get; }
    public int UnkId { get; }
    public int VocabSize => _pieces.Length;

    /// <summary>Loads tokenizer.json (a model directory or the file itself) and tokenizer_config.json beside it, if any.</summary>
    /// <exception cref="TokenizerFormatException">A file is not valid JSON or not a SentencePiece-BPE tokenizer.</exception>
    public static MistralTokenizer Load(string modelDirOrTokenizerJson)
    {
        ArgumentNullException.ThrowIfNull(modelDirOrTokenizerJson);
        string path = Directory.Exists(modelDirOrTokenizerJson)
            ? Path.Combine(modelDirOrTokenizerJson, "tokenizer.json")
            : modelDirOrTokenizerJson;
        TokenizerFiles files = TokenizerFiles.Read(path);

        // The byte characters get ids of their own after the vocabulary (BpeTokenizer wants one piece per id);
        // Encode maps them to the <0xXX> ids.
        var vocabulary = new Dictionary<string, int>(files.Vocabulary, StringComparer.Ordinal);
        for (int b = 0; b < 256; b++)
        {
            if (!vocabulary.TryAdd(MetaspaceByteFallbackNormalizer.ByteAlias(b), files.Pieces.Length + b))
                throw new TokenizerFormatException(path, $"vocab already uses U+{0xE000 + b:X4}, which stands for byte-fallback bytes");
        }
        // The BpeTokenizer gets the normaliser and pre-tokenizer so that it is complete on its own; Encode runs those
        // steps itself, to window over-long parts.
        var normalizer = new MetaspaceByteFallbackNormalizer(files.Vocabulary.Keys);
        var preTokenizer = new MergeBoundaryPreTokenizer(files.Merges);
        try
        {
            BpeTokenizer bpe = BpeTokenizer.Create(new BpeOptions(vocabulary)
            {
                Merges = files.Merges,
                Normalizer = normalizer,
                PreTokenizer = preTokenizer,
                UnknownToken = files.Pieces[files.UnkId],
                FuseUnknownTokens = true,
            });
            return new MistralTokenizer(files, bpe, normalizer, preTokenizer);
        }
        catch (InvalidOperationException e)
        {
            throw new TokenizerFormatException(path, e.Message, e);   // e.g. a merge of pieces missing from the vocab
        }
    }

    /// <summary>Token ids of <paramref name="text"/>, as SentencePiece (and Hugging Face) give them.</summary>
    public int[] Encode(string text, bool addBos = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos) ids.Add(BosId);
        AppendEncoded(text, ids);
        return ids.ToArray();
    }

    /// <summary>Encodes one stretch of text (with its own dummy prefix) onto <paramref name="ids"/>.</summary>
    void AppendEncoded(string text, List<int> ids)
    {
        string normalized = _normalizer.Normalize(text);
        for (int start = 0, end; start < normalized.Length; start = end)
        {
            end = _preTokenizer.EndOfPart(normalized, start);
            AppendPart(normalized.AsSpan(start, end - start), ids);
        }
    }

    void AppendPart(ReadOnlySpan<char> part, List<int> ids)
    {
        while (part.Length > Window)
        {
            int windowLength = char.IsHighSurrogate(part[Window - 1]) ? Window - 1 : Window;
            IReadOnlyList<EncodedToken> tokens = _bpe.EncodeToTokens(part[..windowLength], out _, considerPreTokenization: false, considerNormalization: false);
            int kept = 0;
            foreach (EncodedToken token in tokens)
            {
                int end = token.Offset.End.Value;
                if (end > windowLength - WindowMargin && kept > 0) break;
                ids.Add(VocabularyId(token.Id));
                kept = end;
            }
            part = part[kept..];
        }
        foreach (int id in _bpe.EncodeToIds(part, considerPreTokenization: false, considerNormalization: false))
            ids.Add(VocabularyId(id));
    }

    int VocabularyId(int bpeId) => bpeId < _pieces.Length ? bpeId : _byteIds[bpeId - _pieces.Length];

    /// <summary>
    /// Text of <paramref name="ids"/> with Hugging Face's decoder: "▁" → " ", each run of &lt;0xXX&gt; pieces as one
    /// UTF-8 string (all U+FFFD, one per byte, if the run is not valid UTF-8), then the dummy prefix's space stripped.
    /// </summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecial = true)
    {
        var text = new StringBuilder(ids.Length * 4);
        var byteRun = new List<byte>();
        foreach (int id in ids)
        {
            CheckId(id);
            if (skipSpecial && _isSpecial[id]) continue;
            if (_byteOfId[id] >= 0)
            {
                byteRun.Add((byte)_byteOfId[id]);
                continue;
            }
            AppendByteRun(text, byteRun);
            text.Append(_decodedPieces[id]);
        }
        AppendByteRun(text, byteRun);
        if (text.Length > 0 && text[0] == ' ') text.Remove(0, 1);
        return text.ToString();
    }

    /// <summary>The vocabulary piece of <paramref name="id"/>, e.g. "▁Hello", "&lt;0x0A&gt;", "&lt;s&gt;".</summary>
    public string IdToPiece(int id)
    {
        CheckId(id);
        return _pieces[id];
    }

    /// <summary>A detokenizer for streamed ids whose concatenated output equals <see cref="Decode"/>.</summary>
    public StreamingDetokenizer CreateStreamingDetokenizer(bool skipSpecial = true) => new(this, skipSpecial);

    /// <summary>
    /// A detokenizer for the ids generated after <paramref name="prompt"/> whose output is the text that
    /// <see cref="Decode"/> of prompt + output adds to <see cref="Decode"/> of the prompt: what a completion returns, so
    /// that prompt + completion reads as one text ("The history of the city" → " is the most…", its space kept).
    /// </summary>
    public StreamingDetokenizer CreateContinuationDetokenizer(ReadOnlySpan<int> prompt, bool skipSpecial = true)
    {
        var detokenizer = new StreamingDetokenizer(this, skipSpecial);
        detokenizer.ContinueAfter(prompt);
        return detokenizer;
    }

    /// <summary>
    /// The bytes one token stands for in decoded text: a &lt;0xXX&gt; piece its byte, any other piece its UTF-8 with "▁" as a
    /// space (special tokens their piece, "&lt;/s&gt;"). What OpenAI's logprobs call a token's <c>bytes</c>.
    /// </summary>
    public byte[] TokenBytes(int id)
    {
        CheckId(id);
        return _byteOfId[id] >= 0 ? [(byte)_byteOfId[id]] : Encoding.UTF8.GetBytes(_decodedPieces[id]);
    }

    /// <summary>
    /// One token as text, for logprobs: its piece with "▁" as a space (" is"); a &lt;0xXX&gt; piece that is not a character by
    /// itself is written as OpenAI writes such tokens, "bytes:\xe2".
    /// </summary>
    public string TokenText(int id)
    {
        CheckId(id);
        int b = _byteOfId[id];
        if (b < 0) return _decodedPieces[id];
        return b < 0x80 ? ((char)b).ToString() : $"bytes:\\x{b:x2}";
    }

    /// <summary>
    /// The prompt ids of a conversation under the Mixtral-Instruct template: &lt;s&gt; and &lt;/s&gt; as ids, each text
    /// between them encoded on its own (with its own dummy prefix), as Hugging Face does. After a final user turn the
    /// ids end with "[/INST]", ready for generation.
    /// </summary>
    /// <exception cref="ChatTemplateException">Roles are out of order, or the configured template is not Mixtral's.</exception>
    public int[] EncodeChat(IReadOnlyList<ChatMessage> messages)
    {
        List<ChatPart> parts = RenderParts(messages);
        var ids = new List<int>();
        var segment = new StringBuilder();
        foreach (ChatPart part in parts)
        {
            if (part.Text is not null)
            {
                segment.Append(part.Text);   // texts with no special token between them form one segment
                continue;
            }
            AppendEncoded(segment.ToString(), ids);
            segment.Clear();
            ids.Add(part.Special == SpecialToken.Bos ? BosId : EosId);
        }
        AppendEncoded(segment.ToString(), ids);
        return ids.ToArray();
    }

    /// <summary>The conversation as the template's text, special tokens written out ("&lt;s&gt;[INST] ... [/INST]").</summary>
    public string RenderChat(IReadOnlyList<ChatMessage> messages)
    {
        var text = new StringBuilder();
        foreach (ChatPart part in RenderParts(messages))
            text.Append(part.Text ?? _pieces[part.Special == SpecialToken.Bos ? BosId : EosId]);
        return text.ToString();
    }

    List<ChatPart> RenderParts(IReadOnlyList<ChatMessage> messages)
    {
        if (_chatTemplate is not null && !_chatTemplate.Contains("[INST]", StringComparison.Ordinal))
            throw new ChatTemplateException("tokenizer_config.json's chat_template is not the Mixtral-Instruct [INST] template, the only one implemented.");
        return MixtralChatTemplate.Render(messages);
    }

    internal bool IsSpecial(int id) => _isSpecial[id];

    /// <summary>The byte a &lt;0xXX&gt; piece stands for, or -1.</summary>
    internal int ByteOf(int id) => _byteOfId[id];

    internal string DecodedPiece(int id) => _decodedPieces[id];

    internal void CheckId(int id)
    {
        if ((uint)id >= (uint)_pieces.Length)
            throw new ArgumentOutOfRangeException(nameof(id), id, $"Token id outside the vocabulary (0..{_pieces.Length - 1}).");
    }

    /// <summary>Appends a run of byte-fallback bytes as Hugging Face's ByteFallback decoder does, and empties it.</summary>
    internal static void AppendByteRun(StringBuilder text, List<byte> byteRun)
    {
        if (byteRun.Count == 0) return;
        ReadOnlySpan<byte> bytes = CollectionsMarshal.AsSpan(byteRun);
        if (Utf8.IsValid(bytes)) text.Append(Encoding.UTF8.GetString(bytes));
        else text.Append('\uFFFD', byteRun.Count);
        byteRun.Clear();
    }
}
