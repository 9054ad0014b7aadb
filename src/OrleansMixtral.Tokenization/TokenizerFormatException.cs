namespace OrleansMixtral.Tokenization;

/// <summary>A tokenizer file (tokenizer.json or tokenizer_config.json) is malformed or not a supported layout.</summary>
public sealed class TokenizerFormatException : Exception
{
    public TokenizerFormatException(string filePath, string problem, Exception? inner = null)
        : base($"{filePath}: {problem}", inner)
    {
        FilePath = filePath;
    }

    /// <summary>The file that could not be read.</summary>
    public string FilePath { get; }
}
