namespace OrleansMixtral.Tokenization;

/// <summary>A conversation does not fit the chat template (role order, missing user turn, unsupported template).</summary>
public sealed class ChatTemplateException(string message) : Exception(message);
