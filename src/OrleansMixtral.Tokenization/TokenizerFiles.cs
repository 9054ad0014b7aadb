using System.Runtime.CompilerServices;
using System.Text.Json;

namespace OrleansMixtral.Tokenization;

/// <summary>What <see cref="MistralTokenizer"/> needs from tokenizer.json and tokenizer_config.json.</summary>
internal sealed class TokenizerFiles
{
    const int MaxTokens = 1 << 22;   // guards against absurd ids

    public string[] Pieces { get; private set; } = [];                                  // index = token id
    public Dictionary<string, int> Vocabulary { get; } = new(40_000, StringComparer.Ordinal);   // the BPE model's pieces
    public List<string> Merges { get; } = new(64_000);                                  // "left right", in rank order
    public int[] ByteIds { get; } = new int[256];                                       // byte → id of its <0xXX> piece
    public HashSet<int> SpecialIds { get; } = [];
    public int UnkId { get; private set; }
    public int BosId { get; private set; }
    public int EosId { get; private set; }
    public string? ChatTemplate { get; private set; }

    readonly List<string?> _pieceById = new(40_000);
    readonly List<(int Id, string Content, bool Special)> _addedTokens = [];
    string? _modelType, _unkPiece;
    bool _sawVocab, _sawMerges;

    /// <summary>A problem with the file being read; <see cref="Read"/> names the file.</summary>
    sealed class Problem(string message) : Exception(message);

