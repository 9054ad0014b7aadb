namespace OrleansMixtral.Tokenization;

internal enum SpecialToken { None, Bos, Eos }

/// <summary>One piece of a rendered chat: text, or a special token (emitted as its id, never searched for in text).</summary>
internal readonly record struct ChatPart(string? Text, SpecialToken Special)
{
    public static ChatPart Of(string text) => new(text, SpecialToken.None);
    public static ChatPart Of(SpecialToken special) => new(null, special);
}

/// <summary>
/// Mixtral-8x7B-Instruct-v0.1's chat template (tokenizer_config.json's chat_template), with an optional first system
/// message folded into the first user turn:
/// <c>&lt;s&gt;[INST] {system}\n\n{user} [/INST]{assistant}&lt;/s&gt;[INST] {user} [/INST]...</c>
/// </summary>
internal static class MixtralChatTemplate
{
    public static List<ChatPart> Render(IReadOnlyList<ChatMessage> messages)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (messages.Count == 0) throw new ChatTemplateException("The conversation is empty; it needs at least one user message.");

        string? system = null;
        int first = 0;
        if (messages[0].Role == ChatRole.System)
        {
            system = messages[0].Content ?? throw new ArgumentException("Message 0 has no content.", nameof(messages));
            first = 1;
            // The template would silently drop a system message with nothing after it.
            if (messages.Count == 1) throw new ChatTemplateException("The system message must be followed by a user message.");
        }

        var parts = new List<ChatPart> { ChatPart.Of(SpecialToken.Bos) };
        for (int i = first; i < messages.Count; i++)
        {
            ChatMessage message = messages[i] ?? throw new ArgumentException($"Message {i} is null.", nameof(messages));
            string content = message.Content ?? throw new ArgumentException($"Message {i} has no content.", nameof(messages));
            ChatRole expected = (i - first) % 2 == 0 ? ChatRole.User : ChatRole.Assistant;
            if (message.Role == ChatRole.System)
                throw new ChatTemplateException($"Message {i} is a system message; only the first message may be one.");
            if (message.Role != expected)
                throw new ChatTemplateException(
                    $"After the optional system message, roles must alternate user/assistant/user/...; message {i} is {message.Role}, expected {expected}.");

            if (message.Role == ChatRole.User)
            {
                string turn = i == first && system is not null ? system + "\n\n" + content : content;
                parts.Add(ChatPart.Of("[INST] " + turn + " [/INST]"));
            }
            else
            {
                parts.Add(ChatPart.Of(content));
                parts.Add(ChatPart.Of(SpecialToken.Eos));
            }
        }
        return parts;
    }
}
