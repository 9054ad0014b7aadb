namespace OrleansMixtral.Model;

/// <summary>
/// A checkpoint file (config.json, a safetensors file, an index) is malformed or does not match what the model needs.
/// The message always names the file and, where one is involved, the tensor or config field.
/// </summary>
public sealed class ModelFormatException : Exception
{
    /// <summary>The file at fault (or the checkpoint directory when no single file is).</summary>
    public string? FilePath { get; }

    /// <summary>The tensor (or config field) at fault, if any.</summary>
    public string? Item { get; }

    public ModelFormatException(string message) : base(message) { }

    public ModelFormatException(string message, Exception inner) : base(message, inner) { }

    public ModelFormatException(string filePath, string? item, string problem, Exception? inner = null)
        : base(item is null ? $"{filePath}: {problem}" : $"{filePath}: '{item}': {problem}", inner)
    {
        FilePath = filePath;
        Item = item;
    }
}