    public static TokenizerFiles Read(string tokenizerJsonPath)
    {
        var files = new TokenizerFiles();
        Within(tokenizerJsonPath, () =>
        {
            files.ReadTokenizerJson(File.ReadAllBytes(tokenizerJsonPath));
            files.Check();
        });
        string bosPiece = "<s>", eosPiece = "</s>";
        string configPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(tokenizerJsonPath))!, "tokenizer_config.json");
        bool hasConfig = File.Exists(configPath);
        if (hasConfig)
        {
            Within(configPath, () =>
            {
                using JsonDocument config = JsonDocument.Parse(File.ReadAllBytes(configPath));
                JsonElement root = config.RootElement;
                if (root.ValueKind != JsonValueKind.Object) throw new Problem("the top level is not a JSON object");
                bosPiece = TokenContent(root, "bos_token") ?? bosPiece;
                eosPiece = TokenContent(root, "eos_token") ?? eosPiece;
                if (root.TryGetProperty("chat_template", out JsonElement template) && template.ValueKind == JsonValueKind.String)
                    files.ChatTemplate = template.GetString();
            });
        }
        Within(tokenizerJsonPath, () => files.UnkId = files.IdOf(files._unkPiece ?? "<unk>", "unk_token"));
        Within(hasConfig ? configPath : tokenizerJsonPath, () =>
        {
            files.BosId = files.IdOf(bosPiece, "bos_token");
            files.EosId = files.IdOf(eosPiece, "eos_token");
        });
        return files;
    }

    static void Within(string path, Action read)
    {
        try
        {
            read();
        }
        catch (JsonException e)
        {
            throw new TokenizerFormatException(path, "is not valid JSON: " + e.Message, e);
        }
        catch (Problem e)
        {
            throw new TokenizerFormatException(path, e.Message, e);
        }
        catch (InvalidOperationException e)   // a JSON value of an unexpected kind
        {
            throw new TokenizerFormatException(path, e.Message, e);
        }
    }

    // One forward pass with Utf8JsonReader: about twice as fast as a JsonDocument on this 2 MB file, which matters
    // for Load's time. Only model.{type, unk_token, vocab, merges} and added_tokens are read; the rest is skipped.
    void ReadTokenizerJson(ReadOnlySpan<byte> json)
    {
        var reader = new Utf8JsonReader(json);
        if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject) throw new Problem("the top level is not a JSON object");
        while (NextProperty(ref reader) is string name)
        {
            if (name == "model" && reader.TokenType == JsonTokenType.StartObject) ReadModel(ref reader);
            else if (name == "added_tokens" && reader.TokenType == JsonTokenType.StartArray) ReadAddedTokens(ref reader);
            else reader.Skip();
        }
    }

    void ReadModel(ref Utf8JsonReader reader)
    {
        while (NextProperty(ref reader) is string name)
        {
            switch (name)
            {
                case "type": _modelType = reader.TokenType == JsonTokenType.String ? reader.GetString() : "?"; break;
                case "unk_token" when reader.TokenType == JsonTokenType.String: _unkPiece = reader.GetString(); break;
                case "vocab" when reader.TokenType == JsonTokenType.StartObject: ReadVocab(ref reader); break;
                case "merges" when reader.TokenType == JsonTokenType.StartArray: ReadMerges(ref reader); break;
                default: reader.Skip(); break;
            }
        }
    }

    // Fully optimised from the first call: Load runs these loops once, tens of thousands of times, before tiered
    // compilation would get to them.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void ReadVocab(ref Utf8JsonReader reader)
    {
        _sawVocab = true;
        while (NextProperty(ref reader) is string piece)
        {
            if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt32(out int id) || id < 0 || id >= MaxTokens)
                throw new Problem($"vocab entry \"{piece}\" has no valid id");
            if (PieceAt(id) is not null) throw new Problem($"vocab id {id} is used twice");
            if (!Vocabulary.TryAdd(piece, id)) throw new Problem($"vocab piece \"{piece}\" appears twice");
            _pieceById[id] = piece;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void ReadMerges(ref Utf8JsonReader reader)
    {
        _sawMerges = true;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            // Older files write a merge as "left right", newer ones as ["left", "right"].
            string? merge = null;
            if (reader.TokenType == JsonTokenType.String) merge = reader.GetString();
            else if (reader.TokenType == JsonTokenType.StartArray)
            {
                var pair = new List<string?>(2);
                while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
                {
                    pair.Add(reader.TokenType == JsonTokenType.String ? reader.GetString() : null);
                    if (reader.TokenType is JsonTokenType.StartArray or JsonTokenType.StartObject) reader.Skip();
                }
                if (pair is [string left, string right]) merge = left + " " + right;
            }
            else if (reader.TokenType == JsonTokenType.StartObject) reader.Skip();

            int space = merge?.IndexOf(' ') ?? -1;
            if (space <= 0 || space == merge!.Length - 1 || merge.IndexOf(' ', space + 1) >= 0)
                throw new Problem($"merge #{Merges.Count} is not a pair of pieces");
            Merges.Add(merge);
        }
    }

    // Added tokens may live outside the model's vocabulary; they take part in decoding, never in BPE.
    void ReadAddedTokens(ref Utf8JsonReader reader)
    {
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.StartObject) throw new Problem("an added_tokens entry is not an object");
            int id = -1;
            string? content = null;
            bool special = false;
            while (NextProperty(ref reader) is string name)
            {
                if (name == "id" && reader.TokenType == JsonTokenType.Number && reader.TryGetInt32(out int value)) id = value;
                else if (name == "content" && reader.TokenType == JsonTokenType.String) content = reader.GetString();
                else if (name == "special" && reader.TokenType is JsonTokenType.True or JsonTokenType.False) special = reader.GetBoolean();
                else reader.Skip();
            }
            if (id < 0 || id >= MaxTokens || content is null) throw new Problem("an added_tokens entry lacks a valid id or content");
            _addedTokens.Add((id, content, special));
        }
    }

    void Check()
    {
        if (_modelType is not (null or "BPE")) throw new Problem($"model type is \"{_modelType}\"; only BPE (SentencePiece-BPE with byte fallback) is supported");
        if (!_sawVocab) throw new Problem("model has no \"vocab\" object");
        if (!_sawMerges) throw new Problem("model has no \"merges\" array");
        foreach ((int id, string content, bool special) in _addedTokens)
        {
            if (PieceAt(id) is string existing && existing != content)
                throw new Problem($"added token {id} \"{content}\" clashes with vocab piece \"{existing}\"");
            _pieceById[id] = content;
            if (special) SpecialIds.Add(id);
        }
        int missing = _pieceById.IndexOf(null);
        if (missing >= 0) throw new Problem($"token ids are not contiguous: no token has id {missing}");
        Pieces = _pieceById.ToArray()!;
        for (int b = 0; b < 256; b++)
        {
            if (!Vocabulary.TryGetValue($"<0x{b:X2}>", out ByteIds[b]))
                throw new Problem($"vocab lacks the byte-fallback piece <0x{b:X2}>");
        }
    }

    /// <summary>Moves to the next property of the current object and onto its value; null at the object's end.</summary>
    static string? NextProperty(ref Utf8JsonReader reader)
    {
        if (!reader.Read() || reader.TokenType == JsonTokenType.EndObject) return null;
        string name = reader.GetString()!;
        reader.Read();
        return name;
    }

    /// <summary>The piece with this id so far (null if none), growing the list to reach it.</summary>
    string? PieceAt(int id)
    {
        while (_pieceById.Count <= id) _pieceById.Add(null);
        return _pieceById[id];
    }

    int IdOf(string piece, string what)
    {
        foreach ((int id, string content, _) in _addedTokens)
        {
            if (content == piece) return id;
        }
        return Vocabulary.TryGetValue(piece, out int vocabId) ? vocabId : throw new Problem($"{what} \"{piece}\" is not a token");
    }

    // bos_token / eos_token are either a string or an AddedToken object {"content": ...}.
    static string? TokenContent(JsonElement config, string name)
    {
        if (!config.TryGetProperty(name, out JsonElement value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind == JsonValueKind.String) return value.GetString();
        if (value.ValueKind == JsonValueKind.Object && value.TryGetProperty("content", out JsonElement content) && content.ValueKind == JsonValueKind.String)
            return content.GetString();
        throw new Problem($"\"{name}\" is neither a string nor an object with \"content\"");
    }
}
