namespace OrleansMixtral.Tokenization;

/// <summary>
/// The one prompt builder that fits a chat history to the model's context, by <see cref="ConversationWindow"/>'s policy
/// (the oldest whole turns go when the reply would lack room; the system message stays). Every path builds its prompts
/// here: the CLI's local chat, the conversation grain, and the chat service's stateless requests (a whole history in each
/// request, as OpenAI clients send it), so the same history keeps the same turns, and a message that cannot fit is the
/// same <see cref="ContextLengthExceededException"/>, whichever way it came.
/// </summary>
/// <param name="replyReserveTokens">A prompt leaves room for a reply of this many tokens (or the turn's max tokens, if fewer).</param>
public sealed class ChatPromptBuilder(MistralTokenizer tokenizer, int contextLength, int replyReserveTokens = ConversationWindow.DefaultReplyReserveTokens)
{
    public MistralTokenizer Tokenizer => tokenizer;
    public int ContextLength => contextLength;

    /// <summary>
    /// The next turn of a conversation whose window the caller keeps (exact ids of the kept turns, so the engine that
    /// served the last turn finds them in its prefix cache). <paramref name="maxTokens"/>: the request's; null, what the
    /// context leaves.
    /// </summary>
    /// <exception cref="ContextLengthExceededException">The new message (with the system message) leaves no room for even one token.</exception>
    public TurnPrompt NextTurn(ConversationWindow window, string? system, IReadOnlyList<string> keptUserMessages, string userMessage, int? maxTokens) =>
        window.NextTurn(tokenizer, system, keptUserMessages, userMessage, Limit(maxTokens), contextLength, replyReserveTokens);

    /// <summary>
    /// The prompt of a whole history sent at once: an optional system message, user and assistant messages alternating,
    /// and the new user message last (roles checked by the caller). The earlier turns are rendered with the template
    /// (<see cref="ConversationWindow.FromMessages"/>), then fitted as a conversation's next turn would be.
    /// </summary>
    /// <exception cref="ArgumentException">The roles are not in that order.</exception>
    /// <exception cref="ContextLengthExceededException">The last message (with the system message) leaves no room for even one token.</exception>
    public TurnPrompt ForMessages(IReadOnlyList<ChatMessage> messages, int? maxTokens)
    {
        var first = messages.Count > 0 && messages[0].Role == ChatRole.System ? 1 : 0;
        var system = first == 1 ? messages[0].Content : null;
        if (messages.Count == first || (messages.Count - first) % 2 != 1 || messages[^1].Role != ChatRole.User)
            throw new ArgumentException("a history is an optional system message, user/assistant pairs and a last user message", nameof(messages));
        var turns = new List<(string User, string Assistant)>();
        for (var i = first; i + 1 < messages.Count; i += 2)
        {
            if (messages[i].Role != ChatRole.User || messages[i + 1].Role != ChatRole.Assistant)
                throw new ArgumentException($"messages[{i}] and messages[{i + 1}] are not a user message and its reply", nameof(messages));
            turns.Add((messages[i].Content, messages[i + 1].Content));
        }
        var window = ConversationWindow.FromMessages(tokenizer, system, turns, 0);
        return NextTurn(window, system, [.. turns.Select(t => t.User)], messages[^1].Content, maxTokens);
    }

    /// <summary>Throws what <see cref="NextTurn"/> would for <paramref name="userMessage"/> as a first turn (it must fit with the system message alone).</summary>
    public void CheckFits(string? system, string userMessage) => NextTurn(ConversationWindow.Empty, system, [], userMessage, 1);

    /// <summary>A plain prompt (a completion: no turns to drop) checked against the context: it must leave room for one token.</summary>
    /// <exception cref="ContextLengthExceededException">It does not.</exception>
    public void CheckPrompt(int promptTokens)
    {
        if (promptTokens >= contextLength)
            throw new ContextLengthExceededException(
                $"the prompt does not fit the model's context of {contextLength} tokens ({promptTokens} tokens, and the reply needs at least one)");
    }

    static int Limit(int? maxTokens) => maxTokens is int n && n > 0 ? n : int.MaxValue;
}
